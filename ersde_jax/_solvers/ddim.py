"""DDIM (Song et al. 2021, eq. 12) with stochasticity ``eta``, on any Gaussian path.

    x_t = alpha_t x0_hat + sqrt(sigma_t^2 - c^2) eps_hat + c z,
    c = eta sigma_t sqrt(1 - (alpha_s sigma_t / (alpha_t sigma_s))^2),

applied to ``x - mu``. ``eta = 0`` is the deterministic DDIM (= ER-SDE-Solver-1 with "ode") and
``eta = 1`` the ancestral step with the exact forward posterior (= ER-SDE-Solver-1 with "sde").
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .._pytree import pytree_dataclass
from .._sqrt import safe_sqrt
from .base import LinearMultistep, StepCoefficients, current_only

__all__ = ["DDIM", "ddim"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class DDIM(LinearMultistep):
    """DDIM with stochasticity ``eta`` (a pytree leaf, differentiable)."""

    eta: Any = 0.0
    stochastic: bool = dataclasses.field(default=False, metadata=dict(static=True))

    target = "x0"
    history_length = 0

    def coefficients(self, alpha, sigma) -> StepCoefficients:
        """Per-step coefficients; a step to ``sigma = 0`` is the denoising step."""
        a_s, a_t, s_s, s_t = alpha[:-1], alpha[1:], sigma[:-1], sigma[1:]
        ratio = (a_s * s_t) / (a_t * s_s)  # <= 1 on a decreasing grid
        c = self.eta * s_t * safe_sqrt(1.0 - ratio**2)
        keep = safe_sqrt(s_t**2 - c**2) / s_s  # multiplies eps_hat
        return StepCoefficients(x=keep, outputs=current_only(a_t - keep * a_s), noise=c)


def ddim(eta=0.0) -> DDIM:
    """Builds DDIM; ``eta = 0`` deterministic, ``eta = 1`` ancestral sampling.

    Args:
        eta: stochasticity in [0, 1] (a Python number decides whether noise is drawn at all).

    Raises:
        ValueError: for a concrete ``eta`` outside [0, 1].
    """
    concrete = isinstance(eta, (int, float))
    if concrete and not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}.")
    return DDIM(eta, not (concrete and eta == 0.0))
