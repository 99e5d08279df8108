"""MR Sampler (Li et al., ICLR 2025): PF-ODE orders 1-3 and reverse-SDE orders 1-2.

Exponential integrators in the half log-SNR ``lam = log(alpha / sigma)`` with step
``h = lam_t - lam_s``, for data (``x0``) or noise (``eps``) predictions, applied to ``x - mu``
(MATH.md section 4). With ``mu = 0`` the data-prediction ODE solver is DPM-Solver++ (1S, 2M and
3M, Taylor form) and the data-prediction SDE solver is SDE-DPM-Solver++ (1, 2M).

Third order. The published third-order update (the MR release, and DPM-Solver++ 3M) weights
``D2 = (D1_0 - D1_1) / (r0 + r1)`` by ``phi_3``. Since ``D2 ~ h^2 q'' / 2`` while the Taylor term
of the exponential integral is ``h^2 phi_3 q''``, that weight is half the exact one and the method
is second order (measured slope ~2.0-2.2 on an exact Gaussian, uniform-lambda grids, N = 20-160).
``third_order="taylor"`` (default) uses ``2 phi_3`` and measures ~3.9; ``"release"`` reproduces
the published rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from .._pytree import pytree_dataclass
from .base import LinearMultistep, StepCoefficients, current_only, divided_difference_weights

__all__ = ["MR", "mr_ode", "mr_sde", "PARAMETERIZATIONS", "THIRD_ORDER_RULES"]

PARAMETERIZATIONS = ("data", "noise")
THIRD_ORDER_RULES = ("taylor", "release")
_SERIES_BELOW = 1e-2  # |h| under which phi_2, phi_3 use their Taylor series


def _phis(h, sign):
    """``phi_1 = expm1(sign h)``, ``phi_2 = phi_1/h - sign``, ``phi_3 = phi_2/h - 1/2``.

    ``sign = -1`` gives the data-prediction functions, ``+1`` the noise-prediction ones; small
    steps use the series of ``phi_2``, ``phi_3`` (no cancellation).
    """
    small = jnp.abs(h) < _SERIES_BELOW
    h_safe = jnp.where(small, 1.0, h)
    phi1 = jnp.expm1(sign * h)
    phi2_series = h / 2 + sign * h**2 / 6 + h**3 / 24 + sign * h**4 / 120
    phi3_series = sign * h / 6 + h**2 / 24 + sign * h**3 / 120 + h**4 / 720
    phi2 = jnp.where(small, phi2_series, phi1 / h_safe - sign)
    phi3 = jnp.where(small, phi3_series, phi2 / h_safe - 0.5)
    return phi1, phi2, phi3


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class MR(LinearMultistep):
    """An MR Sampler solver; build it with :func:`mr_ode` or :func:`mr_sde`."""

    s_noise: Any = 1.0
    order: int = dataclasses.field(default=2, metadata=dict(static=True))
    sde: bool = dataclasses.field(default=False, metadata=dict(static=True))
    parameterization: str = dataclasses.field(default="data", metadata=dict(static=True))
    lower_order_below: int = dataclasses.field(default=0, metadata=dict(static=True))
    third_order: str = dataclasses.field(default="taylor", metadata=dict(static=True))

    @property
    def target(self) -> str:
        """The prediction the solver consumes: "x0" or "eps"."""
        return "x0" if self.parameterization == "data" else "eps"

    @property
    def stochastic(self) -> bool:
        """Whether the solver injects noise."""
        return self.sde

    @property
    def history_length(self) -> int:
        """Number of past predictions the update uses."""
        return self.order - 1

    def coefficients(self, alpha, sigma) -> StepCoefficients:
        """Coefficients of every step on a grid with values ``alpha``, ``sigma`` (length N + 1).

        Step ``i`` has order ``min(order, i + 1)``, and at most ``N - i`` on grids of fewer than
        ``lower_order_below`` steps. A step to ``sigma = 0`` is the denoising step (``h = inf``).
        """
        steps = alpha.shape[0] - 1
        a_s, a_t, s_s = alpha[:-1], alpha[1:], sigma[:-1]
        clean = sigma[1:] == 0
        lam = jnp.log(alpha) - jnp.log(jnp.where(sigma == 0, 1.0, sigma))
        lam_s = lam[:-1]
        # On a step to sigma = 0 keep the regular branch finite with a dummy step of size 1.
        s_t = jnp.where(clean, s_s * jnp.exp(-1.0) * a_t / a_s, sigma[1:])
        h = jnp.where(clean, 1.0, lam[1:] - lam_s)

        pad = jnp.stack([lam[0] - 2.0, lam[0] - 1.0])
        lam_hist = jnp.concatenate([pad, lam_s])
        d1, dd = divided_difference_weights(lam_s, lam_hist[1:-1], lam_hist[:-2])
        d1_0 = h[:, None] * d1  # (q0 - q1) / r0
        d2 = h[:, None] ** 2 * dd  # (D1_0 - D1_1) / (r0 + r1)
        r0 = (lam_s - lam_hist[1:-1]) / h
        d1_3 = d1_0 + r0[:, None] * d2  # D1 = D1_0 + r0 D2

        noise = jnp.zeros_like(h)
        if self.parameterization == "data":
            if self.sde:
                p = -jnp.expm1(-2.0 * h)
                c_x = s_t / s_s * jnp.exp(-h)
                first = a_t * p
                second = a_t * (1.0 - p / (2.0 * h))
                noise = s_t * jnp.sqrt(p)
            else:
                phi1, phi2, phi3 = _phis(h, -1.0)
                c_x = s_t / s_s
                first, second, third = -a_t * phi1, a_t * phi2, -a_t * phi3
        else:
            if self.sde:
                em1 = jnp.expm1(h)
                c_x = a_t / a_s
                first = -2.0 * s_t * em1
                second = -2.0 * s_t * _phis(h, 1.0)[1]
                noise = s_t * jnp.sqrt(jnp.expm1(2.0 * h))
            else:
                phi1, phi2, phi3 = _phis(h, 1.0)
                c_x = a_t / a_s
                first, second, third = -s_t * phi1, -s_t * phi2, -s_t * phi3

        index = jnp.arange(steps)
        order = jnp.minimum(self.order, index + 1)
        if steps < self.lower_order_below:
            order = jnp.minimum(order, steps - index)
        order = jnp.where(clean, 1, order)
        outputs = current_only(first)
        if self.order >= 2:
            d1_used = jnp.where((order == 3)[:, None], d1_3, d1_0)
            outputs = outputs + jnp.where((order >= 2)[:, None], second[:, None] * d1_used, 0.0)
        if self.order == 3:
            third = 2.0 * third if self.third_order == "taylor" else third
            outputs = outputs + jnp.where((order == 3)[:, None], third[:, None] * d2, 0.0)

        # The denoising step x_t = alpha_t x0_hat (centred), from either prediction.
        if self.parameterization == "data":
            den_x, den_out = jnp.zeros_like(a_t), a_t
        else:
            den_x, den_out = a_t / a_s, -a_t * s_s / a_s
        return StepCoefficients(
            x=jnp.where(clean, den_x, c_x),
            outputs=jnp.where(clean[:, None], current_only(den_out), outputs),
            noise=jnp.where(clean, 0.0, self.s_noise * noise),
        )


def _build(order, sde, parameterization, s_noise, lower_order_below, max_order,
           third_order="taylor") -> MR:
    if isinstance(order, bool) or order not in range(1, max_order + 1):
        kind = "SDE" if sde else "ODE"
        raise ValueError(f"MR {kind} order must be in 1..{max_order}, got {order!r}.")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"Unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}."
        )
    if type(lower_order_below) is not int or lower_order_below < 0:
        raise ValueError(f"lower_order_below must be an int >= 0, got {lower_order_below!r}.")
    if third_order not in THIRD_ORDER_RULES:
        raise ValueError(
            f"Unknown third_order {third_order!r}; expected one of {THIRD_ORDER_RULES}."
        )
    return MR(s_noise, order, sde, parameterization, lower_order_below, third_order)


def mr_ode(order: int = 2, parameterization: str = "data", *, lower_order_below: int | None = None,
           third_order: str = "taylor") -> MR:
    """MR Sampler for the probability-flow ODE (orders 1-3).

    Args:
        order: 1, 2 or 3.
        parameterization: "data" (default, stable at few steps) or "noise".
        lower_order_below: on grids of fewer steps, step ``i`` has order at most ``N - i``
            (DPM-Solver lowers below 15). Default 10 for "data", 0 (never) for "noise": on an
            exact conditional Gaussian (third order, IR-SDE path, three grids) lowering cut the
            error at 5-8 steps for data prediction (e.g. 1.6e-1 -> 4.1e-2 at 5 Karras steps) but
            raised it at 10-14 steps, and for noise prediction mostly raised it.
        third_order: "taylor" (default, third order) or "release" (the published weight of the
            second difference, second order; see the module docstring). At NFE <= 20 the
            release rule measured as good or better in ``benchmarks/quality.py`` (its half
            weight damps the extrapolation on large steps): prefer it for few-step sampling.
    """
    if lower_order_below is None:
        lower_order_below = 10 if parameterization == "data" else 0
    return _build(order, False, parameterization, 0.0, lower_order_below, 3, third_order)


def mr_sde(order: int = 2, parameterization: str = "data", *, s_noise=1.0) -> MR:
    """MR Sampler for the reverse SDE (orders 1-2).

    Args:
        order: 1 or 2.
        parameterization: "data" or "noise".
        s_noise: multiplies the injected noise.
    """
    return _build(order, True, parameterization, s_noise, 0, 2)
