"""Exact-moment tests of the noise terms (MATH.md section 5).

With one Gaussian as data the exact denoiser is affine, so the sampler's discrete output law is
Gaussian with a mean and variance that :func:`ej.testing.gaussian_sampler_moments` computes
exactly. Monte-Carlo samples must match them within 5 standard errors, and for many steps the
discrete law must approach the data law itself (which fails if the injected variance is wrong).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_model

import ersde_jax as ej

MEAN, STD, DIM, N_SAMPLES = 0.5, 0.8, 4, 20000


@pytest.mark.parametrize("scale", ["er_sde_5", "sde", "er_sde_2"])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_sample_moments_match_discrete_sampler(scale, order):
    path = ej.paths.edm()
    steps = 8
    ts = ej.timesteps.karras(path, steps)
    model = gaussian_model(path, MEAN, STD, DIM, jnp.float32)
    x_T = ej.prior_sample(jax.random.key(1), path, (N_SAMPLES, DIM), dtype=jnp.float32)
    x = ej.ersde_sample(jax.random.key(2), model, x_T, order=order, noise_scale=scale,
                        timesteps=ts)
    solver = ej.er_sde(order, scale)
    mean, var = ej.testing.gaussian_sampler_moments(solver, path, ts, MEAN, STD, 0.0,
                                                    path.prior_std())
    values = np.asarray(x, np.float64).ravel()
    n = values.size
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2.0 / (n - 1))
    assert abs(values.mean() - mean) < 5 * se_mean
    assert abs(values.var(ddof=1) - var) < 5 * se_var


@pytest.mark.parametrize("scale", ["er_sde_5", "sde", "er_sde_1", "ode"])
@pytest.mark.parametrize("order", [1, 3])
def test_discrete_law_converges_to_data_law(scale, order):
    """Started from the exact marginal, the output variance error shrinks at the solver's order."""
    path = ej.paths.edm()
    errors = []
    for steps in (25, 200):
        ts = ej.timesteps.karras(path, steps)
        mean, var = ej.testing.gaussian_sampler_moments(
            ej.er_sde(order, scale), path, ts, MEAN, STD, MEAN, np.hypot(path.t_max, STD)
        )
        assert abs(mean - MEAN) < 1e-12  # the exact denoiser is unbiased
        errors.append(abs(var / STD**2 - 1))
    assert errors[0] / errors[1] > (8.0**0.8 if order == 1 else 8.0**1.8)
    assert errors[1] < (1e-1 if order == 1 else 1e-3)


def test_wrong_noise_is_detected():
    """The statistics above can fail: a sampler with 10% too much noise is 5 SE off."""
    path = ej.paths.edm()
    ts = ej.timesteps.karras(path, 8)
    model = gaussian_model(path, MEAN, STD, DIM, jnp.float32)
    x_T = ej.prior_sample(jax.random.key(1), path, (N_SAMPLES, DIM), dtype=jnp.float32)
    x = ej.ersde_sample(jax.random.key(2), model, x_T, order=2, timesteps=ts, s_noise=1.1)
    _, var = ej.testing.gaussian_sampler_moments(ej.er_sde(2), path, ts, MEAN, STD, 0.0,
                                                 path.prior_std())
    values = np.asarray(x, np.float64).ravel()
    assert abs(values.var(ddof=1) - var) > 5 * var * np.sqrt(2.0 / (values.size - 1))
