"""The one sampling driver: a single ``lax.scan`` over the steps of a linear multistep solver."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._concrete import eval_f64, is_concrete
from ._model import Model
from ._prediction import Denoised
from ._progress import report_step
from ._timesteps import check_steps, check_timesteps, grid_is_valid, karras

__all__ = ["sample", "SampleResult", "StepInfo", "DEFAULT_STEPS"]

DEFAULT_STEPS = 20


class StepInfo(NamedTuple):
    """What a ``save_fn`` hook sees at every step (all arrays in the solver's dtype)."""

    step: jnp.ndarray  # () int, the step index
    t: jnp.ndarray  # () model time at which the network was called
    x: jnp.ndarray  # state before the step, shaped like x_T
    denoised: jnp.ndarray  # the data prediction x0_hat at t
    x_next: jnp.ndarray  # state after the step


class SampleResult(NamedTuple):
    """Result of :func:`sample`."""

    x: jnp.ndarray  # the sample, dtype of x_T
    saved: Any  # outputs of save_fn stacked over steps (leading axis = steps), or None
    finite: jnp.ndarray  # () bool: the sample is finite (a NaN/inf network output propagates)


def _check_x(x_T) -> jnp.ndarray:
    if not hasattr(x_T, "dtype") or not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise TypeError(
            f"x_T must be a floating-point array, got {getattr(x_T, 'dtype', type(x_T))}."
        )
    if jnp.ndim(x_T) < 1:
        raise ValueError("x_T must have at least one (batch) dimension.")
    return jnp.asarray(x_T)


def _per_sample_keys(key, x_T) -> bool:
    """Whether ``key`` holds one key per sample (leading axis of ``x_T``) or one for all."""
    if key is None:
        raise TypeError("key must be a jax.random key, got None.")
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    key_ndim = key.ndim if typed else key.ndim - 1
    if not typed and (key.dtype != jnp.uint32 or key.ndim < 1 or key.shape[-1] != 2):
        raise TypeError(f"key must be a jax.random key, got dtype {key.dtype}, shape {key.shape}.")
    if key_ndim == 0:
        return False
    if key_ndim == 1 and key.shape[0] == x_T.shape[0]:
        return True
    raise ValueError(
        f"key must be a single key or one key per sample ({x_T.shape[0]}), got shape {key.shape}."
    )


def _normal(key, step, shape, dtype, per_sample):
    if per_sample:
        draw = lambda k: jax.random.normal(jax.random.fold_in(k, step), shape[1:], dtype)  # noqa: E731
        return jax.vmap(draw)(key)
    return jax.random.normal(jax.random.fold_in(key, step), shape, dtype)


def _broadcast_mu(mu, x_T, dtype):
    if mu is None:
        return jnp.zeros((), dtype)
    mu = jnp.asarray(mu)
    try:
        shape = jnp.broadcast_shapes(mu.shape, x_T.shape)
    except ValueError:
        shape = None
    if shape != x_T.shape:
        raise ValueError(f"mu of shape {mu.shape} does not broadcast to x_T's shape {x_T.shape}.")
    return mu.astype(dtype)


def sample(
    key,
    model: Model,
    x_T,
    solver,
    *,
    steps: int | None = None,
    timesteps=None,
    mu=None,
    cond=None,
    save_fn: Callable[[StepInfo], Any] | None = None,
    denoised_fn: Callable | None = None,
    progress: bool = False,
    checkpoint: bool = False,
) -> SampleResult:
    """Runs ``solver`` from ``x_T`` along a time grid, as one ``lax.scan``.

    Args:
        key: a ``jax.random`` key, or one key per sample (leading axis of ``x_T``), in which case
            sample ``i`` depends on ``key[i]`` only.
        model: the :class:`Model`.
        x_T: the starting state, a floating array with a leading batch axis.
        solver: a solver pytree (e.g. :func:`er_sde`) with a ``coefficients(alpha, sigma)``
            method and a ``target`` of "x0" or "eps".
        steps: number of network evaluations (default 20, or ``len(timesteps) - 1``).
        timesteps: decreasing grid of ``steps + 1`` model times; default the Karras grid of the
            path ending at ``sigma = 0``. A traced grid is checked at run time (NaN if invalid).
        mu: the mean of a mean-reverting path (broadcast to ``x_T``); default 0.
        cond: conditioning pytree passed to ``apply_fn``; defaults to ``mu`` when ``mu`` is given.
        save_fn: optional ``save_fn(StepInfo) -> pytree`` whose outputs are stacked over steps.
        denoised_fn: optional transform of the data prediction ``x0_hat`` (shaped like ``x_T``)
            applied before the solver uses it, e.g. :func:`ersde_jax.guidance.dynamic_thresholding`;
            a noise-prediction solver then uses the noise implied by the transformed ``x0_hat``.
        progress: show a tqdm progress bar, updated from inside the compiled scan through
            ``jax.debug.callback`` (off by default: a host callback per step).
        checkpoint: rematerialise every step in the backward pass (``jax.checkpoint``), so the
            memory of ``jax.grad`` through the sampler does not grow with the network's
            activations times the step count (only the scan carry is stored per step).

    Returns:
        A :class:`SampleResult` with the sample in ``x_T``'s dtype.
    """
    x_T = _check_x(x_T)
    if steps is None:
        steps = DEFAULT_STEPS if timesteps is None else np.shape(timesteps)[0] - 1
    steps = check_steps(steps)
    path = model.path
    if hasattr(solver, "check_path"):
        solver.check_path(path)
    if timesteps is None:
        timesteps = karras(path, steps)
    else:
        timesteps = check_timesteps(path, timesteps, steps)
    traced_grid = not is_concrete(timesteps)
    if not traced_grid and hasattr(solver, "check_grid"):
        solver.check_grid(eval_f64(lambda t: path.sigma(t) / path.alpha(t), timesteps))
    dtype = jnp.result_type(x_T.dtype, jnp.float32)  # bf16/f16 models keep an f32 state
    mu = _broadcast_mu(mu, x_T, dtype)
    if cond is None and mu.ndim > 0:
        cond = mu
    per_sample = _per_sample_keys(key, x_T) if solver.stochastic else False
    if not solver.stochastic:
        key = None
    return _run(key, model, x_T, solver, jnp.asarray(timesteps, jnp.result_type(float)), mu, cond,
                save_fn=save_fn, denoised_fn=denoised_fn, traced_grid=traced_grid,
                per_sample=per_sample, progress=progress, checkpoint=checkpoint)


@functools.partial(
    jax.jit,
    static_argnames=(
        "save_fn", "denoised_fn", "traced_grid", "per_sample", "progress", "checkpoint"
    ),
)
def _run(key, model, x_T, solver, t, mu, cond, *, save_fn, denoised_fn, traced_grid, per_sample,
         progress, checkpoint):
    """The compiled sampler: coefficients for the whole grid, then one ``lax.scan``."""
    dtype = mu.dtype
    alpha, sigma = model.path.alpha(t), model.path.sigma(t)  # float64 when x64 is on
    coefs = jax.tree_util.tree_map(lambda c: c.astype(dtype), solver.coefficients(alpha, sigma))
    alpha, sigma = alpha.astype(dtype), sigma.astype(dtype)
    n_hist = solver.history_length
    steps = t.shape[0] - 1

    def step_fn(carry, inputs):
        y, history = carry
        i, t_i, alpha_i, sigma_i, c = inputs
        denoised = model.denoise(y, t_i, alpha_i, sigma_i, mu, cond)
        if denoised_fn is not None:
            x0 = denoised_fn(denoised.x0 + mu).astype(dtype) - mu
            denoised = Denoised(x0, (y - alpha_i * x0) / sigma_i)
        q = denoised.x0 if solver.target == "x0" else denoised.eps
        y_next = c.x * y + c.outputs[0] * q
        for j, q_old in enumerate(history):
            y_next = y_next + c.outputs[j + 1] * q_old
        if solver.stochastic:
            y_next = y_next + c.noise * _normal(key, i, y.shape, dtype, per_sample)
        if progress:
            report_step(i, steps)
        saved = None
        if save_fn is not None:
            saved = save_fn(StepInfo(i, t_i, y + mu, denoised.x0 + mu, y_next + mu))
        return (y_next, (q, *history)[:n_hist]), saved

    y0 = x_T.astype(dtype) - mu
    history = tuple(jnp.zeros_like(y0) for _ in range(n_hist))
    xs = (jnp.arange(steps), t[:-1], alpha[:-1], sigma[:-1], coefs)
    body = jax.checkpoint(step_fn) if checkpoint else step_fn
    (y, _), saved = jax.lax.scan(body, (y0, history), xs)
    x = (y + mu).astype(x_T.dtype)
    if traced_grid:
        x = jnp.where(grid_is_valid(t), x, jnp.nan)
    return SampleResult(x, saved, jnp.all(jnp.isfinite(x)))
