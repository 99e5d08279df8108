"""Paths, grids and prediction conversions hold exactly (x64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, x64

import ersde_jax as ej
from ersde_jax._prediction import PREDICTIONS

PATHS = {
    "edm": ej.paths.edm(),
    "vp_linear": ej.paths.vp_linear(),
    "vp_cosine": ej.paths.vp_cosine(),
    "vp_discrete": ej.paths.vp_discrete(),
    "flow": ej.paths.flow(),
}


@pytest.mark.parametrize("name", PATHS)
def test_lambda_inverse(name):
    path = PATHS[name]
    with x64():
        t = jnp.linspace(path.t_min, path.t_max, 37)
        lam = path.lam(t)
        assert np.all(np.diff(np.asarray(lam)) < 0)
        assert_allclose(path.t_from_lambda(lam), t, rtol=1e-9, atol=1e-12)
        assert_allclose(lam, jnp.log(path.alpha(t) / path.sigma(t)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "vp_discrete"])
def test_vp_preserves_variance(name):
    path = PATHS[name]
    with x64():
        t = jnp.linspace(path.t_min, path.t_max, 50)
        assert_allclose(path.alpha(t) ** 2 + path.sigma(t) ** 2, jnp.ones_like(t), rtol=1e-13)


def test_vp_discrete_matches_ddpm_tables():
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    path = ej.paths.vp_discrete(betas)
    with x64():
        idx = jnp.arange(1000.0)
        assert_allclose(path.alpha(idx) ** 2, abar, rtol=1e-12)
        assert float(path.sigma(jnp.array(-1.0))) == 0.0
        mid = jnp.array(10.5)
        assert_allclose(path.log_abar(mid), 0.5 * (np.log(abar[10]) + np.log(abar[11])), rtol=1e-13)


def test_vp_linear_and_cosine_formulas():
    with x64():
        t = jnp.array([0.1, 0.5, 0.9])
        lin = ej.paths.vp_linear()
        assert_allclose(lin.alpha(t) ** 2, np.exp(-(0.1 * t + 0.5 * 19.9 * t**2)), rtol=1e-13)
        cos = ej.paths.vp_cosine()
        f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2
        assert_allclose(cos.alpha(t) ** 2, f(np.asarray(t)) / f(0.0), rtol=1e-12)
        flow = ej.paths.flow()
        assert_allclose(flow.alpha(t), 1 - t, rtol=1e-15)
        assert_allclose(flow.sigma(t), t, rtol=1e-15)


def test_karras_grid_is_edm_formula():
    n, smin, smax, rho = 12, 0.002, 80.0, 7.0
    grid = ej.timesteps.karras(ej.paths.edm(smin, smax), n)
    i = np.arange(n)
    expected = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    assert grid.shape == (n + 1,) and grid[-1] == 0.0
    assert_allclose(grid[:-1], expected, rtol=1e-12)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("grid_fn", [ej.timesteps.karras, ej.timesteps.uniform_t,
                                     ej.timesteps.uniform_lambda])
def test_grids_are_valid(name, grid_fn):
    path = PATHS[name]
    for end in ("clean", "t_min"):
        grid = grid_fn(path, 9, end=end)
        assert grid.shape == (10,) and np.all(np.diff(grid) < 0)
        assert np.isclose(grid[0], path.t_max) and np.all(path.in_domain(grid))
        assert grid[-1] == (path.t_clean if end == "clean" else grid[-1])
        if end == "t_min":
            assert np.isclose(grid[-1], path.t_min)


def test_uniform_lambda_and_lambda_min():
    path = ej.paths.vp_cosine(t_max=0.999)
    with x64():
        grid = ej.timesteps.uniform_lambda(path, 8, end="t_min")
        lam = np.asarray(path.lam(jnp.asarray(grid)))
        assert_allclose(np.diff(lam), np.full(8, lam[1] - lam[0]), rtol=1e-8)
        clipped = ej.timesteps.uniform_lambda(path, 8, lambda_min=-5.1, end="t_min")
        assert_allclose(path.lam(jnp.asarray(clipped[0])), -5.1, rtol=1e-10)
        assert lam[0] < -5.1


@pytest.mark.parametrize("prediction", sorted(PREDICTIONS))
@pytest.mark.parametrize("name", ["vp_linear", "edm", "flow"])
def test_prediction_conversions_are_exact(prediction, name):
    path = PATHS[name]
    with x64():
        k1, k2 = jax.random.split(jax.random.key(0))
        x0, eps = jax.random.normal(k1, (5, 3)), jax.random.normal(k2, (5, 3))
        t = jnp.array(0.37 if name != "edm" else 2.5)
        a, s = path.alpha(t), path.sigma(t)
        x = a * x0 + s * eps
        outputs = {
            "x0": x0,
            "eps": eps,
            "score": -eps / s,
            "v": (a * eps - s * x0) / jnp.sqrt(a**2 + s**2) if name != "edm" else a * eps - s * x0,
            "flow": eps - x0,
        }
        out = outputs[prediction]
        if prediction == "v" and name != "edm":
            out = a * eps - s * x0  # VP/flow convention, alpha^2 + sigma^2 need not be 1
        got = PREDICTIONS[prediction](out, x, a, s, 0.0, 1.0)
        assert_allclose(got.x0, x0, rtol=1e-10, atol=1e-12)
        assert_allclose(got.eps, eps, rtol=1e-10, atol=1e-12)


def test_prediction_with_mean_reverting_mu():
    with x64():
        k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
        x0, eps, mu = (jax.random.normal(k, (4, 3)) for k in (k1, k2, k3))
        a, s = jnp.array(0.6), jnp.array(0.8 * 0.3)  # sigma = max_sigma sqrt(1 - alpha^2)
        x = mu + a * (x0 - mu) + s * eps
        got = PREDICTIONS["eps"](eps, x - mu, a, s, mu, 1.0)
        assert_allclose(got.x0 + mu, x0, rtol=1e-12)
        shat = s / 0.3  # MR v: v = max_sigma alpha eps - shat (x0 - mu)
        v = 0.3 * a * eps - shat * (x0 - mu)
        got = PREDICTIONS["v"](v, x - mu, a, s, mu, 0.3)
        assert_allclose(got.x0 + mu, x0, rtol=1e-12)
        assert_allclose(got.eps, eps, rtol=1e-12)
