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

from .._pytree import pytree_dataclass
from .base import LinearMultistep, StepCoefficients, current_only

__all__ = ["Euler", "euler_maruyama", "euler_ode"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Euler(LinearMultistep):
    """Euler(-Maruyama) on the reverse SDE or the PF-ODE of a VP-like path (noise prediction)."""

    s_noise: Any = 1.0
    sde: bool = dataclasses.field(default=True, metadata=dict(static=True))

    target = "eps"
    history_length = 0

    @property
    def stochastic(self) -> bool:
        """Whether the solver injects noise."""
        return self.sde

    def check_path(self, path) -> None:
        """Raises ValueError for paths without mean reversion (``alpha`` constant, e.g. EDM)."""
        if not hasattr(path, "log_abar") and not hasattr(path, "thetabar"):
            raise ValueError(
                f"Euler baselines need a VP-like path (vp_* or ir_sde), got {type(path).__name__}."
            )

    def coefficients(self, alpha, sigma) -> StepCoefficients:
        """Per-step coefficients; a step to ``sigma = 0`` is the denoising step."""
        a_s, a_t, s_s = alpha[:-1], alpha[1:], sigma[:-1]
        clean = sigma[1:] == 0
        d = jnp.log(a_t) - jnp.log(a_s)  # thetabar_s - thetabar_t
        g2dt = 2.0 * s_s**2 / -jnp.expm1(2.0 * jnp.log(a_s)) * d  # 2 sigma_inf^2 d
        drift = g2dt / s_s if self.sde else 0.5 * g2dt / s_s
        noise = self.s_noise * jnp.sqrt(g2dt) if self.sde else jnp.zeros_like(d)
        return StepCoefficients(
            x=jnp.where(clean, a_t / a_s, 1.0 + d),
            outputs=current_only(jnp.where(clean, -a_t * s_s / a_s, -drift)),
            noise=jnp.where(clean, 0.0, noise),
        )


def euler_maruyama(*, s_noise=1.0) -> Euler:
    """Euler-Maruyama on the reverse SDE (the IR-SDE sampler; 100 NFE in the release)."""
    return Euler(s_noise, True)


def euler_ode() -> Euler:
    """Euler on the probability-flow ODE."""
    return Euler(0.0, False)
