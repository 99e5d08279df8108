"""What generation needs to know about a model, and the bundled models by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

import ersde_jax as ej

from . import pretrained

__all__ = ["ModelSpec", "MODELS", "load_model", "resolve", "check_int"]


class ModelSpec(NamedTuple):
    """A generative model and what generation needs to know about it."""

    model: Any  # the ej.Model, producing images in [-1, 1]
    shape: tuple[int, int, int] | None  # one sample's shape (H, W, C)
    num_classes: int | None = None  # class labels 0 .. num_classes - 1; None: unconditional
    null_label: int | None = None  # the label of the unconditional model (default num_classes)


MODELS: dict[str, Callable[[], ModelSpec]] = {  # the null label is num_classes (10) here
    "digits": lambda: ModelSpec(pretrained.digits_model(), (8, 8, 1), 10),
    "mnist": lambda: ModelSpec(pretrained.mnist_model(), (28, 28, 1), 10),
}


def load_model(ref: str):
    """A bundled model by name (a key of ``MODELS``), or what ``"module:function"`` returns."""
    if ref in MODELS:
        return MODELS[ref]()
    module, colon, name = ref.partition(":")
    if not colon:
        raise ValueError(f"Unknown model {ref!r}: expected a bundled model "
                         f"({', '.join(MODELS)}) or 'module:function'.")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"Cannot load model {ref!r}: {error}") from None
    return fn()


def check_int(name: str, value, low: int = 0, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high)``; TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}.")
    if high is not None and value >= high:
        raise ValueError(f"{name} must be < {high}, got {value}.")
    return int(value)


def _merge(field: str, given, declared):
    if given is not None and declared is not None and given != declared:
        raise ValueError(f"{field}={given} contradicts the model's own {field}={declared}.")
    return declared if given is None else given


def resolve(model, shape=None, num_classes=None, null_label=None) -> tuple[str, ModelSpec]:
    """``(name, ModelSpec)`` of a model given as a name, ``"module:function"``, an
    ``ej.Model``, ``(Model, num_classes)`` or a ``ModelSpec``, completed by the arguments."""
    name = model if isinstance(model, str) else "custom"
    if isinstance(model, str):
        model = load_model(model)
    if isinstance(model, ej.Model):
        model = ModelSpec(model, None)
    elif (isinstance(model, tuple) and not isinstance(model, ModelSpec) and len(model) == 2
          and isinstance(model[0], ej.Model)):
        model = ModelSpec(model[0], None, model[1])
    if not isinstance(model, ModelSpec) or not isinstance(model.model, ej.Model):
        raise TypeError("model must be a bundled model's name, 'module:function', an ej.Model, "
                        f"(ej.Model, num_classes) or a ModelSpec; got {type(model).__name__}.")
    shape = _merge("shape", None if shape is None else tuple(shape), model.shape)
    if shape is None:
        raise ValueError("shape (H, W, C) of one sample is needed for this model.")
    if (len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape)
            or shape[2] not in (1, 3, 4)):
        raise ValueError(f"shape must be (H, W, C) with C in 1, 3, 4; got {shape}.")
    num_classes = _merge("num_classes", num_classes, model.num_classes)
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, 1)
        null_label = _merge("null_label", null_label, model.null_label)
        null_label = num_classes if null_label is None else check_int("null_label", null_label)
    elif null_label is not None:
        raise ValueError("null_label needs a class-conditional model (num_classes).")
    return name, ModelSpec(model.model, tuple(int(d) for d in shape), num_classes, null_label)
