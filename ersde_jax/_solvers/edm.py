"""EDM's samplers (Karras et al. 2022, "Elucidating the design space of diffusion-based
generative models"), Heun (Algorithm 1) and stochastic (Algorithm 2), on any Gaussian path.

EDM integrates the probability-flow ODE ``dx/dsigma = (x - D(x; sigma)) / sigma`` (eq. 3 with
``sigma(t) = t``, ``s(t) = 1``). On any path the same ODE holds in the scaled coordinates
``xbar = (x - mu) / alpha`` and ``rho = sigma / alpha``: ``xbar = x0 + rho eps``, so
``dxbar/drho = eps_hat(xbar; rho)``. On ``edm`` (``alpha = 1``) this is EDM exactly.

* Heun: ``d = eps_hat(xbar_i; rho_i)``, Euler predictor ``xbar' = xbar_i + (rho_{i+1} - rho_i) d``
  and, unless ``rho_{i+1} = 0``, the trapezoidal corrector ``xbar_{i+1} = xbar_i +
  (rho_{i+1} - rho_i) (d + d') / 2`` with ``d' = eps_hat(xbar'; rho_{i+1})``: 2N - 1 network
  evaluations on a grid of N steps ending at ``sigma = 0``.
* Stochastic: ``gamma_i = min(S_churn / N, sqrt(2) - 1)`` where ``S_min <= rho_i <= S_max`` (0
  elsewhere); noise raises the level to ``rho_hat = rho_i (1 + gamma_i)``,
  ``xbar_hat = xbar_i + S_noise sqrt(rho_hat^2 - rho_i^2) z``, and the Heun step runs from
  ``(xbar_hat, rho_hat)`` to ``rho_{i+1}``. The network is called at the off-grid model time
  ``t_hat = path.t_from_rho(rho_hat)`` (``rho_hat`` is then read back from the path, so
  the state's noise level is the one the network is told).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import is_concrete, pytree_dataclass, safe_sqrt
from .._timesteps import check_steps
from .base import AbstractSolver, StepOutput

__all__ = ["EDM", "EDMTable", "edm_heun", "edm_stochastic"]


class EDMTable(NamedTuple):
    """Per-step inputs of an EDM step (leading axis: steps)."""

    t: jnp.ndarray  # (steps,) model time of the first network call (t_hat)
    alpha: jnp.ndarray  # (steps,) alpha(t_hat)
    sigma: jnp.ndarray  # (steps,) sigma(t_hat)
    inv_alpha: jnp.ndarray  # (steps,) 1 / alpha at the grid point (scales the state)
    noise: jnp.ndarray  # (steps,) S_noise sqrt(rho_hat^2 - rho_i^2), in scaled coordinates
    h: jnp.ndarray  # (steps,) rho_{i+1} - rho_hat
    t_next: jnp.ndarray  # (steps,) model time of the corrector's call
    alpha_next: jnp.ndarray  # (steps,) alpha there
    sigma_next: jnp.ndarray  # (steps,) sigma there
    alpha_end: jnp.ndarray  # (steps,) alpha at the next grid point (unscales the state)
    clean: jnp.ndarray  # (steps,) bool: the step ends at sigma = 0 (no corrector)


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class EDM(AbstractSolver):
    """EDM's Heun sampler with optional churn; build it with :func:`edm_heun` or
    :func:`edm_stochastic`. ``s_churn``, ``s_min``, ``s_max`` and ``s_noise`` are pytree leaves.
    """

    s_churn: Any = 0.0
    s_min: Any = 0.0
    s_max: Any = math.inf
    s_noise: Any = 1.0
    stochastic: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def nfe(self, steps: int) -> int:
        """Network evaluations on a grid of ``steps`` steps ending at ``sigma = 0``: 2N - 1.

        A grid ending above ``sigma = 0`` costs 2N (the last step is corrected too).
        """
        return 2 * check_steps(steps) - 1

    def steps_for_nfe(self, nfe: int) -> int:
        """The most steps whose :meth:`nfe` is at most ``nfe`` (``(nfe + 1) // 2``)."""
        return check_steps((check_steps(nfe) + 1) // 2)

    def check_grid(self, grid) -> None:
        """Raises ValueError for a zero-SNR start: the scaled state ``x / alpha`` is undefined."""
        if grid.alpha[0] == 0:
            raise ValueError("EDM's samplers integrate x / alpha, undefined at alpha = 0 (a "
                             "zero-SNR start): use er_sde, ddim or mr_ode, or start below t_max.")

    def tables(self, path, grid, dtype) -> EDMTable:
        """Churn, off-grid call times and step sizes of the grid (``steps + 1`` times)."""
        steps = grid.steps
        t, alpha, sigma, rho = grid
        rho_i, t_i = rho[:-1], t[:-1]
        if self.stochastic:
            inside = (rho_i >= self.s_min) & (rho_i <= self.s_max)
            gamma = jnp.where(inside, jnp.minimum(self.s_churn / steps, math.sqrt(2.0) - 1), 0.0)
            churned = gamma > 0
            lam_hat = -jnp.log(rho_i) - jnp.log1p(jnp.where(churned, gamma, 0.0))
            t_hat = jnp.where(churned, path.t_from_lambda(lam_hat), t_i)
        else:
            churned, t_hat = jnp.zeros(steps, bool), t_i
        a_hat, s_hat = path.alpha(t_hat), path.sigma(t_hat)
        # Without churn rho_hat is the grid's own rho (recomputing it could round differently),
        # and (a - b)(a + b) is then exactly 0 (a fused a^2 - b^2 would leave rounding error).
        rho_hat = jnp.where(churned, s_hat / a_hat, rho_i)
        noise = self.s_noise * safe_sqrt((rho_hat - rho_i) * (rho_hat + rho_i))
        clean = sigma[1:] == 0
        # The corrector is skipped on a step to sigma = 0; give its (unused) call a safe time.
        t_next = jnp.where(clean, t_hat, t[1:])
        a_next, s_next = path.alpha(t_next), path.sigma(t_next)
        cast = lambda v: v.astype(dtype)  # noqa: E731
        return EDMTable(
            t_hat, cast(a_hat), cast(s_hat), cast(1.0 / alpha[:-1]), cast(noise),
            cast(rho[1:] - rho_hat), t_next, cast(a_next), cast(s_next), cast(alpha[1:]), clean,
        )

    def init(self, y) -> tuple:
        """EDM carries no state between steps."""
        del y
        return ()

    def step(self, denoise, y, state, row: EDMTable, z):
        """One step of Algorithm 2 (Algorithm 1 when ``z`` is None), in scaled coordinates."""
        xbar = y * row.inv_alpha
        if z is not None:
            xbar = xbar + row.noise * z
        first = denoise(row.alpha * xbar, row.t, row.alpha, row.sigma)
        euler = xbar + row.h * first.eps

        def heun(euler):
            second = denoise(row.alpha_next * euler, row.t_next, row.alpha_next, row.sigma_next)
            return xbar + row.h * (0.5 * first.eps + 0.5 * second.eps)

        xbar_next = jax.lax.cond(row.clean, lambda e: e, heun, euler)
        nfe = jnp.where(row.clean, 1, 2).astype(jnp.int32)
        return row.alpha_end * xbar_next, state, StepOutput(row.t, first, nfe)


def _check_nonnegative(name, value):
    if is_concrete(value) and not np.all(np.asarray(value, np.float64) >= 0):
        raise ValueError(f"{name} must be >= 0, got {value}.")


def edm_heun() -> EDM:
    """EDM's deterministic Heun sampler (Karras et al. 2022, Algorithm 1), 2N - 1 NFE.

    Example:
        >>> solver = ej.edm_heun()
        >>> res = ej.sample(key, model, x_T, solver, steps=solver.steps_for_nfe(19))  # N = 10
    """
    return EDM(0.0, 0.0, math.inf, 1.0, False)


def edm_stochastic(s_churn=40.0, s_min=0.05, s_max=50.0, s_noise=1.003) -> EDM:
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), 2N - 1 NFE.

    The defaults are EDM's ImageNet-64 setting (Table 5). ``s_min``, ``s_max`` bound the noise
    levels ``rho = sigma / alpha`` (sigma on ``edm``) where churn is added. Churn at the first
    grid level asks for a noise level above the start (``rho_hat = rho_0 (1 + gamma)``), as in
    Algorithm 2: on ``edm`` the network is then called above ``sigma_max``; index paths
    (``vp_discrete``, ``ir_sde``) clamp ``t_hat`` to their last index, so that step gets no
    churn; continuous VP paths evaluate their schedule beyond ``t_max``. Keep ``s_max`` below
    the start's noise level (as the default 50 < 80 does) to stay inside the trained range.

    Args:
        s_churn: total churn; each step adds ``gamma = min(s_churn / N, sqrt(2) - 1)``.
        s_min, s_max: churn only at grid levels in ``[s_min, s_max]``.
        s_noise: multiplies the added noise (slightly above 1 in EDM).

    Raises:
        ValueError: for concrete negative values or ``s_min > s_max``.
    """
    for name, value in (("s_churn", s_churn), ("s_min", s_min), ("s_max", s_max),
                        ("s_noise", s_noise)):
        _check_nonnegative(name, value)
    if is_concrete((s_min, s_max)) and not np.all(np.asarray(s_min) <= np.asarray(s_max)):
        raise ValueError(f"s_min must be <= s_max, got {s_min} > {s_max}.")
    stochastic = not (is_concrete(s_churn) and np.all(np.asarray(s_churn) == 0))
    return EDM(s_churn, s_min, s_max, s_noise, stochastic)
