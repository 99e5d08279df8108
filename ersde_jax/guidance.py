"""Model transforms usable with every solver: guidance and thresholding (MATH.md section 2).

Each guidance transform returns a new :class:`~ersde_jax.Model`, so any sampler runs it unchanged;
its hyperparameters live in the new model's ``params`` (traced, differentiable).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._model import Model
from ._prediction import PREDICTIONS

__all__ = ["classifier_free", "classifier_guidance", "dynamic_thresholding"]


def classifier_free(model: Model, scale, uncond: Any) -> Model:
    """Classifier-free guidance (Ho & Salimans 2022): ``out = out_u + w (out_c - out_u)``.

    The conditional and unconditional outputs come from ONE network call on a doubled batch,
    with ``cond`` and ``uncond`` stacked along the batch axis. ``w = 1`` is the conditional
    model and ``w = 0`` the unconditional one; the combination is taken on the network's own
    output (eps, x0, v, ...), which is linear in it for every parameterization of section 2.

    Args:
        model: a model whose ``apply_fn`` takes a batched conditioning pytree ``cond``.
        scale: the guidance weight ``w`` (traced).
        uncond: the "null" conditioning, a pytree shaped like the ``cond`` the sampler passes
            (e.g. a batch of null labels).

    Returns:
        The guided model (same path and prediction).
    """
    inner = model.apply_fn

    def apply_fn(params, x, t, cond):
        net_params, w, null = params
        both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u]), cond, null)
        out = inner(net_params, jnp.concatenate([x, x]), t, both)
        out_c, out_u = jnp.split(out, 2)
        return out_u + w * (out_c - out_u)

    return Model(apply_fn, (model.params, scale, uncond), path=model.path,
                 prediction=model.prediction)


def classifier_guidance(model: Model, log_prob_fn: Callable, classifier_params: Any, scale
                        ) -> Model:
    """Classifier guidance (Dhariwal & Nichol 2021) through ``jax.grad`` of a classifier.

    Adds ``scale * grad_x log p(y | x_t)`` to the score: ``eps_hat -= scale sigma grad``
    (equivalently ``x0_hat += scale sigma^2 / alpha grad``). The guided model predicts eps.

    Args:
        model: the diffusion model (paths with ``mu = 0``).
        log_prob_fn: ``log_prob_fn(classifier_params, x, t, cond) -> (B,)`` log-probabilities of
            the requested classes (taken from ``cond``) at noisy ``x`` and model time ``t``.
        classifier_params: the classifier's parameters.
        scale: the guidance scale (traced).

    Returns:
        The guided model, ``prediction="eps"``.
    """
    inner, convert, path = model.apply_fn, PREDICTIONS[model.prediction], model.path

    def apply_fn(params, x, t, cond):
        net_params, c_params, s = params
        alpha, sigma = path.alpha(t).astype(x.dtype), path.sigma(t).astype(x.dtype)
        eps = convert(inner(net_params, x, t, cond).astype(x.dtype), x, alpha, sigma, 0.0,
                      path.v_scale).eps
        grad = jax.grad(lambda z: jnp.sum(log_prob_fn(c_params, z, t, cond)))(x)
        return eps - s * sigma * grad.astype(x.dtype)

    return Model(apply_fn, (model.params, classifier_params, scale), path=path, prediction="eps")


def dynamic_thresholding(x0, ratio: float = 0.995, max_value: float = 1.0):
    """Dynamic thresholding of a data prediction (Saharia et al. 2022, Imagen).

    Per sample, ``s = quantile(|x0|, ratio)`` over all non-batch axes, clipped to
    ``[1, max_value]``; returns ``clip(x0, -s, s) / s``.

    Args:
        x0: data prediction, batch axis first.
        ratio: the quantile, in (0, 1].
        max_value: the largest threshold ``s``.
    """
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.clip(jnp.quantile(flat, ratio, axis=1), 1.0, max_value)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.clip(x0, -s, s) / s
