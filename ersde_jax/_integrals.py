"""The integrals of the ER-SDE Taylor expansion (MATH.md section 3).

    I1 = int_{rho_t}^{rho_s} dr / phi(r),      I2 = int_{rho_t}^{rho_s} (r - rho_s) / phi(r) dr

Closed forms exist for phi = x ("ode") and phi = x^2 ("sde"). Otherwise Gauss-Legendre
quadrature in ``u = log r``, where ``dr / phi = du / g`` is smooth and the lower end no longer
approaches a singularity; ``riemann_points`` reproduces the left Riemann sums in ``r`` of the
authors' release instead.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["integrals"]


def integrals(rho_s, rho_t, log_g, *, closed_form=None, riemann_points=None, nodes=64):
    """Vectorised ``(I1, I2)`` for steps from ``rho_s`` down to ``rho_t > 0``.

    Args:
        rho_s, rho_t: arrays of start and end noise levels, ``rho_s > rho_t > 0``.
        log_g: ``log(phi(r) / r)`` as a function of an array ``r``.
        closed_form: "ode" or "sde" to use the exact expressions.
        riemann_points: N for the release's N-point left Riemann sums in ``r``.
        nodes: Gauss-Legendre nodes otherwise.
    """
    log_ratio = jnp.log(rho_s) - jnp.log(rho_t)
    if closed_form == "ode":
        return log_ratio, (rho_s - rho_t) - rho_s * log_ratio
    if closed_form == "sde":
        i1 = 1 / rho_t - 1 / rho_s
        return i1, log_ratio - rho_s * i1
    if riemann_points is not None:
        k = jnp.arange(riemann_points, dtype=rho_s.dtype) / riemann_points
        width = (rho_s - rho_t)[:, None]
        r = rho_t[:, None] + k * width
        inv_phi = jnp.exp(-log_g(r)) / r
        dr = width / riemann_points
        return jnp.sum(inv_phi * dr, -1), jnp.sum((r - rho_s[:, None]) * inv_phi * dr, -1)
    x, w = (jnp.asarray(a, rho_s.dtype) for a in np.polynomial.legendre.leggauss(nodes))
    half = 0.5 * log_ratio[:, None]
    u = 0.5 * (jnp.log(rho_s) + jnp.log(rho_t))[:, None] + half * x
    r = jnp.exp(u)
    weight = half * w * jnp.exp(-log_g(r))  # dr / phi(r) = du / g(r)
    return jnp.sum(weight, -1), jnp.sum((r - rho_s[:, None]) * weight, -1)
