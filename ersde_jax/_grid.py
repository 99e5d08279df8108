"""The time grid of a sampler run: model times and the path's coefficients on them.

A grid for ``steps`` network evaluations is a strictly decreasing array of ``steps + 1`` model
times; the network is called at the first ``steps`` and the sampler lands on the last. It is
validated once, before tracing (:func:`resolve_timesteps`), and its coefficients are computed
once, inside the compiled sampler (:meth:`Grid.on`), for every consumer: the solver's tables,
the noise source's clock and the run-time validity check of a traced grid.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ._numerics import eval_f64, is_concrete
from ._path import GaussianPath
from ._timesteps import check_steps, check_timesteps, karras, trailing, uniform_t

__all__ = ["Grid", "default_timesteps", "resolve_timesteps", "DEFAULT_STEPS"]

DEFAULT_STEPS = 20


class Grid(NamedTuple):
    """A grid of ``steps + 1`` model times and the path's coefficients there (a pytree).

    Computed in the grid's precision (float64 when x64 is on), whatever the model's dtype.
    """

    t: jnp.ndarray  # (steps + 1,) decreasing model times
    alpha: jnp.ndarray  # (steps + 1,) alpha_t
    sigma: jnp.ndarray  # (steps + 1,) sigma_t (0 only at a last, clean point)
    rho: jnp.ndarray  # (steps + 1,) sigma_t / alpha_t, the noise level of x / alpha

    @classmethod
    def on(cls, path: GaussianPath, t) -> Grid:
        """The grid of model times ``t`` on ``path``."""
        return cls.from_values(path.alpha(t), path.sigma(t), t)

    @classmethod
    def from_values(cls, alpha, sigma, t=None) -> Grid:
        """A grid given by its coefficients (``t`` defaults to the step index, for tables).

        ``rho = inf`` where ``alpha = 0`` (a zero-SNR start), with a zero derivative there.
        """
        alpha, sigma = jnp.asarray(alpha), jnp.asarray(sigma)
        t = jnp.arange(alpha.shape[0], 0, -1, dtype=alpha.dtype) if t is None else t
        pure_noise = alpha == 0
        rho = jnp.where(pure_noise, jnp.inf, sigma / jnp.where(pure_noise, 1.0, alpha))
        return cls(t, alpha, sigma, rho)

    @property
    def steps(self) -> int:
        """Number of steps (intervals) of the grid."""
        return self.t.shape[0] - 1

    @property
    def clean(self) -> jnp.ndarray:
        """(steps,) bool: the step lands on ``sigma = 0`` (the denoising step)."""
        return self.sigma[1:] == 0

    @property
    def zero_snr_start(self) -> jnp.ndarray:
        """() bool: the grid starts from pure noise, ``alpha = 0`` (``rho = inf``)."""
        return self.alpha[0] == 0

    def is_valid(self) -> jnp.ndarray:
        """Traced check of a grid that could not be validated before tracing."""
        return jnp.all(jnp.isfinite(self.t)) & jnp.all(jnp.diff(self.t) < 0)


_GRIDS = {"karras": karras, "uniform_t": uniform_t}


def default_timesteps(path: GaussianPath, steps: int) -> np.ndarray:
    """The default grid of a path family, ending at the clean time.

    Karras (rho = 7) in ``sigma / alpha`` (EDM, VP, IR-SDE); uniform model time on flow paths,
    which measured best at NFE 10-20 there (``benchmarks/flow_grids.py``: first in 20 of 30
    comparisons, Karras in none). A discrete path that starts from pure noise
    (``alpha(t_max) = 0``), where no grid in ``rho`` reaches the start, gets "trailing" (it
    includes index T, as zero-terminal-SNR models are sampled).
    """
    if path.is_discrete and path.zero_snr_start:
        return trailing(path, steps)
    return _GRIDS[path.default_grid](path, steps)


def resolve_timesteps(path: GaussianPath, steps, timesteps):
    """The validated grid of a run: ``(steps, t, concrete_grid)``.

    Args:
        path: the model's path.
        steps: number of steps, or None (default 20, or ``len(timesteps) - 1``).
        timesteps: a decreasing grid of ``steps + 1`` model times, or None for
            :func:`default_timesteps`.

    Returns:
        ``steps`` (int), ``t`` (numpy float64 when concrete, else the tracer) and, for a concrete
        grid, ``Grid.on(path, t)`` evaluated in float64 numpy (for the solver's and the noise
        source's checks); None for a traced grid, which the sampler checks at run time.
    """
    if steps is None:
        steps = DEFAULT_STEPS if timesteps is None else np.shape(timesteps)[0] - 1
    steps = check_steps(steps)
    if timesteps is None:
        t = default_timesteps(path, steps)
    else:
        t = check_timesteps(path, timesteps, steps)
    if not is_concrete(t):
        return steps, t, None
    values = Grid(*(eval_f64(fn, t) for fn in (lambda s: s, path.alpha, path.sigma, path.rho)))
    return steps, t, values
