"""Noise-scale functions phi of the extended reverse-time SDE (ER-SDE paper, section 3).

A noise-scale function ``phi(rho)`` fixes the diffusion ``h(t)`` of the ER SDE. It is valid when
``phi(rho) > 0`` for ``rho > 0`` and ``g(rho) = phi(rho) / rho`` is non-decreasing. Everything the
solvers need is written through ``log g``: ``log phi = log rho + log g``, and the
eta-interpolation ``phi_eta = rho^(1 - eta) phi^eta`` is simply ``log g_eta = eta log g``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._numerics import eval_f64, is_concrete, pytree_dataclass

__all__ = ["NoiseScale", "noise_scale", "NOISE_SCALES"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class NoiseScale:
    """A noise-scale function, held as ``log g(rho) = log(phi(rho) / rho)``.

    Attributes:
        fn: ``fn(rho)`` or, when ``params`` is not None, ``fn(rho, params)``; returns ``log g``
            for the named functions and ``phi`` itself for user functions (``is_phi``).
        params: pytree of (differentiable) parameters of the function, or None.
        name: a label; the named functions of the paper use their names.
        closed_form: "ode" or "sde" when the integrals of section 3 have closed forms.
        known_valid: True for the paper's functions (no run-time validity check needed).
    """

    fn: Callable = dataclasses.field(metadata=dict(static=True))
    params: Any = None
    name: str = dataclasses.field(default="custom", metadata=dict(static=True))
    closed_form: str | None = dataclasses.field(default=None, metadata=dict(static=True))
    known_valid: bool = dataclasses.field(default=False, metadata=dict(static=True))
    is_phi: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def log_g(self, rho):
        """``log(phi(rho) / rho)``."""
        value = self.fn(rho) if self.params is None else self.fn(rho, self.params)
        return jnp.log(value) - jnp.log(rho) if self.is_phi else value

    def __call__(self, rho):
        """``phi(rho)``."""
        return rho * jnp.exp(self.log_g(rho))


def _log1p_exp10(log_term):
    # log(exp(e) + 10) without overflow for large e.
    return jnp.logaddexp(log_term, jnp.log(10.0))


_NAMED: dict[str, tuple[Callable, str | None]] = {
    # phi(x) = x: the probability-flow ODE.
    "ode": (lambda x: jnp.zeros_like(x), "ode"),
    # phi(x) = x^2: the original reverse SDE.
    "sde": (lambda x: jnp.log(x), "sde"),
    # phi(x) = x (exp(-1/x) + 10).
    "er_sde_1": (lambda x: _log1p_exp10(-1.0 / x), None),
    # phi(x) = x^1.5.
    "er_sde_2": (lambda x: 0.5 * jnp.log(x), None),
    # phi(x) = x^2.5.
    "er_sde_3": (lambda x: 1.5 * jnp.log(x), None),
    # phi(x) = x^0.9 log10(1 + 100 x^1.5).
    "er_sde_4": (
        lambda x: -0.1 * jnp.log(x) + jnp.log(jnp.log1p(100.0 * x**1.5) / jnp.log(10.0)),
        None,
    ),
    # phi(x) = x (exp(x^0.3) + 10): the paper's recommended function.
    "er_sde_5": (lambda x: _log1p_exp10(x**0.3), None),
}

NOISE_SCALES = tuple(_NAMED)


def noise_scale(phi: str | Callable | NoiseScale, params: Any = None) -> NoiseScale:
    """Builds a :class:`NoiseScale` from a name, a callable ``phi`` or an existing one.

    Args:
        phi: one of ``NOISE_SCALES`` ("ode", "sde", "er_sde_1" ... "er_sde_5"), or a callable
            ``phi(rho)`` (``phi(rho, params)`` when ``params`` is given) returning the noise scale.
        params: optional pytree of parameters of a callable ``phi`` (traced, differentiable).

    Returns:
        The noise-scale function.

    Raises:
        ValueError: for an unknown name.
        TypeError: when ``phi`` is neither a string nor callable.
    """
    if isinstance(phi, NoiseScale):
        return phi
    if isinstance(phi, str):
        if phi not in _NAMED:
            raise ValueError(f"Unknown noise scale {phi!r}; expected one of {NOISE_SCALES}.")
        fn, closed = _NAMED[phi]
        return NoiseScale(fn, None, phi, closed, known_valid=True)
    if not callable(phi):
        raise TypeError(f"noise_scale must be a name or a callable phi(rho), got {type(phi)}.")
    return NoiseScale(phi, params, getattr(phi, "__name__", "custom"), is_phi=True)


def check_noise_scale(scale: NoiseScale, eta, rho: np.ndarray) -> None:
    """Raises ValueError if ``phi_eta`` breaks the ER-SDE constraint on the grid's rho range.

    Checks that ``phi > 0`` and ``phi / rho`` is non-decreasing on the grid's
    noise levels and on a dense log-spaced grid between them. Skipped for traced inputs.
    """
    if not is_concrete((eta, scale.params)):
        return
    eta = float(np.asarray(eta))
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be finite and >= 0 (phi_eta = x^(1-eta) phi^eta), got {eta}.")
    if scale.known_valid or eta == 0:
        return
    rho = np.asarray(rho, np.float64)
    rho = rho[np.isfinite(rho) & (rho > 0)]
    dense = np.geomspace(rho.min(), rho.max(), 513) if rho.size > 1 else rho
    xs = np.unique(np.concatenate([rho, dense]))
    log_g = eval_f64(lambda x: eta * scale.log_g(x), xs)
    tol = 1e-6  # user functions may compute in float32
    if not np.all(np.isfinite(log_g)):
        bad = xs[~np.isfinite(log_g)][0]
        raise ValueError(
            f"Noise scale {scale.name!r}: phi must be finite and > 0 for rho > 0; "
            f"phi({bad:.4g}) is not."
        )
    drops = np.diff(log_g) < -tol * np.maximum(1.0, np.abs(log_g[1:]))
    if np.any(drops):
        where = xs[1:][drops][0]
        raise ValueError(
            f"Noise scale {scale.name!r} violates the ER-SDE constraint: phi(rho)/rho must be "
            f"non-decreasing, but it decreases near rho = {where:.4g}."
        )
