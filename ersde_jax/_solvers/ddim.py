"""DDIM (Song et al. 2021, eq. 12) with stochasticity ``eta``, on any Gaussian path.

    x_t = alpha_t x0_hat + sqrt(sigma_t^2 - c^2) eps_hat + c z,
    c = eta sigma_t sqrt(1 - (alpha_s sigma_t / (alpha_t sigma_s))^2),

applied to ``x - mu``. ``eta = 0`` is the deterministic DDIM (= ER-SDE-Solver-1 with "ode") and
``eta = 1`` the ancestral step with the exact forward posterior (= ER-SDE-Solver-1 with "sde").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._numerics import is_concrete, pytree_dataclass, safe_sqrt
from .base import AbstractLinearMultistep, StepCoefficients, current_only

__all__ = ["DDIM", "ddim"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class DDIM(AbstractLinearMultistep):
    """DDIM with stochasticity ``eta`` (a pytree leaf, differentiable)."""

    eta: Any = 0.0
    stochastic: bool = dataclasses.field(default=False, metadata=dict(static=True))

    zero_snr = True

    def zero_snr_coefficients(self, grid) -> StepCoefficients:
        """The first step from ``alpha_0 = 0``: ``c = eta sigma_t``, and ``x0_hat`` enters with
        ``alpha_t`` (the ratio ``alpha_0 sigma_t / (alpha_t sigma_0)`` vanishes)."""
        a_t, s_0, s_t = grid.alpha[1], grid.sigma[0], grid.sigma[1]
        c = self.eta * s_t
        keep = safe_sqrt(s_t**2 - c**2)
        zero = jnp.zeros_like(a_t)
        return StepCoefficients(keep / s_0, jnp.stack([a_t, zero, zero]), c)

    def regular_coefficients(self, grid, order) -> StepCoefficients:
        """Per-step coefficients of eq. 12 (first order: ``order`` is all ones)."""
        del order
        a_s, a_t, s_s, s_t = grid.alpha[:-1], grid.alpha[1:], grid.sigma[:-1], grid.sigma[1:]
        ratio = (a_s * s_t) / (a_t * s_s)  # <= 1 on a decreasing grid
        c = self.eta * s_t * safe_sqrt(1.0 - ratio**2)
        keep = safe_sqrt(s_t**2 - c**2) / s_s  # multiplies eps_hat
        return StepCoefficients(x=keep, outputs=current_only(a_t - keep * a_s), noise=c)


def ddim(eta=0.0) -> DDIM:
    """Builds DDIM; ``eta = 0`` deterministic, ``eta = 1`` ancestral sampling.

    Args:
        eta: stochasticity in [0, 1] (a concrete 0 draws no noise at all; a traced ``eta``
            always draws).

    Raises:
        ValueError: for a concrete ``eta`` outside [0, 1].
    """
    concrete = is_concrete(eta)
    if concrete and not np.all((np.asarray(eta) >= 0.0) & (np.asarray(eta) <= 1.0)):
        raise ValueError(f"DDIM eta must be in [0, 1], got {eta}.")
    return DDIM(eta, not (concrete and np.all(np.asarray(eta) == 0.0)))
