"""Exact starts at zero SNR: zero-terminal-SNR schedules and rectified flow from t = 1.

At ``alpha = 0`` the solvers' variables are infinite (``rho = inf``, ``lambda = -inf``) but every
update has a finite limit; the library takes it exactly on the first step (MATH.md section 3 with
``r = phi(rho_t)/phi(rho_s) -> 0``; section 4 with ``h = inf``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, x64

import ersde_jax as ej

MEAN, STD = 0.7, 0.3
SOLVERS = {
    "er_sde_3": lambda: ej.er_sde(3),
    "er_sde_3_ode": lambda: ej.er_sde(3, "ode"),
    "ddim": lambda: ej.ddim(0.0),
    "dpm_solver_pp_2m": lambda: ej.mr_ode(2),
}


def _gaussian():
    return ej.testing.GaussianMixture(jnp.ones(1), jnp.full((1, 1), MEAN), jnp.full(1, STD))


def _zero_snr_vp():
    return ej.paths.vp_discrete(ej.paths.rescale_zero_terminal_snr(np.linspace(1e-4, 0.02, 1000)))


PATHS = {"flow_t1": lambda: ej.paths.flow(t_max=1.0), "vp_zero_terminal_snr": _zero_snr_vp}


def test_paths_start_from_pure_noise():
    for make in PATHS.values():
        path = make()
        assert path.zero_snr_start
        assert float(path.alpha(jnp.asarray(path.t_max))) == 0.0
        assert float(path.sigma(jnp.asarray(path.t_max))) == 1.0
        x = ej.prior_sample(jax.random.key(0), path, (4000, 2))
        assert abs(float(jnp.std(x)) - 1.0) < 0.03  # pure noise, std 1
    mu = jnp.full((4000, 2), 0.25)
    x = ej.prior_sample(jax.random.key(1), PATHS["flow_t1"](), (4000, 2), mu=mu)
    assert abs(float(jnp.mean(x)) - 0.25) < 0.03
    assert not ej.paths.flow().zero_snr_start  # the default still starts at 0.999


def test_default_grids_include_the_pure_noise_start():
    flow, vp = PATHS["flow_t1"](), PATHS["vp_zero_terminal_snr"]()
    t = ej.timesteps.default(flow, 10)
    assert t[0] == 1.0 and t[-1] == 0.0
    t = ej.timesteps.default(vp, 10)
    assert t[0] == 999.0 and t[-1] == -1.0  # "trailing" includes index T
    assert_allclose(ej.timesteps.default(ej.paths.edm(), 10), ej.timesteps.karras(ej.paths.edm(),
                                                                                  10))
    with pytest.raises(ValueError, match="zero SNR"):
        ej.timesteps.karras(flow, 10)


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("name", list(SOLVERS))
def test_first_step_is_its_closed_form_limit(path_name, name):
    """Row 0 of the coefficient table equals the closed form to 1e-12 (x64), and the tables of
    grids starting just below the pure-noise point converge to it."""
    with x64():
        path = PATHS[path_name]()
        solver = SOLVERS[name]()
        t = ej.timesteps.default(path, 8)
        grid = ej.Grid.on(path, jnp.asarray(t))
        table = solver.coefficients(grid)
        a_t, s_t = float(grid.alpha[1]), float(grid.sigma[1])
        deterministic_x = s_t / float(grid.sigma[0])  # ODE limit: sigma_t / sigma_0
        want_x = 0.0 if name == "er_sde_3" else deterministic_x
        want_noise = s_t if name == "er_sde_3" else 0.0
        assert_allclose(table.x[0], want_x, rtol=1e-12, atol=1e-15)
        assert_allclose(table.outputs[0], [a_t, 0.0, 0.0], rtol=1e-12, atol=1e-15)
        assert_allclose(table.noise[0], want_noise, rtol=1e-12, atol=1e-15)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in table)
        # The limit: start a hair below the pure-noise point.
        eps = 1e-7 if path_name == "flow_t1" else 1e-9
        near = jnp.asarray(t).at[0].add(-eps)
        near_table = solver.coefficients(ej.Grid.on(path, near))
        tol = 1e-3 if path_name == "flow_t1" else 1e-2
        for a, b in zip(table, near_table, strict=True):
            assert_allclose(a[0], b[0], rtol=tol, atol=tol)


def test_bounded_noise_scale_limit():
    """er_sde_1 has ``g = phi/rho -> 11``: the first step keeps ``(sigma_t/sigma_0) g_t/11`` of
    the state and the matching noise."""
    with x64():
        path = PATHS["flow_t1"]()
        grid = ej.Grid.on(path, jnp.asarray(ej.timesteps.uniform_t(path, 6)))
        row = ej.er_sde(1, "er_sde_1").coefficients(grid)
        rho_t, s_t = float(grid.rho[1]), float(grid.sigma[1])
        decay = (np.exp(-1.0 / rho_t) + 10.0) / 11.0
        assert_allclose(row.x[0], s_t * decay, rtol=1e-12)
        assert_allclose(row.noise[0], s_t * np.sqrt(1.0 - decay**2), rtol=1e-12)


@pytest.mark.parametrize("path_name", list(PATHS))
@pytest.mark.parametrize("name", list(SOLVERS))
def test_samples_from_zero_snr_have_the_exact_moments(path_name, name):
    """Sampled mean and variance equal the discrete sampler's exact law (its coefficients from
    the zero-SNR start propagated in closed form) within 4 standard errors of the sample size,
    and that law converges to the data's N(0.7, 0.3^2) as steps grow."""
    path = PATHS[path_name]()
    solver = SOLVERS[name]()
    model = ej.testing.mixture_model(_gaussian(), path)
    n, steps = 4000, 10
    x_T = ej.prior_sample(jax.random.key(0), path, (n, 1))
    x = np.asarray(ej.sample(jax.random.key(1), model, x_T, solver, steps=steps).x, np.float64)
    t = ej.timesteps.default(path, steps)
    mean, var = ej.testing.gaussian_sampler_moments(solver, path, t, MEAN, STD, 0.0, 1.0)
    se_mean, se_var = np.sqrt(var / n), var * np.sqrt(2.0 / (n - 1))
    assert abs(x.mean() - float(mean)) < 4 * se_mean
    assert abs(x.var(ddof=1) - float(var)) < 4 * se_var
    errors = []
    for fine in (50, 400):
        t_fine = ej.timesteps.default(path, fine)
        mean, var = ej.testing.gaussian_sampler_moments(solver, path, t_fine, MEAN, STD, 0.0, 1.0)
        assert abs(float(mean) - MEAN) < 2e-3
        errors.append(abs(float(var) - STD**2))
    assert errors[1] < errors[0] / 2 and errors[1] < 0.03 * STD**2, errors


def test_exact_mixture_from_flow_t1():
    """Samples of a two-component mixture from t = 1 recover its weights, means and stds."""
    from helpers import assert_mixture_recovered, two_component_mixture

    mixture = two_component_mixture()
    path = PATHS["flow_t1"]()
    model = ej.testing.mixture_model(mixture, path)
    x_T = ej.prior_sample(jax.random.key(2), path, (4000, 2))
    x = ej.sample(jax.random.key(3), model, x_T, ej.er_sde(3), steps=40).x
    assert_mixture_recovered(x, *mixture)


@pytest.mark.parametrize("noise", [ej.IndependentNoise(), ej.BrownianNoise()])
def test_gradients_through_a_zero_snr_start_are_finite(noise):
    path = PATHS["flow_t1"]()
    base = ej.testing.mixture_model(_gaussian(), path)
    x_T = ej.prior_sample(jax.random.key(4), path, (16, 1))
    t0 = jnp.asarray(ej.timesteps.uniform_t(path, 6), jnp.float32)

    def loss(params, t):
        model = ej.Model(base.apply_fn, params, path=path, prediction="x0", takes_mu=True)
        return jnp.sum(ej.sample(jax.random.key(5), model, x_T, ej.er_sde(3), timesteps=t,
                                 noise=noise).x ** 2)

    g_params, g_t = jax.grad(loss, argnums=(0, 1))(base.params, t0)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(g_params))
    assert np.all(np.isfinite(np.asarray(g_t)))
    assert float(jnp.abs(g_params.means).sum()) > 0


def test_what_has_no_limit_at_zero_snr_raises():
    path = PATHS["flow_t1"]()
    x_T = ej.prior_sample(jax.random.key(6), path, (4, 1))
    eps_model = ej.Model(lambda p, x, t, c: x, None, path=path, prediction="eps")
    with pytest.raises(ValueError, match="zero SNR.*'eps' prediction.*v-, x0- or flow-pred"):
        ej.ersde_sample(jax.random.key(7), eps_model, x_T)
    vp = PATHS["vp_zero_terminal_snr"]()
    for on, solver, match in (
        (path, ej.mr_ode(2, "noise"), "noise-parameterized MR"),
        (vp, ej.euler_maruyama(), "Euler has no limit at alpha = 0"),
        (path, ej.edm_heun(), "EDM's samplers"),
        (path, ej.er_sde(3, "er_sde_4"), "no limit phi\\(rho\\)/rho at rho = inf"),
    ):
        model = ej.testing.mixture_model(_gaussian(), on)
        with pytest.raises(ValueError, match=match):
            ej.sample(jax.random.key(7), model, x_T, solver, steps=6)
