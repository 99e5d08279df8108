"""A small class-conditional UNet with EDM preconditioning, in pure JAX (NHWC).

The denoiser of Karras et al. (2022), eq. 7 and Table 1:

    D(x, sigma, y) = c_skip x + c_out F(c_in x, c_noise, y),
    c_skip = sd^2 / (sigma^2 + sd^2),  c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),   c_noise = log(sigma) / 4,

with ``sd`` the data's standard deviation. ``F`` folds each ``patch`` x ``patch`` block of the
image into channels (``patch = 1``: none), then runs a UNet with one residual block per level,
levels joined by strided convolutions down and nearest-neighbour upsampling with skip
connections, and one self-attention layer between two residual blocks at the coarsest level.
Every residual block adds an embedding of ``c_noise`` plus a learned embedding of the class
label; label ``NULL_LABEL`` (10) is the unconditional "null" class used for classifier-free
guidance.

The digits model (8x8) has two levels (8x8, 4x4) and no patches; the MNIST model (28x28) folds
2x2 patches and has two levels (14x14, 7x7). The network reads its layout from its parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._layers import (
    conv,
    conv_init,
    dense,
    dense_init,
    depth_to_space,
    group_norm,
    group_norm_init,
    space_to_depth,
    time_embedding,
)

__all__ = ["NULL_LABEL", "init_unet", "init_digits_unet", "unet", "digits_unet", "edm_denoiser"]

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


def init_unet(key, channels: int, multipliers=(1, 2), patch: int = 1,
              image_channels: int = 1) -> dict:
    """Initialises :func:`unet`.

    Args:
        key: a ``jax.random`` key.
        channels: feature maps at the finest level (a multiple of 8, for the group norms).
        multipliers: feature maps of each level, in multiples of ``channels``, finest first;
            each level after the first halves the resolution.
        patch: side of the pixel blocks folded into channels before the first level.
        image_channels: channels of the images.

    Returns:
        Nested dict of float32 arrays. Level ``i`` has the residual blocks ``down{i}`` and
        ``up{i}``; ``downsample{i}`` (i >= 1) leads into it.
    """
    widths = [channels * m for m in multipliers]
    keys = iter(jax.random.split(key, 8 + 3 * len(widths)))
    pixels = image_channels * patch * patch
    params = {
        "time0": dense_init(next(keys), EMBED_DIM, EMBED_DIM),
        "time1": dense_init(next(keys), EMBED_DIM, EMBED_DIM),
        "label": {"table": jax.random.normal(next(keys), (NUM_CLASSES + 1, EMBED_DIM))},
        "conv_in": conv_init(next(keys), pixels, widths[0]),
        "down0": _res_init(next(keys), widths[0], widths[0]),
        "mid0": _res_init(next(keys), widths[-1], widths[-1]),
        "attention": _attention_init(next(keys), widths[-1]),
        "mid1": _res_init(next(keys), widths[-1], widths[-1]),
        "norm_out": group_norm_init(widths[0]),
        "conv_out": {"w": jnp.zeros((3, 3, widths[0], pixels), jnp.float32),
                     "b": jnp.zeros((pixels,))},
    }
    for i in range(1, len(widths)):
        params[f"downsample{i}"] = conv_init(next(keys), widths[i - 1], widths[i])
        params[f"down{i}"] = _res_init(next(keys), widths[i], widths[i])
    for i, width in enumerate(widths):
        c_in = (widths[i + 1] if i + 1 < len(widths) else width) + width
        params[f"up{i}"] = _res_init(next(keys), c_in, width)
    return params


def init_digits_unet(key, channels: int = 64) -> dict:
    """Initialises the digits layout: ``channels`` maps at 8x8 and twice that at 4x4."""
    return init_unet(key, channels, (1, 2))


def unet(params: dict, x, c_noise, labels):
    """The raw network ``F(x, c_noise, y)``.

    Args:
        params: from :func:`init_unet`.
        x: scaled inputs ``c_in x``, shape (N, H, W, C); H and W divisible by
            ``patch * 2**(levels - 1)``.
        c_noise: noise level input, a scalar or shape (N,).
        labels: int class labels (N,), in 0..9, or ``NULL_LABEL`` for unconditional.

    Returns:
        ``F``, shaped like ``x``, float32.

    Raises:
        ValueError: if the image size does not fit the levels (checked before tracing).
    """
    x = jnp.asarray(x, jnp.float32)
    levels = sum(1 for name in params if name.startswith("up"))
    patch = round((params["conv_in"]["w"].shape[2] // x.shape[-1]) ** 0.5)
    factor = patch * 2 ** (levels - 1)
    if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(f"This UNet needs image sides divisible by {factor}, got {x.shape}.")
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), x.shape[:1])
    emb = time_embedding(c_noise, EMBED_DIM, max_freq=100.0)
    emb = dense(jax.nn.silu(dense(emb, params["time0"])), params["time1"])
    emb = jax.nn.silu(emb + params["label"]["table"][labels])

    h = _res(conv(space_to_depth(x, patch), params["conv_in"]), emb, params["down0"])
    skips = [h]
    for i in range(1, levels):
        h = _res(conv(h, params[f"downsample{i}"], stride=2), emb, params[f"down{i}"])
        skips.append(h)
    h = _res(h, emb, params["mid0"])
    h = _attention(h, params["attention"])
    h = _res(h, emb, params["mid1"])
    for i in reversed(range(levels)):
        h = _res(jnp.concatenate([h, skips[i]], -1), emb, params[f"up{i}"])
        if i:
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
    out = conv(jax.nn.silu(group_norm(h, params["norm_out"])), params["conv_out"])
    return depth_to_space(out, patch)


digits_unet = unet  # the name scripts/train_digits.py imports


def edm_denoiser(params: dict, x, sigma, labels, sigma_data: float):
    """The preconditioned denoiser ``D(x, sigma, y)`` (Karras et al. 2022, eq. 7).

    Args:
        params: from :func:`init_unet`.
        x: noisy images ``x0 + sigma eps``, shape (N, H, W, C).
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
    f = unet(params, x32 * jax.lax.rsqrt(norm2), jnp.log(sigma[:, 0, 0, 0]) / 4, labels)
    return (c_skip * x32 + c_out * f).astype(x.dtype)
