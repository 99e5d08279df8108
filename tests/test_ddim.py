"""DDIM(eta) reduces exactly to ER-SDE-Solver-1 at eta = 0 ("ode") and eta = 1 ("sde")."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_allclose, two_component_mixture, x64

import ersde_jax as ej


@pytest.mark.parametrize("path", [ej.paths.vp_linear(), ej.paths.edm(), ej.paths.vp_discrete()])
@pytest.mark.parametrize("eta,scale", [(0.0, "ode"), (1.0, "sde")])
def test_ddim_limits_are_er_sde_1(path, eta, scale):
    with x64():
        model = ej.testing.mixture_model(two_component_mixture(jnp.float64), path)
        x_T = ej.prior_sample(jax.random.key(0), path, (8, 2), dtype=jnp.float64)
        key = jax.random.key(1)
        a = ej.sample(key, model, x_T, ej.ddim(eta), steps=12).x
        b = ej.ersde_sample(key, model, x_T, steps=12, order=1, noise_scale=scale)
        assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_intermediate_eta_and_bad_eta():
    path = ej.paths.vp_linear()
    model = ej.testing.mixture_model(two_component_mixture(), path)
    x_T = ej.prior_sample(jax.random.key(0), path, (8, 2))
    half = ej.sample(jax.random.key(1), model, x_T, ej.ddim(0.5), steps=10).x
    ode = ej.sample(jax.random.key(1), model, x_T, ej.ddim(0.0), steps=10).x
    assert float(jnp.max(jnp.abs(half - ode))) > 1e-3
    with pytest.raises(ValueError, match="eta must be in"):
        ej.ddim(1.5)
