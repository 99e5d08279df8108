"""The model: a network, its parameters, the path it was trained on and what it predicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from ._numerics import pytree_dataclass
from ._path import GaussianPath
from ._prediction import PREDICTIONS, Denoised

__all__ = ["Model"]


@pytree_dataclass
@dataclasses.dataclass(frozen=True)
class Model:
    """A diffusion model as a pytree: ``params`` are traced, everything else is static.

    Attributes:
        apply_fn: ``apply_fn(params, x, t, cond) -> array`` with the shape of ``x``; ``t`` is a
            scalar array of model time (sigma for ``edm``, the index for ``vp_discrete``).
        params: pytree of network parameters (differentiable).
        path: the :class:`~ersde_jax.paths.GaussianPath` the network was trained on.
        prediction: what the network outputs: "x0", "eps", "v", "score" or "flow"
            (MATH.md section 2). Its converter to ``(x0, eps)`` is chosen once, here.
        takes_mu: whether ``apply_fn`` also takes the path's mean, as
            ``apply_fn(params, x, t, cond, mu)``: for networks conditioned on the degraded image
            of mean-reverting diffusion, exact denoisers, and model transforms that convert
            predictions (guidance). ``cond`` and ``mu`` are never substituted for each other.

    Example:
        >>> model = ej.Model(apply_fn, params, path=ej.paths.edm(), prediction="x0")
    """

    apply_fn: Callable = dataclasses.field(metadata=dict(static=True))
    params: Any
    path: GaussianPath = dataclasses.field(metadata=dict(static=True))
    prediction: str = dataclasses.field(default="eps", metadata=dict(static=True))
    takes_mu: bool = dataclasses.field(default=False, metadata=dict(static=True))

    def __post_init__(self):
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be callable, got {type(self.apply_fn)}.")
        if not isinstance(self.path, GaussianPath):
            raise TypeError(f"path must be an ersde_jax path (ej.paths.*), got {type(self.path)}.")
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"Unknown prediction {self.prediction!r}; expected one of {tuple(PREDICTIONS)}."
            )
        if not isinstance(self.takes_mu, bool):
            raise TypeError(f"takes_mu must be a bool, got {type(self.takes_mu).__name__}.")
        object.__setattr__(self, "_convert", PREDICTIONS[self.prediction])

    def denoise(self, y, t, alpha, sigma, mu, cond) -> Denoised:
        """Calls the network once at ``x = y + mu`` and returns ``(x0 - mu, eps)``.

        Args:
            y: centred state ``x - mu`` (solver dtype).
            t: scalar model time.
            alpha, sigma: the path's coefficients at ``t``.
            mu: the mean the path reverts to (0 for non-mean-reverting paths).
            cond: conditioning pytree passed through to ``apply_fn``.
        """
        x = y + mu
        if self.takes_mu:
            out = self.apply_fn(self.params, x, t, cond, mu)
        else:
            out = self.apply_fn(self.params, x, t, cond)
        if not hasattr(out, "shape") or out.shape != x.shape:
            raise ValueError(
                f"Model output shape {getattr(out, 'shape', type(out))} differs from the input "
                f"shape {x.shape}; apply_fn must return an array shaped like x."
            )
        out = jnp.asarray(out).astype(y.dtype)
        return self._convert(out, y, alpha, sigma, mu, self.path.v_scale)
