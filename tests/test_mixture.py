"""At many steps, ODE and SDE samples reproduce a Gaussian mixture within Monte-Carlo error."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_mixture_recovered

import ersde_jax as ej

WEIGHTS, MEANS, STDS = (0.3, 0.7), ((3.0, 0.0), (-2.0, 1.0)), (0.3, 0.5)
N = 20000


@pytest.mark.parametrize("scale,order", [("ode", 3), ("er_sde_5", 3), ("sde", 2)])
def test_mixture_weights_and_component_moments(scale, order):
    mixture = ej.testing.GaussianMixture(jnp.array(WEIGHTS), jnp.array(MEANS), jnp.array(STDS))
    path = ej.paths.edm()
    model = ej.testing.mixture_model(mixture, path)
    x_T = ej.prior_sample(jax.random.key(0), path, (N, 2))
    x = jax.jit(lambda k, x: ej.ersde_sample(k, model, x, steps=60, order=order,
                                             noise_scale=scale))(jax.random.key(1), x_T)
    assert_mixture_recovered(x, WEIGHTS, MEANS, STDS)
