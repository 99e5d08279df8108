"""Evaluating schedule functions on concrete values before tracing (validation, default grids)."""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["eval_f64", "is_concrete"]


def eval_f64(fn, *args) -> np.ndarray:
    """``fn(*args)`` evaluated eagerly in float64 on the CPU, even inside a ``jax.jit`` trace."""
    args = [np.asarray(a, np.float64) for a in args]
    with jax.ensure_compile_time_eval(), jax.enable_x64(True), jax.default_device(
        jax.devices("cpu")[0]
    ):
        return np.asarray(fn(*args), np.float64)


def is_concrete(tree) -> bool:
    """True when no leaf of ``tree`` is a tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))
