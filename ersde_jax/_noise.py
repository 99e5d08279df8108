"""Noise sources of the stochastic solvers: where each step's standard normal ``z`` comes from.

A noise source is a small static object the driver asks, once per run, for its carried state and
per-step inputs (:meth:`init`) and, once per step, for ``z`` (:meth:`draw`). The randomness is a
pure function of the key and the grid, never hidden in a solver.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import _brownian
from ._grid import Grid

__all__ = ["IndependentNoise", "BrownianNoise"]


def _normal(key, step, shape, dtype, per_sample):
    if per_sample:
        draw = lambda k: jax.random.normal(jax.random.fold_in(k, step), shape[1:], dtype)  # noqa: E731
        return jax.vmap(draw)(key)
    return jax.random.normal(jax.random.fold_in(key, step), shape, dtype)


@dataclasses.dataclass(frozen=True)
class IndependentNoise:
    """An independent draw per step: ``z_i = normal(fold_in(key, i))`` (the default).

    With one key per sample, sample ``j`` draws from ``fold_in(key[j], i)`` and depends on its
    own key only.
    """

    def check_grid(self, grid: Grid) -> None:
        """Any grid will do."""
        del grid

    def grid_is_valid(self, grid: Grid):
        """Any grid will do."""
        del grid
        return jnp.bool_(True)

    def init(self, key, grid: Grid, shape, dtype, per_sample):
        """No carried state; the step index is the per-step input."""
        del key, shape, dtype, per_sample
        return None, jnp.arange(grid.steps)

    def draw(self, key, step, state, shape, dtype, per_sample):
        """``(z, state)`` of step ``step``."""
        return _normal(key, step, shape, dtype, per_sample), state


@dataclasses.dataclass(frozen=True)
class BrownianNoise:
    """Standardised increments of one virtual Brownian motion in the clock ``log(sigma/alpha)``.

    A key gives the same noise path at every step count, so samples converge pathwise as the
    grid is refined (``ersde_jax._brownian``); costs 25 normal draws per step and is not
    differentiated with respect to the grid. Noise levels must lie in ``[e^-16, e^16]`` (or be
    0): a ValueError for a concrete grid, NaN samples for a traced one.
    """

    def check_grid(self, grid: Grid) -> None:
        """Raises ValueError for noise levels outside the clock's range."""
        _brownian.check_clock(grid.rho)

    def grid_is_valid(self, grid: Grid):
        """Traced check of the clock's range."""
        return _brownian.clock_is_valid(grid.rho)

    def init(self, key, grid: Grid, shape, dtype, per_sample):
        """``W`` at the start, and each step's clock interval."""
        clock = _brownian.clock(grid.rho)
        w0 = _brownian.start(key, clock[0], shape, dtype, per_sample)
        return w0, (clock[:-1], clock[1:])

    def draw(self, key, interval, w, shape, dtype, per_sample):
        """The step's standardised increment and ``W`` at its end."""
        return _brownian.increment(key, *interval, w, shape, dtype, per_sample)
