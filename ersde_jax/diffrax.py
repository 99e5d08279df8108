"""Diffrax terms for ER-SDEs (optional extra: ``pip install diffrax``).

Solve the extended reverse-time SDE of Cui et al. (*Elucidating the solution space of extended
reverse-time SDE for diffusion models*, "ER-SDE") with any `diffrax <https://docs.kidger.site/
diffrax>`_ solver, on any :class:`~ersde_jax.Model`.

Coordinates (MATH.md sections 1 and 3). With ``rho = sigma / alpha`` and the scaled, centred state
``y = (x - mu) / alpha``, the exact ER-SDE solution over a step (ER-SDE paper, section 3) is, to
first order in ``d rho``, the SDE in the time variable ``rho``

    dy = (phi'(rho) / phi(rho)) (y - x0c(rho)) d rho + rho sqrt(2 (log g)'(rho)) dW,

where ``g = phi / rho``, ``x0c(rho) = x0_hat - mu`` is the model's data prediction at model time
``t = path.t_from_rho(rho)``, and ``phi'/phi = 1/rho + (log g)'``. The solve runs
*backwards* in ``rho``, from ``rho_max`` down to ``rho_min > 0`` (``t0 = rho_max``,
``t1 = rho_min``, ``dt0 < 0``); over a step from ``rho_s`` to ``rho_t`` the injected variance is
``2 rho (rho phi'/phi - 1) |d rho| = rho_t^2 - rho_s^2 r^2 + O(d rho^2)``, ``r = phi(rho_t) /
phi(rho_s)``, as in the exact solution. ``phi(rho) = rho`` gives the probability-flow ODE
``dy = (y - x0c) / rho d rho``; ``phi(rho) = rho^2`` the classic reverse SDE.

Example:
    >>> import diffrax
    >>> import ersde_jax.diffrax as ejd
    >>> rho_max, rho_min = 80.0, 0.002
    >>> y0, _ = ejd.to_state(model.path, x_T, model.path.t_max)
    >>> terms = ejd.er_sde_terms(key, model, "er_sde_5", shape=y0.shape, rho_max=rho_max,
    ...                          rho_min=rho_min)
    >>> sol = diffrax.diffeqsolve(terms, diffrax.Euler(), rho_max, rho_min, -0.01, y0)
    >>> x = ejd.from_state(model.path, sol.ys[-1], rho_min)
"""

from __future__ import annotations

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._model import Model
from ._noise_scale import NoiseScale, check_noise_scale
from ._noise_scale import noise_scale as _noise_scale
from ._numerics import is_concrete
from ._path import GaussianPath

__all__ = ["er_sde_terms", "pf_ode_term", "to_state", "from_state", "denoise_state"]


def _mu(mu, dtype):
    return jnp.zeros((), dtype) if mu is None else jnp.asarray(mu, dtype)


def _rho_time(path: GaussianPath, rho):
    t = path.t_from_rho(rho)
    return t, path.alpha(t), path.sigma(t)


def _x0c(model: Model, rho, y, mu, cond):
    """``x0_hat - mu`` at noise level ``rho`` for the scaled state ``y = (x - mu) / alpha``."""
    t, alpha, sigma = _rho_time(model.path, rho)
    return model.denoise(alpha * y, t, alpha, sigma, mu, cond).x0


class _PFODEDrift(eqx.Module):
    model: Model
    mu: Any
    cond: Any

    def __call__(self, rho, y, args):
        del args
        rho = jnp.asarray(rho, y.dtype)
        return (y - _x0c(self.model, rho, y, self.mu, self.cond)) / rho


class _ERSDEDrift(eqx.Module):
    model: Model
    scale: NoiseScale
    eta: Any
    mu: Any
    cond: Any

    def __call__(self, rho, y, args):
        del args
        rho = jnp.asarray(rho, y.dtype)
        dlog_phi = 1.0 / rho + self.eta * jax.grad(self.scale.log_g)(rho)
        return dlog_phi * (y - _x0c(self.model, rho, y, self.mu, self.cond))


class _ERSDEDiffusion(eqx.Module):
    scale: NoiseScale
    eta: Any

    def __call__(self, rho, y, args):
        del args
        rho = jnp.asarray(rho, y.dtype)
        dlog_g = self.eta * jax.grad(self.scale.log_g)(rho)
        # 2 rho (rho phi'/phi - 1) = 2 rho^2 (log g)'; >= 0 for a valid phi, clamped for round-off.
        var = jnp.maximum(2.0 * dlog_g, 0.0)
        safe = jnp.where(var > 0, var, 1.0)
        std = rho * jnp.where(var > 0, jnp.sqrt(safe), 0.0)
        return lx.DiagonalLinearOperator(jnp.full_like(y, std))


def _check_range(rho_max, rho_min):
    if not is_concrete((rho_max, rho_min)):
        return
    hi, lo = float(np.asarray(rho_max)), float(np.asarray(rho_min))
    if not (math.isfinite(hi) and math.isfinite(lo) and 0.0 < lo < hi):
        raise ValueError(
            f"Need finite 0 < rho_min < rho_max (the solve runs from rho_max down to rho_min); "
            f"got rho_max={hi}, rho_min={lo}."
        )


def pf_ode_term(model: Model, *, mu=None, cond=None) -> diffrax.ODETerm:
    """The probability-flow ODE ``dy = (y - x0c(rho)) / rho d rho`` as a diffrax term.

    The ER-SDE with ``phi(rho) = rho`` (ER-SDE paper, section 3); deterministic. Integrate from
    ``t0 = rho_max`` to ``t1 = rho_min > 0`` (backwards, ``dt0 < 0``) on the state
    ``y = (x - mu) / alpha``; see :func:`to_state` and :func:`from_state`.

    Args:
        model: the :class:`~ersde_jax.Model`.
        mu: mean of a mean-reverting path (broadcastable to the state); default 0.
        cond: conditioning pytree for ``apply_fn`` (never replaced by ``mu``).

    Returns:
        A ``diffrax.ODETerm`` over the time variable ``rho``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an ersde_jax.Model, got {type(model)}.")
    mu_arr = _mu(mu, jnp.result_type(float))
    return diffrax.ODETerm(_PFODEDrift(model, mu_arr, cond))


def er_sde_terms(
    key,
    model: Model,
    noise_scale: str | NoiseScale = "er_sde_5",
    *,
    shape,
    rho_max,
    rho_min,
    eta=1.0,
    mu=None,
    cond=None,
    dtype=None,
    tol=None,
) -> diffrax.MultiTerm:
    """The ER-SDE of noise-scale function ``phi`` as diffrax terms (drift + Brownian diffusion).

    ``dy = (phi'/phi)(rho) (y - x0c(rho)) d rho + rho sqrt(2 (log g)'(rho)) dW``, ``g = phi/rho``
    (ER-SDE paper, section 3; derived in this module's docstring). Integrate from
    ``t0 = rho_max`` to ``t1 = rho_min`` (backwards, ``dt0 < 0``) on the state
    ``y = (x - mu) / alpha``. ``phi_eta = rho^(1-eta) phi^eta`` interpolates from the ODE
    (``eta = 0``) to ``phi`` (``eta = 1``). Use an SDE-capable solver (``diffrax.Euler``,
    ``diffrax.Heun``, ``diffrax.SPaRK``, ...); the noise is diagonal (a multiple of the identity).

    Args:
        key: ``jax.random`` key of the ``diffrax.VirtualBrownianTree``.
        model: the :class:`~ersde_jax.Model`.
        noise_scale: a name in ``ej.NOISE_SCALES``, or an :class:`~ersde_jax.NoiseScale`
            (``ej.noise_scale(phi, params)`` for a callable).
        shape: shape of the state ``y`` (batch axes included).
        rho_max, rho_min: the interval of the solve, ``0 < rho_min < rho_max``.
        eta: stochasticity, ``>= 0``.
        mu: mean of a mean-reverting path (broadcastable to ``shape``); default 0.
        cond: conditioning pytree for ``apply_fn`` (never replaced by ``mu``).
        dtype: dtype of the Brownian motion; default the default float dtype.
        tol: tolerance of the Brownian tree; default ``1e-3 * rho_min``.

    Returns:
        ``diffrax.MultiTerm(ODETerm(drift), ControlTerm(diffusion, VirtualBrownianTree))``.

    Raises:
        ValueError: unknown noise-scale name, ``rho_min >= rho_max``, ``rho_min <= 0``,
            ``eta < 0``, or a ``phi`` violating the ER-SDE constraint on ``[rho_min, rho_max]``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an ersde_jax.Model, got {type(model)}.")
    scale = _noise_scale(noise_scale)
    _check_range(rho_max, rho_min)
    if is_concrete((rho_max, rho_min)):
        grid = np.geomspace(float(np.asarray(rho_min)), float(np.asarray(rho_max)), 64)
    else:
        grid = np.ones(1)
    check_noise_scale(scale, eta, grid)
    dtype = dtype or jnp.result_type(float)
    mu_arr = _mu(mu, dtype)
    eta = jnp.asarray(eta, dtype)
    if tol is None:
        tol = 1e-3 * rho_min
    brownian = diffrax.VirtualBrownianTree(
        rho_min, rho_max, tol=tol, shape=jax.ShapeDtypeStruct(tuple(shape), dtype), key=key
    )
    return diffrax.MultiTerm(
        diffrax.ODETerm(_ERSDEDrift(model, scale, eta, mu_arr, cond)),
        diffrax.ControlTerm(_ERSDEDiffusion(scale, eta), brownian),
    )


def to_state(path: GaussianPath, x, t, mu=None):
    """Converts a sample ``x`` at model time ``t`` to the solver state.

    Args:
        path: the model's path.
        x: the sample (e.g. ``x_T`` from ``ej.prior_sample`` at ``t = path.t_max``).
        t: model time of ``x``.
        mu: mean of a mean-reverting path; default 0.

    Returns:
        ``(y, rho)``: ``y = (x - mu) / alpha_t`` and ``rho = sigma_t / alpha_t`` (the ``t0`` of the
        solve).
    """
    dtype = jnp.result_type(x, float)
    t = jnp.asarray(t, dtype)
    y = (x - _mu(mu, dtype)) / path.alpha(t)
    return y.astype(dtype), jnp.exp(-path.lam(t))


def from_state(path: GaussianPath, y, rho, mu=None):
    """The sample ``x = mu + alpha y`` at noise level ``rho`` (e.g. ``sol.ys[-1]`` at ``rho_min``).

    Args:
        path: the model's path.
        y: the solver state.
        rho: its noise level ``sigma / alpha``.
        mu: mean of a mean-reverting path; default 0.
    """
    rho = jnp.asarray(rho, y.dtype)
    alpha = path.alpha(path.t_from_rho(rho))
    return _mu(mu, y.dtype) + alpha * y


def denoise_state(model: Model, y, rho, *, mu=None, cond=None):
    """The final denoising step ``x0_hat`` from the state ``y`` at ``rho`` (one network call).

    The ER-SDE solution's last jump to ``rho = 0`` (MATH.md section 3): use it after solving down
    to ``rho_min`` to return data, as the discrete samplers do on their last step.
    """
    rho = jnp.asarray(rho, y.dtype)
    mu_arr = _mu(mu, y.dtype)
    return mu_arr + _x0c(model, rho, y, mu_arr, cond)
