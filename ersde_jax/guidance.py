"""Transforms of the network's predictions usable with every solver (MATH.md section 2)."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["dynamic_thresholding"]


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
