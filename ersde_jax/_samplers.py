"""One-call samplers: the paper's solvers with their defaults, on the one scan driver."""

from __future__ import annotations

import functools

import numpy as np

from ._model import Model
from ._numerics import is_concrete
from ._sample import sample
from ._solvers.er_sde import er_sde
from ._solvers.mr import mr_ode, mr_sde
from ._timesteps import (
    check_steps,
    karras,
    karras_t,
    leading,
    trailing,
    uniform_lambda,
    uniform_t,
)
from .guidance import dynamic_thresholding

__all__ = ["ersde_sample", "mr_sample", "mr_grid", "TIME_SCHEDULES"]


def ersde_sample(
    key,
    model: Model,
    x_T,
    *,
    steps: int | None = None,
    order: int = 3,
    noise_scale="er_sde_5",
    eta=1.0,
    s_noise=1.0,
    timesteps=None,
    derivative: str = "quadratic",
    riemann_points: int | None = None,
    noise_scale_params=None,
    mu=None,
    cond=None,
    progress: bool = False,
):
    """Samples with an ER-SDE-Solver (Cui et al., section 4, eqs. for orders 1-3).

    ``jax.jit(ersde_sample)(key, model, x_T)`` compiles the whole sampler into one program:
    20 network evaluations of ER-SDE-Solver-3 with ``phi(x) = x (exp(x^0.3) + 10)`` on the
    default grid of the model's path (Karras; uniform t on flow paths).

    Args:
        key: a ``jax.random`` key, or one key per sample.
        model: the :class:`~ersde_jax.Model`.
        x_T: starting noise, e.g. ``ej.prior_sample(key, model.path, shape)``.
        steps: number of network evaluations (NFE); default 20.
        order: 1, 2 or 3.
        noise_scale: "ode", "sde", "er_sde_1" ... "er_sde_5", or a callable ``phi(rho)``.
        eta: ``phi_eta = x^(1-eta) phi^eta`` interpolates from the ODE (0) to ``phi`` (1).
        s_noise: scale of the injected noise (1 = the paper).
        timesteps: decreasing grid of ``steps + 1`` model times (sigmas for ``edm``, indices
            for ``vp_discrete``); default ``ej.timesteps.default`` (Karras, rho = 7; uniform t
            on flow paths) ending at ``sigma = 0``.
        derivative: "quadratic" (default, true third order) or "backward" (the release's).
        riemann_points: reproduce the release's N-point Riemann sums instead of quadrature.
        noise_scale_params: parameters of a callable ``phi(rho, params)``.
        mu: mean of a mean-reverting path (the solver then acts on ``x - mu``); default 0.
        cond: conditioning passed to ``apply_fn`` (a network that reads ``mu`` declares
            ``Model(..., takes_mu=True)``).
        progress: show a progress bar from inside the compiled sampler.

    Returns:
        The samples, shaped and typed like ``x_T``.

    Example:
        >>> x0 = jax.jit(ej.ersde_sample)(key, model, x_T)
    """
    solver = er_sde(
        order, noise_scale, eta=eta, s_noise=s_noise, derivative=derivative,
        riemann_points=riemann_points, noise_scale_params=noise_scale_params,
    )
    return sample(key, model, x_T, solver, steps=steps, timesteps=timesteps, mu=mu, cond=cond,
                  progress=progress).x


_SCHEDULES = {
    "linspace": lambda path, steps, lambda_min: uniform_t(path, steps),
    "leading": lambda path, steps, lambda_min: leading(path, steps),
    "trailing": lambda path, steps, lambda_min: trailing(path, steps),
    "karras-n": lambda path, steps, lambda_min: karras(path, steps, lambda_min=lambda_min),
    "karras-t": lambda path, steps, lambda_min: karras_t(path, steps),
    "linear-lambda": lambda path, steps, lambda_min: uniform_lambda(
        path, steps, lambda_min=lambda_min),
}
TIME_SCHEDULES = tuple(_SCHEDULES)


def mr_grid(path, steps: int, time_schedule: str = "linspace", lambda_min=None) -> np.ndarray:
    """The MR Sampler's time grids by name (``TIME_SCHEDULES``), ending at the clean time.

    ``lambda_min`` clips the start of "karras-n" and "linear-lambda" grids.
    """
    if time_schedule not in _SCHEDULES:
        raise ValueError(f"Unknown time_schedule {time_schedule!r}; expected one of "
                         f"{TIME_SCHEDULES}.")
    if lambda_min is not None and time_schedule not in ("karras-n", "linear-lambda"):
        raise ValueError("lambda_min applies to the 'karras-n' and 'linear-lambda' schedules.")
    return _SCHEDULES[time_schedule](path, check_steps(steps), lambda_min)


def mr_sample(
    key,
    model: Model,
    x_T,
    mu,
    *,
    steps: int = 20,
    order: int = 2,
    solver: str = "ode",
    parameterization: str = "data",
    time_schedule: str = "linspace",
    lambda_min=None,
    timesteps=None,
    s_noise=1.0,
    denoise_last: bool = False,
    thresholding: bool = False,
    threshold_ratio: float = 0.995,
    threshold_max: float = 1.0,
    cond=None,
    third_order: str = "taylor",
    progress: bool = False,
):
    """Samples with the MR Sampler (Li et al., ICLR 2025, sections 3-4).

    Mean-reverting diffusion starts from the degraded image plus noise, ``x_T = mu + max_sigma z``
    (``ej.prior_sample(key, path, shape, mu=mu)``). With ``mu = 0`` on VP, VE or flow paths this
    is DPM-Solver++ ("ode", data) and SDE-DPM-Solver++ ("sde", data).

    Args:
        key: a ``jax.random`` key (or one per sample); unused by the ODE solvers.
        model: the :class:`~ersde_jax.Model` (noise, data or MR-velocity prediction).
        x_T: the starting state.
        mu: the mean the path reverts to (the degraded image), broadcast to ``x_T``; None for 0.
        steps: number of network evaluations.
        order: 1-3 for "ode", 1-2 for "sde".
        solver: "ode" (probability-flow ODE) or "sde" (reverse SDE).
        parameterization: "data" or "noise".
        time_schedule: one of ``TIME_SCHEDULES`` (ignored when ``timesteps`` is given).
        lambda_min: clip lambda at the start ("karras-n", "linear-lambda").
        timesteps: explicit decreasing grid of ``steps + 1`` model times.
        s_noise: multiplies the injected noise of the SDE solvers.
        denoise_last: end with the denoising step ``x = x0_hat`` at the last evaluation point even
            when the grid ends above the clean time. A grid ending at the clean time always does
            (the noise-parameterized update would divide by zero there).
        thresholding: dynamic thresholding of the data prediction (data parameterization only).
        threshold_ratio, threshold_max: its quantile and largest threshold.
        cond: conditioning passed to ``apply_fn``. The bundled restoration model and the exact
            test denoisers read ``mu`` itself (``Model(..., takes_mu=True)``); a network that
            takes the degraded image as ``cond`` needs ``cond=mu``.
        third_order: "taylor" (default) or "release" weight of the second difference in the
            third-order ODE solver; the published ("release") weight makes it second order.
        progress: show a progress bar from inside the compiled sampler.

    Returns:
        The restored samples, shaped and typed like ``x_T``. A non-finite network output makes
        the result non-finite (``ej.sample`` also returns a ``finite`` flag).
    """
    if solver not in ("ode", "sde"):
        raise ValueError(f"Unknown solver {solver!r}; expected 'ode' or 'sde'.")
    if thresholding and parameterization != "data":
        raise ValueError("thresholding needs parameterization='data' (it acts on x0_hat).")
    make = mr_ode if solver == "ode" else mr_sde
    kwargs = dict(third_order=third_order) if solver == "ode" else dict(s_noise=s_noise)
    mr = make(order, parameterization, **kwargs)
    if timesteps is None:
        timesteps = mr_grid(model.path, steps, time_schedule, lambda_min)
    if denoise_last:  # the grid is validated once, by sample
        if is_concrete(timesteps):
            timesteps = np.append(np.asarray(timesteps, np.float64)[:-1], model.path.t_clean)
        else:
            timesteps = timesteps.at[-1].set(model.path.t_clean)
    denoised_fn = None
    if thresholding:
        denoised_fn = functools.partial(dynamic_thresholding, ratio=threshold_ratio,
                                        max_value=threshold_max)
    return sample(key, model, x_T, mr, steps=steps, timesteps=timesteps, mu=mu, cond=cond,
                  denoised_fn=denoised_fn, progress=progress).x
