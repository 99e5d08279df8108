"""Solver kernels: each builds the per-step coefficients of one linear multistep update."""
