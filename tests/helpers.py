"""Small assertion helpers shared by the tests (the few chex-style checks we use)."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import ersde_jax as ej


def assert_allclose(actual, desired, rtol=1e-10, atol=0.0, err_msg=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol,
                               err_msg=err_msg)


def assert_tree_all_finite(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf))), "non-finite values in tree"


def fitted_order(steps, errors) -> float:
    """Convergence order: minus the least-squares slope of log(error) against log(steps)."""
    return -np.polyfit(np.log(np.asarray(steps, float)), np.log(np.asarray(errors, float)), 1)[0]


@contextlib.contextmanager
def x64():
    with jax.enable_x64(True):
        yield


def gaussian_model(path, mean=0.5, std=0.8, dim=4, dtype=jnp.float64):
    """Exact denoiser of N(mean, std^2 I) as a Model."""
    mixture = ej.testing.GaussianMixture(
        jnp.ones(1, dtype), jnp.full((1, dim), mean, dtype), jnp.full((1,), std, dtype)
    )
    return ej.testing.mixture_model(mixture, path)


def two_component_mixture(dtype=jnp.float32):
    return ej.testing.GaussianMixture(
        jnp.array([0.3, 0.7], dtype),
        jnp.array([[2.0, 0.0], [-1.0, 1.0]], dtype),
        jnp.array([0.3, 0.5], dtype),
    )
