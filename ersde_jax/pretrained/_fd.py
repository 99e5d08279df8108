"""Fréchet distances of the bundled models: FD in a bundled classifier's features to real digits.

The digits FD compares with the half of the scikit-learn digits the digits model never saw,
computed from the data (scikit-learn). The MNIST FD compares with the 1,000 held-out MNIST
digits through their shipped feature mean and covariance (``weights/mnist_reference.npz``, as
FID tools ship theirs), so that it needs no data package.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..metrics import frechet_distance
from ._data import GENERATIVE_HALF, REFERENCE_HALF
from ._models import _weights_dir, digits_classifier, digits_data, mnist_classifier

__all__ = ["digits_fd", "digits_fd_floor", "DIGITS_FD_SAMPLES", "mnist_fd", "mnist_fd_floor",
           "MNIST_FD_SAMPLES"]

DIGITS_FD_SAMPLES = 898  # images in the reference half of the real digits
MNIST_FD_SAMPLES = 1000  # held-out MNIST digits, 100 per class


def _fd(name: str, images, size: int, classifier, reference) -> float:
    """FD of ``images`` in the features of ``classifier()`` to the features ``reference()``;
    images not of shape (N, size, size, 1) raise, in ``name``, before either is loaded."""
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (size, size, 1):
        raise ValueError(f"{name} needs images of shape (N, {size}, {size}, 1), "
                         f"got {images.shape}.")
    features = jax.jit(classifier().features)(images.astype(jnp.float32))
    return frechet_distance(features, reference())


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
    return _fd("digits_fd", images, 8, digits_classifier, lambda: _digits_halves()[1])


def digits_fd_floor() -> float:
    """FD between the two disjoint halves of the real digits (``DIGITS_FD_SAMPLES`` each)."""
    training, reference = _digits_halves()
    return frechet_distance(training, reference)


def _points_with_moments(mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """2d points whose sample mean and (ddof = 1) covariance are exactly ``mean`` and ``cov``.

    ``mean +- c r_i`` for the columns ``r_i`` of the symmetric square root of ``cov``, with
    ``c^2 = (2d - 1) / 2``: their scatter is ``2 c^2 cov = (2d - 1) cov``. Gaussian FDs only see
    these two moments, so the points stand in for the reference features in
    ``ersde_jax.metrics.frechet_distance``.
    """
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    offsets = np.sqrt((2 * len(mean) - 1) / 2) * root
    return np.concatenate([mean + offsets, mean - offsets])


@functools.cache
def _mnist_reference():
    """Points with the held-out digits' feature moments, and the training digits' features."""
    with _weights_dir().joinpath("mnist_reference.npz").open("rb") as f, np.load(f) as ref:
        points = _points_with_moments(ref["mean"], ref["cov"])
        return points, ref["train_features"].astype(np.float64)


def mnist_fd(images) -> float:
    """MNIST Fréchet distance: FD in the bundled MNIST classifier's features to real digits.

    The reference is the 1,000 held-out MNIST digits (100 per class), which neither the MNIST
    model nor its classifier saw, through their shipped feature mean and covariance.
    FD is biased upwards at small sample sizes: compare with :func:`mnist_fd_floor` at the same
    number of images, with balanced labels (``arange(n) % 10``).

    Args:
        images: generated digits, shape (N, 28, 28, 1) in [-1, 1], N >= 2.
    """
    return _fd("mnist_fd", images, 28, mnist_classifier, lambda: _mnist_reference()[0])


def mnist_fd_floor(n: int = MNIST_FD_SAMPLES) -> float:
    """The MNIST FD of ``n`` real training digits: what a sampler that reproduced the training
    distribution exactly would score with ``n`` class-balanced images.

    The first ``n`` of the 4,000 training digits in class-interleaved order (labels
    ``arange(n) % 10``, like balanced samples), from their shipped features.

    Args:
        n: the number of images, 2 to 4000; match the sample size of :func:`mnist_fd`.
    """
    train = _mnist_reference()[1]
    if not 2 <= n <= len(train):
        raise ValueError(f"n must be in [2, {len(train)}], got {n}.")
    return frechet_distance(train[:n], _mnist_reference()[0])
