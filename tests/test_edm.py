"""EDM's Heun and stochastic samplers (Karras et al. 2022, Algorithms 1 and 2): exact reductions,
order 2, the discrete law on an exact Gaussian, honest NFE and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, fitted_order, gaussian_model, two_component_mixture, x64

import ersde_jax as ej

MEAN, STD, DIM = 0.5, 0.8, 4


def _rho(path, ts):
    ts = np.asarray(ts, np.float64)
    with x64():
        return np.asarray(path.sigma(ts) / path.alpha(ts)), np.asarray(path.alpha(ts))


def _slope(rho):
    """``eps_hat = a(rho) (xbar - m)`` for the exact Gaussian: ``a = rho / (s^2 + rho^2)``."""
    return rho / (STD**2 + rho**2)


def _heun_factor(rho_from, rho_to):
    """One explicit trapezoidal step of ``e' = a(rho) e`` (an Euler step when ``rho_to = 0``)."""
    h, a0 = rho_to - rho_from, _slope(rho_from)
    if rho_to == 0:
        return 1.0 + h * a0
    return 1.0 + 0.5 * h * (a0 + _slope(rho_to) * (1.0 + h * a0))


@pytest.mark.parametrize("path", [ej.paths.edm(), ej.paths.vp_linear(), ej.paths.flow()])
@pytest.mark.parametrize("end", ["clean", "t_min"])
def test_heun_on_exact_gaussian_is_the_explicit_trapezoidal_rule(path, end):
    """The exact Gaussian's PF-ODE is linear, ``dxbar/drho = a(rho) (xbar - m)``; EDM Heun in the
    scaled coordinates is the explicit trapezoidal rule on it, a product of scalar factors."""
    with x64():
        ts = ej.timesteps.karras(path, 9, end=end)
        rho, alpha = _rho(path, ts)
        model = gaussian_model(path, MEAN, STD, DIM)
        x_T = ej.prior_sample(jax.random.key(0), path, (6, DIM), dtype=jnp.float64)
        res = ej.sample(None, model, x_T, ej.edm_heun(), timesteps=ts)
        factor = np.prod([_heun_factor(rho[i], rho[i + 1]) for i in range(9)])
        e = np.asarray(x_T) / alpha[0] - MEAN
        assert_allclose(res.x, alpha[-1] * (MEAN + factor * e), rtol=1e-10)
        assert int(res.nfe) == (17 if end == "clean" else 18)


def test_heun_with_a_state_free_derivative_is_the_trapezoidal_quadrature():
    """A noise prediction ``g(sigma)`` that ignores x makes ``dx/dsigma = g(sigma)``: Heun is then
    the composite trapezoidal rule for its integral (the last step to 0 the left rectangle)."""
    path = ej.paths.edm()
    g = lambda s: jnp.sin(s) + 0.1 * s**2  # noqa: E731
    model = ej.Model(lambda p, x, t, c: jnp.broadcast_to(g(t), x.shape), None, path=path,
                     prediction="eps")
    with x64():
        ts = ej.timesteps.karras(path, 7)
        x_T = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2) * 80.0
        x = ej.sample(None, model, x_T, ej.edm_heun(), timesteps=ts).x
        gs = np.asarray(g(jnp.asarray(ts)))
        dt = np.diff(ts)
        integral = np.sum(0.5 * dt[:-1] * (gs[:-2] + gs[1:-1])) + dt[-1] * gs[-2]
        assert_allclose(x, np.asarray(x_T) + integral, rtol=1e-12)


@pytest.mark.parametrize("path,grid", [(ej.paths.edm(), ej.timesteps.karras),
                                       (ej.paths.vp_linear(), ej.timesteps.uniform_lambda)])
def test_heun_converges_at_order_two(path, grid):
    steps, errors = (10, 20, 40, 80), []
    with x64():
        model = gaussian_model(path, MEAN, STD)
        x_T = ej.prior_sample(jax.random.key(0), path, (32, DIM))
        for n in steps:
            ts = grid(path, n, end="t_min")
            x = ej.sample(None, model, x_T, ej.edm_heun(), timesteps=ts).x
            exact = ej.testing.gaussian_pf_ode(MEAN, STD, path, ts[0], ts[-1], x_T)
            errors.append(float(jnp.max(jnp.abs(x - exact))))
    assert 1.9 <= fitted_order(steps, errors) <= 2.3


def _algorithm_2(denoise, x, sigmas, z, s_churn, s_min, s_max, s_noise):
    """Karras et al. 2022, Algorithm 2, written out in numpy on the EDM path."""
    n = len(sigmas) - 1
    for i in range(n):
        s = sigmas[i]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_min <= s <= s_max else 0.0
        s_hat = s * (1 + gamma)
        x_hat = x + math.sqrt(s_hat**2 - s**2) * s_noise * z[i]
        d = (x_hat - denoise(x_hat, s_hat)) / s_hat
        x_next = x_hat + (sigmas[i + 1] - s_hat) * d
        if sigmas[i + 1] != 0:
            d2 = (x_next - denoise(x_next, sigmas[i + 1])) / sigmas[i + 1]
            x_next = x_hat + (sigmas[i + 1] - s_hat) * (0.5 * d + 0.5 * d2)
        x = x_next
    return x


def test_stochastic_is_algorithm_2_on_the_edm_path():
    path = ej.paths.edm()
    with x64():
        mixture = two_component_mixture(jnp.float64)
        model = ej.testing.mixture_model(mixture, path)
        x_T = ej.prior_sample(jax.random.key(0), path, (5, 2), dtype=jnp.float64)
        key, steps, settings = jax.random.key(3), 6, (30.0, 0.1, 20.0, 1.007)
        ts = ej.timesteps.karras(path, steps)
        x = ej.sample(key, model, x_T, ej.edm_stochastic(*settings), timesteps=ts).x
        z = [np.asarray(jax.random.normal(jax.random.fold_in(key, i), x_T.shape, jnp.float64))
             for i in range(steps)]
        denoise = lambda x, s: np.asarray(  # noqa: E731
            ej.testing.mixture_posterior_mean(mixture, jnp.asarray(x), 1.0, s))
        expected = _algorithm_2(denoise, np.asarray(x_T), ts, z, *settings)
    # sigma_hat goes through the path's lambda and back (log/exp rounding, from states of size 80)
    assert_allclose(x, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", [ej.paths.edm(), ej.paths.vp_linear()])
def test_stochastic_without_churn_is_heun_exactly(path):
    with x64():
        model = ej.testing.mixture_model(two_component_mixture(jnp.float64), path)
        x_T = ej.prior_sample(jax.random.key(0), path, (8, 2), dtype=jnp.float64)
        key = jax.random.key(1)
        heun = ej.sample(key, model, x_T, ej.edm_heun(), steps=10).x

        def traced(churn):
            solver = ej.edm_stochastic(churn)
            assert solver.stochastic  # a traced churn runs the noisy code path
            return ej.sample(key, model, x_T, solver, steps=10).x

        assert_allclose(jax.jit(traced)(0.0), heun, rtol=1e-12, atol=1e-14)
        outside = ej.edm_stochastic(40.0, s_min=1e3, s_max=1e4)  # churn on no grid level
        assert_allclose(ej.sample(key, model, x_T, outside, steps=10).x, heun, rtol=1e-12,
                        atol=1e-14)
        assert_allclose(ej.sample(key, model, x_T, ej.edm_stochastic(0.0), steps=10).x, heun,
                        rtol=1e-12, atol=1e-14)
        churned = ej.sample(key, model, x_T, ej.edm_stochastic(40.0), steps=10).x
        assert float(jnp.max(jnp.abs(churned - heun))) > 1e-3


def test_network_is_called_at_the_churned_noise_level_off_the_grid():
    path = ej.paths.vp_linear()
    with x64():
        model = ej.testing.mixture_model(two_component_mixture(jnp.float64), path)
        x_T = ej.prior_sample(jax.random.key(0), path, (4, 2), dtype=jnp.float64)
        steps, churn = 8, 2.0
        ts = ej.timesteps.karras(path, steps)
        res = ej.sample(jax.random.key(1), model, x_T, ej.edm_stochastic(churn, 0.1, 50.0),
                        timesteps=ts, save_fn=lambda info: info.t)
        rho, _ = _rho(path, ts[:-1])
        gamma = np.where((rho >= 0.1) & (rho <= 50.0), churn / steps, 0.0)
        called, _ = _rho(path, res.saved)
        assert_allclose(called, rho * (1 + gamma), rtol=1e-9)
        assert np.any(gamma > 0) and np.any(gamma == 0)


def _stochastic_law(path, ts, settings, x_T_mean, x_T_var):
    """Exact mean and variance of EDM stochastic's output per coordinate for N(MEAN, STD^2):
    every step adds independent noise to ``e = xbar - m``, then multiplies it by a Heun factor."""
    s_churn, s_min, s_max, s_noise = settings
    rho, alpha = _rho(path, ts)
    n = len(ts) - 1
    mean, var = x_T_mean / alpha[0] - MEAN, x_T_var / alpha[0] ** 2
    for i in range(n):
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_min <= rho[i] <= s_max else 0.0
        rho_hat = rho[i] * (1 + gamma)
        var += s_noise**2 * (rho_hat**2 - rho[i] ** 2)
        f = _heun_factor(rho_hat, rho[i + 1])
        mean, var = f * mean, f**2 * var
    return alpha[-1] * (MEAN + mean), alpha[-1] ** 2 * var


def test_stochastic_moments_match_the_exact_discrete_law():
    path, n_samples = ej.paths.edm(), 20000
    settings = (40.0, 0.05, 50.0, 1.003)
    ts = ej.timesteps.karras(path, 8)
    model = gaussian_model(path, MEAN, STD, DIM, jnp.float32)
    x_T = ej.prior_sample(jax.random.key(1), path, (n_samples, DIM), dtype=jnp.float32)
    x = ej.sample(jax.random.key(2), model, x_T, ej.edm_stochastic(*settings), timesteps=ts).x
    mean, var = _stochastic_law(path, ts, settings, 0.0, path.prior_std() ** 2)
    values = np.asarray(x, np.float64).ravel()
    n = values.size
    assert abs(values.mean() - mean) < 5 * np.sqrt(var / n)
    assert abs(values.var(ddof=1) - var) < 5 * var * np.sqrt(2.0 / (n - 1))
    _, heun_var = _stochastic_law(path, ts, (0.0, 0.0, 1.0, 1.0), 0.0,
                                          path.prior_std() ** 2)
    assert abs(heun_var - var) > 20 * var * np.sqrt(2.0 / (n - 1))  # the test can tell


def test_stochastic_at_many_steps_samples_the_data_law():
    """Started from the exact marginal with churn at every level, the output is N(MEAN, STD^2) up
    to Monte-Carlo error and the (exactly computed) discretisation bias, which falls at order 2."""
    path, n_samples, steps = ej.paths.edm(), 20000, 128
    settings = (10.0, 0.0, math.inf, 1.0)
    start_std = math.hypot(path.t_max, STD)
    biases = []
    for n in (steps // 2, steps):
        mean, var = _stochastic_law(path, ej.timesteps.karras(path, n), settings, MEAN,
                                    start_std**2)
        assert mean == pytest.approx(MEAN, abs=1e-12)
        biases.append(abs(var / STD**2 - 1))
    assert 3.5 < biases[0] / biases[1] < 4.5 and biases[1] < 0.005
    model = gaussian_model(path, MEAN, STD, DIM, jnp.float32)
    x_T = MEAN + start_std * jax.random.normal(jax.random.key(4), (n_samples, DIM))
    x = ej.sample(jax.random.key(5), model, x_T, ej.edm_stochastic(*settings), steps=steps).x
    values = np.asarray(x, np.float64).ravel()
    n = values.size
    assert abs(values.mean() - MEAN) < 5 * STD / np.sqrt(n)
    assert abs(values.var(ddof=1) / STD**2 - 1) < 5 * np.sqrt(2.0 / (n - 1)) + biases[1]


@pytest.mark.parametrize("solver", [ej.edm_heun(), ej.edm_stochastic(20.0, 0.01, 60.0)])
def test_jit_equals_eager(solver):
    with x64():
        model = ej.testing.mixture_model(two_component_mixture(jnp.float64), ej.paths.edm())
        x_T = ej.prior_sample(jax.random.key(0), model.path, (8, 2), dtype=jnp.float64)
        f = lambda k, x: ej.sample(k, model, x, solver, steps=7).x  # noqa: E731
        assert_allclose(jax.jit(f)(jax.random.key(2), x_T), f(jax.random.key(2), x_T),
                        rtol=1e-12)


def test_nfe_is_counted_from_the_calls_made():
    """A host callback in the network counts the calls actually executed: 2N - 1."""
    calls = []
    base = ej.testing.mixture_model(two_component_mixture(), ej.paths.edm())

    def apply_fn(params, x, t, cond):
        jax.debug.callback(lambda: calls.append(1))
        return base.apply_fn(params, x, t, cond)

    model = ej.Model(apply_fn, base.params, path=base.path, prediction="x0")
    x_T = ej.prior_sample(jax.random.key(0), model.path, (4, 2))
    solver = ej.edm_stochastic(10.0)
    steps = solver.steps_for_nfe(19)
    res = jax.jit(lambda k: ej.sample(k, model, x_T, solver, steps=steps))(jax.random.key(1))
    jax.effects_barrier()
    assert steps == 10 and solver.nfe(steps) == 19 and int(res.nfe) == 19 == len(calls)
    assert ej.edm_heun().steps_for_nfe(20) == 10 and ej.edm_heun().steps_for_nfe(1) == 1
    assert ej.er_sde(3).nfe(10) == 10 and ej.ddim().steps_for_nfe(10) == 10


def test_bad_input():
    for kwargs in (dict(s_churn=-1.0), dict(s_noise=-0.5), dict(s_min=-1.0),
                   dict(s_min=5.0, s_max=1.0), dict(s_churn=float("nan"))):
        with pytest.raises(ValueError):
            ej.edm_stochastic(**kwargs)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ej.edm_heun().steps_for_nfe(0)
    with pytest.raises(TypeError, match="steps must be an int"):
        ej.edm_heun().nfe(2.5)
    model = ej.testing.mixture_model(two_component_mixture(), ej.paths.edm())
    x_T = ej.prior_sample(jax.random.key(0), model.path, (4, 2))
    with pytest.raises(ValueError, match="Gaussian"):
        ej.sample(jax.random.key(0), model, x_T, ej.edm_stochastic(), steps=4, log_prob=True)
