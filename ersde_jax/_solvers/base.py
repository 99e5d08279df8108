"""The solver interface of the driver, and the update shared by the exponential integrators.

A solver is an immutable pytree that the one ``lax.scan`` of :func:`ersde_jax.sample` drives:

* ``stochastic``: whether a step consumes a standard normal ``z`` shaped like the state;
* ``nfe(steps)``: network evaluations on a grid of ``steps`` steps ending at ``sigma = 0``;
* ``tables(path, t, dtype)``: everything a step needs that depends only on the grid ``t``
  (a pytree with a leading axis of ``steps``), computed once, outside the scan;
* ``init(y)``: the solver state carried between steps (e.g. past predictions);
* ``step(denoise, y, state, row, z) -> (y_next, state, StepOutput)``: one step from the centred
  state ``y = x - mu``, calling ``denoise(y, t, alpha, sigma) -> Denoised`` once or more.

A solver of your own needs a tree structure that names its class, as ``jax.jit`` tells compiled
programs apart by it: register it with ``jax.tree_util.register_pytree_with_keys`` (or
``register_pytree_node_class``). On jax 0.10, ``register_dataclass`` structures of two classes
with equal static values compare equal (see ``ersde_jax/_pytree.py``).

ER-SDE-Solvers and the MR Sampler (and DDIM, DPM-Solver++ as their special cases) share one step,
:class:`LinearMultistep`, which advances ``y`` by

    y_t = c_x y_s + w_0 q_s + w_1 q_{s-1} + w_2 q_{s-2} + c_z z,    z ~ N(0, I),

where ``q`` is the network's data prediction ``x0_hat - mu`` or noise prediction ``eps_hat`` at
the last three grid points. The coefficients depend only on the grid, so such a solver is a pure
function from ``(alpha, sigma)`` on the grid to a :class:`StepCoefficients` table, vectorised
over steps; its step is Gaussian given the past, ``N(mean, c_z^2 I)`` (:meth:`transition`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._prediction import Denoised
from .._timesteps import check_steps

__all__ = [
    "StepCoefficients", "StepOutput", "LinearTable", "LinearMultistep", "current_only",
    "divided_difference_weights",
]


class StepCoefficients(NamedTuple):
    """Coefficients of every step of a linear multistep sampler."""

    x: jnp.ndarray  # (steps,) multiplies the centred state y_s
    outputs: jnp.ndarray  # (steps, 3) multiply the predictions q at s, s-1, s-2
    noise: jnp.ndarray  # (steps,) standard deviation of the injected Gaussian noise


class StepOutput(NamedTuple):
    """What a step reports besides the new state."""

    t: jnp.ndarray  # () model time of the step's first network call
    denoised: Denoised  # the predictions of that call (centred)
    nfe: Any  # () int, network evaluations the step made


class LinearTable(NamedTuple):
    """Per-step inputs of a linear multistep step (leading axis: steps)."""

    t: jnp.ndarray  # (steps,) model times of the network calls
    alpha: jnp.ndarray  # (steps,) alpha at those times (state dtype)
    sigma: jnp.ndarray  # (steps,) sigma at those times (state dtype)
    coefficients: StepCoefficients


class LinearMultistep:
    """Mixin of the solvers defined by ``coefficients(alpha, sigma) -> StepCoefficients``.

    The class using it provides ``coefficients``, ``target`` ("x0" or "eps"), ``history_length``
    and ``stochastic``.
    """

    def nfe(self, steps: int) -> int:
        """Network evaluations on a grid of ``steps`` steps: one per step."""
        return check_steps(steps)

    def steps_for_nfe(self, nfe: int) -> int:
        """The number of steps that uses ``nfe`` network evaluations."""
        return check_steps(nfe)

    def tables(self, path, t, dtype) -> LinearTable:
        """The coefficient table of the grid ``t`` (``steps + 1`` model times)."""
        alpha, sigma = path.alpha(t), path.sigma(t)  # float64 when x64 is on
        coefs = jax.tree_util.tree_map(lambda c: c.astype(dtype), self.coefficients(alpha, sigma))
        return LinearTable(t[:-1], alpha[:-1].astype(dtype), sigma[:-1].astype(dtype), coefs)

    def init(self, y) -> tuple:
        """The history of past predictions (zeros until filled)."""
        return tuple(jnp.zeros_like(y) for _ in range(self.history_length))

    def transition(self, denoise, y, history, row: LinearTable):
        """The step's Gaussian law ``N(mean, std^2 I)`` given the state and the history.

        Returns:
            ``(mean, std, history, output)``; ``std`` is the scalar ``c_z`` of the step.
        """
        denoised = denoise(y, row.t, row.alpha, row.sigma)
        q = denoised.x0 if self.target == "x0" else denoised.eps
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


def divided_difference_weights(u_s, u_1, u_2):
    """Weights on ``(q_s, q_{s-1}, q_{s-2})`` of the backward divided differences in ``u``.

    Args:
        u_s, u_1, u_2: the coordinate (rho or lambda) at s, s-1 and s-2, shape (steps,). Entries
            that a step does not use must still be distinct (callers pad with safe values).

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
