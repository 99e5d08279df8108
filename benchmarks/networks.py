"""Benchmark networks of real size: an ADM/EDM-style UNet and a DiT-B/2, class-conditional.

Random weights (nothing is downloaded): these networks measure what the sampler costs on top of
a network of the size users run, not sample quality. Both are Flax Linen modules in NHWC layout
(XLA:CPU convolutions in NCHW are many times slower; ``benchmarks/speed.py`` measures it), with
bfloat16 parameters and activations; the sampler keeps its state in float32 and casts at the
network's boundary. Both take a batch of class labels, ``NULL_LABEL`` being the empty label of
classifier-free guidance.

* :class:`UNet`: ADM (Dhariwal & Nichol 2021) / EDM (Karras et al. 2022) style, 64x64x3 pixels:
  residual blocks with scale-shift (adaptive GroupNorm) conditioning on the noise and label
  embedding, self-attention at 16x16 and 8x8, skip connections, channel multipliers 1-2-2-2.
  Wrapped with EDM preconditioning (``time_input="edm"``) on ``ej.paths.edm()``, predicting x0.
* :class:`DiT`: DiT-B/2 (Peebles & Xie 2023) on 32x32x4 latents: patch 2 (256 tokens), width
  768, 12 blocks of 12 heads, adaLN conditioning on the timestep and label embedding, fixed
  sin-cos position embedding, learned-variance output (8 channels). Wrapped on the 1000-step
  DDPM path (``ej.paths.vp_discrete()``, index time input) predicting eps, as DiT was trained.
* :class:`Decoder`: a small convolutional decoder standing in for a VAE's, latent 32x32x4 to a
  256x256x3 image (three nearest-neighbour upsamplings), applied once after sampling.

``tiny=True`` gives the same architectures at toy widths and resolutions (for ``--quick``).
Parameter counts are computed from the initialised variables (:func:`param_count`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import ersde_jax as ej
import ersde_jax.flax

NUM_CLASSES = 1000
NULL_LABEL = NUM_CLASSES  # the label of the unconditional branch of classifier-free guidance
CFG_SCALE = 4.0
DTYPE = jnp.bfloat16


def sinusoidal(t, dim: int, max_period: float = 10_000.0):
    """Sin-cos features of a ``(B,)`` float array, ``(B, dim)`` float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def param_count(variables) -> int:
    """Number of scalars in a variable pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(variables)))


def _dense(features: int, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, dtype=DTYPE, param_dtype=DTYPE, name=name)


def _conv(features: int, kernel: int = 3, strides: int = 1) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(strides, strides), dtype=DTYPE,
                   param_dtype=DTYPE)


def _norm(groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, dtype=DTYPE, param_dtype=DTYPE)


def _upsample(h):
    """Nearest-neighbour x2 upsampling of an NHWC array."""
    return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)


class Embedding(nn.Module):
    """Noise-level and label embedding: sin-cos features, a two-layer MLP, plus a label table."""

    features: int
    frequencies: int = 256

    @nn.compact
    def __call__(self, t, labels):
        h = _dense(self.features)(sinusoidal(t, self.frequencies).astype(DTYPE))
        h = _dense(self.features)(nn.silu(h))
        table = nn.Embed(NUM_CLASSES + 1, self.features, dtype=DTYPE, param_dtype=DTYPE)
        return h + table(labels)


# ---------------------------------------------------------------------------------- the UNet


class ResBlock(nn.Module):
    """ADM residual block: GroupNorm-SiLU-conv, scale-shift conditioning, GroupNorm-SiLU-conv."""

    channels: int
    groups: int

    @nn.compact
    def __call__(self, x, emb):
        h = _conv(self.channels)(nn.silu(_norm(self.groups)(x)))
        scale, shift = jnp.split(_dense(2 * self.channels)(nn.silu(emb))[:, None, None], 2, -1)
        h = _norm(self.groups)(h) * (1 + scale) + shift
        h = _conv(self.channels)(nn.silu(h))
        skip = x if x.shape[-1] == self.channels else _conv(self.channels, 1)(x)
        return (skip + h) * (1 / math.sqrt(2))


class AttentionBlock(nn.Module):
    """Self-attention over the pixels of an NHWC feature map (heads of 64 channels)."""

    groups: int

    @nn.compact
    def __call__(self, x):
        b, height, width, c = x.shape
        h = _norm(self.groups)(x).reshape(b, height * width, c)
        h = nn.MultiHeadDotProductAttention(num_heads=max(c // 64, 1), dtype=DTYPE,
                                            param_dtype=DTYPE)(h)
        return (x + h.reshape(x.shape)) * (1 / math.sqrt(2))


class UNet(nn.Module):
    """ADM/EDM-style class-conditional UNet, NHWC; ``__call__(x, c_noise, labels)``."""

    channels: int = 128
    multipliers: tuple[int, ...] = (1, 2, 2, 2)
    blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    groups: int = 32

    @nn.compact
    def __call__(self, x, c_noise, labels):
        out_channels = x.shape[-1]
        emb = Embedding(4 * self.channels)(c_noise, labels)
        h = _conv(self.channels)(x.astype(DTYPE))
        skips = [h]
        for level, mult in enumerate(self.multipliers):
            for _ in range(self.blocks):
                h = ResBlock(mult * self.channels, self.groups)(h, emb)
                if h.shape[1] in self.attention_resolutions:
                    h = AttentionBlock(self.groups)(h)
                skips.append(h)
            if level < len(self.multipliers) - 1:
                h = _conv(h.shape[-1], strides=2)(h)
                skips.append(h)
        h = ResBlock(h.shape[-1], self.groups)(h, emb)
        h = AttentionBlock(self.groups)(h)
        h = ResBlock(h.shape[-1], self.groups)(h, emb)
        for level, mult in reversed(list(enumerate(self.multipliers))):
            for _ in range(self.blocks + 1):
                h = ResBlock(mult * self.channels, self.groups)(
                    jnp.concatenate([h, skips.pop()], axis=-1), emb)
                if h.shape[1] in self.attention_resolutions:
                    h = AttentionBlock(self.groups)(h)
            if level > 0:
                h = _conv(h.shape[-1])(_upsample(h))
        return _conv(out_channels)(nn.silu(_norm(self.groups)(h)))


# ----------------------------------------------------------------------------------- the DiT


def position_embedding(side: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding of a ``side x side`` token grid, ``(side^2, dim)``."""
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    half = dim // 2
    omega = 1.0 / 10_000 ** (np.arange(half // 2) / (half / 2))
    parts = []
    for pos in (rows.ravel(), cols.ravel()):
        args = pos[:, None] * omega[None]
        parts += [np.sin(args), np.cos(args)]
    return np.concatenate(parts, axis=1).astype(np.float32)


def _modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Transformer block with adaLN: shift, scale and gate of both branches from the condition."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x, c):
        mod = _dense(6 * self.width)(nn.silu(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)
        norm = lambda: nn.LayerNorm(use_bias=False, use_scale=False, dtype=DTYPE)  # noqa: E731
        h = _modulate(norm()(x), shift1, scale1)
        h = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=DTYPE,
                                            param_dtype=DTYPE)(h)
        x = x + gate1[:, None] * h
        h = _modulate(norm()(x), shift2, scale2)
        h = _dense(self.width)(nn.gelu(_dense(4 * self.width)(h), approximate=True))
        return x + gate2[:, None] * h


class DiT(nn.Module):
    """DiT with patch size 2, learned variance; ``__call__(x, t, labels)`` -> ``2 C`` channels."""

    width: int = 768
    depth: int = 12
    heads: int = 12
    patch: int = 2

    @nn.compact
    def __call__(self, x, t, labels):
        b, side, _, channels = x.shape
        p, tokens = self.patch, side // self.patch
        h = nn.Conv(self.width, (p, p), strides=(p, p), dtype=DTYPE, param_dtype=DTYPE)(
            x.astype(DTYPE))
        h = h.reshape(b, tokens * tokens, self.width)
        h = h + position_embedding(tokens, self.width).astype(DTYPE)
        c = Embedding(self.width)(t, labels)
        for _ in range(self.depth):
            h = DiTBlock(self.width, self.heads)(h, c)
        shift, scale = jnp.split(_dense(2 * self.width)(nn.silu(c)), 2, axis=-1)
        h = _modulate(nn.LayerNorm(use_bias=False, use_scale=False, dtype=DTYPE)(h), shift, scale)
        h = _dense(p * p * 2 * channels)(h)
        h = h.reshape(b, tokens, tokens, p, p, 2 * channels)
        return h.transpose(0, 1, 3, 2, 4, 5).reshape(b, side, side, 2 * channels)


class Decoder(nn.Module):
    """Latent to image: a conv, then per stage nearest x2 upsampling, conv, SiLU; NHWC."""

    channels: tuple[int, ...] = (256, 128, 64, 32)

    @nn.compact
    def __call__(self, z):
        h = nn.silu(_conv(self.channels[0])(z.astype(DTYPE)))
        for c in self.channels[1:]:
            h = nn.silu(_conv(c)(_upsample(h)))
        return jnp.tanh(_conv(3)(h)).astype(jnp.float32)


# ------------------------------------------------------------------------------- the models


class Network(NamedTuple):
    """A benchmark network wrapped as an ``ej.Model``, with what the benchmark records.

    Attributes:
        name: "unet" or "dit".
        model: the class-conditional ``ej.Model`` (``cond`` is a ``(B,)`` int32 label batch).
        shape: the shape of one sample, ``(H, W, C)``.
        params: parameter count of the network (computed).
        decode: ``decode(decoder_params, x) -> images`` run once after sampling, or None.
        decoder_params: the decoder's variables (None without a decoder).
        decoder_param_count: their count (0 without a decoder).
    """

    name: str
    model: ej.Model
    shape: tuple[int, ...]
    params: int
    decode: Callable | None = None
    decoder_params: Any = None
    decoder_param_count: int = 0


def _fan_in(path, shape) -> int:
    """Inputs per output of a kernel: all axes but the last, but for the attention projections
    (``(in, heads, head_dim)``: the first; ``out``, ``(heads, head_dim, out)``: the first two)."""
    if len(shape) == 3 and path[-2].key in ("query", "key", "value"):
        return shape[0]
    return int(np.prod(shape[:-1]))


def random_variables(module, seed: int, *args):
    """Random variables of ``module`` for inputs like ``args``, filled in numpy (fast to build).

    Kernels are normal with variance ``1 / fan_in`` (LeCun), embeddings standard normal, norm
    scales one and biases zero; stored in the dtype the module declares (bfloat16).
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        if name == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        std = 1.0 if name == "embedding" else 1.0 / math.sqrt(_fan_in(path, leaf.shape))
        values = rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(std)
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def unet(seed: int = 0, *, tiny: bool = False) -> Network:
    """The UNet on 64x64x3 (if ``tiny``: 8x8x3, 8 channels, one level), EDM preconditioning."""
    module = UNet(channels=8, multipliers=(1,), blocks=1, attention_resolutions=(),
                  groups=4) if tiny else UNet()
    shape = (8, 8, 3) if tiny else (64, 64, 3)
    variables = random_variables(module, seed, jnp.zeros((1, *shape), DTYPE), jnp.zeros((1,)),
                                 jnp.zeros((1,), jnp.int32))
    model = ersde_jax.flax.from_linen(module, variables, path=ej.paths.edm(), prediction="x0",
                                      time_input="edm")
    return Network("unet", model, shape, param_count(variables))


def dit(seed: int = 0, *, tiny: bool = False) -> Network:
    """DiT-B/2 on 32x32x4 latents (width 32, depth 1, 4x4x4 if ``tiny``) and its decoder."""
    module = DiT(width=32, depth=1, heads=1) if tiny else DiT()
    decoder = Decoder(channels=(8, 8)) if tiny else Decoder()
    shape = (4, 4, 4) if tiny else (32, 32, 4)
    variables = random_variables(module, seed, jnp.zeros((1, *shape), DTYPE), jnp.zeros((1,)),
                                 jnp.zeros((1,), jnp.int32))
    decoder_variables = random_variables(decoder, seed + 1, jnp.zeros((1, *shape), DTYPE))
    model = ersde_jax.flax.from_linen(module, variables, path=ej.paths.vp_discrete(),
                                      prediction="eps", time_input="discrete",
                                      learned_variance=True)
    return Network("dit", model, shape, param_count(variables), decoder.apply,
                   decoder_variables, param_count(decoder_variables))


NETWORKS = {"unet": unet, "dit": dit}


def guided(network: Network, batch: int, scale: float = CFG_SCALE) -> ej.Model:
    """``network.model`` under classifier-free guidance with ``NULL_LABEL`` as the null label."""
    null = jnp.full((batch,), NULL_LABEL, jnp.int32)
    return ej.guidance.classifier_free(network.model, scale, null)


def labels(batch: int) -> jnp.ndarray:
    """A fixed batch of class labels."""
    return jnp.arange(batch, dtype=jnp.int32) * 37 % NUM_CLASSES
