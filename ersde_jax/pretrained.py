"""Pretrained models shipped with the package.

``restoration_digits`` is a small conditional IR-SDE model (Luo et al. 2023) that restores the
8x8 scikit-learn digits from a 2x2-average-pooled, noisy version; it predicts the noise of
``ej.paths.ir_sde(max_sigma=0.5, T=100, schedule="cosine")`` and was trained by
``scripts/train_restoration.py``.

Example:
    >>> model = ej.pretrained.restoration_digits()
    >>> clean, degraded = ej.pretrained.restoration_digits_data("test")
    >>> x_T = degraded + model.path.prior_std() * jax.random.normal(key, degraded.shape)
    >>> restored = ej.ersde_sample(key, model, x_T, steps=20, order=1, noise_scale="sde",
    ...                            mu=degraded)
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from . import paths
from ._digits import load_split
from ._model import Model
from ._networks import restoration_net, unflatten_params

__all__ = ["restoration_digits", "restoration_digits_config", "restoration_digits_data"]

_WEIGHTS = "restoration_digits.npz"
_CONFIG = "restoration_digits.json"


def _weights_dir():
    return resources.files(__package__).joinpath("weights")


def restoration_digits_config() -> dict:
    """The training configuration stored with the weights (path, network size, final loss)."""
    return json.loads(_weights_dir().joinpath(_CONFIG).read_text())


@functools.cache
def _apply_fn(T: int):
    # One function object per T, so that models loaded twice share their compiled programs.
    return functools.partial(restoration_net, T=T)


def restoration_digits() -> Model:
    """Loads the digits restoration model.

    Returns:
        An :class:`~ersde_jax.Model` with ``prediction="eps"`` on the IR-SDE path it was trained
        on; call it with ``mu`` (and, by default, ``cond``) set to the degraded images, shaped
        (N, 8, 8, 1) in [-1, 1].
    """
    with _weights_dir().joinpath(_WEIGHTS).open("rb") as f:
        return _restoration_model(f, restoration_digits_config())


def _restoration_model(weights, config: dict) -> Model:
    """Builds the model from an ``.npz`` (file or path) and its configuration dict."""
    with np.load(weights) as flat:
        params = unflatten_params({key: flat[key] for key in flat.files})
    path = paths.ir_sde(
        max_sigma=config["max_sigma"], T=config["T"], schedule=config["schedule"],
        eps=config["eps"],
    )
    return Model(_apply_fn(config["T"]), params, path=path, prediction=config["prediction"])


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
