"""Backward-pass policies of the sampler's scan (in the spirit of diffrax's adjoints).

The driver hands an adjoint ``make_body(const)``, which builds the scan's step function with
everything it closes over passed through ``const``; the adjoint decides what is differentiated
and what is stored: every step (:class:`FullAdjoint`), every step rematerialised
(:class:`RematAdjoint`), or only the last ``steps`` (:class:`TruncatedAdjoint`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FullAdjoint", "RematAdjoint", "TruncatedAdjoint"]


def _identity(tree):
    return tree


@dataclasses.dataclass(frozen=True)
class FullAdjoint:
    """Differentiate through every step, storing each step's residuals (the default)."""

    remat = False

    def scan(self, make_body, carry, xs):
        """``lax.scan`` of the body over ``xs``."""
        body = make_body(_identity)
        return jax.lax.scan(jax.checkpoint(body) if self.remat else body, carry, xs)


@dataclasses.dataclass(frozen=True)
class RematAdjoint(FullAdjoint):
    """Rematerialise every step in the backward pass (``jax.checkpoint``): the memory of
    ``jax.grad`` through the sampler stores only the scan carry per step, not the network's
    activations."""

    remat = True


@dataclasses.dataclass(frozen=True)
class TruncatedAdjoint:
    """Truncated backpropagation: gradients flow through the last ``steps`` steps only.

    The state (and solver history) reached before them is held constant, and the earlier steps
    run in a scan that is not differentiated. ``remat`` also rematerialises the tail's steps.
    """

    steps: int
    remat: bool = False

    def __post_init__(self):
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise TypeError(f"TruncatedAdjoint steps must be an int, got {type(steps).__name__}.")
        if steps < 1:
            raise ValueError(f"TruncatedAdjoint steps must be >= 1, got {steps}.")

    def scan(self, make_body, carry, xs):
        """A constant scan over the head, then a differentiated scan over the last steps."""
        total = jax.tree_util.tree_leaves(xs)[0].shape[0]
        head = total - self.steps
        tail_adjoint = RematAdjoint() if self.remat else FullAdjoint()
        if head <= 0:
            return tail_adjoint.scan(make_body, carry, xs)
        sg = jax.lax.stop_gradient
        split = lambda lo, hi: jax.tree_util.tree_map(lambda a: a[lo:hi], xs)  # noqa: E731
        carry, ys_head = jax.lax.scan(make_body(sg), sg(carry), sg(split(0, head)))
        carry, ys_tail = tail_adjoint.scan(make_body, sg(carry), split(head, None))
        return carry, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys_head,
                                             ys_tail)
