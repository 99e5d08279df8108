"""DDIM(eta): exactly ER-SDE-Solver-1 at eta = 0 ("ode") and eta = 1 ("sde"); eq. 12 of Song et
al. 2021 for intermediate eta, pathwise (numpy transcription) and in law (weak order one)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_allclose,
    discrete_law,
    fitted_order,
    path_coefficients,
    two_component_mixture,
    x64,
)

import ersde_jax as ej

MEAN, STD = 0.5, 0.8
WEAK_STEPS = (40, 80, 160, 320)  # exact discrete laws (numpy, cheap)


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


# --------------------------------------------------------------------------------------------
# DDIM with intermediate eta (Song et al. 2021, eq. 12).
# --------------------------------------------------------------------------------------------


def _ddim_c(eta, a_s, a_t, s_s, s_t):
    """The noise level of eq. 12 on a general path; on VP it is Song et al.'s
    ``sigma_t(eta) = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})``."""
    return eta * s_t * math.sqrt(1.0 - (a_s * s_t / (a_t * s_s)) ** 2)


def _ddim_eq12(denoise, x, alpha, sigma, eta, zs):
    """DDIM, eq. 12: ``x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps_hat + c z`` (numpy)."""
    for i in range(len(alpha) - 1):
        a_s, a_t, s_s, s_t = alpha[i], alpha[i + 1], sigma[i], sigma[i + 1]
        x0 = denoise(x, a_s, s_s)
        eps = (x - a_s * x0) / s_s
        c = _ddim_c(eta, a_s, a_t, s_s, s_t)
        x = a_t * x0 + math.sqrt(s_t**2 - c**2) * eps + c * zs[i]
    return x


def _ddim_eq12_moments(path, ts, eta, c_fn=_ddim_c):
    """Mean and variance per coordinate of eq. 12's output for ``N(MEAN, STD^2)``, from the exact
    marginal at ``ts[0]``: with ``x0_hat = m + k (x - alpha_s m)`` each step is ``A x + B + c z``.
    """
    alpha, sigma = path_coefficients(path, ts)
    mean, var = alpha[0] * MEAN, alpha[0] ** 2 * STD**2 + sigma[0] ** 2
    for i in range(len(ts) - 1):
        a_s, a_t, s_s, s_t = alpha[i], alpha[i + 1], sigma[i], sigma[i + 1]
        k = STD**2 * a_s / (a_s**2 * STD**2 + s_s**2)
        c = c_fn(eta, a_s, a_t, s_s, s_t)
        keep = math.sqrt(s_t**2 - c**2)
        gain = a_t * k + keep * (1.0 - a_s * k) / s_s
        shift = (a_t - keep * a_s / s_s) * (1.0 - k * a_s) * MEAN
        mean, var = gain * mean + shift, gain**2 * var + c**2
    return mean, var


@pytest.mark.parametrize("path", [ej.paths.vp_linear(), ej.paths.edm()], ids=["vp", "edm"])
def test_ddim_intermediate_eta_is_eq_12(path):
    """ej.ddim(0.5) equals a numpy transcription of eq. 12 with the same noise draws (x64)."""
    with x64():
        mixture = two_component_mixture(jnp.float64)
        model = ej.testing.mixture_model(mixture, path)
        x_T = ej.prior_sample(jax.random.key(0), path, (6, 2), dtype=jnp.float64)
        key, steps = jax.random.key(3), 12
        ts = ej.timesteps.karras(path, steps)
        x = ej.sample(key, model, x_T, ej.ddim(0.5), timesteps=ts).x
        zs = [np.asarray(jax.random.normal(jax.random.fold_in(key, i), x_T.shape, jnp.float64))
              for i in range(steps)]
        denoise = lambda x, a, s: np.asarray(  # noqa: E731
            ej.testing.mixture_posterior_mean(mixture, jnp.asarray(x), a, s))
        alpha, sigma = path_coefficients(path, ts)
        expected = _ddim_eq12(denoise, np.asarray(x_T), alpha, sigma, 0.5, zs)
        ode = _ddim_eq12(denoise, np.asarray(x_T), alpha, sigma, 0.0, zs)
    assert_allclose(x, expected, rtol=1e-10, atol=1e-10)
    assert np.max(np.abs(expected - ode)) > 1e-2  # the noise matters at this tolerance


@pytest.mark.parametrize("path", [ej.paths.vp_linear(), ej.paths.edm()], ids=["vp", "edm"])
def test_ddim_intermediate_eta_weak_order_one(path):
    """DDIM(0.5)'s discrete law (Karras grids) is eq. 12's, and tends to the data law at order 1.

    Measured variance orders (N = 40-320): vp 0.949, edm 0.955. With ``c = eta sigma_t`` (the
    square-root factor dropped) the order is ~0.39 and the bias still 0.085 at 320 steps.
    """
    errors = []
    for n in WEAK_STEPS:
        ts = ej.timesteps.karras(path, n)
        mean, var = discrete_law(ej.ddim(0.5), path, ts, MEAN, STD)
        ref_mean, ref_var = _ddim_eq12_moments(path, ts, 0.5)
        assert abs(mean - ref_mean) < 1e-12 and abs(var / ref_var - 1) < 1e-10
        assert abs(mean - MEAN) < 1e-12  # the exact denoiser leaves no mean bias
        errors.append(abs(var / STD**2 - 1))
    assert fitted_order(WEAK_STEPS, errors) >= 0.9 and errors[-1] < 0.03
    wrong = [abs(_ddim_eq12_moments(path, ej.timesteps.karras(path, n), 0.5,
                                    lambda eta, a_s, a_t, s_s, s_t: eta * s_t)[1] / STD**2 - 1)
             for n in WEAK_STEPS]
    assert fitted_order(WEAK_STEPS, wrong) < 0.6 and wrong[-1] > 0.05
