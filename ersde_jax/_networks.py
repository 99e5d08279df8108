"""A small conditional convolutional denoiser in pure JAX (no flax), NHWC.

The network sees ``concat(x, cond)`` along channels, lifts it to ``channels`` feature maps with
a 3x3 convolution, applies ``NUM_RES`` residual 3x3 convolutions, each preceded by a per-channel
bias, and maps back to the channels of ``x`` with a last 3x3 convolution (initialised at zero):
five convolutions in all. The biases are the sum of a time term (a sinusoidal embedding of
``t / T`` through a two-layer MLP) and a global context term (a linear map of the spatial mean
of the first features). Parameters are a plain nested dict of arrays.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["init_restoration_net", "restoration_net", "flatten_params", "unflatten_params"]

NUM_RES = 3
EMBED_DIM = 32
HIDDEN_DIM = 128


def _conv(x, w, b):
    """3x3 'SAME' convolution, NHWC input and HWIO kernel."""
    y = jax.lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + b


def _conv_init(key, c_in, c_out, scale=1.0):
    std = scale / math.sqrt(9 * c_in)
    return {"w": std * jax.random.normal(key, (3, 3, c_in, c_out), jnp.float32),
            "b": jnp.zeros((c_out,), jnp.float32)}


def _dense_init(key, d_in, d_out):
    return {"w": jax.random.normal(key, (d_in, d_out), jnp.float32) / math.sqrt(d_in),
            "b": jnp.zeros((d_out,), jnp.float32)}


def time_embedding(s, dim: int = EMBED_DIM):
    """Sinusoidal embedding of ``s`` in [0, 1] with frequencies from 1 to 1000.

    Args:
        s: array of normalised times ``t / T``, any shape.
        dim: even embedding size.

    Returns:
        Array of shape ``s.shape + (dim,)``.
    """
    freqs = jnp.exp(jnp.linspace(0.0, math.log(1000.0), dim // 2, dtype=s.dtype))
    angles = s[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


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
        "time0": _dense_init(keys[0], EMBED_DIM, HIDDEN_DIM),
        "time1": _dense_init(keys[1], HIDDEN_DIM, NUM_RES * channels),
        "conv0": _conv_init(keys[2], 2 * image_channels, channels),
        "context": _dense_init(keys[-1], channels, NUM_RES * channels),
        "out": {"w": jnp.zeros((3, 3, channels, image_channels), jnp.float32),
                "b": jnp.zeros((image_channels,), jnp.float32)},
    }
    for i in range(NUM_RES):
        params[f"res{i}"] = _conv_init(keys[3 + i], channels, channels, scale=0.5)
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
    emb = jax.nn.silu(time_embedding(t / T) @ params["time0"]["w"] + params["time0"]["b"])
    emb = emb @ params["time1"]["w"] + params["time1"]["b"]
    biases = emb.reshape(x.shape[0], 1, 1, NUM_RES, -1)

    h = jnp.concatenate([x.astype(dtype), jnp.broadcast_to(cond, x.shape).astype(dtype)], -1)
    h = _conv(h, params["conv0"]["w"], params["conv0"]["b"])
    ctx = jnp.mean(jax.nn.silu(h), axis=(1, 2)) @ params["context"]["w"] + params["context"]["b"]
    biases = biases + ctx.reshape(biases.shape)
    for i in range(NUM_RES):
        layer = params[f"res{i}"]
        h = h + _conv(jax.nn.silu(h + biases[..., i, :]), layer["w"], layer["b"])
    out = _conv(jax.nn.silu(h), params["out"]["w"], params["out"]["b"])
    return out.astype(x.dtype)


def flatten_params(params: dict) -> dict[str, np.ndarray]:
    """Flattens a two-level params dict to ``{"conv0/w": array, ...}`` (numpy, for ``.npz``)."""
    return {f"{layer}/{name}": np.asarray(value)
            for layer, sub in params.items() for name, value in sub.items()}


def unflatten_params(flat) -> dict:
    """Inverse of :func:`flatten_params`; values become ``jax.numpy`` arrays."""
    params: dict = {}
    for key, value in flat.items():
        layer, name = key.split("/")
        params.setdefault(layer, {})[name] = jnp.asarray(value)
    return params
