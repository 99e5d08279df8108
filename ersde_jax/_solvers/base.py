"""The solver interface of the driver, and the base of the exponential-integrator solvers.

A solver is an immutable pytree that the one ``lax.scan`` of :func:`ersde_jax.sample` drives
(:class:`AbstractSolver`): per-step tables computed once from the :class:`~ersde_jax.Grid`, a
state carried between steps, and a step that calls ``denoise(y, t, alpha, sigma) -> Denoised``
once or more. Register a solver of your own with :func:`ersde_jax.pytree_dataclass`, whose tree
structure names the class (``jax.jit`` tells compiled programs apart by it).

ER-SDE-Solvers and the MR Sampler (and DDIM, DPM-Solver++, Euler as their special cases) share one
step, :class:`AbstractLinearMultistep`, which advances the centred state ``y = x - mu`` by

    y_t = c_x y_s + w_0 q_s + w_1 q_{s-1} + w_2 q_{s-2} + c_z z,    z ~ N(0, I),

where ``q`` is the network's data prediction ``x0_hat - mu`` or noise prediction ``eps_hat`` at
the last three grid points. The coefficients depend only on the grid, so such a solver is a pure
function from the grid to a :class:`StepCoefficients` table; its step is Gaussian given the past,
``N(mean, c_z^2 I)`` (:meth:`AbstractLinearMultistep.transition`). The base owns the history of
predictions, the warm-up orders and the denoising step to ``sigma = 0``; a concrete solver
supplies only its regular coefficients.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from .._grid import Grid
from .._prediction import Denoised
from .._timesteps import check_steps

__all__ = [
    "AbstractSolver", "AbstractLinearMultistep", "StepCoefficients", "StepOutput", "LinearTable",
    "data_target", "noise_target", "current_only", "history_points", "divided_difference_weights",
]


class StepOutput(NamedTuple):
    """What a step reports besides the new state."""

    t: jnp.ndarray  # () model time of the step's first network call
    denoised: Denoised  # the predictions of that call (centred)
    nfe: Any  # () int, network evaluations the step made


class AbstractSolver(abc.ABC):
    """The interface every solver implements.

    Attributes:
        stochastic: whether a step consumes a standard normal ``z`` shaped like the state (a
            static field or property of the concrete solver).
        gaussian: whether a step is Gaussian given the state and the solver's history, with
            :meth:`transition` (needed by ``log_prob`` and :func:`ersde_jax.transition_log_prob`).
    """

    stochastic: bool = False
    gaussian: ClassVar[bool] = False

    def nfe(self, steps: int) -> int:
        """Network evaluations on a grid of ``steps`` steps ending at ``sigma = 0``: one each."""
        return check_steps(steps)

    def steps_for_nfe(self, nfe: int) -> int:
        """The number of steps that uses at most ``nfe`` network evaluations."""
        return check_steps(nfe)

    def check_path(self, path) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raises ValueError if the solver cannot run on ``path`` (before tracing)."""

    def check_grid(self, grid: Grid) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raises ValueError if the solver cannot run on a concrete ``grid`` (float64 numpy)."""

    @abc.abstractmethod
    def tables(self, path, grid: Grid, dtype) -> Any:
        """Everything a step needs that depends only on the grid: a pytree with a leading axis of
        ``steps``, computed once, outside the scan, in the grid's precision then cast to
        ``dtype`` where it multiplies the state."""

    @abc.abstractmethod
    def init(self, y) -> Any:
        """The state carried between steps, for the starting state ``y``."""

    @abc.abstractmethod
    def step(self, denoise, y, state, row, z):
        """One step: ``(y_next, state, StepOutput)``; ``z`` is None for a deterministic solver."""

    def transition(self, denoise, y, state, row):
        """The step's Gaussian law ``(mean, std, state, StepOutput)`` (``gaussian`` solvers)."""
        raise NotImplementedError(f"{type(self).__name__} has no Gaussian transition.")


class StepCoefficients(NamedTuple):
    """Coefficients of every step of a linear multistep sampler."""

    x: jnp.ndarray  # (steps,) multiplies the centred state y_s
    outputs: jnp.ndarray  # (steps, 3) multiply the predictions q at s, s-1, s-2
    noise: jnp.ndarray  # (steps,) standard deviation of the injected Gaussian noise


class LinearTable(NamedTuple):
    """Per-step inputs of a linear multistep step (leading axis: steps)."""

    t: jnp.ndarray  # (steps,) model times of the network calls
    alpha: jnp.ndarray  # (steps,) alpha at those times (state dtype)
    sigma: jnp.ndarray  # (steps,) sigma at those times (state dtype)
    coefficients: StepCoefficients


def data_target(denoised: Denoised):
    """The data prediction ``x0_hat - mu``: the ``q`` of data-prediction solvers."""
    return denoised.x0


def noise_target(denoised: Denoised):
    """The noise prediction ``eps_hat``: the ``q`` of noise-prediction solvers."""
    return denoised.eps


def _finite_stand_in(grid: Grid) -> Grid:
    """The grid with its infinite-SNR ends replaced by finite stand-ins.

    A clean last point (``sigma = 0``) becomes ``rho = rho_prev / e``, a pure-noise first point
    (``alpha = 0``) ``rho = e rho_next``. The regular coefficients of those steps are replaced
    (by the denoising step, and by the zero-SNR limit), and the history of a pure-noise point is
    never used; the stand-ins keep values and derivatives finite, so the replacement leaves no NaN.
    """
    clean, pure_noise = grid.sigma == 0, grid.alpha == 0
    rho_prev = jnp.concatenate([grid.rho[:1], grid.rho[:-1]])
    rho_next = jnp.concatenate([grid.rho[1:], grid.rho[-1:]])
    rho = jnp.where(clean, rho_prev * jnp.exp(-1.0), grid.rho)
    rho = jnp.where(pure_noise, rho_next * jnp.e, rho)
    sigma = jnp.where(clean, grid.alpha * rho, grid.sigma)
    alpha = jnp.where(pure_noise, sigma / rho, grid.alpha)
    return Grid(grid.t, alpha, sigma, rho)


class AbstractLinearMultistep(AbstractSolver):
    """Base of the solvers whose step is linear in the state, predictions and noise.

    A subclass provides ``order`` (history of ``order - 1`` predictions), ``target``
    (:func:`data_target` or :func:`noise_target`, chosen at construction), ``stochastic`` and
    :meth:`regular_coefficients`. The base applies the warm-up orders (:meth:`step_orders`),
    replaces every step to ``sigma = 0`` by the denoising step ``y_t = alpha_t x0_hat``, keeps
    the history and draws nothing itself.
    """

    gaussian: ClassVar[bool] = True
    zero_snr: ClassVar[bool] = False  # implements zero_snr_coefficients
    order: int = 1
    target: Any = staticmethod(data_target)

    @property
    def history_length(self) -> int:
        """Number of past predictions the update uses."""
        return self.order - 1

    def step_orders(self, steps: int) -> jnp.ndarray:
        """(steps,) order of each step: ``min(order, i + 1)`` (the warm-up)."""
        return jnp.minimum(self.order, jnp.arange(steps) + 1)

    def check_grid(self, grid: Grid) -> None:
        """Raises ValueError for a zero-SNR start if the solver has no limit there."""
        if grid.alpha[0] == 0 and not self.zero_snr:
            raise ValueError(
                f"{type(self).__name__} has no limit at alpha = 0 (a zero-SNR start): use "
                "er_sde, ddim, mr_ode / mr_sde with parameterization='data', or start below "
                "t_max."
            )

    def zero_snr_coefficients(self, grid: Grid) -> StepCoefficients:
        """The first step's coefficients from ``alpha = 0`` (scalars; ``outputs`` of shape (3,)),
        the exact limit of the regular step as ``rho_s -> inf`` (solvers with ``zero_snr``)."""
        raise NotImplementedError(f"{type(self).__name__} has no zero-SNR limit.")

    @abc.abstractmethod
    def regular_coefficients(self, grid: Grid, order) -> StepCoefficients:
        """Coefficients of every step of ``grid`` at the per-step ``order`` (an int array).

        A step to ``sigma = 0`` arrives here with a finite stand-in end point; its coefficients
        are replaced by the denoising step, so they need only be finite.
        """

    def coefficients(self, grid: Grid) -> StepCoefficients:
        """The coefficient table of every step of ``grid``, denoising step included.

        From a zero-SNR start (``alpha_0 = 0``) the first step is its exact limit
        (:meth:`zero_snr_coefficients`) and the warm-up is one step longer: every difference
        with the prediction at ``rho_0 = inf`` vanishes in the limit.
        """
        orders = self.step_orders(grid.steps)
        index = jnp.arange(grid.steps)
        if self.zero_snr:
            shifted = jnp.minimum(orders, jnp.maximum(index, 1))
            orders = jnp.where(grid.zero_snr_start, shifted, orders)
        stand_in = _finite_stand_in(grid)
        table = self.regular_coefficients(stand_in, orders)
        if self.zero_snr:
            first = self.zero_snr_coefficients(stand_in)
            start = (index == 0) & grid.zero_snr_start
            table = StepCoefficients(
                x=jnp.where(start, first.x, table.x),
                outputs=jnp.where(start[:, None], first.outputs, table.outputs),
                noise=jnp.where(start, first.noise, table.noise),
            )
        a_s, a_t, s_s = grid.alpha[:-1], grid.alpha[1:], grid.sigma[:-1]
        if self.target is data_target:
            den_x, den_q = jnp.zeros_like(a_t), a_t
        else:  # x0_hat = (y - sigma eps_hat) / alpha
            den_x, den_q = a_t / a_s, -a_t * s_s / a_s
        clean = grid.clean
        return StepCoefficients(
            x=jnp.where(clean, den_x, table.x),
            outputs=jnp.where(clean[:, None], current_only(den_q), table.outputs),
            noise=jnp.where(clean, 0.0, table.noise),
        )

    def tables(self, path, grid: Grid, dtype) -> LinearTable:
        """The coefficient table of ``grid``, cast to the state's ``dtype``."""
        del path
        coefs = jax.tree_util.tree_map(lambda c: c.astype(dtype), self.coefficients(grid))
        return LinearTable(grid.t[:-1], grid.alpha[:-1].astype(dtype),
                           grid.sigma[:-1].astype(dtype), coefs)

    def init(self, y) -> tuple:
        """The history of past predictions (zeros until filled)."""
        return tuple(jnp.zeros_like(y) for _ in range(self.history_length))

    def transition(self, denoise, y, history, row: LinearTable):
        """The step's Gaussian law ``N(mean, std^2 I)`` given the state and the history.

        Returns:
            ``(mean, std, history, output)``; ``std`` is the scalar ``c_z`` of the step.
        """
        denoised = denoise(y, row.t, row.alpha, row.sigma)
        q = self.target(denoised)
        c = row.coefficients
        mean = c.x * y + c.outputs[0] * q
        for j, q_old in enumerate(history):
            mean = mean + c.outputs[j + 1] * q_old
        history = (q, *history)[: self.history_length]
        return mean, c.noise, history, StepOutput(row.t, denoised, 1)

    def step(self, denoise, y, history, row: LinearTable, z):
        """``y_next = mean + c_z z`` (no noise term for a deterministic solver)."""
        mean, std, history, output = self.transition(denoise, y, history, row)
        y_next = mean if z is None else mean + std * z
        return y_next, history, output


def current_only(weight):
    """Output weights (steps, 3) that use only the current prediction ``q_s``, with ``weight``."""
    return jnp.stack([weight, jnp.zeros_like(weight), jnp.zeros_like(weight)], axis=-1)


def history_points(u):
    """``(u_s, u_{s-1}, u_{s-2})`` per step of a coordinate ``u`` on the grid (length N + 1).

    Points before the grid's start do not exist; the warm-up orders never use them, and they are
    padded by continuing the grid's direction, ``u_0 - d``, ``u_0 - 2 d`` with ``d = u_1 - u_0``,
    so that no divided difference divides by zero (not even in a masked branch's derivative).
    """
    u_s = u[:-1]
    d = u[1] - u[0]
    padded = jnp.concatenate([jnp.stack([u[0] - 2.0 * d, u[0] - d]), u_s])
    return u_s, padded[1:-1], padded[:-2]


def divided_difference_weights(u_s, u_1, u_2):
    """Weights on ``(q_s, q_{s-1}, q_{s-2})`` of the backward divided differences in ``u``.

    Args:
        u_s, u_1, u_2: the coordinate (rho or lambda) at s, s-1 and s-2, shape (steps,). Entries
            that a step does not use must still be distinct (:func:`history_points` pads them).

    Returns:
        ``(d1, dd)``, each (steps, 3): ``d1 = (q_s - q_{s-1})/(u_s - u_{s-1})`` and the second
        divided difference ``dd = (d1 - d1_prev)/(u_s - u_{s-2})``, where
        ``d1_prev = (q_{s-1} - q_{s-2})/(u_{s-1} - u_{s-2})``.
    """
    zero = jnp.zeros_like(u_s)
    h1, h2 = u_s - u_1, u_1 - u_2
    d1 = jnp.stack([1 / h1, -1 / h1, zero], axis=-1)
    d1_prev = jnp.stack([zero, 1 / h2, -1 / h2], axis=-1)
    dd = (d1 - d1_prev) / (h1 + h2)[:, None]
    return d1, dd
