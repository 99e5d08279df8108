"""Flax adapters: wrap a Linen or NNX network into an :class:`ersde_jax.Model`.

Import it explicitly (``flax`` is an optional extra, ``pip install ersde_jax[flax]``)::

    import ersde_jax as ej
    import ersde_jax.flax

    model = ersde_jax.flax.from_linen(net, variables, path=ej.paths.edm(), prediction="x0",
                                      time_input="edm")
    x0 = jax.jit(ej.ersde_sample)(key, model, x_T)

The sampler calls ``model.apply_fn(params, x, t, cond)`` with a scalar ``t`` of the path's *model
time* (sigma for ``ej.paths.edm()``, the index for ``vp_discrete`` and ``ir_sde``, continuous time
for ``vp_linear``, ``vp_cosine`` and ``flow``). The adapters turn that call into a call of the
network, ``net.apply(variables, x_in, t_in, ...)`` (Linen) or ``net(x_in, t_in, ...)`` (NNX):

* ``time_input`` says what ``t_in`` is (and, for ``"edm"``, also ``x_in`` and the output):

  - ``"model"``: the model time ``t`` as is (any path).
  - ``"sigma"``: ``sigma(t) / alpha(t)``, the variance-exploding noise level of ``x / alpha``
    (any path); ``x_in = x`` is *not* divided by ``alpha``.
  - ``"edm"``: EDM preconditioning (Karras et al. 2022, Table 1), ``edm`` path only; the model
    then predicts ``"x0"``. With ``s = sigma(t)`` and ``sd = sigma_data``: ``x_in = c_in x``,
    ``t_in = c_noise`` and the model's output is ``c_skip x + c_out F``, ``F`` the network's
    output, where ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = log(s) / 4``,
    ``c_skip = sd^2 / (s^2 + sd^2)`` and ``c_out = s sd / sqrt(s^2 + sd^2)``.
  - ``"continuous"``: the model time ``t`` in ``[0, 1]``; continuous paths only (``vp_linear``,
    ``vp_cosine``, ``flow``), whose time range is checked to lie in ``[0, 1]``.
  - ``"discrete"``: a training-step index. Discrete paths (``vp_discrete``, ``ir_sde``): the
    model time (the index, ``0 .. N-1``) as is. Continuous paths: ``t (N - 1)`` with
    ``N = num_train_steps`` (default 1000), so ``t = 1`` maps to index 999. Indices are passed
    as floats, fractional between training steps (the sampler's default grids are not integer);
    round inside the network if it needs integers.
  - ``"log_snr"``: the log signal-to-noise ratio ``log(alpha^2 / sigma^2) = 2 path.lam(t)``
    (any path): ``-2 log sigma`` on ``edm``, ``log(abar / (1 - abar))`` on VP paths,
    ``2 log((1 - t) / t)`` on ``flow``. It decreases from data to noise.
  - ``"neg_log_snr"``: its negative, ``log(sigma^2 / alpha^2)`` (VDM's ``gamma(t)``); it
    increases from data to noise.

  The log-SNR is ``-inf`` where ``alpha = 0``: paths that start from pure noise
  (``path.zero_snr_start``, e.g. ``flow(t_max=1.0)`` or a zero-terminal-SNR ``vp_discrete``)
  are refused with both log-SNR inputs; start below, where ``alpha > 0``. A VP network fed the
  log-SNR (or ``"sigma"``) does not see its training schedule's time: any VP path whose
  log-SNR range lies within the trained one samples it (VDM's learned or linear ``gamma``, the
  distillation models' clipped cosine), and the path only sets the grid.

  The conventions of common JAX codebases:

  ============================================  ==========================  ===============
  codebase (network)                            ``path``, ``time_input``    ``prediction``
  ============================================  ==========================  ===============
  score_sde, VE (NCSN++ fed sigma)              ``edm()``, ``"model"``      ``"score"``
  score_sde, VP (DDPM++ fed ``999 t``)          ``vp_linear()``,            ``"eps"``
                                                ``"discrete"``
  VDM (fed ``gamma(t) = -log SNR``)             VP path, ``"neg_log_snr"``  ``"eps"``
  diffusion distillation (fed ``logsnr``)       ``vp_cosine()``,            ``"eps"``, ``"x0"``
                                                ``"log_snr"``               or ``"v"``
  FlaxDiff EDM (``c_noise = log(sigma) / 4``)   ``edm()``, ``"edm"``        ``"x0"``
  flow-matching DiT (fed ``t = sigma``)         ``flow()``, ``"model"``     ``"flow"``
  ============================================  ==========================  ===============

  On ``flow`` the flow-matching "sigma" is the model time ``t`` itself (``x = (1 - t) x0 + t
  eps``): use ``"model"`` or ``"continuous"``, not ``"sigma"`` (which is ``t / (1 - t)``). A
  DiT fed ``1000 t`` (SD3-style timesteps) takes ``"discrete"`` with ``num_train_steps=1001``.

* ``batch_time=True`` broadcasts ``t_in`` to shape ``(B,)`` with ``B = x.shape[0]`` (the usual
  signature of Flax diffusion networks); ``False`` passes the scalar.
* ``cond``: when the sampler's ``cond`` is None nothing is passed; otherwise it is passed as a
  third positional argument (``cond_arg=None``) or as the keyword argument ``cond_arg``. The
  samplers never replace ``cond`` by ``mu``: a network conditioned on the degraded image of
  mean-reverting diffusion is sampled with ``cond=mu``.
* ``learned_variance=True``: the network returns ``2 C`` channels on the last axis (``C`` that of
  ``x``), a mean and a variance part; the first ``C`` are kept.
* ``call_kwargs``: a dict of fixed keyword arguments added to every call (e.g.
  ``{"train": False}``); for Linen they go to ``module.apply``.
* Layout: ``x`` reaches the network as the sampler holds it, batch axis first, and
  ``learned_variance`` reads channels on the last axis. For images use channels-last (NHWC), the
  layout of ``flax.linen.Conv`` and ``flax.nnx.Conv`` and of the library's adapters: XLA:CPU
  convolutions in NCHW were once measured about 16x slower; with jax 0.10.2 the speed benchmark
  measures NCHW at 1.03x NHWC (``benchmarks/results/speed.json``, "layout"), so a PyTorch port
  may keep NCHW convolutions, but must still hand the sampler batch-first arrays.

The returned :class:`~ersde_jax.Model` is a pytree whose ``params`` are the Linen variables or the
NNX state (split once with ``nnx.split``; the graph definition is static and merged inside
``apply_fn``), so it works under ``jax.jit``, ``jax.vmap`` and in the sampler's ``lax.scan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

try:
    from flax import linen as _linen
    from flax import nnx as _nnx
except ImportError as error:  # pragma: no cover - exercised only without flax
    raise ImportError(
        "ersde_jax.flax needs flax (>= 0.10): pip install 'ersde_jax[flax]'."
    ) from error

from ._model import Model
from ._path import GaussianPath

__all__ = ["TIME_INPUTS", "from_linen", "from_nnx"]

TIME_INPUTS = ("model", "sigma", "edm", "continuous", "discrete", "log_snr", "neg_log_snr")


def _check_continuous(path, time_input):
    if path.variance_exploding:
        raise ValueError(
            f"time_input={time_input!r} does not apply to the edm path, whose model time is "
            "sigma: use time_input='model', 'sigma' or 'edm'."
        )
    if path.is_discrete:
        raise ValueError(
            f"time_input={time_input!r} needs a continuous path; {type(path).__name__} is "
            "discrete (model time is the index): use time_input='discrete' or 'model'."
        )
    if not (0.0 <= path.t_min < path.t_max <= 1.0):
        raise ValueError(
            f"time_input={time_input!r} needs model times in [0, 1]; the path has t_min="
            f"{path.t_min}, t_max={path.t_max}."
        )


def _check_finite_snr(path, time_input):
    if path.zero_snr_start:
        raise ValueError(
            f"time_input={time_input!r}: the {type(path).__name__} path starts from pure noise "
            f"(alpha(t_max) = 0 at t_max={path.t_max}), where the log-SNR is infinite and the "
            "network would be fed inf; use a path whose t_max has alpha > 0."
        )


def _time_fn(path, time_input: str, num_train_steps) -> Callable:
    """The map from model time to the network's time input (all conventions but "edm")."""
    if time_input == "model":
        return lambda t: t
    if time_input == "sigma":
        return path.rho
    if time_input in ("log_snr", "neg_log_snr"):
        _check_finite_snr(path, time_input)
        sign = 2.0 if time_input == "log_snr" else -2.0
        return lambda t: sign * path.lam(t)
    if time_input == "continuous":
        _check_continuous(path, time_input)
        return lambda t: t
    # "discrete"
    if path.is_discrete:
        n = path.num_indices
        if num_train_steps is not None and num_train_steps != n:
            raise ValueError(
                f"num_train_steps={num_train_steps} differs from the {n} steps of the "
                f"{type(path).__name__} path; leave it unset for discrete paths."
            )
        return lambda t: t
    _check_continuous(path, time_input)
    scale = float((1000 if num_train_steps is None else num_train_steps) - 1)
    return lambda t: t * scale


def _expand(v, x):
    """Reshapes a scalar or per-sample ``(B,)`` array to broadcast against ``x``."""
    v = jnp.asarray(v)
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _check_options(path, prediction, time_input, batch_time, learned_variance, sigma_data,
                   num_train_steps, cond_arg, call_kwargs):
    if not isinstance(path, GaussianPath):
        raise TypeError(f"path must be an ersde_jax path (ej.paths.*), got {type(path)}.")
    if time_input not in TIME_INPUTS:
        raise ValueError(f"Unknown time_input {time_input!r}; expected one of {TIME_INPUTS}.")
    if time_input == "edm":
        if not path.variance_exploding:
            raise ValueError(
                "time_input='edm' (EDM preconditioning) needs the variance-exploding path "
                f"ej.paths.edm(), got {type(path).__name__}."
            )
        if prediction != "x0":
            raise ValueError(
                "time_input='edm' returns the preconditioned denoiser D = c_skip x + c_out F, a "
                f"data prediction: use prediction='x0', got {prediction!r}."
            )
    for name, value in (("batch_time", batch_time), ("learned_variance", learned_variance)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {value!r}.")
    try:
        sd = float(sigma_data)
    except (TypeError, ValueError):
        sd = math.nan
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}.")
    if num_train_steps is not None and (type(num_train_steps) is not int or num_train_steps < 2):
        raise ValueError(f"num_train_steps must be an int >= 2, got {num_train_steps!r}.")
    if cond_arg is not None and not (isinstance(cond_arg, str) and cond_arg.isidentifier()):
        raise TypeError(f"cond_arg must be None or a keyword-argument name, got {cond_arg!r}.")
    if call_kwargs is not None and not isinstance(call_kwargs, Mapping):
        raise TypeError(f"call_kwargs must be a dict or None, got {type(call_kwargs)}.")


def _adapter(call, params, *, path, prediction, time_input, batch_time, learned_variance,
             sigma_data, num_train_steps, cond_arg, call_kwargs) -> Model:
    """Builds the Model around ``call(params, x_in, t_in, *args, **kwargs)``."""
    _check_options(path, prediction, time_input, batch_time, learned_variance, sigma_data,
                   num_train_steps, cond_arg, call_kwargs)
    if num_train_steps is not None and time_input != "discrete":
        raise ValueError("num_train_steps applies to time_input='discrete' only.")
    edm = time_input == "edm"
    time_fn = None if edm else _time_fn(path, time_input, num_train_steps)
    fixed = dict(call_kwargs or {})
    if cond_arg is not None and cond_arg in fixed:
        raise ValueError(f"call_kwargs already holds the conditioning keyword {cond_arg!r}.")
    sd2 = float(sigma_data) ** 2

    def network(params, x_in, t_in, cond):
        if batch_time:
            if x_in.ndim < 1:
                raise ValueError("batch_time=True needs x with a leading batch axis.")
            t_in = jnp.broadcast_to(t_in, (x_in.shape[0],))
        args, kwargs = (), dict(fixed)
        if cond is not None:
            if cond_arg is None:
                args = (cond,)
            else:
                kwargs[cond_arg] = cond
        out = jnp.asarray(call(params, x_in, t_in, *args, **kwargs))
        if learned_variance and x_in.ndim < 1:
            raise ValueError("learned_variance=True needs x with a channel (last) axis.")
        channels = x_in.shape[-1] if x_in.ndim else None
        want = x_in.shape[:-1] + (2 * channels,) if learned_variance else x_in.shape
        if out.shape != want:
            raise ValueError(
                f"The network returned shape {out.shape} for an input of shape {x_in.shape}; "
                + (f"learned_variance=True needs 2 * {channels} channels on the last axis, shape "
                   f"{want}." if learned_variance else
                   f"expected {want} (learned_variance=True keeps the first half of 2C channels).")
            )
        return out[..., :channels] if learned_variance else out

    def apply_fn(params, x, t, cond):
        x = jnp.asarray(x)
        t = jnp.asarray(t)
        if not edm:
            return network(params, x, time_fn(t), cond)
        sigma = path.sigma(t)
        norm2 = sigma**2 + sd2
        c_in = _expand(1.0 / jnp.sqrt(norm2), x)
        c_skip = _expand(sd2 / norm2, x)
        c_out = _expand(sigma * math.sqrt(sd2) / jnp.sqrt(norm2), x)
        f = network(params, (c_in * x).astype(x.dtype), jnp.log(sigma) / 4, cond)
        return c_skip * x + c_out * f

    return Model(apply_fn, params, path=path, prediction=prediction)


def from_linen(
    module,
    variables,
    *,
    path: GaussianPath,
    prediction: str,
    time_input: str = "model",
    batch_time: bool = True,
    learned_variance: bool = False,
    sigma_data: float = 0.5,
    num_train_steps: int | None = None,
    cond_arg: str | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> Model:
    """Wraps a Flax Linen module and its variables into an :class:`~ersde_jax.Model`.

    The network is called as ``module.apply(variables, x_in, t_in)``, plus ``cond`` (third
    positional argument, or keyword ``cond_arg``) when the sampler's ``cond`` is not None, plus
    ``call_kwargs``. ``x_in``, ``t_in`` and the output conversion follow ``time_input`` (see the
    module docstring); ``"edm"`` applies the preconditioning of EDM (Karras et al. 2022,
    "Elucidating the Design Space of Diffusion-Based Generative Models", Table 1). Images reach
    the module batch first as the sampler holds them: write it channels-last (NHWC), the layout
    of Flax's convolutions (see the module docstring for what NCHW costs).

    Args:
        module: the ``flax.linen.Module``.
        variables: its variables (``{"params": ...}``, plus e.g. ``"batch_stats"``); they become
            the Model's traced ``params``.
        path: the :class:`~ersde_jax.paths.GaussianPath` the network was trained on.
        prediction: what the network (after the conversion) predicts: "x0", "eps", "v", "score"
            or "flow"; must be "x0" with ``time_input="edm"``.
        time_input: "model", "sigma", "edm", "continuous", "discrete", "log_snr" or
            "neg_log_snr" (``TIME_INPUTS``; see the module docstring).
        batch_time: pass the time as a ``(B,)`` vector (True) or a scalar (False).
        learned_variance: the network outputs ``2 C`` channels; the first ``C`` are kept.
        sigma_data: EDM's data standard deviation (``time_input="edm"`` only).
        num_train_steps: ``N`` of ``time_input="discrete"`` on a continuous path (index
            ``t (N - 1)``, default 1000); for discrete paths it must match the path if given.
        cond_arg: keyword under which ``cond`` is passed; None passes it positionally.
        call_kwargs: fixed keyword arguments of every ``module.apply`` call.

    Returns:
        The :class:`~ersde_jax.Model`.

    Example:
        >>> variables = net.init(key, x, jnp.zeros(x.shape[0]))
        >>> model = from_linen(net, variables, path=ej.paths.edm(), prediction="x0",
        ...                    time_input="edm")
    """
    if not isinstance(module, _linen.Module):
        raise TypeError(
            f"from_linen needs a flax.linen.Module, got {type(module)} (use from_nnx for NNX)."
        )
    return _adapter(
        module.apply, variables, path=path, prediction=prediction, time_input=time_input,
        batch_time=batch_time, learned_variance=learned_variance, sigma_data=sigma_data,
        num_train_steps=num_train_steps, cond_arg=cond_arg, call_kwargs=call_kwargs,
    )


def from_nnx(
    module,
    *,
    path: GaussianPath,
    prediction: str,
    time_input: str = "model",
    batch_time: bool = True,
    learned_variance: bool = False,
    sigma_data: float = 0.5,
    num_train_steps: int | None = None,
    cond_arg: str | None = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> Model:
    """Wraps a Flax NNX module into an :class:`~ersde_jax.Model`.

    The module is split once, ``graphdef, state = nnx.split(module)``: the state (all of it,
    parameters and any other variables) becomes the Model's traced ``params`` and the graph
    definition stays static; ``apply_fn`` merges them and calls ``module(x_in, t_in)``, plus
    ``cond`` (third positional argument, or keyword ``cond_arg``) when the sampler's ``cond`` is
    not None, plus ``call_kwargs``. Later changes to ``module`` do not reach the Model, and state
    updates made by the call (e.g. RNG counters) are discarded; put the module in evaluation mode
    (``module.eval()``) first. ``time_input="edm"`` applies the preconditioning of EDM (Karras et
    al. 2022, Table 1); see the module docstring for every convention. Images reach the module
    batch first as the sampler holds them: write it channels-last (NHWC), the layout of Flax's
    convolutions (see the module docstring for what NCHW costs).

    Args:
        module: the ``flax.nnx.Module``.
        path: the :class:`~ersde_jax.paths.GaussianPath` the network was trained on.
        prediction: what the network (after the conversion) predicts: "x0", "eps", "v", "score"
            or "flow"; must be "x0" with ``time_input="edm"``.
        time_input: "model", "sigma", "edm", "continuous", "discrete", "log_snr" or
            "neg_log_snr" (``TIME_INPUTS``; see the module docstring).
        batch_time: pass the time as a ``(B,)`` vector (True) or a scalar (False).
        learned_variance: the network outputs ``2 C`` channels; the first ``C`` are kept.
        sigma_data: EDM's data standard deviation (``time_input="edm"`` only).
        num_train_steps: ``N`` of ``time_input="discrete"`` on a continuous path (index
            ``t (N - 1)``, default 1000); for discrete paths it must match the path if given.
        cond_arg: keyword under which ``cond`` is passed; None passes it positionally.
        call_kwargs: fixed keyword arguments of every call.

    Returns:
        The :class:`~ersde_jax.Model`.

    Example:
        >>> model = from_nnx(net, path=ej.paths.vp_discrete(), prediction="eps",
        ...                  time_input="discrete")
    """
    if not isinstance(module, _nnx.Module):
        raise TypeError(
            f"from_nnx needs a flax.nnx.Module, got {type(module)} (use from_linen for Linen)."
        )
    graphdef, state = _nnx.split(module)

    def call(params, *args, **kwargs):
        return _nnx.merge(graphdef, params)(*args, **kwargs)

    return _adapter(
        call, state, path=path, prediction=prediction, time_input=time_input,
        batch_time=batch_time, learned_variance=learned_variance, sigma_data=sigma_data,
        num_train_steps=num_train_steps, cond_arg=cond_arg, call_kwargs=call_kwargs,
    )
