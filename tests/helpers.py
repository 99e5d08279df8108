"""Helpers shared by the tests: assertions (chex where it serves), x64, and the numpy oracles.

The oracles (the 3-component mixture's posterior mean, the DDIM loop, the discrete law of a linear
solver on one Gaussian) are written once here, in float64 numpy, independently of the library.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

import ersde_jax as ej


def assert_allclose(actual, desired, rtol=1e-10, atol=0.0, err_msg=""):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol,
                               err_msg=err_msg)


def assert_tree_all_finite(tree):
    chex.assert_tree_all_finite(tree)


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


def x64_each_test():
    """x64 for one test; a module makes it its autouse fixture with
    ``_x64 = pytest.fixture(autouse=True)(x64_each_test)`` (see test_er_sde.py)."""
    with jax.enable_x64(True):
        yield


# --------------------------------------------------------------------------------------------
# Numpy oracles.
# --------------------------------------------------------------------------------------------

WEIGHTS = np.array([0.3, 0.5, 0.2])  # the 3-component mixture in D = 3 of the reduction tests
MEANS = np.array([[1.0, -0.5, 0.3], [-1.2, 0.8, 0.0], [0.2, 1.5, -1.0]])
STDS = np.array([0.3, 0.5, 0.2])


def np_posterior_mean(x, alpha, sigma, mu=0.0):
    """E[x0 | x_t = x] of the mixture on x = mu + alpha (x0 - mu) + sigma eps (MATH.md sec. 5)."""
    mu = np.broadcast_to(np.asarray(mu, np.float64), x.shape)
    y = (x - mu) / alpha
    c2 = (sigma / alpha) ** 2
    m_c = MEANS[None] - mu[:, None, :]  # (B, K, D) component means relative to mu
    var = STDS**2 + c2  # (K,)
    diff = y[:, None, :] - m_c
    logits = np.log(WEIGHTS) - 0.5 * MEANS.shape[1] * np.log(var) - 0.5 * np.sum(diff**2, -1) / var
    logits -= logits.max(-1, keepdims=True)
    pi = np.exp(logits)
    pi /= pi.sum(-1, keepdims=True)
    comp = m_c + (STDS**2 / var)[None, :, None] * diff
    return mu + np.sum(pi[..., None] * comp, axis=1)


def rel_err(actual, ref) -> float:
    """Max absolute difference relative to the reference's largest magnitude."""
    actual, ref = np.asarray(actual, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(actual - ref)) / np.max(np.abs(ref)))


def ddim_reference(x_T, alpha, sigma, denoise=np_posterior_mean):
    """Deterministic DDIM, ``x_t = alpha_t x0_hat + sigma_t eps_hat``, in numpy."""
    x = np.array(x_T, np.float64)
    for i in range(len(alpha) - 1):
        x0 = denoise(x, alpha[i], sigma[i])
        eps = (x - alpha[i] * x0) / sigma[i]
        x = alpha[i + 1] * x0 + sigma[i + 1] * eps
    return x


def path_coefficients(path, ts):
    """``alpha``, ``sigma`` on the grid ``ts`` as float64 numpy arrays."""
    with x64():
        ts = jnp.asarray(ts, jnp.float64)
        return np.asarray(path.alpha(ts)), np.asarray(path.sigma(ts))


@jax.jit
def _jit_coefficients(solver, alpha, sigma):
    return solver.coefficients(ej.Grid.from_values(alpha, sigma))


class _Jitted:
    """The solver with its ``coefficients`` compiled once per grid size and solver type (the
    solver is a pytree argument), instead of dispatching every operation eagerly: seconds less."""

    def __init__(self, solver):
        self.solver, self.target = solver, solver.target

    def coefficients(self, grid):
        return _jit_coefficients(self.solver, grid.alpha, grid.sigma)


def discrete_law(solver, path, ts, mean, std):
    """Exact mean and variance of a linear solver's output for ``N(mean, std^2)`` (centred mean
    per coordinate), started from the exact marginal at ``ts[0] = t_max``."""
    (a_T,), (s_T,) = path_coefficients(path, [ts[0]])
    return ej.testing.gaussian_sampler_moments(_Jitted(solver), path, ts, mean, std, a_T * mean,
                                               float(np.hypot(a_T * std, s_T)))


def default_samples(model, n: int, size: int):
    """``(images, labels)``: the default sampler (ER-SDE-Solver-3, er_sde_5, 20 NFE) on ``n``
    balanced labels (``arange(n) % 10``) of a class-conditional ``size`` x ``size`` model."""
    labels = jnp.arange(n) % 10
    k_noise, k_sample = jax.random.split(jax.random.key(1))
    x_T = ej.prior_sample(k_noise, model.path, (n, size, size, 1))
    return jax.jit(ej.ersde_sample)(k_sample, model, x_T, cond=labels), labels


def run_installed(tmp_path, script: str) -> dict:
    """Installs the package (not editable) into ``tmp_path/site`` and runs ``script`` (dedented)
    there, outside the source tree, on CPU; returns the JSON of its last printed line, after
    checking that its ``file`` (``ej.__file__``) is the installed one."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(Path(__file__).resolve().parents[1])],
        check=True, capture_output=True, timeout=600,
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, env=env,
                          check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(target.resolve())
    return result


def assert_conditional_edm_contract(model, x, null_label):
    """A bundled class-conditional EDM model: an ``ej.Model`` predicting x0 on the EDM path with
    finite parameters, shape- and dtype-preserving on ``x`` (at least 4 images), and whose
    ``cond=None`` is the null label."""
    assert isinstance(model, ej.Model) and model.prediction == "x0"
    assert isinstance(model.path, ej.paths.EDM)
    assert_tree_all_finite(model.params)
    out = model.apply_fn(model.params, x, 2.0, jnp.arange(len(x)))
    assert out.shape == x.shape and out.dtype == x.dtype
    null = jnp.full((len(x),), null_label)
    np.testing.assert_array_equal(model.apply_fn(model.params, x, 2.0, None),
                                  model.apply_fn(model.params, x, 2.0, null))
