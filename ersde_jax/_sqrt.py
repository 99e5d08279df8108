"""Square roots of radicands that vanish: finite derivatives where the root is 0.

``sigma`` of a path vanishes at the clean time and a step's noise variance vanishes on the
deterministic steps; ``d sqrt(v) / dv`` is infinite there, and a ``0 * inf`` in the backward pass
would turn a finite gradient of the sample into NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["sqrt_vanishing", "safe_sqrt"]


def sqrt_vanishing(v):
    """``sqrt(v)``, with derivative 0 instead of ``inf`` where ``v <= 0`` (values unchanged)."""
    positive = v > 0
    root = jnp.sqrt(jnp.where(positive, v, 1.0))
    return jnp.where(positive, root, jax.lax.stop_gradient(jnp.sqrt(v)))


def safe_sqrt(v):
    """``sqrt(max(v, 0))`` (a radicand clamped at 0), with derivative 0 where ``v <= 0``."""
    return sqrt_vanishing(jnp.maximum(v, 0.0))
