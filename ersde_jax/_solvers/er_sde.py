"""ER-SDE-Solvers 1-3 (Cui et al., "Elucidating the solution space of extended reverse-time SDE").

With ``rho = sigma / alpha``, ``r = phi(rho_t) / phi(rho_s)`` and ``d = rho_t - rho_s``, the k-th
order solver (MATH.md section 3) is

    x_t = (alpha_t/alpha_s) r x_s + alpha_t (1 - r) x0_s
          + alpha_t (d + phi(rho_t) I1) D1 + alpha_t (d^2/2 + phi(rho_t) I2) D2
          + alpha_t sqrt(rho_t^2 - rho_s^2 r^2) z,

applied to ``x - mu``. ``D1``, ``D2`` are divided differences of the data predictions in rho.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._integrals import integrals
from .._noise_scale import NoiseScale, check_noise_scale
from .._noise_scale import noise_scale as make_noise_scale
from .._numerics import eval_f64, is_concrete, pytree_dataclass, safe_sqrt
from .base import (
    AbstractLinearMultistep,
    StepCoefficients,
    current_only,
    divided_difference_weights,
    history_points,
)

__all__ = ["ERSDE", "er_sde", "DERIVATIVES"]

DERIVATIVES = ("quadratic", "backward")


def _equals(value, target) -> bool:
    """True when ``value`` is concrete and equal to ``target`` (decided before tracing)."""
    return is_concrete(value) and bool(np.all(np.asarray(value) == target))


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class ERSDE(AbstractLinearMultistep):
    """ER-SDE-Solver of order 1-3 for any Gaussian path and noise-scale function.

    Build it with :func:`er_sde`. ``noise_scale`` parameters, ``eta`` and ``s_noise`` are pytree
    leaves (traced and differentiable); the rest is static. ``closed_form`` ("ode", "sde" or None)
    and ``stochastic`` are decided by :func:`er_sde` from the concrete hyperparameters.
    """

    noise_scale: NoiseScale
    eta: Any = 1.0
    s_noise: Any = 1.0
    order: int = dataclasses.field(default=3, metadata=dict(static=True))
    derivative: str = dataclasses.field(default="quadratic", metadata=dict(static=True))
    riemann_points: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    quadrature_nodes: int = dataclasses.field(default=64, metadata=dict(static=True))
    closed_form: str | None = dataclasses.field(default=None, metadata=dict(static=True))
    stochastic: bool = dataclasses.field(default=True, metadata=dict(static=True))

    zero_snr = True

    def check_grid(self, grid) -> None:
        """Raises ValueError if the noise-scale function is invalid on the grid's noise levels
        (at ``rho = inf`` too, for a zero-SNR start)."""
        check_noise_scale(self.noise_scale, self.eta, grid.rho)
        if grid.alpha[0] == 0 and self.closed_form != "ode":
            at_inf = float(eval_f64(self.noise_scale.log_g, np.inf))
            if np.isnan(at_inf) or at_inf == -np.inf:
                raise ValueError(
                    f"Noise scale {self.noise_scale.name!r} has no limit phi(rho)/rho at rho = inf "
                    "(a zero-SNR start): use another noise scale or start below t_max."
                )

    def zero_snr_coefficients(self, grid) -> StepCoefficients:
        """The first step from ``alpha_0 = 0``, where ``r = phi(rho_t)/phi(rho_0) -> 0``.

        ``x_t = mu + alpha_t (x0_hat - mu) + c_x (x_0 - mu) + c_z z`` with, for ``g = phi/rho``,
        ``c_x = (sigma_t/sigma_0) g(rho_t)/g(inf)`` and
        ``c_z = sigma_t sqrt(1 - (g(rho_t)/g(inf))^2)``: ``c_x = 0``, ``c_z = sigma_t`` when
        ``g`` grows without bound, the ODE's ``c_x = sigma_t/sigma_0``, ``c_z = 0`` for "ode".
        """
        a_t, s_0, s_t, rho_t = grid.alpha[1], grid.sigma[0], grid.sigma[1], grid.rho[1]
        if self.closed_form == "ode":
            decay = jnp.ones_like(a_t)
        else:
            inf = jnp.asarray(jnp.inf, rho_t.dtype)
            phi_at_inf = jax.lax.stop_gradient(self.noise_scale.log_g(inf))
            flat = self.eta == 0
            bounded = jnp.isfinite(phi_at_inf) | flat  # else g -> inf (NaN: rejected by check)
            # Evaluate at inf only where that is finite, so no masked branch leaks NaN gradients.
            point = jnp.where(bounded & ~flat, inf, jnp.ones_like(inf))
            lg_inf = jnp.where(flat, 0.0, self.eta * self.noise_scale.log_g(point))
            lg_t = jnp.where(flat, 0.0, self.eta * self.noise_scale.log_g(rho_t))
            decay = jnp.where(bounded, jnp.exp(lg_t - lg_inf), 0.0)
        zero = jnp.zeros_like(a_t)
        return StepCoefficients(
            x=s_t / s_0 * decay,
            outputs=jnp.stack([a_t, zero, zero]),
            noise=self.s_noise * s_t * safe_sqrt(1.0 - decay**2),
        )

    def regular_coefficients(self, grid, order) -> StepCoefficients:
        """Coefficients of every step (MATH.md section 3) at the per-step ``order``."""
        closed = None if self.riemann_points is not None else self.closed_form

        def log_g(rho):
            if self.closed_form == "ode":
                return jnp.zeros_like(rho)
            return self.eta * self.noise_scale.log_g(rho)

        a_t, sigma_s, sigma_t = grid.alpha[1:], grid.sigma[:-1], grid.sigma[1:]
        rho_s, rho_1, rho_2 = history_points(grid.rho)
        rho_t = grid.rho[1:]

        lg_s, lg_t = log_g(rho_s), log_g(rho_t)
        log_r = jnp.log(rho_t) - jnp.log(rho_s) + lg_t - lg_s  # log(phi_t / phi_s)
        c_x = sigma_t / sigma_s * jnp.exp(lg_t - lg_s)  # = (alpha_t/alpha_s) r
        c_0 = -a_t * jnp.expm1(log_r)  # alpha_t (1 - r)
        noise = self.s_noise * sigma_t * safe_sqrt(-jnp.expm1(2.0 * (lg_t - lg_s)))

        i1, i2 = integrals(
            rho_s, rho_t, log_g, closed_form=closed, riemann_points=self.riemann_points,
            nodes=self.quadrature_nodes,
        )
        d = rho_t - rho_s
        phi_t = rho_t * jnp.exp(lg_t)
        c_1 = a_t * (d + phi_t * i1)
        c_2 = a_t * (0.5 * d**2 + phi_t * i2)

        d1, dd = divided_difference_weights(rho_s, rho_1, rho_2)
        d2 = 2.0 * dd  # second derivative estimate
        if self.derivative == "quadratic":
            # Derivative at rho_s of the quadratic through the last three points.
            d1_order3 = d1 + 0.5 * (rho_s - rho_1)[:, None] * d2
        else:
            d1_order3 = d1  # the release's backward difference (order ~2.3, MATH.md)

        outputs = (
            current_only(c_0)
            + jnp.where((order == 2)[:, None], c_1[:, None] * d1, 0.0)
            + jnp.where((order == 3)[:, None], c_1[:, None] * d1_order3 + c_2[:, None] * d2, 0.0)
        )
        return StepCoefficients(x=c_x, outputs=outputs, noise=noise)


def er_sde(
    order: int = 3,
    noise_scale="er_sde_5",
    *,
    eta=1.0,
    s_noise=1.0,
    derivative: str = "quadratic",
    riemann_points: int | None = None,
    noise_scale_params=None,
    quadrature_nodes: int = 64,
) -> ERSDE:
    """Builds an ER-SDE-Solver.

    Args:
        order: 1, 2 or 3 (Taylor order of the data prediction in rho).
        noise_scale: a name in ``ej.NOISE_SCALES``, a callable ``phi(rho)`` or a
            :class:`NoiseScale`. Default "er_sde_5", ``phi(x) = x (exp(x^0.3) + 10)``.
        eta: stochasticity knob, ``phi_eta = x^(1-eta) phi^eta`` (0: ODE, 1: ``phi``).
        s_noise: multiplies the injected noise (1 is the paper; 0 keeps the deterministic part).
        derivative: third-order first-derivative estimate, "quadratic" (default: the derivative of
            the quadratic through the last three predictions, measured order ~3.3 on an exact
            Gaussian) or "backward" (the release's first divided difference, order ~2.3).
        riemann_points: use the release's N-point left Riemann sums for the integrals instead of
            64-node Gauss-Legendre quadrature (exact to round-off).
        noise_scale_params: parameters passed as ``phi(rho, params)`` to a callable ``phi``.
        quadrature_nodes: Gauss-Legendre nodes.

    Returns:
        The solver, a pytree.

    Raises:
        ValueError: bad order, derivative, riemann_points or noise-scale name.
    """
    if isinstance(order, bool) or order not in (1, 2, 3):
        raise ValueError(f"ER-SDE order must be 1, 2 or 3, got {order!r}.")
    if derivative not in DERIVATIVES:
        raise ValueError(f"Unknown derivative {derivative!r}; expected one of {DERIVATIVES}.")
    if riemann_points is not None and (
        type(riemann_points) is not int or riemann_points < 1
    ):
        raise ValueError(f"riemann_points must be a positive int or None, got {riemann_points!r}.")
    if not (isinstance(quadrature_nodes, int) and quadrature_nodes >= 2):
        raise ValueError(f"quadrature_nodes must be an int >= 2, got {quadrature_nodes!r}.")
    scale = make_noise_scale(noise_scale, noise_scale_params)
    if scale.closed_form == "ode" or _equals(eta, 0.0):
        closed_form = "ode"  # phi_eta = rho whenever eta = 0
    elif scale.closed_form == "sde" and _equals(eta, 1.0):
        closed_form = "sde"
    else:
        closed_form = None
    stochastic = not (closed_form == "ode" or _equals(s_noise, 0.0))
    return ERSDE(scale, eta, s_noise, order, derivative, riemann_points, quadrature_nodes,
                 closed_form, stochastic)
