"""The update shared by every exponential-integrator solver of the library.

ER-SDE-Solvers and the MR Sampler (and DDIM, DPM-Solver++ as their special cases) all advance the
centred state ``y = x - mu`` by

    y_t = c_x y_s + w_0 q_s + w_1 q_{s-1} + w_2 q_{s-2} + c_z z,    z ~ N(0, I),

where ``q`` is the network's data prediction ``x0_hat - mu`` or noise prediction ``eps_hat`` at
the last three grid points. The coefficients depend only on the grid, so a solver is a pure
function from ``(alpha, sigma)`` on the grid to a :class:`StepCoefficients` table, computed once,
vectorised over steps, outside the ``lax.scan`` body.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

__all__ = ["StepCoefficients", "current_only", "divided_difference_weights"]


class StepCoefficients(NamedTuple):
    """Coefficients of every step of a linear multistep sampler."""

    x: jnp.ndarray  # (steps,) multiplies the centred state y_s
    outputs: jnp.ndarray  # (steps, 3) multiply the predictions q at s, s-1, s-2
    noise: jnp.ndarray  # (steps,) standard deviation of the injected Gaussian noise


def current_only(weight):
    """Output weights (steps, 3) that use only the current prediction ``q_s``, with ``weight``."""
    return jnp.stack([weight, jnp.zeros_like(weight), jnp.zeros_like(weight)], axis=-1)


def divided_difference_weights(u_s, u_1, u_2):
    """Weights on ``(q_s, q_{s-1}, q_{s-2})`` of the backward divided differences in ``u``.

    Args:
        u_s, u_1, u_2: the coordinate (rho or lambda) at s, s-1 and s-2, shape (steps,). Entries
            that a step does not use must still be distinct (callers pad with safe values).

    Returns:
        ``(d1, dd)``, each (steps, 3): ``d1 = (q_s - q_{s-1})/(u_s - u_{s-1})`` and the second
        divided difference ``dd = (d1 - d1_prev)/(u_s - u_{s-2})``, where
        ``d1_prev = (q_{s-1} - q_{s-2})/(u_{s-1} - u_{s-2})``.
    """
    zero = jnp.zeros_like(u_s)
    h1, h2 = u_s - u_1, u_1 - u_2
    d1 = jnp.stack([1 / h1, -1 / h1, zero], axis=-1)
    d1_prev = jnp.stack([zero, 1 / h2, -1 / h2], axis=-1)
    dd = (d1 - d1_prev) / (h1 + h2)[:, None]
    return d1, dd
