"""Distances between sample sets used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["sliced_wasserstein"]


def sliced_wasserstein(key, x, y, num_projections: int = 128):
    """Sliced 1-Wasserstein distance between two equally sized sample sets.

    Averages, over random unit directions, the 1-Wasserstein distance between the projected
    samples (the mean absolute difference of their sorted values).

    Args:
        key: ``jax.random`` key for the directions.
        x, y: arrays of shape (n, d) with the same n.
        num_projections: number of random directions.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both have shape (n, d), got {x.shape} and {y.shape}.")
    directions = jax.random.normal(key, (x.shape[1], num_projections), x.dtype)
    directions = directions / jnp.linalg.norm(directions, axis=0)
    px, py = jnp.sort(x @ directions, axis=0), jnp.sort(y @ directions, axis=0)
    return jnp.mean(jnp.abs(px - py))
