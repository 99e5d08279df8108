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


def assert_mixture_recovered(x, weights, means, stds, bias=0.02):
    """Samples ``x`` (n, d) follow the mixture: weights, component means and variances.

    Components are assigned by nearest mean (the test mixtures are well separated). Weights and
    means must match within 5 Monte-Carlo standard errors; variances within 5 standard errors plus
    ``bias`` (the solver's discretisation error at the step count used).
    """
    x = np.asarray(x, np.float64)
    label = np.argmin([np.sum((x - np.asarray(m)) ** 2, 1) for m in means], axis=0)
    for k, (w, m, s) in enumerate(zip(weights, means, stds, strict=True)):
        xs = x[label == k]
        n = xs.shape[0]
        assert abs(n / x.shape[0] - w) < 5 * np.sqrt(w * (1 - w) / x.shape[0])
        assert np.all(np.abs(xs.mean(0) - np.asarray(m)) < 5 * s / np.sqrt(n))
        assert np.all(np.abs(xs.var(0) / s**2 - 1) < 5 * np.sqrt(2 / n) + bias)
