"""Frozen dataclasses as pytrees whose tree structure tells their classes apart.

``jax.tree_util.register_dataclass`` would do, but on jax 0.10.0-0.10.2 (not 0.9.2 or older) the
tree structures of two such classes compare equal when their static values do, whatever the
class and field names: ``DDIM(eta, stochastic=True)`` and ``Euler(s_noise, sde=True)`` give equal
``PyTreeDef`` s with different hashes. ``jax.jit`` finds compiled programs by hash, then equality,
so when two hashes share a bucket a sampler compiled for one solver runs for the other and
returns wrong samples without an error (seen intermittently in this project's tests). Nodes
registered with ``register_pytree_with_keys`` compare their classes as well as their static values.
"""

from __future__ import annotations

import dataclasses

import jax

__all__ = ["pytree_dataclass"]


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
