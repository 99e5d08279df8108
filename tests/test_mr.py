"""MR Sampler: convergence, exact moments, conditional laws, cross-application, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, assert_mixture_recovered, fitted_order, x64

import ersde_jax as ej

MEAN, STD = 0.3, 0.2


def _conditional_gaussian(path, batch=16, dim=4, dtype=jnp.float64):
    """x0 ~ N(MEAN, STD^2 I) given a random degraded image mu, and x_T = mu + max_sigma z."""
    mixture = ej.testing.GaussianMixture(
        jnp.ones(1, dtype), jnp.full((1, dim), MEAN, dtype), jnp.full((1,), STD, dtype)
    )
    mu = 0.5 * jax.random.normal(jax.random.key(5), (batch, dim), dtype)
    x_T = ej.prior_sample(jax.random.key(0), path, (batch, dim), mu=mu, dtype=dtype)
    return ej.testing.mixture_model(mixture, path), mu, x_T


STEPS = (20, 40, 80)


@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize("order,minimum", [(1, 0.9), (2, 1.8), (3, 2.7)])
def test_ode_convergence_order(parameterization, order, minimum):
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    errors = []
    with x64():
        model, mu, x_T = _conditional_gaussian(path)
        for n in STEPS:
            ts = ej.timesteps.uniform_lambda(path, n, end="t_min")
            x = ej.mr_sample(None, model, x_T, mu, steps=n, order=order,
                             parameterization=parameterization, timesteps=ts)
            exact = mu + ej.testing.gaussian_pf_ode(MEAN - mu, STD, path, ts[0], ts[-1], x_T - mu)
            errors.append(float(jnp.max(jnp.abs(x - exact))))
    assert fitted_order(STEPS, errors) >= minimum


def test_release_third_order_rule_is_second_order():
    """The published D2 weight (MATH.md section 4) loses an order; ours keeps it (module doc)."""
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    errors = {"taylor": [], "release": []}
    with x64():
        model, mu, x_T = _conditional_gaussian(path)
        for n in STEPS:
            ts = ej.timesteps.uniform_lambda(path, n, end="t_min")
            exact = mu + ej.testing.gaussian_pf_ode(MEAN - mu, STD, path, ts[0], ts[-1], x_T - mu)
            for rule in errors:
                x = ej.mr_sample(None, model, x_T, mu, steps=n, order=3, timesteps=ts,
                                 third_order=rule)
                errors[rule].append(float(jnp.max(jnp.abs(x - exact))))
    assert fitted_order(STEPS, errors["release"]) < 2.4
    assert errors["taylor"][-1] < errors["release"][-1] / 20


@pytest.mark.parametrize("parameterization", ["data", "noise"])
@pytest.mark.parametrize("order", [1, 2])
def test_sde_exact_moments(parameterization, order):
    """Samples match the exact moments of the discrete MR SDE sampler (5 standard errors)."""
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    steps, batch, dim = 10, 8000, 4
    model, mu, x_T = _conditional_gaussian(path, batch, dim, jnp.float32)
    ts = ej.mr_grid(path, steps, "linear-lambda")
    x = ej.mr_sample(jax.random.key(3), model, x_T, mu, steps=steps, order=order, solver="sde",
                     parameterization=parameterization, timesteps=ts)
    solver = ej.mr_sde(order, parameterization)
    mean, var = ej.testing.gaussian_sampler_moments(solver, path, ts, np.asarray(MEAN - mu), STD,
                                                    0.0, path.max_sigma)
    z = (np.asarray(x - mu, np.float64) - mean) / np.sqrt(var)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)


def test_conditional_mixture_many_steps():
    weights, means, stds = (0.4, 0.6), ((1.5, -1.0), (-1.0, 1.0)), (0.2, 0.3)
    mixture = ej.testing.GaussianMixture(jnp.array(weights), jnp.array(means), jnp.array(stds))
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    model = ej.testing.mixture_model(mixture, path)
    n = 20000
    mu = 0.3 * jax.random.normal(jax.random.key(7), (n, 2))
    x_T = ej.prior_sample(jax.random.key(8), path, (n, 2), mu=mu)
    for solver, order in (("sde", 2), ("ode", 3)):
        x = ej.mr_sample(jax.random.key(9), model, x_T, mu, steps=100, order=order, solver=solver,
                         time_schedule="linear-lambda")
        assert_mixture_recovered(x, weights, means, stds, bias=0.03)


def test_ersde_on_mr_path_spans_ode_and_posterior_sampling():
    """ER-SDE on x - mu: "ode" order 1 is the MR ODE-1, eta = 0 too; eta > 0 injects noise."""
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    with x64():
        model, mu, x_T = _conditional_gaussian(path)
        ts = ej.mr_grid(path, 12, "linear-lambda")
        ode = ej.ersde_sample(None, model, x_T, mu=mu, order=1, noise_scale="ode", timesteps=ts)
        mr = ej.mr_sample(None, model, x_T, mu, steps=12, order=1, timesteps=ts)
        assert_allclose(ode, mr, rtol=1e-10)
        key = jax.random.key(4)
        gaps = [float(jnp.max(jnp.abs(
            ej.ersde_sample(key, model, x_T, mu=mu, order=1, noise_scale="sde", eta=eta,
                            timesteps=ts) - ode))) for eta in (0.0, 0.5, 1.0)]
    assert gaps[0] < 1e-12 and min(gaps[1:]) > 1e-2


@pytest.mark.parametrize("name", ej.TIME_SCHEDULES)
def test_every_schedule_gives_steps_evaluations(name):
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    grid = ej.mr_grid(path, 17, name)
    assert grid.shape == (18,) and np.all(np.diff(grid) < 0) and grid[-1] == path.t_clean
    model, mu, x_T = _conditional_gaussian(path, dtype=jnp.float32)
    x = ej.mr_sample(jax.random.key(0), model, x_T, mu, steps=17, solver="sde", time_schedule=name)
    assert np.all(np.isfinite(np.asarray(x)))


def test_cross_application_vp_path_and_thresholding():
    path = ej.paths.vp_linear()
    mixture = ej.testing.GaussianMixture(jnp.ones(1), jnp.full((1, 3), 0.9), jnp.full((1,), 0.3))
    model = ej.testing.mixture_model(mixture, path)
    x_T = ej.prior_sample(jax.random.key(0), path, (2000, 3))
    x = ej.mr_sample(None, model, x_T, None, steps=20, order=2, time_schedule="linear-lambda")
    clipped = ej.mr_sample(None, model, x_T, None, steps=20, order=2,
                           time_schedule="linear-lambda", thresholding=True)
    assert float(jnp.max(x)) > 1.0 and float(jnp.max(clipped)) <= 1.0 + 1e-6
    assert abs(float(jnp.mean(x)) - 0.9) < 0.02


def test_denoise_last_and_noise_parameterization_final_step():
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    with x64():
        model, mu, x_T = _conditional_gaussian(path)
        ts = ej.timesteps.uniform_lambda(path, 10, end="t_min")  # ends at index 0, sigma > 0
        plain = ej.mr_sample(None, model, x_T, mu, steps=10, parameterization="noise",
                             timesteps=ts)
        final = ej.mr_sample(None, model, x_T, mu, steps=10, parameterization="noise",
                             timesteps=ts, denoise_last=True)
        assert np.all(np.isfinite(np.asarray(final)))
        assert float(jnp.max(jnp.abs(final - plain))) > 0
        # Ending at the clean time with noise prediction is the denoising step, finite.
        clean = ej.mr_sample(None, model, x_T, mu, steps=10, parameterization="noise")
        assert np.all(np.isfinite(np.asarray(clean)))


def test_nan_model_output_is_reported():
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    model, mu, x_T = _conditional_gaussian(path, dtype=jnp.float32)
    broken = ej.Model(lambda p, x, t, c: jnp.where(t < 20, jnp.nan, model.apply_fn(p, x, t, c)),
                      model.params, path=path, prediction="x0")
    res = ej.sample(jax.random.key(0), broken, x_T, ej.mr_sde(2), steps=10, mu=mu)
    assert not bool(res.finite)
    assert np.all(np.isnan(np.asarray(ej.mr_sample(jax.random.key(0), broken, x_T, mu,
                                                   steps=10, solver="sde"))))


def test_bad_input():
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    model, mu, x_T = _conditional_gaussian(path, dtype=jnp.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="MR SDE order must be in 1..2"):
        ej.mr_sample(key, model, x_T, mu, order=3, solver="sde")
    with pytest.raises(ValueError, match="thresholding needs parameterization='data'"):
        ej.mr_sample(key, model, x_T, mu, parameterization="noise", thresholding=True)
    with pytest.raises(ValueError, match="mu of shape"):
        ej.mr_sample(key, model, x_T, mu[:3], steps=5)
    with pytest.raises(ValueError, match="lambda_min"):
        ej.mr_sample(key, model, x_T, mu, time_schedule="linear-lambda", lambda_min=50.0)
    with pytest.raises(ValueError, match="change the number of network evaluations"):
        ej.mr_sample(key, model, x_T, mu, steps=150, time_schedule="trailing")
    with pytest.raises(ValueError, match="length steps \\+ 1"):
        ej.mr_sample(key, model, x_T, mu, steps=5, timesteps=np.linspace(100, 0, 5))
    with pytest.raises(ValueError, match="Unknown time_schedule"):
        ej.mr_sample(key, model, x_T, mu, time_schedule="cosine")
    with pytest.raises(ValueError, match="Unknown solver"):
        ej.mr_sample(key, model, x_T, mu, solver="heun")
    with pytest.raises(ValueError, match="Unknown parameterization"):
        ej.mr_sample(key, model, x_T, mu, parameterization="velocity")
    with pytest.raises(ValueError, match="Unknown theta schedule"):
        ej.paths.ir_sde(10, schedule="quadratic")
    with pytest.raises(ValueError, match="VP-like path"):
        ej.sample(key, ej.testing.mixture_model(model.params, ej.paths.edm()), x_T,
                  ej.euler_maruyama(), steps=5)
