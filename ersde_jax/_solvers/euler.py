"""Euler baselines of mean-reverting diffusion (IR-SDE), on any VP-like path.

For paths with ``alpha^2 + (sigma / sigma_inf)^2 = 1`` (VP: ``sigma_inf = 1``; IR-SDE:
``sigma_inf = max_sigma``), with ``thetabar = -log alpha``, a step from s to t spends
``d = thetabar_s - thetabar_t`` of mean reversion and ``g^2 dt = 2 sigma_inf^2 d`` of diffusion.
On consecutive IR-SDE indices ``d = theta_i dt``, which gives the release's updates (MATH.md
section 4), with ``score = -eps_hat / sigma_s``:

* Euler-Maruyama, reverse SDE: ``x_t = x_s - (theta (mu - x_s) - g^2 score) dt + g sqrt(dt) z``;
* Euler, PF-ODE: the same with ``g^2 score / 2`` and no noise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from .._numerics import pytree_dataclass
from .base import AbstractLinearMultistep, StepCoefficients, current_only, noise_target

__all__ = ["Euler", "euler_maruyama", "euler_ode"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Euler(AbstractLinearMultistep):
    """Euler(-Maruyama) on the reverse SDE or the PF-ODE of a VP-like path (noise prediction)."""

    s_noise: Any = 1.0
    sde: bool = dataclasses.field(default=True, metadata=dict(static=True))

    target = staticmethod(noise_target)

    @property
    def stochastic(self) -> bool:
        """Whether the solver injects noise."""
        return self.sde

    def check_path(self, path) -> None:
        """Raises ValueError for paths without mean reversion (``alpha`` constant, e.g. EDM)."""
        if not path.variance_preserving:
            raise ValueError(
                f"Euler baselines need a VP-like path (vp_* or ir_sde), got {type(path).__name__}."
            )

    def regular_coefficients(self, grid, order) -> StepCoefficients:
        """Per-step coefficients of the Euler(-Maruyama) update (first order)."""
        del order
        a_s, a_t, s_s = grid.alpha[:-1], grid.alpha[1:], grid.sigma[:-1]
        d = jnp.log(a_t) - jnp.log(a_s)  # thetabar_s - thetabar_t
        g2dt = 2.0 * s_s**2 / -jnp.expm1(2.0 * jnp.log(a_s)) * d  # 2 sigma_inf^2 d
        drift = g2dt / s_s if self.sde else 0.5 * g2dt / s_s
        noise = self.s_noise * jnp.sqrt(g2dt) if self.sde else jnp.zeros_like(d)
        return StepCoefficients(x=1.0 + d, outputs=current_only(-drift), noise=noise)


def euler_maruyama(*, s_noise=1.0) -> Euler:
    """Euler-Maruyama on the reverse SDE (the IR-SDE sampler; 100 NFE in the release)."""
    return Euler(s_noise, True)


def euler_ode() -> Euler:
    """Euler on the probability-flow ODE."""
    return Euler(0.0, False)
