"""Numeric helpers of the core: concrete evaluation, gradient-safe roots, class-named pytrees.

* :func:`eval_f64`, :func:`is_concrete`: evaluate schedule functions on concrete values before
  tracing (validation, default grids), and tell concrete values from tracers.
* :func:`sqrt_vanishing`, :func:`safe_sqrt`: square roots with finite derivatives where the root
  is 0. ``sigma`` of a path vanishes at the clean time and a step's noise variance vanishes on
  the deterministic steps; ``d sqrt(v) / dv`` is infinite there, and a ``0 * inf`` in the
  backward pass would turn a finite gradient of the sample into NaN.
* :func:`pytree_dataclass`: frozen dataclasses as pytrees whose tree structure names their class.
  ``jax.tree_util.register_dataclass`` would do, but on jax 0.10.0-0.10.2 (not 0.9.2 or older)
  the tree structures of two such classes compare equal when their static values do, whatever
  the class and field names: ``DDIM(eta, stochastic=True)`` and ``Euler(s_noise, sde=True)``
  gave equal ``PyTreeDef`` s with different hashes. ``jax.jit`` finds compiled programs by hash,
  then equality, so when two hashes shared a bucket a sampler compiled for one solver ran for
  the other and returned wrong samples without an error. Nodes registered with
  ``register_pytree_with_keys`` compare their classes as well as their static values.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["eval_f64", "is_concrete", "sqrt_vanishing", "safe_sqrt", "pytree_dataclass"]


def eval_f64(fn, *args) -> np.ndarray:
    """``fn(*args)`` evaluated eagerly in float64 on this process's CPU, even inside a
    ``jax.jit`` trace (a local device: under ``jax.distributed`` another process's is not
    addressable)."""
    args = [np.asarray(a, np.float64) for a in args]
    with jax.ensure_compile_time_eval(), jax.enable_x64(True), jax.default_device(
        jax.local_devices(backend="cpu")[0]
    ):
        return np.asarray(fn(*args), np.float64)


def is_concrete(tree) -> bool:
    """True when no leaf of ``tree`` is a tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def sqrt_vanishing(v):
    """``sqrt(v)``, with derivative 0 instead of ``inf`` where ``v <= 0`` (values unchanged)."""
    positive = v > 0
    root = jnp.sqrt(jnp.where(positive, v, 1.0))
    return jnp.where(positive, root, jax.lax.stop_gradient(jnp.sqrt(v)))


def safe_sqrt(v):
    """``sqrt(max(v, 0))`` (a radicand clamped at 0), with derivative 0 where ``v <= 0``."""
    return sqrt_vanishing(jnp.maximum(v, 0.0))


def pytree_dataclass(cls):
    """Registers the frozen dataclass ``cls`` as a pytree node.

    Fields with ``metadata=dict(static=True)`` are part of the tree structure (hashable, compared
    with ``==``); the others are children, with attribute key paths. Unflattening calls ``cls``,
    so ``__post_init__`` checks run as they would for ``register_dataclass``.

    Raises:
        TypeError: if ``cls`` is not a frozen dataclass, or has a field with ``init=False``.
    """
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"{cls.__name__} must be a frozen dataclass.")
    fields = dataclasses.fields(cls)
    if not all(f.init for f in fields):
        raise TypeError(f"{cls.__name__}: fields with init=False cannot be rebuilt on unflatten.")
    static = tuple(f.name for f in fields if f.metadata.get("static", False))
    data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data)

    def flatten(obj):
        return [getattr(obj, name) for name in data], tuple(getattr(obj, name) for name in static)

    def flatten_with_keys(obj):
        children, meta = flatten(obj)
        return list(zip(keys, children, strict=True)), meta

    def unflatten(meta, children):
        return cls(**dict(zip(static, meta, strict=True)), **dict(zip(data, children, strict=True)))

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls
