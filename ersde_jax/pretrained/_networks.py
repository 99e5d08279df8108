"""A small conditional convolutional denoiser in pure JAX (no flax), NHWC.

The network sees ``concat(x, cond)`` along channels, lifts it to ``channels`` feature maps with
a 3x3 convolution, applies ``NUM_RES`` residual 3x3 convolutions, each preceded by a per-channel
bias, and maps back to the channels of ``x`` with a last 3x3 convolution (initialised at zero):
five convolutions in all. The biases are the sum of a time term (a sinusoidal embedding of
``t / T`` through a two-layer MLP) and a global context term (a linear map of the spatial mean
of the first features). Parameters are a plain nested dict of arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._layers import (
    conv,
    conv_init,
    dense,
    dense_init,
    flatten_params,
    time_embedding,
    unflatten_params,
)

__all__ = ["init_restoration_net", "restoration_net", "flatten_params", "unflatten_params"]

NUM_RES = 3
EMBED_DIM = 32
HIDDEN_DIM = 128


def init_restoration_net(key, channels: int = 64, image_channels: int = 1) -> dict:
    """Initialises the parameters of :func:`restoration_net`.

    Args:
        key: a ``jax.random`` key.
        channels: number of hidden feature maps.
        image_channels: channels of ``x`` (and of ``cond``).

    Returns:
        Nested dict of float32 arrays, e.g. ``params["conv0"]["w"]``.
    """
    keys = jax.random.split(key, NUM_RES + 4)
    params = {
        "time0": dense_init(keys[0], EMBED_DIM, HIDDEN_DIM),
        "time1": dense_init(keys[1], HIDDEN_DIM, NUM_RES * channels),
        "conv0": conv_init(keys[2], 2 * image_channels, channels),
        "context": dense_init(keys[-1], channels, NUM_RES * channels),
        "out": {"w": jnp.zeros((3, 3, channels, image_channels), jnp.float32),
                "b": jnp.zeros((image_channels,), jnp.float32)},
    }
    for i in range(NUM_RES):
        params[f"res{i}"] = conv_init(keys[3 + i], channels, channels, scale=0.5)
    return params


def restoration_net(params: dict, x, t, cond, T: float):
    """Predicts the noise of a mean-reverting path from ``x``, the time index and the condition.

    Args:
        params: parameters from :func:`init_restoration_net`.
        x: noisy images, shape (N, H, W, C).
        t: model time, the index in [0, T] (fractional values allowed): a scalar, broadcast
            to the batch, or one per image (shape (N,)).
        cond: the degraded images ``mu``, shaped like ``x``.
        T: the number of diffusion steps of the path (normalises ``t``).

    Returns:
        The noise prediction, shaped and typed like ``x``.
    """
    dtype = params["conv0"]["w"].dtype
    t = jnp.broadcast_to(jnp.asarray(t, dtype), x.shape[:1])
    emb = jax.nn.silu(dense(time_embedding(t / T, EMBED_DIM), params["time0"]))
    emb = dense(emb, params["time1"])
    biases = emb.reshape(x.shape[0], 1, 1, NUM_RES, -1)

    h = jnp.concatenate([x.astype(dtype), jnp.broadcast_to(cond, x.shape).astype(dtype)], -1)
    h = conv(h, params["conv0"])
    ctx = dense(jnp.mean(jax.nn.silu(h), axis=(1, 2)), params["context"])
    biases = biases + ctx.reshape(biases.shape)
    for i in range(NUM_RES):
        layer = params[f"res{i}"]
        h = h + conv(jax.nn.silu(h + biases[..., i, :]), layer)
    out = conv(jax.nn.silu(h), params["out"])
    return out.astype(x.dtype)
