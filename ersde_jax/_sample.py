"""The one sampling driver: a single ``lax.scan`` over the steps of any solver.

The solver supplies its per-step tables (computed once from the grid) and its step, which may call
the network several times (``ersde_jax._solvers.base`` describes the interface); the driver owns
everything else: keys and noise, the denoiser with its hooks, truncated backpropagation, Gaussian
transition log-densities, the trajectory hook, the progress bar and the NFE count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _brownian
from ._concrete import eval_f64, is_concrete
from ._model import Model
from ._prediction import Denoised
from ._progress import report_step
from ._timesteps import check_steps, check_timesteps, grid_is_valid, karras

__all__ = ["sample", "transition_log_prob", "SampleResult", "StepInfo", "DEFAULT_STEPS"]

DEFAULT_STEPS = 20


class StepInfo(NamedTuple):
    """What a ``save_fn`` hook sees at every step (all arrays in the solver's dtype)."""

    step: jnp.ndarray  # () int, the step index
    t: jnp.ndarray  # () model time of the step's first network call
    x: jnp.ndarray  # state before the step, shaped like x_T
    denoised: jnp.ndarray  # the data prediction x0_hat of that call
    x_next: jnp.ndarray  # state after the step


class SampleResult(NamedTuple):
    """Result of :func:`sample`."""

    x: jnp.ndarray  # the sample, dtype of x_T
    saved: Any  # outputs of save_fn stacked over steps (leading axis = steps), or None
    finite: jnp.ndarray  # () bool: the sample is finite (a NaN/inf network output propagates)
    nfe: jnp.ndarray  # () int32: network evaluations made (solver.nfe(steps) on a clean grid)
    log_prob: jnp.ndarray | None = None  # (steps, batch) transition log-densities, if asked


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


def _check_grad_steps(grad_steps, steps: int) -> int | None:
    """The number of head steps held constant (None: backpropagate through every step)."""
    if grad_steps is None:
        return None
    if isinstance(grad_steps, bool) or not isinstance(grad_steps, (int, np.integer)):
        raise TypeError(f"grad_steps must be an int or None, got {type(grad_steps).__name__}.")
    if grad_steps < 1:
        raise ValueError(f"grad_steps must be >= 1, got {grad_steps}.")
    return steps - grad_steps if grad_steps < steps else None


def _check_gaussian(solver, what: str) -> None:
    if not (solver.stochastic and hasattr(solver, "transition")):
        raise ValueError(
            f"{what} needs a stochastic solver whose step is Gaussian given the past (the "
            f"linear-kernel solvers: er_sde, mr_sde, ddim with eta > 0, euler_maruyama); "
            f"got {type(solver).__name__} with stochastic={solver.stochastic}."
        )


def _grid(path, solver, timesteps, steps):
    """Validated grid, and whether it is traced (then checked at run time)."""
    if timesteps is None:
        timesteps = karras(path, steps)
    else:
        timesteps = check_timesteps(path, timesteps, steps)
    traced_grid = not is_concrete(timesteps)
    if not traced_grid and hasattr(solver, "check_grid"):
        solver.check_grid(eval_f64(lambda t: path.sigma(t) / path.alpha(t), timesteps))
    return timesteps, traced_grid


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
    grad_steps: int | None = None,
    log_prob: bool = False,
    brownian: bool = False,
) -> SampleResult:
    """Runs ``solver`` from ``x_T`` along a time grid, as one ``lax.scan``.

    Args:
        key: a ``jax.random`` key, or one key per sample (leading axis of ``x_T``), in which case
            sample ``i`` depends on ``key[i]`` only.
        model: the :class:`Model`.
        x_T: the starting state, a floating array with a leading batch axis.
        solver: a solver pytree (e.g. :func:`er_sde`, :func:`edm_heun`).
        steps: number of steps (default 20, or ``len(timesteps) - 1``); the network evaluations
            are ``solver.nfe(steps)``: one per step, 2N - 1 for the EDM samplers.
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
        grad_steps: truncated backpropagation: gradients flow through the last ``grad_steps``
            steps only; the state (and solver history) reached before them is held constant,
            and the earlier steps run in a scan that is not differentiated. None (default) or
            ``>= steps``: through every step.
        log_prob: also return, per step and sample, the log-density of the realised transition
            under the step's Gaussian law ``N(mean, c_z^2 I)`` (0 on steps without noise), for
            policy-gradient fine-tuning. The visited states are then treated as data (as in
            DDPO): every step starts from ``stop_gradient`` of the state, so the gradient of
            ``log_prob`` with respect to params (or ``eta``, the grid) is that of
            ``log p(x_{i+1} | x_i, history)`` at the sampled trajectory, and ``x`` is returned
            without gradient. Linear-kernel stochastic solvers only.
        brownian: draw each step's noise as the standardised increment of one virtual Brownian
            motion in the clock ``log(sigma / alpha)`` (``ersde_jax._brownian``), so that a key
            gives the same noise path at every step count and samples converge pathwise as the
            grid is refined; costs 25 normal draws per step. The noise is not differentiated
            with respect to the grid. Noise levels ``sigma / alpha`` must lie in
            ``[e^-16, e^16]`` (or be 0): a ValueError for a concrete grid, NaN for a traced
            one. Default: an independent draw per step (``fold_in``).

    Returns:
        A :class:`SampleResult` with the sample in ``x_T``'s dtype and the NFE made.

    Raises:
        ValueError: bad grid, ``grad_steps``, or ``log_prob`` with a solver without a Gaussian
            transition.
    """
    x_T = _check_x(x_T)
    if steps is None:
        steps = DEFAULT_STEPS if timesteps is None else np.shape(timesteps)[0] - 1
    steps = check_steps(steps)
    head = _check_grad_steps(grad_steps, steps)
    if log_prob:
        _check_gaussian(solver, "log_prob=True")
    path = model.path
    if hasattr(solver, "check_path"):
        solver.check_path(path)
    timesteps, traced_grid = _grid(path, solver, timesteps, steps)
    brownian = bool(brownian) and solver.stochastic
    if brownian and not traced_grid:
        _brownian.check_clock(eval_f64(lambda t: path.sigma(t) / path.alpha(t), timesteps))
    dtype = jnp.result_type(x_T.dtype, jnp.float32)  # bf16/f16 models keep an f32 state
    mu = _broadcast_mu(mu, x_T, dtype)
    if cond is None and mu.ndim > 0:
        cond = mu
    per_sample = _per_sample_keys(key, x_T) if solver.stochastic else False
    if not solver.stochastic:
        key = None
    return _run(key, model, x_T, solver, jnp.asarray(timesteps, jnp.result_type(float)), mu, cond,
                save_fn=save_fn, denoised_fn=denoised_fn, traced_grid=traced_grid,
                per_sample=per_sample, progress=progress, checkpoint=checkpoint, head=head,
                log_prob=log_prob, brownian=brownian)


def _denoiser(model, mu, cond, denoised_fn, dtype):
    """``denoise(y, t, alpha, sigma) -> Denoised``: one network call, then ``denoised_fn``."""

    def denoise(y, t, alpha, sigma):
        denoised = model.denoise(y, t, alpha, sigma, mu, cond)
        if denoised_fn is not None:
            x0 = denoised_fn(denoised.x0 + mu).astype(dtype) - mu
            denoised = Denoised(x0, (y - alpha * x0) / sigma)
        return denoised

    return denoise


def _log_density(y, mean, std):
    """``log N(y; mean, std^2 I)`` summed over all but the batch axis; 0 where ``std = 0``."""
    noisy = std > 0
    safe = jnp.where(noisy, std, 1.0)
    axes = tuple(range(1, y.ndim))
    dim = np.prod(y.shape[1:], dtype=np.int64)
    lp = -0.5 * jnp.sum(((y - mean) / safe) ** 2, axis=axes) - dim * (
        jnp.log(safe) + 0.5 * np.log(2 * np.pi))
    return jnp.where(noisy, lp, 0.0)


def _scan_tail(f, carry, xs, head):
    """``lax.scan(f, carry, xs)``; the first ``head`` steps run on constants (no derivatives)."""
    if head is None:
        return jax.lax.scan(f(lambda v: v), carry, xs)
    sg = jax.lax.stop_gradient
    split = lambda lo, hi: jax.tree_util.tree_map(lambda a: a[lo:hi], xs)  # noqa: E731
    carry, ys_head = jax.lax.scan(f(sg), sg(carry), sg(split(0, head)))
    carry, ys_tail = jax.lax.scan(f(lambda v: v), sg(carry), split(head, None))
    return carry, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys_head, ys_tail)


@functools.partial(
    jax.jit,
    static_argnames=(
        "save_fn", "denoised_fn", "traced_grid", "per_sample", "progress", "checkpoint", "head",
        "log_prob", "brownian",
    ),
)
def _run(key, model, x_T, solver, t, mu, cond, *, save_fn, denoised_fn, traced_grid, per_sample,
         progress, checkpoint, head, log_prob, brownian):
    """The compiled sampler: the solver's tables for the whole grid, then one ``lax.scan``."""
    dtype = mu.dtype
    path = model.path
    tables = solver.tables(path, t, dtype)
    steps = t.shape[0] - 1
    stochastic = solver.stochastic
    y0 = x_T.astype(dtype) - mu
    rho = path.sigma(t) / path.alpha(t)
    if brownian:
        clock = _brownian.clock(rho)
        w0 = _brownian.start(key, clock[0], y0.shape, dtype, per_sample)
        xs = (jnp.arange(steps), tables, (clock[:-1], clock[1:]))
    else:
        w0 = None
        xs = (jnp.arange(steps), tables, None)

    def make_body(const):
        """The step body; ``const`` maps everything it closes over (stop_gradient in the head)."""
        model_, solver_, mu_, cond_ = const((model, solver, mu, cond))
        denoise = _denoiser(model_, mu_, cond_, denoised_fn, dtype)

        def body(carry, inputs):
            y, state, w = carry
            i, row, interval = inputs
            z = None
            if brownian:
                z, w = _brownian.increment(key, *interval, w, y.shape, dtype, per_sample)
            elif stochastic:
                z = _normal(key, i, y.shape, dtype, per_sample)
            lp = None
            if log_prob:
                # States are data; past predictions keep their dependence on the params.
                y = jax.lax.stop_gradient(y)
                mean, std, state, out = solver_.transition(denoise, y, state, row)
                y_next = mean + std * z
                lp = _log_density(jax.lax.stop_gradient(y_next), mean, std)
            else:
                y_next, state, out = solver_.step(denoise, y, state, row, z)
            if progress:
                report_step(i, steps)
            saved = None
            if save_fn is not None:
                saved = save_fn(StepInfo(i, out.t, y + mu_, out.denoised.x0 + mu_, y_next + mu_))
            return (y_next, state, w), (jnp.asarray(out.nfe, jnp.int32), lp, saved)

        return jax.checkpoint(body) if checkpoint else body

    carry = (y0, solver.init(y0), w0)
    (y, _, _), (nfe, lp, saved) = _scan_tail(make_body, carry, xs, head)
    x = (y + mu).astype(x_T.dtype)
    if log_prob:
        x = jax.lax.stop_gradient(x)
    if traced_grid:
        valid = grid_is_valid(t)
        if brownian:
            valid = valid & _brownian.clock_is_valid(rho)
        x = jnp.where(valid, x, jnp.nan)
    return SampleResult(x, saved, jnp.all(jnp.isfinite(x)), jnp.sum(nfe), lp)


def transition_log_prob(
    model: Model,
    solver,
    trajectory,
    *,
    timesteps=None,
    mu=None,
    cond=None,
    denoised_fn: Callable | None = None,
):
    """Log-densities of a saved trajectory's transitions under ``model`` (e.g. new params).

    Re-scores ``x_{i+1}`` given ``x_i`` (and the solver's history of predictions at the earlier
    states) under the step's Gaussian law, as ``sample(..., log_prob=True)`` does while sampling:
    with the same params the two agree. Differentiable with respect to the model's params, for
    importance ratios and policy gradients (DDPO); one network call per step.

    Args:
        model: the :class:`Model` (its params may differ from those that sampled).
        solver: the stochastic linear-kernel solver that produced the trajectory.
        trajectory: the states ``x_0 = x_T, x_1, ..., x_N``, shape ``(steps + 1, *x_T.shape)``;
            e.g. ``x_T[None]`` followed by the outputs of ``save_fn=lambda info: info.x_next``.
        timesteps: the grid of the run (default: the Karras grid of ``steps``).
        mu, cond, denoised_fn: as in :func:`sample`.

    Returns:
        ``(steps, batch)`` log-densities (0 on steps without noise).

    Example:
        >>> res = ej.sample(key, model, x_T, ej.ddim(1.0), steps=20,
        ...                 save_fn=lambda info: info.x_next, log_prob=True)
        >>> traj = jnp.concatenate([x_T[None], res.saved])
        >>> new_lp = ej.transition_log_prob(new_model, ej.ddim(1.0), traj)
    """
    trajectory = _check_x(trajectory)
    if trajectory.ndim < 2:
        raise ValueError("trajectory must have a leading step axis and a batch axis.")
    _check_gaussian(solver, "transition_log_prob")
    steps = check_steps(trajectory.shape[0] - 1)
    path = model.path
    if hasattr(solver, "check_path"):
        solver.check_path(path)
    timesteps, _ = _grid(path, solver, timesteps, steps)
    dtype = jnp.result_type(trajectory.dtype, jnp.float32)
    mu = _broadcast_mu(mu, trajectory[0], dtype)
    if cond is None and mu.ndim > 0:
        cond = mu
    return _rescore(model, solver, trajectory, jnp.asarray(timesteps, jnp.result_type(float)), mu,
                    cond, denoised_fn=denoised_fn)


@functools.partial(jax.jit, static_argnames=("denoised_fn",))
def _rescore(model, solver, trajectory, t, mu, cond, *, denoised_fn):
    dtype = mu.dtype
    tables = solver.tables(model.path, t, dtype)
    denoise = _denoiser(model, mu, cond, denoised_fn, dtype)
    ys = trajectory.astype(dtype) - mu

    def body(state, inputs):
        row, y, y_next = inputs
        mean, std, state, _ = solver.transition(denoise, y, state, row)
        return state, _log_density(y_next, mean, std)

    _, lp = jax.lax.scan(body, solver.init(ys[0]), (tables, ys[:-1], ys[1:]))
    return lp
