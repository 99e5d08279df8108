"""At many steps, ODE and SDE samples reproduce a Gaussian mixture within Monte-Carlo error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ersde_jax as ej

WEIGHTS, MEANS, STDS = (0.3, 0.7), ((3.0, 0.0), (-2.0, 1.0)), (0.3, 0.5)
N = 20000


@pytest.mark.parametrize("scale,order", [("ode", 3), ("er_sde_5", 3), ("sde", 2)])
def test_mixture_weights_and_component_moments(scale, order):
    mixture = ej.testing.GaussianMixture(jnp.array(WEIGHTS), jnp.array(MEANS), jnp.array(STDS))
    path = ej.paths.edm()
    model = ej.testing.mixture_model(mixture, path)
    x_T = ej.prior_sample(jax.random.key(0), path, (N, 2))
    x = np.asarray(jax.jit(lambda k, x: ej.ersde_sample(k, model, x, steps=60, order=order,
                                                        noise_scale=scale))(jax.random.key(1), x_T),
                   np.float64)
    label = np.argmin([np.sum((x - np.asarray(m)) ** 2, 1) for m in MEANS], axis=0)
    for k, (w, m, s) in enumerate(zip(WEIGHTS, MEANS, STDS, strict=True)):
        xs = x[label == k]
        n = xs.shape[0]
        assert abs(n / N - w) < 5 * np.sqrt(w * (1 - w) / N)
        assert np.all(np.abs(xs.mean(0) - m) < 5 * s / np.sqrt(n))
        # Variance: 5 standard errors plus the solver's O(h) bias at 60 steps.
        assert np.all(np.abs(xs.var(0) / s**2 - 1) < 5 * np.sqrt(2 / n) + 0.02)
