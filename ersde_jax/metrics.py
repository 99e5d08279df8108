"""Generic distances between sample sets (the bundled models' FDs live in ``ej.pretrained``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sliced_wasserstein", "psnr", "ssim", "frechet_distance"]


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


def psnr(x, y, data_range: float = 2.0):
    """Peak signal-to-noise ratio in dB per image (batch axis first).

    Args:
        x, y: images, batch axis first.
        data_range: width of the pixel range (2 for [-1, 1]).
    """
    mse = jnp.mean((jnp.asarray(x) - jnp.asarray(y)) ** 2, axis=tuple(range(1, jnp.ndim(x))))
    return 10.0 * jnp.log10(data_range**2 / mse)


def ssim(x, y, data_range: float = 2.0, window: int = 3):
    """Structural similarity per image (Wang et al. 2004).

    Uses a uniform ``window`` x ``window`` window (small images: 8x8 digits), averaged over valid
    positions and channels.

    Args:
        x, y: (N, H, W, C) images.
        data_range: width of the pixel range (2 for [-1, 1]).
        window: side of the averaging window.
    """
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"ssim needs two (N, H, W, C) arrays of one shape, got {x.shape}, "
                         f"{y.shape}.")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def mean_filter(a):
        return jax.lax.reduce_window(a, 0.0, jax.lax.add, (1, window, window, 1), (1, 1, 1, 1),
                                     "VALID") / window**2

    mx, my = mean_filter(x), mean_filter(y)
    vx, vy = mean_filter(x * x) - mx**2, mean_filter(y * y) - my**2
    cov = mean_filter(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; round-off asymmetry and negative eigenvalues are
    removed first."""
    w, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(x, y) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    ``|m_x - m_y|^2 + tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2)``, computed in float64 with
    symmetric eigendecompositions (no complex ``sqrtm``) and clamped at 0 (round-off).

    Args:
        x, y: feature arrays of shape (n, d) and (m, d), n, m >= 2.

    Raises:
        ValueError: for mismatched shapes, or non-finite features (e.g. from a sampler that
            diverged: the samplers return NaN rather than raise).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"frechet_distance needs (n, d) and (m, d) features with n, m >= 2, "
                         f"got {x.shape} and {y.shape}.")
    for name, features in (("x", x), ("y", y)):
        bad = int(np.sum(~np.isfinite(features).all(axis=1)))
        if bad:
            raise ValueError(f"frechet_distance: {bad} of the {len(features)} rows of {name} are "
                             "not finite (did the sampler diverge?).")
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root_x = _sqrtm_psd(cov_x)
    cross = np.trace(_sqrtm_psd(root_x @ cov_y @ root_x))
    diff = x.mean(0) - y.mean(0)
    return max(0.0, float(diff @ diff + np.trace(cov_x) + np.trace(cov_y) - 2.0 * cross))
