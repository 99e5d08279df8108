"""A small noise-aware image classifier in pure JAX (NHWC), for guidance and Fréchet distances.

It classifies noisy images ``x = x0 + sigma eps`` of the EDM path: the input is scaled by
``c_in = 1 / sqrt(sigma^2 + sd^2)``, each ``patch`` x ``patch`` block of pixels is folded into
channels, and every convolution gets a bias from an embedding of ``log(sigma) / 4`` (EDM's
``c_noise``). Three 3x3 convolutions (the last of stride 2) and a dense layer give ``FEATURES``
penultimate features, the representation of the Fréchet distance; a last dense layer gives the
ten logits. At ``sigma <= SIGMA_CLEAN`` it is a classifier of clean images. The digits
classifier sees 8x8 images without patches (8x8, 8x8, then 4x4); the MNIST classifier folds the
28x28 images into 14x14 maps of 2x2 patches (14x14, 14x14, then 7x7). The network reads the
patch size from its first convolution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._layers import conv, conv_init, dense, dense_init, space_to_depth, time_embedding

__all__ = ["SIGMA_CLEAN", "FEATURES", "init_classifier", "init_digits_classifier",
           "classifier_features", "classifier_logits"]

SIGMA_CLEAN = 0.002
FEATURES = 64
EMBED_DIM = 32
WIDTHS = (32, 64, 64)


def init_classifier(key, image_size: int, patch: int = 1, image_channels: int = 1) -> dict:
    """Initialises the parameters of :func:`classifier_logits`.

    Args:
        key: a ``jax.random`` key.
        image_size: side of the (square) images; ``image_size / patch`` must be even.
        patch: side of the pixel blocks folded into channels.
        image_channels: channels of the images.
    """
    side = image_size // patch // 2
    if side * 2 * patch != image_size:
        raise ValueError(f"image_size / patch must be even, got {image_size} / {patch}.")
    keys = iter(jax.random.split(key, 10))
    params = {"time": dense_init(next(keys), EMBED_DIM, sum(WIDTHS))}
    c_in = image_channels * patch * patch
    for i, width in enumerate(WIDTHS):
        params[f"conv{i}"] = conv_init(next(keys), c_in, width)
        c_in = width
    params["features"] = dense_init(next(keys), side * side * c_in, FEATURES)
    params["logits"] = dense_init(next(keys), FEATURES, 10)
    return params


def init_digits_classifier(key) -> dict:
    """Initialises the digits classifier (8x8 images, no patches)."""
    return init_classifier(key, 8)


def classifier_features(params: dict, x, sigma, sigma_data: float):
    """Penultimate features of noisy images.

    Args:
        params: from :func:`init_classifier`.
        x: images ``x0 + sigma eps``, shape (N, H, W, C), of the size it was initialised for.
        sigma: noise level (scalar or (N,)); values below ``SIGMA_CLEAN`` are clamped to it.
        sigma_data: standard deviation of the training images.

    Returns:
        float32 array (N, FEATURES).
    """
    x = jnp.asarray(x, jnp.float32)
    sigma = jnp.maximum(jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1]),
                        SIGMA_CLEAN)
    biases = dense(time_embedding(jnp.log(sigma) / 4, EMBED_DIM, max_freq=100.0),
                   params["time"])
    biases = jnp.split(biases, [sum(WIDTHS[:i]) for i in range(1, len(WIDTHS))], axis=-1)
    patch = round((params["conv0"]["w"].shape[2] // x.shape[-1]) ** 0.5)
    h = space_to_depth(x * jax.lax.rsqrt(sigma**2 + sigma_data**2)[:, None, None, None], patch)
    for i in range(len(WIDTHS)):
        h = conv(h, params[f"conv{i}"], stride=2 if i == len(WIDTHS) - 1 else 1)
        h = jax.nn.silu(h + biases[i][:, None, None, :])
    return jax.nn.silu(dense(h.reshape(h.shape[0], -1), params["features"]))


def classifier_logits(params: dict, x, sigma, sigma_data: float):
    """Class logits (N, 10) of noisy images (arguments as :func:`classifier_features`)."""
    return dense(classifier_features(params, x, sigma, sigma_data), params["logits"])
