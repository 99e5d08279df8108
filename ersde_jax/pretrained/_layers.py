"""Layers shared by the bundled pure-JAX networks (NHWC images, parameters as nested dicts)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "conv", "conv_init", "dense", "dense_init", "group_norm", "group_norm_init",
    "time_embedding", "space_to_depth", "depth_to_space", "flatten_params", "unflatten_params",
]


def conv(x, params, stride: int = 1):
    """'SAME' convolution of an NHWC input with an HWIO kernel, plus bias."""
    y = jax.lax.conv_general_dilated(
        x, params["w"], window_strides=(stride, stride), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + params["b"]


def conv_init(key, c_in: int, c_out: int, scale: float = 1.0, size: int = 3) -> dict:
    """He-style normal init of a ``size`` x ``size`` kernel, times ``scale``; zero bias."""
    std = scale / math.sqrt(size * size * c_in)
    return {"w": std * jax.random.normal(key, (size, size, c_in, c_out), jnp.float32),
            "b": jnp.zeros((c_out,), jnp.float32)}


def dense(x, params):
    """Affine map ``x @ w + b``."""
    return x @ params["w"] + params["b"]


def dense_init(key, d_in: int, d_out: int, scale: float = 1.0) -> dict:
    """Normal init with std ``scale / sqrt(d_in)``; zero bias."""
    return {"w": scale * jax.random.normal(key, (d_in, d_out), jnp.float32) / math.sqrt(d_in),
            "b": jnp.zeros((d_out,), jnp.float32)}


def group_norm(x, params, groups: int = 8, eps: float = 1e-5):
    """Group normalisation over (H, W, C / groups) of an NHWC input, with scale and bias."""
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
    var = jnp.var(g, axis=(1, 2, 4), keepdims=True)
    g = (g - mean) * jax.lax.rsqrt(var + eps)
    return g.reshape(x.shape) * params["scale"] + params["b"]


def group_norm_init(c: int) -> dict:
    """Identity group normalisation parameters."""
    return {"scale": jnp.ones((c,), jnp.float32), "b": jnp.zeros((c,), jnp.float32)}


def time_embedding(s, dim: int, max_freq: float = 1000.0):
    """Sinusoidal embedding of ``s`` with ``dim // 2`` frequencies from 1 to ``max_freq``.

    Args:
        s: array of (normalised) times, any shape.
        dim: even embedding size.
        max_freq: the largest angular frequency.

    Returns:
        Array of shape ``s.shape + (dim,)``.
    """
    freqs = jnp.exp(jnp.linspace(0.0, math.log(max_freq), dim // 2, dtype=s.dtype))
    angles = s[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def space_to_depth(x, patch: int):
    """Folds each ``patch`` x ``patch`` block of an NHWC image into channels.

    (N, H, W, C) becomes (N, H / p, W / p, p * p * C); ``patch = 1`` returns ``x``.
    """
    if patch == 1:
        return x
    n, h, w, c = x.shape
    x = x.reshape(n, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // patch, w // patch, patch * patch * c)


def depth_to_space(x, patch: int):
    """Inverse of :func:`space_to_depth`: (N, H, W, p*p*C) to (N, H*p, W*p, C)."""
    if patch == 1:
        return x
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, patch, patch, c // patch**2).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * patch, w * patch, c // patch**2)


def flatten_params(params: dict) -> dict[str, np.ndarray]:
    """Flattens a nested params dict to ``{"block/conv/w": array, ...}`` (numpy, for ``.npz``)."""
    flat = {}
    for name, value in params.items():
        if isinstance(value, dict):
            flat.update({f"{name}/{k}": v for k, v in flatten_params(value).items()})
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten_params(flat) -> dict:
    """Inverse of :func:`flatten_params`; values become ``jax.numpy`` arrays."""
    params: dict = {}
    for key, value in flat.items():
        *parents, name = key.split("/")
        node = params
        for parent in parents:
            node = node.setdefault(parent, {})
        node[name] = jnp.asarray(value)
    return params
