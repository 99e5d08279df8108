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
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from .._numerics import pytree_dataclass
from .base import (
    AbstractLinearMultistep,
    StepCoefficients,
    current_only,
    data_target,
    divided_difference_weights,
    history_points,
    noise_target,
)

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


class _Rule(NamedTuple):
    """Coefficients of one (parameterization, solver) pair: ``c_x``, the weights of ``q``, of
    its first and second differences, and the noise std (before ``s_noise``)."""

    x: jnp.ndarray
    first: jnp.ndarray
    second: jnp.ndarray
    third: jnp.ndarray
    noise: jnp.ndarray


def _data_ode(a_s, a_t, s_s, s_t, h) -> _Rule:
    """DPM-Solver++ / MR data-prediction ODE (MATH.md section 4)."""
    del a_s
    phi1, phi2, phi3 = _phis(h, -1.0)
    return _Rule(s_t / s_s, -a_t * phi1, a_t * phi2, -a_t * phi3, jnp.zeros_like(h))


def _data_sde(a_s, a_t, s_s, s_t, h) -> _Rule:
    """SDE-DPM-Solver++ / MR data-prediction SDE."""
    del a_s
    p = -jnp.expm1(-2.0 * h)
    return _Rule(s_t / s_s * jnp.exp(-h), a_t * p, a_t * (1.0 - p / (2.0 * h)), jnp.zeros_like(h),
                 s_t * jnp.sqrt(p))


def _noise_ode(a_s, a_t, s_s, s_t, h) -> _Rule:
    """DPM-Solver / MR noise-prediction ODE."""
    del s_s
    phi1, phi2, phi3 = _phis(h, 1.0)
    return _Rule(a_t / a_s, -s_t * phi1, -s_t * phi2, -s_t * phi3, jnp.zeros_like(h))


def _noise_sde(a_s, a_t, s_s, s_t, h) -> _Rule:
    """MR noise-prediction SDE."""
    del s_s
    return _Rule(a_t / a_s, -2.0 * s_t * jnp.expm1(h), -2.0 * s_t * _phis(h, 1.0)[1],
                 jnp.zeros_like(h), s_t * jnp.sqrt(jnp.expm1(2.0 * h)))


_RULES = {("data", False): _data_ode, ("data", True): _data_sde,
          ("noise", False): _noise_ode, ("noise", True): _noise_sde}


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class MR(AbstractLinearMultistep):
    """An MR Sampler solver; build it with :func:`mr_ode` or :func:`mr_sde`.

    ``rule`` (the coefficient function of the (parameterization, solver) pair) and ``target``
    (the prediction it consumes) are chosen by the factory, once.
    """

    s_noise: Any = 1.0
    order: int = dataclasses.field(default=2, metadata=dict(static=True))
    sde: bool = dataclasses.field(default=False, metadata=dict(static=True))
    parameterization: str = dataclasses.field(default="data", metadata=dict(static=True))
    lower_order_below: int = dataclasses.field(default=0, metadata=dict(static=True))
    third_order: str = dataclasses.field(default="taylor", metadata=dict(static=True))
    rule: Callable = dataclasses.field(default=_data_ode, metadata=dict(static=True))
    target: Callable = dataclasses.field(default=data_target, metadata=dict(static=True))

    zero_snr = True

    @property
    def stochastic(self) -> bool:
        """Whether the solver injects noise."""
        return self.sde

    def check_grid(self, grid) -> None:
        """Raises ValueError for a zero-SNR start with noise prediction (``x0 = (x - sigma
        eps) / alpha`` is undefined at ``alpha = 0``)."""
        if grid.alpha[0] == 0 and self.parameterization == "noise":
            raise ValueError(
                "The noise-parameterized MR Sampler has no limit at alpha = 0 (a zero-SNR "
                "start): use parameterization='data', or start below t_max."
            )

    def zero_snr_coefficients(self, grid) -> StepCoefficients:
        """The first data-prediction step from ``alpha_0 = 0`` (``h = inf``).

        The ODE's ``y_t = (sigma_t/sigma_0) y_0 + alpha_t q_0``, the SDE's
        ``y_t = alpha_t q_0 + sigma_t z``.
        """
        a_t, s_0, s_t = grid.alpha[1], grid.sigma[0], grid.sigma[1]
        zero = jnp.zeros_like(a_t)
        if self.sde:
            return StepCoefficients(zero, jnp.stack([a_t, zero, zero]), self.s_noise * s_t)
        return StepCoefficients(s_t / s_0, jnp.stack([a_t, zero, zero]), zero)

    def step_orders(self, steps: int):
        """``min(order, i + 1)``, and at most ``N - i`` on grids of fewer than
        ``lower_order_below`` steps."""
        order = super().step_orders(steps)
        if steps < self.lower_order_below:
            order = jnp.minimum(order, steps - jnp.arange(steps))
        return order

    def regular_coefficients(self, grid, order) -> StepCoefficients:
        """Coefficients of every step at the per-step ``order``, in ``h = lam_t - lam_s``."""
        a_s, a_t, s_s, s_t = grid.alpha[:-1], grid.alpha[1:], grid.sigma[:-1], grid.sigma[1:]
        lam_s, lam_1, lam_2 = history_points(jnp.log(grid.alpha) - jnp.log(grid.sigma))
        h = jnp.log(a_t) - jnp.log(s_t) - lam_s

        d1, dd = divided_difference_weights(lam_s, lam_1, lam_2)
        d1_0 = h[:, None] * d1  # (q0 - q1) / r0
        d2 = h[:, None] ** 2 * dd  # (D1_0 - D1_1) / (r0 + r1)
        r0 = (lam_s - lam_1) / h
        d1_3 = d1_0 + r0[:, None] * d2  # D1 = D1_0 + r0 D2

        rule = self.rule(a_s, a_t, s_s, s_t, h)
        outputs = current_only(rule.first)
        if self.order >= 2:
            d1_used = jnp.where((order == 3)[:, None], d1_3, d1_0)
            outputs = outputs + jnp.where((order >= 2)[:, None], rule.second[:, None] * d1_used, 0.)
        if self.order == 3:
            third = 2.0 * rule.third if self.third_order == "taylor" else rule.third
            outputs = outputs + jnp.where((order == 3)[:, None], third[:, None] * d2, 0.0)
        return StepCoefficients(x=rule.x, outputs=outputs, noise=self.s_noise * rule.noise)


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
    target = data_target if parameterization == "data" else noise_target
    return MR(s_noise, order, sde, parameterization, lower_order_below, third_order,
              _RULES[parameterization, sde], target)


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
