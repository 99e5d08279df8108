"""The one sampling driver: a single ``lax.scan`` over the steps of any solver.

The solver supplies its per-step tables (computed once from the :class:`~ersde_jax.Grid`) and its
step, which may call the network several times (:class:`~ersde_jax.AbstractSolver`); the noise
source (:class:`~ersde_jax.IndependentNoise`, :class:`~ersde_jax.BrownianNoise`) supplies each
step's ``z`` and the adjoint (:class:`~ersde_jax.FullAdjoint`, ``RematAdjoint``,
``TruncatedAdjoint``) the backward-pass policy. The driver owns the rest: keys, the denoiser with
its hook, Gaussian transition log-densities, the trajectory hook, the progress bar and the NFE.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._adjoint import FullAdjoint, RematAdjoint, TruncatedAdjoint
from ._grid import Grid, resolve_timesteps
from ._model import Model
from ._noise import BrownianNoise, IndependentNoise
from ._numerics import is_concrete
from ._prediction import Denoised
from ._progress import report_step
from ._solvers.base import AbstractSolver
from ._timesteps import check_steps

__all__ = ["sample", "transition_log_prob", "SampleResult", "StepInfo"]


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
    if not hasattr(key, "dtype") or not hasattr(key, "ndim"):
        raise TypeError(
            f"key must be a jax.random key (jax.random.key(seed) or PRNGKey(seed)), got "
            f"{type(key).__name__}."
        )
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


def _check_solver(solver) -> None:
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"solver must be an ej.AbstractSolver (e.g. ej.er_sde(), ej.edm_heun()), got "
            f"{type(solver).__name__}."
        )


def _check_gaussian(solver, what: str) -> None:
    if not (solver.stochastic and solver.gaussian):
        raise ValueError(
            f"{what} needs a stochastic solver whose step is Gaussian given the past (the "
            f"linear-kernel solvers: er_sde, mr_sde, ddim with eta > 0, euler_maruyama); "
            f"got {type(solver).__name__} with stochastic={solver.stochastic}."
        )


def _check_s_noise(solver) -> None:
    s_noise = getattr(solver, "s_noise", None)
    if s_noise is not None and is_concrete(s_noise):
        if not np.all(np.asarray(s_noise, np.float64) >= 0):
            raise ValueError(f"s_noise must be finite and >= 0, got {s_noise}.")


def _adjoint_from(adjoint, checkpoint: bool, grad_steps):
    """The adjoint object, from ``adjoint`` or the ``checkpoint`` / ``grad_steps`` keywords."""
    if adjoint is not None:
        if checkpoint or grad_steps is not None:
            raise ValueError("Give either adjoint or checkpoint / grad_steps, not both.")
        if not isinstance(adjoint, (FullAdjoint, TruncatedAdjoint)):
            raise TypeError(f"adjoint must be FullAdjoint, RematAdjoint or TruncatedAdjoint, "
                            f"got {type(adjoint).__name__}.")
        return adjoint
    if grad_steps is not None:
        if isinstance(grad_steps, bool) or not isinstance(grad_steps, (int, np.integer)):
            raise TypeError(f"grad_steps must be an int or None, got {type(grad_steps).__name__}.")
        if grad_steps < 1:
            raise ValueError(f"grad_steps must be >= 1, got {grad_steps}.")
        return TruncatedAdjoint(int(grad_steps), remat=bool(checkpoint))
    return RematAdjoint() if checkpoint else FullAdjoint()


def _noise_from(noise, brownian: bool):
    if noise is not None:
        if brownian:
            raise ValueError("Give either noise or brownian=True, not both.")
        if not isinstance(noise, (IndependentNoise, BrownianNoise)):
            raise TypeError(f"noise must be IndependentNoise or BrownianNoise, got "
                            f"{type(noise).__name__}.")
        return noise
    return BrownianNoise() if brownian else IndependentNoise()


def _prepare(model, solver, steps, timesteps, noise):
    """Checks the model, solver and grid once; returns ``(t, concrete_grid)``."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an ej.Model, got {type(model).__name__}.")
    _check_solver(solver)
    _check_s_noise(solver)
    solver.check_path(model.path)
    steps, t, grid = resolve_timesteps(model.path, steps, timesteps)
    if grid is not None:
        if grid.alpha[0] == 0 and model.prediction in ("eps", "score"):
            raise ValueError(
                f"The grid starts at zero SNR (alpha = 0), where a {model.prediction!r} prediction "
                "gives no data prediction (x0 = (x - sigma eps) / alpha): use a v-, x0- or "
                "flow-prediction model, or start below t_max."
            )
        solver.check_grid(grid)
        if solver.stochastic:
            noise.check_grid(grid)
    return jnp.asarray(t, jnp.result_type(float)), grid


def sample(
    key,
    model: Model,
    x_T,
    solver: AbstractSolver,
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
    noise=None,
    adjoint=None,
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
        timesteps: decreasing grid of ``steps + 1`` model times; default
            ``ej.timesteps.default(path, steps)`` (Karras; uniform t on flow paths), ending at
            ``sigma = 0``. A traced grid is checked at run time (NaN if invalid).
        mu: the mean of a mean-reverting path (broadcast to ``x_T``); default 0.
        cond: conditioning pytree passed to ``apply_fn`` (never replaced by ``mu``: a network
            conditioned on the mean declares ``Model(..., takes_mu=True)``).
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
        brownian: shorthand for ``noise=ej.BrownianNoise()``.
        noise: the noise source of stochastic solvers: :class:`~ersde_jax.IndependentNoise`
            (default, an independent draw per step) or :class:`~ersde_jax.BrownianNoise` (one
            virtual Brownian motion in ``log(sigma / alpha)``: the same noise path at every
            step count, pathwise convergence).
        adjoint: the backward-pass policy: :class:`~ersde_jax.FullAdjoint` (default),
            :class:`~ersde_jax.RematAdjoint` (``checkpoint=True``) or
            :class:`~ersde_jax.TruncatedAdjoint` (``grad_steps``); give it or those keywords.

    Returns:
        A :class:`SampleResult` with the sample in ``x_T``'s dtype and the NFE made.

    Raises:
        TypeError: a key that is not a ``jax.random`` key, a model or solver of the wrong type.
        ValueError: bad grid, ``grad_steps``, ``s_noise``, or ``log_prob`` with a solver without
            a Gaussian transition.
    """
    x_T = _check_x(x_T)
    adjoint = _adjoint_from(adjoint, checkpoint, grad_steps)
    noise = _noise_from(noise, brownian)
    t, grid = _prepare(model, solver, steps, timesteps, noise)
    if log_prob:
        _check_gaussian(solver, "log_prob=True")
    dtype = jnp.result_type(x_T.dtype, jnp.float32)  # bf16/f16 models keep an f32 state
    mu = _broadcast_mu(mu, x_T, dtype)
    per_sample = _per_sample_keys(key, x_T) if solver.stochastic else False
    if not solver.stochastic:
        key = None
        noise = None
    return _run(key, model, x_T, solver, t, mu, cond, save_fn=save_fn, denoised_fn=denoised_fn,
                check_grid=grid is None, per_sample=per_sample, progress=progress,
                adjoint=adjoint, log_prob=log_prob, noise=noise)


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


@functools.partial(
    jax.jit,
    static_argnames=("save_fn", "denoised_fn", "check_grid", "per_sample", "progress", "adjoint",
                     "log_prob", "noise"),
)
def _run(key, model, x_T, solver, t, mu, cond, *, save_fn, denoised_fn, check_grid, per_sample,
         progress, adjoint, log_prob, noise):
    """The compiled sampler: the grid and the solver's tables once, then one ``lax.scan``."""
    dtype = mu.dtype
    grid = Grid.on(model.path, t)
    tables = solver.tables(model.path, grid, dtype)
    steps = grid.steps
    y0 = x_T.astype(dtype) - mu
    if noise is None:
        noise_state, noise_inputs = None, None
    else:
        noise_state, noise_inputs = noise.init(key, grid, y0.shape, dtype, per_sample)

    def make_body(const):
        """The step body; ``const`` maps everything it closes over (stop_gradient in a head)."""
        model_, solver_, mu_, cond_ = const((model, solver, mu, cond))
        denoise = _denoiser(model_, mu_, cond_, denoised_fn, dtype)

        def body(carry, inputs):
            y, state, noise_state = carry
            i, row, noise_input = inputs
            z = None
            if noise is not None:
                z, noise_state = noise.draw(key, noise_input, noise_state, y.shape, dtype,
                                            per_sample)
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
            return (y_next, state, noise_state), (jnp.asarray(out.nfe, jnp.int32), lp, saved)

        return body

    carry = (y0, solver.init(y0), noise_state)
    xs = (jnp.arange(steps), tables, noise_inputs)
    (y, _, _), (nfe, lp, saved) = adjoint.scan(make_body, carry, xs)
    x = (y + mu).astype(x_T.dtype)
    if log_prob:
        x = jax.lax.stop_gradient(x)
    if check_grid:
        valid = grid.is_valid()
        if noise is not None:
            valid = valid & noise.grid_is_valid(grid)
        x = jnp.where(valid, x, jnp.nan)
    return SampleResult(x, saved, jnp.all(jnp.isfinite(x)), jnp.sum(nfe), lp)


def transition_log_prob(
    model: Model,
    solver: AbstractSolver,
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
        timesteps: the grid of the run (default: ``ej.timesteps.default(path, steps)``).
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
    t, _ = _prepare(model, solver, check_steps(trajectory.shape[0] - 1), timesteps,
                    IndependentNoise())
    _check_gaussian(solver, "transition_log_prob")
    dtype = jnp.result_type(trajectory.dtype, jnp.float32)
    mu = _broadcast_mu(mu, trajectory[0], dtype)
    return _rescore(model, solver, trajectory, t, mu, cond, denoised_fn=denoised_fn)


@functools.partial(jax.jit, static_argnames=("denoised_fn",))
def _rescore(model, solver, trajectory, t, mu, cond, *, denoised_fn):
    dtype = mu.dtype
    tables = solver.tables(model.path, Grid.on(model.path, t), dtype)
    denoise = _denoiser(model, mu, cond, denoised_fn, dtype)
    ys = trajectory.astype(dtype) - mu

    def body(state, inputs):
        row, y, y_next = inputs
        mean, std, state, _ = solver.transition(denoise, y, state, row)
        return state, _log_density(y_next, mean, std)

    _, lp = jax.lax.scan(body, solver.init(ys[0]), (tables, ys[:-1], ys[1:]))
    return lp
