"""Model transforms usable with every solver: guidance and thresholding (MATH.md section 2).

Each transform returns a new :class:`~ersde_jax.Model`, so any sampler runs it unchanged; its
hyperparameters live in the new model's ``params`` (traced, differentiable).

A transform that converts predictions receives the sampler's mean ``mu`` (its model has
``takes_mu=True``), so every transform works on mean-reverting paths too
(:func:`ersde_jax.paths.ir_sde`); ``cond`` is passed through untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._model import Model
from ._numerics import is_concrete

__all__ = ["classifier_free", "classifier_guidance", "dynamic_thresholding", "thresholded"]


def _check_model(name: str, model) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"{name}: model must be an ej.Model, got {type(model).__name__}.")


def _check_threshold(ratio, max_value) -> None:
    if is_concrete(ratio) and not np.all((np.asarray(ratio) > 0) & (np.asarray(ratio) <= 1)):
        raise ValueError(f"dynamic thresholding: ratio must be in (0, 1], got {ratio}.")
    if is_concrete(max_value) and not np.all(np.asarray(max_value) >= 1):
        raise ValueError(f"dynamic thresholding: max_value must be >= 1, got {max_value}.")


def _coefficients(path, t, dtype):
    return jnp.asarray(path.alpha(t), dtype), jnp.asarray(path.sigma(t), dtype)


def _predictions(model: Model, net_params, x, t, alpha, sigma, cond, mu):
    """``model``'s network called once at ``(x, t)``: centred ``(x0_hat - mu, eps_hat)``."""
    inner = dataclasses.replace(model, params=net_params)
    return inner.denoise(x - mu, t, alpha, sigma, mu, cond)


def _check_uncond(cond, uncond) -> None:
    """Trace-time check that ``uncond`` can be stacked with ``cond`` along the batch axis."""
    tree = jax.tree_util
    matches = tree.tree_structure(cond) == tree.tree_structure(uncond) and all(
        jnp.ndim(c) >= 1 and jnp.shape(c) == jnp.shape(u)
        for c, u in zip(tree.tree_leaves(cond), tree.tree_leaves(uncond), strict=True)
    )
    if not matches:
        raise ValueError(
            "classifier_free: uncond must have the tree structure and shapes (batch axis first) "
            f"of the cond the sampler passes; got cond {tree.tree_map(jnp.shape, cond)} and "
            f"uncond {tree.tree_map(jnp.shape, uncond)}."
        )


def classifier_free(model: Model, scale, uncond: Any) -> Model:
    """Classifier-free guidance (Ho & Salimans 2022): ``out = out_u + w (out_c - out_u)``.

    The conditional and unconditional outputs come from ONE network call on a doubled batch,
    with ``cond`` and ``uncond`` stacked along the batch axis. ``w = 1`` is the conditional
    model and ``w = 0`` the unconditional one; the combination is taken on the network's own
    output (eps, x0, v, ...), which is linear in it for every parameterization of section 2.

    Args:
        model: a model whose ``apply_fn`` takes a batched conditioning pytree ``cond``.
        scale: the guidance weight ``w`` (traced).
        uncond: the "null" conditioning, a pytree with the structure and shapes of the ``cond``
            the sampler passes (e.g. a batch of null labels).

    Returns:
        The guided model (same path and prediction).

    Raises:
        TypeError: if ``model`` is not a :class:`~ersde_jax.Model`.
        ValueError: if ``uncond`` is None; when traced, if ``uncond`` and the sampler's
            ``cond`` differ in tree structure or shapes.

    Example:
        >>> null = jnp.full((n,), NULL_LABEL)
        >>> guided = ej.guidance.classifier_free(model, 3.0, null)
        >>> x = ej.ersde_sample(key, guided, x_T, cond=labels)

    References:
        Ho & Salimans, "Classifier-Free Diffusion Guidance", 2022.
    """
    _check_model("classifier_free", model)
    if uncond is None:
        raise ValueError("classifier_free: uncond (the null conditioning) must not be None.")
    inner = model.apply_fn

    def apply_fn(params, x, t, cond, *mu):
        net_params, w, null = params
        _check_uncond(cond, null)
        both = jax.tree_util.tree_map(lambda c, u: jnp.concatenate([c, u]), cond, null)
        doubled = (jnp.concatenate([jnp.broadcast_to(m, x.shape)] * 2) for m in mu)
        out = inner(net_params, jnp.concatenate([x, x]), t, both, *doubled)
        out_c, out_u = jnp.split(out, 2)
        return out_u + w * (out_c - out_u)

    return Model(apply_fn, (model.params, scale, uncond), path=model.path,
                 prediction=model.prediction, takes_mu=model.takes_mu)


def classifier_guidance(model: Model, log_prob_fn: Callable, classifier_params: Any, scale
                        ) -> Model:
    """Classifier guidance (Dhariwal & Nichol 2021) through ``jax.grad`` of a classifier.

    Adds ``scale * grad_x log p(y | x_t)`` to the score: ``eps_hat -= scale sigma grad``
    (equivalently ``x0_hat += scale sigma^2 / alpha grad``). The guided model predicts eps.

    Args:
        model: the diffusion model (any path and prediction).
        log_prob_fn: ``log_prob_fn(classifier_params, x, t, cond) -> (B,)`` log-probabilities of
            the requested classes (taken from ``cond``) at noisy ``x`` and model time ``t``.
        classifier_params: the classifier's parameters.
        scale: the guidance scale (traced).

    Returns:
        The guided model, ``prediction="eps"``.

    Raises:
        TypeError: if ``model`` is not a :class:`~ersde_jax.Model` or ``log_prob_fn`` is not
            callable.

    Example:
        >>> clf = ej.pretrained.digits_classifier()
        >>> guided = ej.guidance.classifier_guidance(model, clf.log_prob_fn, clf, 2.0)

    References:
        Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", 2021.
    """
    _check_model("classifier_guidance", model)
    if not callable(log_prob_fn):
        raise TypeError(f"classifier_guidance: log_prob_fn must be callable, got "
                        f"{type(log_prob_fn).__name__}.")

    def apply_fn(params, x, t, cond, mu=0.0):
        net_params, c_params, s = params
        alpha, sigma = _coefficients(model.path, t, x.dtype)
        eps = _predictions(model, net_params, x, t, alpha, sigma, cond, mu).eps
        grad = jax.grad(lambda z: jnp.sum(log_prob_fn(c_params, z, t, cond)))(x)
        return eps - s * sigma * grad.astype(x.dtype)

    return Model(apply_fn, (model.params, classifier_params, scale), path=model.path,
                 prediction="eps", takes_mu=True)


def dynamic_thresholding(x0, ratio: float = 0.995, max_value: float = 1.0):
    """Dynamic thresholding of a data prediction (Saharia et al. 2022, Imagen).

    Per sample, ``s = quantile(|x0|, ratio)`` over all non-batch axes, clipped to
    ``[1, max_value]``; returns ``clip(x0, -s, s) / s``, which lies in ``[-1, 1]``. The default
    ``max_value = 1`` fixes ``s = 1``: static clipping to ``[-1, 1]`` (DPM-Solver's default);
    ``max_value = inf`` is Imagen's unbounded ``s = max(1, quantile)``.

    Args:
        x0: data prediction, batch axis first.
        ratio: the quantile, in (0, 1].
        max_value: the largest threshold ``s``, >= 1.

    Raises:
        ValueError: for a concrete ``ratio`` outside (0, 1] or ``max_value`` below 1.

    References:
        Saharia et al., "Photorealistic Text-to-Image Diffusion Models with Deep Language
        Understanding", 2022, section 2.3.
    """
    _check_threshold(ratio, max_value)
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.clip(jnp.quantile(flat, ratio, axis=1), 1.0, max_value)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.clip(x0, -s, s) / s


def thresholded(model: Model, ratio=0.995, max_value=float("inf")) -> Model:
    """The model whose data prediction is :func:`dynamic_thresholding` of ``model``'s.

    Converts the network output to ``x0_hat`` at the path's ``(alpha_t, sigma_t)`` and
    thresholds it; the new model predicts "x0", so every solver (data or noise prediction)
    uses the thresholded ``x0_hat`` and the noise it implies. The default ``max_value = inf``
    is Imagen's dynamic thresholding; ``max_value = 1`` is static clipping to ``[-1, 1]``.

    Args:
        model: the diffusion model, for data in ``[-1, 1]`` (any path and prediction).
        ratio: the quantile of ``|x0_hat|`` per sample, in (0, 1] (traced).
        max_value: the largest threshold ``s``, >= 1 (traced).

    Returns:
        The thresholded model, ``prediction="x0"``.

    Raises:
        TypeError: if ``model`` is not a :class:`~ersde_jax.Model`.
        ValueError: for a concrete ``ratio`` outside (0, 1] or ``max_value`` below 1.

    Example:
        >>> x = ej.ersde_sample(key, ej.guidance.thresholded(model, 0.995), x_T)
    """
    _check_model("thresholded", model)
    _check_threshold(ratio, max_value)

    def apply_fn(params, x, t, cond, mu=0.0):
        net_params, p, s_max = params
        alpha, sigma = _coefficients(model.path, t, x.dtype)
        x0 = _predictions(model, net_params, x, t, alpha, sigma, cond, mu).x0 + mu
        return dynamic_thresholding(x0, p, s_max).astype(x.dtype)

    return Model(apply_fn, (model.params, ratio, max_value), path=model.path, prediction="x0",
                 takes_mu=True)
