"""Driver features: truncated backpropagation, Gaussian transition log-densities (and re-scoring),
and Brownian-consistent noise."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, two_component_mixture, x64

import ersde_jax as ej
from ersde_jax import _brownian

STEPS = 8


def _problem(path=None, batch=4, dtype=jnp.float64):
    path = path or ej.paths.edm()
    mixture = two_component_mixture(dtype)
    x_T = ej.prior_sample(jax.random.key(0), path, (batch, 2), dtype=dtype)
    return path, mixture, x_T


def _model(mixture, path):
    return ej.testing.mixture_model(mixture, path)


# --- truncated backpropagation --------------------------------------------------------------


@pytest.mark.parametrize("solver", [ej.er_sde(1, "ode"), ej.edm_heun()])
def test_grad_steps_is_the_tail_gradient_with_the_head_held_constant(solver):
    """For one-step solvers the head is literally a shorter run: grad(tail(sg(head)))."""
    k = 3
    with x64():
        path, mixture, x_T = _problem()
        grid = ej.timesteps.karras(path, STEPS)

        def truncated(m, x):
            res = ej.sample(None, _model(m, path), x, solver, timesteps=grid, grad_steps=k)
            return jnp.sum(jnp.sin(res.x))

        def by_definition(m, x):
            head = ej.sample(None, _model(m, path), x, solver, timesteps=grid[:STEPS - k + 1]).x
            tail = ej.sample(None, _model(m, path), jax.lax.stop_gradient(head), solver,
                             timesteps=grid[STEPS - k:]).x
            return jnp.sum(jnp.sin(tail))

        assert_allclose(truncated(mixture, x_T), by_definition(mixture, x_T), rtol=1e-12)
        g = jax.grad(truncated, argnums=(0, 1))(mixture, x_T)
        g_def = jax.grad(by_definition, argnums=(0, 1))(mixture, x_T)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_def),
                        strict=True):
            assert_allclose(a, b, rtol=1e-10, atol=1e-14)
        assert float(jnp.max(jnp.abs(g[1]))) == 0.0 and float(jnp.max(jnp.abs(g[0].means))) > 0


def _frozen_head_model(mixture, path, t_cut):
    """The exact denoiser whose calls above ``t_cut`` see constant params and inputs."""
    base = _model(mixture, path)

    def apply_fn(params, x, t, cond):
        frozen = base.apply_fn(jax.lax.stop_gradient(params), jax.lax.stop_gradient(x), t, cond)
        return jnp.where(t > t_cut, frozen, base.apply_fn(params, x, t, cond))

    return ej.Model(apply_fn, mixture, path=path, prediction="x0")


def test_grad_steps_on_a_stochastic_multistep_solver():
    """ER-SDE-3: the head's state and history of predictions are constants of the tail."""
    k, solver = 3, ej.er_sde(3, "er_sde_5")
    with x64():
        path, mixture, x_T = _problem()
        grid = ej.timesteps.karras(path, STEPS)
        key = jax.random.key(1)

        def loss(m, x, grad_steps):
            res = ej.sample(key, _model(m, path), x, solver, timesteps=grid, grad_steps=grad_steps)
            return jnp.sum(jnp.sin(res.x))

        def by_definition(m, x):
            model = _frozen_head_model(m, path, grid[STEPS - k])
            res = ej.sample(key, model, jax.lax.stop_gradient(x), solver, timesteps=grid)
            return jnp.sum(jnp.sin(res.x))

        grad = jax.grad(loss, argnums=(0, 1))
        truncated = grad(mixture, x_T, k)
        expected = jax.grad(by_definition, argnums=(0, 1))(mixture, x_T)
        full, all_steps = grad(mixture, x_T, None), grad(mixture, x_T, STEPS)
        for a, b, c, d in zip(*(jax.tree_util.tree_leaves(g) for g in
                                (truncated, expected, full, all_steps)), strict=True):
            assert_allclose(a, b, rtol=1e-10, atol=1e-14)
            assert_allclose(d, c, rtol=1e-12, atol=1e-15)
        assert float(jnp.max(jnp.abs(truncated[0].means - full[0].means))) > 1e-3
        assert_allclose(loss(mixture, x_T, k), loss(mixture, x_T, None), rtol=1e-14)


def test_grad_steps_bad_input():
    path, mixture, x_T = _problem(dtype=jnp.float32)
    for bad, err in ((0, ValueError), (-2, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(err, match="grad_steps"):
            ej.sample(None, _model(mixture, path), x_T, ej.edm_heun(), steps=4, grad_steps=bad)


# --- transition log-densities ---------------------------------------------------------------


@pytest.mark.parametrize("solver", [ej.er_sde(3, "er_sde_5"), ej.ddim(1.0), ej.mr_sde(2)])
def test_log_prob_is_the_gaussian_density_of_each_transition(solver):
    """By hand: the step's mean from the coefficient table, the saved states and predictions."""
    with x64():
        path, mixture, x_T = _problem(ej.paths.vp_linear())
        ts = ej.timesteps.karras(path, STEPS)
        res = ej.sample(jax.random.key(1), _model(mixture, path), x_T, solver, timesteps=ts,
                        log_prob=True,
                        save_fn=lambda info: (info.x, info.denoised, info.x_next))
        x, x0, x_next = (np.asarray(v) for v in res.saved)
        alpha, sigma = path.alpha(jnp.asarray(ts)), path.sigma(jnp.asarray(ts))
        c = solver.coefficients(ej.Grid.from_values(alpha, sigma))
        eps = (x - alpha[:-1, None, None] * x0) / sigma[:-1, None, None]
        q = solver.target(ej.Denoised(x0, eps))
        expected = np.zeros((STEPS, x_T.shape[0]))
        for i in range(STEPS):
            mean = c.x[i] * x[i] + sum(c.outputs[i, j] * q[i - j] for j in range(min(i + 1, 3)))
            std = float(c.noise[i])
            if std > 0:
                expected[i] = np.sum(-0.5 * ((x_next[i] - mean) / std) ** 2
                                     - np.log(std) - 0.5 * np.log(2 * np.pi), axis=1)
        assert res.log_prob.shape == (STEPS, x_T.shape[0])
        assert_allclose(res.log_prob, expected, rtol=1e-10, atol=1e-12)
        assert float(c.noise[-1]) == 0 and np.all(np.asarray(res.log_prob[-1]) == 0)


def test_rescoring_a_trajectory_equals_sampling_log_probs_and_is_differentiable():
    solver = ej.er_sde(3, "er_sde_5")
    with x64():
        path, mixture, x_T = _problem()
        ts = ej.timesteps.karras(path, STEPS)

        def run(m):
            return ej.sample(jax.random.key(1), _model(m, path), x_T, solver, timesteps=ts,
                             log_prob=True, save_fn=lambda info: info.x_next)

        res = run(mixture)
        trajectory = jnp.concatenate([x_T[None], res.saved])
        rescore = lambda m: ej.transition_log_prob(_model(m, path), solver, trajectory,  # noqa: E731
                                                   timesteps=ts)
        assert_allclose(rescore(mixture), res.log_prob, rtol=1e-10, atol=1e-12)
        # The gradient of the sampled log-probs treats the states as data: that of re-scoring.
        g_sample = jax.grad(lambda m: jnp.sum(run(m).log_prob))(mixture)
        g_rescore = jax.grad(lambda m: jnp.sum(rescore(m)))(mixture)
        assert_allclose(g_sample.means, g_rescore.means, rtol=1e-10, atol=1e-12)
        assert_allclose(g_sample.stds, g_rescore.stds, rtol=1e-10, atol=1e-12)
        # ... and the re-scoring gradient under other params is the finite difference.
        other = mixture._replace(means=mixture.means + 0.1)
        direction = jax.random.normal(jax.random.key(2), mixture.means.shape, jnp.float64)
        f = lambda means: jnp.sum(rescore(other._replace(means=means)))  # noqa: E731
        eps = 1e-6
        fd = (f(other.means + eps * direction) - f(other.means - eps * direction)) / (2 * eps)
        assert_allclose(jnp.vdot(jax.grad(f)(other.means), direction), fd, rtol=1e-6)
        assert float(jnp.abs(jnp.sum(rescore(other)) - jnp.sum(res.log_prob))) > 1.0
        assert float(jnp.max(jnp.abs(jax.grad(lambda x: jnp.sum(run(mixture).x))(mixture)
                                     .means))) == 0.0  # the sample carries no gradient


def test_mean_log_prob_is_minus_the_entropy_of_each_step():
    """E log N(x_next; mean, c^2 I) = -D (1 + log 2 pi) / 2 - D log c, per step."""
    batch, dim = 20000, 3
    path = ej.paths.edm()
    model = ej.testing.mixture_model(ej.testing.GaussianMixture(
        jnp.array([0.3, 0.7]), jnp.array([[2.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]),
        jnp.array([0.3, 0.5])), path)
    x_T = ej.prior_sample(jax.random.key(0), path, (batch, dim))
    solver = ej.er_sde(2, "er_sde_3")
    ts = ej.timesteps.karras(path, STEPS)
    res = ej.sample(jax.random.key(1), model, x_T, solver, timesteps=ts, log_prob=True)
    with x64():
        noise = np.asarray(solver.coefficients(ej.Grid.on(path, jnp.asarray(ts))).noise)
    lp = np.asarray(res.log_prob, np.float64)
    for i in range(STEPS - 1):
        expected = -0.5 * dim * (1 + np.log(2 * np.pi)) - dim * np.log(noise[i])
        se = np.sqrt(dim / 2) / np.sqrt(batch)
        assert abs(lp[i].mean() - expected) < 5 * se, i
        # lp = const - chi2_dim / 2: variance dim / 2, kurtosis 3 + 12 / dim
        assert abs(lp[i].var() / (dim / 2) - 1) < 5 * np.sqrt((2 + 12 / dim) / batch), i


@pytest.mark.parametrize("solver", [ej.er_sde(3, "ode"), ej.mr_ode(2), ej.ddim(0.0),
                                    ej.edm_heun(), ej.edm_stochastic(), ej.er_sde(2, s_noise=0)])
def test_log_prob_needs_a_gaussian_stochastic_step(solver):
    path, mixture, x_T = _problem(dtype=jnp.float32)
    model = _model(mixture, path)
    with pytest.raises(ValueError, match="Gaussian"):
        ej.sample(jax.random.key(0), model, x_T, solver, steps=4, log_prob=True)
    with pytest.raises(ValueError, match="Gaussian"):
        ej.transition_log_prob(model, solver, jnp.zeros((5, *x_T.shape)))


# --- Brownian-consistent noise --------------------------------------------------------------


def _ks_normal(values) -> float:
    """Kolmogorov-Smirnov distance of ``values`` to N(0, 1)."""
    v = np.sort(np.asarray(values, np.float64))
    cdf = 0.5 * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    n = v.size
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def _increments(key, s, shape):
    w = _brownian.start(key, s[0], shape, jnp.float32, False)
    z = []
    for a, b in zip(s[:-1], s[1:], strict=True):
        zi, w = _brownian.increment(key, a, b, w, shape, jnp.float32, False)
        z.append(np.asarray(zi, np.float64))
    return np.stack(z)


def test_brownian_increments_are_independent_standard_normals():
    path, n = ej.paths.edm(), 20000
    ts = ej.timesteps.karras(path, 12)
    s = _brownian.clock(jnp.asarray(ts, jnp.float32))  # clock of sigma; last point sigma = 0
    z = _increments(jax.random.key(0), s, (n,))
    for zi in z:
        assert abs(zi.mean()) < 5 / np.sqrt(n)
        assert abs(zi.var() - 1) < 5 * np.sqrt(2 / n)
        assert _ks_normal(zi) < 1.95 / np.sqrt(n)  # the 0.1% critical value
    corr = np.corrcoef(z)
    assert np.max(np.abs(corr - np.eye(len(z)))) < 5 / np.sqrt(n)


def test_brownian_path_is_the_same_on_every_grid():
    """W is one function of (key, clock): increments over [a, b] and [b, c] sum to [a, c]."""
    key, shape = jax.random.key(3), (1000,)
    a, b, c = 0.71, 0.5123, 0.3
    fine = _increments(key, np.array([a, b, c], np.float32), shape)
    coarse = _increments(key, np.array([a, c], np.float32), shape)
    combined = (np.sqrt(a - b) * fine[0] + np.sqrt(b - c) * fine[1]) / np.sqrt(a - c)
    assert_allclose(combined, coarse[0], rtol=1e-4, atol=1e-4)
    other = _increments(jax.random.key(4), np.array([a, c], np.float32), shape)
    assert np.max(np.abs(other - coarse)) > 1.0


@pytest.mark.parametrize("solver", [ej.er_sde(1, "sde"), ej.er_sde(3), ej.mr_sde(2),
                                    ej.edm_stochastic(40.0, 0.05, 50.0)])
def test_brownian_samples_converge_pathwise(solver):
    """One key, N and 2N steps: with Brownian noise the difference shrinks as N grows; with
    independent draws per step it does not. (EDM's churn ``min(S_churn / N, sqrt(2) - 1)`` itself
    depends on N, so it converges more slowly than the ER-SDE and MR solvers.)"""
    path, mixture, x_T = _problem(batch=64, dtype=jnp.float32)
    model = _model(mixture, path)

    def gaps(brownian):
        xs = [np.asarray(ej.sample(jax.random.key(1), model, x_T, solver, steps=n,
                                   brownian=brownian).x) for n in (10, 20, 160, 320)]
        return np.mean(np.abs(xs[0] - xs[1])), np.mean(np.abs(xs[2] - xs[3]))

    coarse, fine = gaps(True)
    independent = min(gaps(False))
    assert fine < 0.5 * coarse and fine < 0.25 * independent and independent > 0.3


def test_brownian_keys_per_sample_and_bad_grid():
    path, mixture, x_T = _problem(batch=6, dtype=jnp.float32)
    model = _model(mixture, path)
    keys = jax.random.split(jax.random.key(2), 6)
    full = ej.sample(keys, model, x_T, ej.er_sde(3), steps=6, brownian=True).x
    part = ej.sample(keys[:2], model, x_T[:2], ej.er_sde(3), steps=6, brownian=True).x
    assert_allclose(part, full[:2], rtol=1e-6, atol=1e-6)
    ode = ej.sample(None, model, x_T, ej.er_sde(3, "ode"), steps=6, brownian=True).x
    assert_allclose(ode, ej.sample(None, model, x_T, ej.er_sde(3, "ode"), steps=6).x, rtol=0)
    with pytest.raises(ValueError, match="Brownian noise covers"):
        ej.sample(keys, model, x_T, ej.er_sde(3), timesteps=np.array([80.0, 1e-8, 0.0]),
                  brownian=True)
    # A traced grid is checked when it runs: outside the clock's range the sample is NaN.
    traced = jax.jit(lambda ts: ej.sample(keys, model, x_T, ej.er_sde(3), timesteps=ts,
                                          brownian=True).x)
    assert np.all(np.isnan(np.asarray(traced(jnp.array([80.0, 1e-8, 0.0])))))
    assert np.all(np.isfinite(np.asarray(traced(jnp.array([80.0, 1e-2, 0.0])))))
