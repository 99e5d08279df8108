"""The digits restoration task: data, split and degradation, shared by training and loading.

The scikit-learn digits (1797 images of 8x8) are scaled to [-1, 1], shuffled once by a fixed
permutation and split into 1500 training and 297 held-out images. The degraded image ``mu`` of
each clean image is its 2x2 average pool, upsampled back to 8x8 by nearest neighbour, plus
Gaussian noise of std 0.1 drawn from a key fixed per image (its index in the original dataset).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["GENERATIVE_HALF", "REFERENCE_HALF", "N_TRAIN", "N_TEST", "load_clean", "load_labels",
           "degrade", "load_split"]

# The generative digits model trains on one half of the shuffled digits; the digits FD compares
# samples with the other half, and its floor is the FD between the two halves.
GENERATIVE_HALF = slice(0, None, 2)
REFERENCE_HALF = slice(1, None, 2)
N_TRAIN = 1500
N_TEST = 297
PERMUTATION_SEED = 0
NOISE_SEED = 2024
NOISE_STD = 0.1
POOL = 2


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The digits data needs scikit-learn: pip install 'ersde_jax[demo]'."
        ) from err
    return load_digits()


def load_clean() -> tuple[np.ndarray, np.ndarray]:
    """Loads the digits in the fixed shuffled order.

    Returns:
        ``(images, index)``: float32 images of shape (1797, 8, 8, 1) in [-1, 1] and, for each,
        its index in ``sklearn.datasets.load_digits()``.

    Raises:
        ImportError: if scikit-learn is not installed.
    """
    images = _load_digits().images.astype(np.float32) / 8.0 - 1.0
    index = np.random.default_rng(PERMUTATION_SEED).permutation(images.shape[0])
    return images[index, :, :, None], index


def load_labels() -> np.ndarray:
    """The class labels (0-9) of :func:`load_clean`'s images, in the same order."""
    _, index = load_clean()
    return _load_digits().target[index].astype(np.int32)


def degrade(clean, index, *, seed: int = NOISE_SEED, noise_std: float = NOISE_STD) -> np.ndarray:
    """Degrades images: 2x2 average pool, nearest upsample, plus fixed-key Gaussian noise.

    Args:
        clean: array of shape (N, H, W, C) with H and W even.
        index: N integers; image ``i`` gets noise from ``fold_in(key(seed), index[i])``.
        seed: base seed of the noise.
        noise_std: standard deviation of the noise.

    Returns:
        float32 numpy array shaped like ``clean``.
    """
    clean = np.asarray(clean, np.float32)
    n, h, w, c = clean.shape
    pooled = clean.reshape(n, h // POOL, POOL, w // POOL, POOL, c).mean(axis=(2, 4))
    blurred = np.repeat(np.repeat(pooled, POOL, axis=1), POOL, axis=2)
    base = jax.random.key(seed)
    draw = lambda i: jax.random.normal(jax.random.fold_in(base, i), (h, w, c), jnp.float32)
    noise = np.asarray(jax.vmap(draw)(jnp.asarray(index, jnp.uint32)))
    return (blurred + noise_std * noise).astype(np.float32)


def load_split(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The clean and degraded images of one split.

    Args:
        split: "train" (first 1500 of the shuffled order) or "test" (the remaining 297).

    Returns:
        ``(clean, degraded)``, float32 arrays of shape (N, 8, 8, 1).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    images, index = load_clean()
    part = slice(0, N_TRAIN) if split == "train" else slice(N_TRAIN, None)
    clean, index = images[part], index[part]
    return clean, degrade(clean, index)
