"""Brownian-consistent noise: a virtual Brownian tree in the clock ``log(sigma / alpha)``.

A step of a stochastic sampler from noise level ``rho_s`` down to ``rho_t`` injects a Gaussian
that discretises the integral of the reverse SDE's diffusion over ``(rho_t, rho_s)``. Drawing it
as the standardised increment ``z = (W(u_s) - W(u_t)) / sqrt(u_s - u_t)`` of one Brownian motion
``W`` in the clock ``u = log rho`` (monotone in the noise level of every path) makes the noise of
different grids the discretisations of the same path: the same key gives the same ``W`` whatever
the step count, and samples converge pathwise as steps are refined.

``W`` is a fixed function of ``(key, u)``, evaluated without storing anything (Brownian bridge
bisection, as diffrax's ``VirtualBrownianTree``): on the normalised clock ``s in [0, 1]``,
``W(0) = 0`` and ``W(1) ~ N(0, 1)``; each of ``depth`` levels draws the midpoint of the current
interval from its bridge law with a key of that tree node, and the query point is drawn from the
bridge of the final interval, width ``2^-depth`` (exact in law for query points in distinct final
intervals: ``32 / 2^24 ~ 2e-6`` in ``u``). Costs ``depth + 1`` normal draws per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CLOCK_LIMIT", "DEPTH", "clock", "clock_is_valid", "check_clock", "brownian_at",
           "increment", "start"]

CLOCK_LIMIT = 16.0  # the clock covers log rho in [-16, 16]; sigma = 0 maps to -16
DEPTH = 24


def clock(rho):
    """Normalised clock ``s = (clip(log rho) + L) / 2L`` in [0, 1] (not differentiated)."""
    positive = rho > 0
    u = jnp.where(positive, jnp.log(jnp.where(positive, rho, 1.0)), -CLOCK_LIMIT)
    u = jnp.clip(u, -CLOCK_LIMIT, CLOCK_LIMIT)
    return jax.lax.stop_gradient((u + CLOCK_LIMIT) / (2.0 * CLOCK_LIMIT))


def clock_is_valid(rho, xp=jnp):
    """Whether every noise level is 0, inf (a zero-SNR start: the clock's top) or inside the
    clock's range (``xp``: numpy or jax.numpy)."""
    bound = float(np.exp(CLOCK_LIMIT))
    return xp.all((rho == 0) | (rho == np.inf) | ((rho >= 1 / bound) & (rho <= bound)))


def check_clock(rho: np.ndarray) -> None:
    """Raises ValueError if a noise level of a concrete grid lies outside the clock's range."""
    if not clock_is_valid(rho, np):
        bound, levels = np.exp(CLOCK_LIMIT), rho[(rho != 0) & np.isfinite(rho)]
        raise ValueError(
            f"Brownian noise covers sigma/alpha in [{1 / bound:.3g}, {bound:.3g}]; the grid has "
            f"noise levels from {levels.min():.3g} to {levels.max():.3g}."
        )


def brownian_at(key, s, shape, dtype, depth: int = DEPTH):
    """``W(s)`` of a standard Brownian motion on ``[0, 1]`` (``W(0) = 0``), a function of key, s."""
    w_one = jax.random.normal(jax.random.fold_in(key, 3), shape, dtype)

    def level(_, carry):
        node, lo, hi, w_lo, w_hi = carry
        mid = 0.5 * (lo + hi)
        z = jax.random.normal(jax.random.fold_in(node, 0), shape, dtype)
        w_mid = 0.5 * (w_lo + w_hi) + jnp.sqrt(0.25 * (hi - lo)).astype(dtype) * z
        right = s >= mid
        node = jax.random.fold_in(node, 1 + right.astype(jnp.uint32))
        return (node, jnp.where(right, mid, lo), jnp.where(right, hi, mid),
                jnp.where(right, w_mid, w_lo), jnp.where(right, w_hi, w_mid))

    zero = jnp.zeros((), jnp.result_type(s))
    init = (key, zero, zero + 1.0, jnp.zeros(shape, dtype), w_one)
    node, lo, hi, w_lo, w_hi = jax.lax.fori_loop(0, depth, level, init)
    width = hi - lo
    frac = ((s - lo) / width).astype(dtype)
    bridge = jnp.sqrt((s - lo) * (hi - s) / width).astype(dtype)
    z = jax.random.normal(jax.random.fold_in(node, 0), shape, dtype)
    return w_lo + frac * (w_hi - w_lo) + bridge * z


def _at(key, s, shape, dtype, per_sample):
    if per_sample:
        return jax.vmap(lambda k: brownian_at(k, s, shape[1:], dtype))(key)
    return brownian_at(key, s, shape, dtype)


def increment(key, s_from, s_to, w_from, shape, dtype, per_sample):
    """The standardised increment ``(W(s_from) - W(s_to)) / sqrt(s_from - s_to)`` and ``W(s_to)``.

    Zero where the interval is empty (both ends clipped to the same end of the clock).
    """
    w_to = _at(key, s_to, shape, dtype, per_sample)
    ds = s_from - s_to
    scale = jnp.where(ds > 0, 1.0 / jnp.sqrt(jnp.where(ds > 0, ds, 1.0)), 0.0).astype(dtype)
    return (w_from - w_to) * scale, w_to


def start(key, s, shape, dtype, per_sample):
    """``W`` at the first grid point (the scan carries it from step to step)."""
    return _at(key, s, shape, dtype, per_sample)
