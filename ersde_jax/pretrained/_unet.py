"""A small class-conditional UNet for 8x8 images with EDM preconditioning, in pure JAX (NHWC).

The denoiser of Karras et al. (2022), eq. 7 and Table 1:

    D(x, sigma, y) = c_skip x + c_out F(c_in x, c_noise, y),
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = log(sigma) / 4,

with ``sd`` the data's standard deviation. ``F`` is a two-level UNet: residual blocks at 8x8
and at 4x4 (with one self-attention layer over the 16 positions of the coarse level), joined by
a strided convolution down and a nearest-neighbour upsampling with skip connections. Every
residual block adds an embedding of ``c_noise`` plus a learned embedding of the class label;
label ``NULL_LABEL`` (10) is the unconditional "null" class used for classifier-free guidance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._layers import (
    conv,
    conv_init,
    dense,
    dense_init,
    group_norm,
    group_norm_init,
    time_embedding,
)

__all__ = ["NULL_LABEL", "init_digits_unet", "digits_unet", "edm_denoiser"]

NULL_LABEL = 10
NUM_CLASSES = 10
EMBED_DIM = 128


def _res_init(key, c_in, c_out):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {"norm0": group_norm_init(c_in), "conv0": conv_init(k1, c_in, c_out),
              "emb": dense_init(k2, EMBED_DIM, c_out), "norm1": group_norm_init(c_out),
              "conv1": conv_init(k3, c_out, c_out, scale=0.1)}
    if c_in != c_out:
        params["skip"] = conv_init(k4, c_in, c_out, size=1)
    return params


def _res(h, emb, params):
    out = conv(jax.nn.silu(group_norm(h, params["norm0"])), params["conv0"])
    out = out + dense(emb, params["emb"])[:, None, None, :]
    out = conv(jax.nn.silu(group_norm(out, params["norm1"])), params["conv1"])
    skip = conv(h, params["skip"]) if "skip" in params else h
    return skip + out


def _attention_init(key, c):
    k1, k2 = jax.random.split(key)
    return {"norm": group_norm_init(c), "qkv": dense_init(k1, c, 3 * c),
            "out": dense_init(k2, c, c, scale=0.1)}


def _attention(h, params):
    n, hh, ww, c = h.shape
    q, k, v = jnp.split(dense(group_norm(h, params["norm"]).reshape(n, hh * ww, c),
                              params["qkv"]), 3, axis=-1)
    weights = jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", q, k) / jnp.sqrt(c), axis=-1)
    out = dense(jnp.einsum("nqk,nkc->nqc", weights, v), params["out"])
    return h + out.reshape(h.shape)


def init_digits_unet(key, channels: int = 64) -> dict:
    """Initialises :func:`digits_unet` with ``channels`` maps at 8x8 and twice that at 4x4."""
    c1, c2 = channels, 2 * channels
    keys = iter(jax.random.split(key, 16))
    return {
        "time0": dense_init(next(keys), EMBED_DIM, EMBED_DIM),
        "time1": dense_init(next(keys), EMBED_DIM, EMBED_DIM),
        "label": {"table": jax.random.normal(next(keys), (NUM_CLASSES + 1, EMBED_DIM))},
        "conv_in": conv_init(next(keys), 1, c1),
        "down0": _res_init(next(keys), c1, c1),
        "downsample": conv_init(next(keys), c1, c2),
        "down1": _res_init(next(keys), c2, c2),
        "mid0": _res_init(next(keys), c2, c2),
        "attention": _attention_init(next(keys), c2),
        "mid1": _res_init(next(keys), c2, c2),
        "up1": _res_init(next(keys), 2 * c2, c2),
        "up0": _res_init(next(keys), c2 + c1, c1),
        "norm_out": group_norm_init(c1),
        "conv_out": {"w": jnp.zeros((3, 3, c1, 1), jnp.float32), "b": jnp.zeros((1,))},
    }


def digits_unet(params: dict, x, c_noise, labels):
    """The raw network ``F(x, c_noise, y)``.

    Args:
        params: from :func:`init_digits_unet`.
        x: scaled inputs ``c_in x``, shape (N, 8, 8, 1).
        c_noise: noise level input, a scalar or shape (N,).
        labels: int class labels (N,), in 0..9, or ``NULL_LABEL`` for unconditional.

    Returns:
        ``F``, shape (N, 8, 8, 1), float32.
    """
    x = jnp.asarray(x, jnp.float32)
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), x.shape[:1])
    emb = time_embedding(c_noise, EMBED_DIM, max_freq=100.0)
    emb = dense(jax.nn.silu(dense(emb, params["time0"])), params["time1"])
    emb = jax.nn.silu(emb + params["label"]["table"][labels])

    h0 = conv(x, params["conv_in"])
    h0 = _res(h0, emb, params["down0"])
    h1 = conv(h0, params["downsample"], stride=2)
    h1 = _res(h1, emb, params["down1"])
    h = _res(h1, emb, params["mid0"])
    h = _attention(h, params["attention"])
    h = _res(h, emb, params["mid1"])
    h = _res(jnp.concatenate([h, h1], -1), emb, params["up1"])
    h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
    h = _res(jnp.concatenate([h, h0], -1), emb, params["up0"])
    return conv(jax.nn.silu(group_norm(h, params["norm_out"])), params["conv_out"])


def edm_denoiser(params: dict, x, sigma, labels, sigma_data: float):
    """The preconditioned denoiser ``D(x, sigma, y)`` (Karras et al. 2022, eq. 7).

    Args:
        params: from :func:`init_digits_unet`.
        x: noisy images ``x0 + sigma eps``, shape (N, 8, 8, 1).
        sigma: noise level, a scalar or shape (N,).
        labels: int class labels (N,).
        sigma_data: standard deviation of the training data.

    Returns:
        The data prediction, shaped and typed like ``x``.
    """
    x32 = jnp.asarray(x, jnp.float32)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), x.shape[:1])[:, None, None, None]
    norm2 = sigma**2 + sigma_data**2
    c_skip, c_out = sigma_data**2 / norm2, sigma * sigma_data * jax.lax.rsqrt(norm2)
    f = digits_unet(params, x32 * jax.lax.rsqrt(norm2), jnp.log(sigma[:, 0, 0, 0]) / 4, labels)
    return (c_skip * x32 + c_out * f).astype(x.dtype)
