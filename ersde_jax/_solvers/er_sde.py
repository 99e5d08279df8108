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

import jax.numpy as jnp
import numpy as np

from .._concrete import is_concrete
from .._integrals import integrals
from .._noise_scale import NoiseScale, check_noise_scale
from .._noise_scale import noise_scale as make_noise_scale
from .._pytree import pytree_dataclass
from .._sqrt import safe_sqrt
from .base import (
    LinearMultistep,
    StepCoefficients,
    current_only,
    divided_difference_weights,
)

__all__ = ["ERSDE", "er_sde", "DERIVATIVES"]

DERIVATIVES = ("quadratic", "backward")


def _equals(value, target) -> bool:
    """True when ``value`` is concrete and equal to ``target`` (decided before tracing)."""
    return is_concrete(value) and bool(np.all(np.asarray(value) == target))


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class ERSDE(LinearMultistep):
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

    target = "x0"  # the solver consumes data predictions

    @property
    def history_length(self) -> int:
        """Number of past predictions the update uses."""
        return self.order - 1

    def check_grid(self, rho) -> None:
        """Raises ValueError if the noise-scale function is invalid on the grid's noise levels."""
        check_noise_scale(self.noise_scale, self.eta, rho)

    def coefficients(self, alpha, sigma) -> StepCoefficients:
        """Coefficients of every step for a grid with values ``alpha``, ``sigma`` (length N + 1).

        Order ``min(order, i + 1)`` at step ``i`` (warm-up), and order 1 for a last step to
        ``sigma = 0``, which is the denoising step ``x = alpha x0_hat + (1 - alpha) mu``.
        """
        closed = self.closed_form

        def log_g(rho):
            if closed == "ode":
                return jnp.zeros_like(rho)
            return self.eta * self.noise_scale.log_g(rho)

        steps = alpha.shape[0] - 1
        rho = sigma / alpha
        a_t, sigma_s, sigma_t = alpha[1:], sigma[:-1], sigma[1:]
        rho_s = rho[:-1]
        clean = sigma_t == 0
        # Keep the regular branch finite (and its gradient) on a step to sigma = 0.
        rho_t = jnp.where(clean, 0.5 * rho_s, rho[1:])
        sigma_t = jnp.where(clean, 0.5 * sigma_s, sigma_t)

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

        # History: rho at s-1, s-2 (padded with distinct dummies where not yet available).
        pad = jnp.stack([2.0 * rho[0], 4.0 * rho[0]])
        rho_hist = jnp.concatenate([pad[::-1], rho_s])
        d1, dd = divided_difference_weights(rho_s, rho_hist[1:-1], rho_hist[:-2])
        d2 = 2.0 * dd  # second derivative estimate
        if self.derivative == "quadratic":
            # Derivative at rho_s of the quadratic through the last three points.
            d1_order3 = d1 + 0.5 * (rho_s - rho_hist[1:-1])[:, None] * d2
        else:
            d1_order3 = d1  # the release's backward difference (order ~2.3, MATH.md)

        index = jnp.arange(steps)
        order = jnp.where(clean, 1, jnp.minimum(self.order, index + 1))
        outputs = (
            current_only(c_0)
            + jnp.where((order == 2)[:, None], c_1[:, None] * d1, 0.0)
            + jnp.where((order == 3)[:, None], c_1[:, None] * d1_order3 + c_2[:, None] * d2, 0.0)
        )
        return StepCoefficients(
            x=jnp.where(clean, 0.0, c_x),
            outputs=jnp.where(clean[:, None], current_only(a_t), outputs),
            noise=jnp.where(clean, 0.0, noise),
        )


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
