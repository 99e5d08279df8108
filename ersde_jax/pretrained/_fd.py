"""The digits Fréchet distance: FD in the bundled digits classifier's features to real digits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..metrics import frechet_distance
from ._data import GENERATIVE_HALF, REFERENCE_HALF
from ._models import digits_classifier, digits_data

__all__ = ["digits_fd", "digits_fd_floor", "DIGITS_FD_SAMPLES"]

DIGITS_FD_SAMPLES = 898  # images in the reference half of the real digits


@functools.cache
def _digits_halves():
    """Classifier features of the bundled model's training half and of the reference half."""
    images, _ = digits_data()
    features = np.asarray(jax.jit(digits_classifier().features)(jnp.asarray(images)))
    return (features[GENERATIVE_HALF][:DIGITS_FD_SAMPLES],
            features[REFERENCE_HALF][:DIGITS_FD_SAMPLES])


def digits_fd(images) -> float:
    """Digits Fréchet distance: FD in the bundled classifier's feature space to real digits.

    The reference is the half of the 1797 real digits that the bundled digits model never saw
    (``DIGITS_FD_SAMPLES`` images); :func:`digits_fd_floor` is the FD of the other half, the
    model's training data, to it: what a sampler that reproduced the training distribution
    exactly would score with as many images. FD is biased upwards at small sample sizes:
    compare values computed from the same number of images, ideally ``DIGITS_FD_SAMPLES`` with
    balanced labels.

    Args:
        images: generated digits, shape (N, 8, 8, 1) in [-1, 1], N >= 2.
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
        raise ValueError(f"digits_fd needs images of shape (N, 8, 8, 1), got {images.shape}.")
    features = jax.jit(digits_classifier().features)(images.astype(jnp.float32))
    return frechet_distance(features, _digits_halves()[1])


def digits_fd_floor() -> float:
    """FD between the two disjoint halves of the real digits (``DIGITS_FD_SAMPLES`` each)."""
    training, reference = _digits_halves()
    return frechet_distance(training, reference)
