"""Baselines on the exact Gaussian: Euler / Euler-Maruyama, SDE-DPM-Solver++(2M).

DDIM(eta) is tested in ``test_ddim.py``.

The data is one Gaussian ``N(MEAN, STD^2 I)`` with its exact (affine) denoiser. ODE samplers are
checked pathwise against the closed-form flow (``ej.testing.gaussian_pf_ode``, x64); SDE samplers
by the exact mean and variance of their *discrete* output law
(``ej.testing.gaussian_sampler_moments``), started from the exact marginal at ``t_max``, which
must approach the data law at the solver's weak order. A wrong noise scale leaves a variance bias
that does not shrink, so each weak-order test also shows that it would fail for one.

EDM's stochastic sampler (Algorithm 2) is covered in ``test_edm.py``: its exact discrete law
against Monte Carlo, and its variance bias falling at order 2 towards the data law.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_allclose,
    discrete_law,
    fitted_order,
    gaussian_model,
    path_coefficients,
    two_component_mixture,
    x64,
)

import ersde_jax as ej

MEAN, STD, DIM = 0.5, 0.8, 4
STEPS = (20, 40, 80)  # pathwise ODE convergence (one compiled sampler per step count)
WEAK_STEPS = (40, 80, 160, 320)  # exact discrete laws (numpy, cheap)
MU = np.array([-0.4, 0.0, 0.3, 0.6])  # per-coordinate mean of the mean-reverting path


def _path(name):
    return ej.paths.vp_linear() if name == "vp_linear" else ej.paths.ir_sde(max_sigma=0.5, T=100)


def _weak_errors(solver, path, grid, mean):
    """Max mean error and relative variance error of the discrete law at each of WEAK_STEPS."""
    mean_errors, var_errors = [], []
    for n in WEAK_STEPS:
        m, v = discrete_law(solver, path, grid(path, n), mean, STD)
        mean_errors.append(float(np.max(np.abs(m - mean))))
        var_errors.append(abs(v / STD**2 - 1))
    return mean_errors, var_errors


# --------------------------------------------------------------------------------------------
# Euler on the PF-ODE and Euler-Maruyama on the reverse SDE (VP-like paths, ir_sde with mu).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vp_linear", "ir_sde"])
def test_euler_ode_converges_at_order_one(name):
    """Global PF-ODE error against the closed form, uniform-lambda grids to t_min.

    Measured fitted orders (N = 20-80): vp_linear 0.967, ir_sde with mu 0.913 (N = 10-80:
    0.943 / 0.877). A wrong drift, the SDE's full ``g^2 score`` without its noise
    (``ej.Euler(0.0, True)``), converges to another flow: order 0.01, error ~2.
    """
    path = _path(name)
    errors = []
    with x64():
        model = gaussian_model(path, MEAN, STD, DIM)
        mu = None if name == "vp_linear" else jnp.tile(jnp.asarray(MU), (16, 1))
        mu0 = 0.0 if mu is None else mu
        x_T = mu0 + ej.prior_sample(jax.random.key(0), path, (16, DIM), dtype=jnp.float64)
        for n in STEPS:
            ts = ej.timesteps.uniform_lambda(path, n, end="t_min")
            x = ej.sample(None, model, x_T, ej.euler_ode(), timesteps=ts, mu=mu).x
            exact = mu0 + ej.testing.gaussian_pf_ode(MEAN - mu0, STD, path, ts[0], ts[-1],
                                                     x_T - mu0)
            errors.append(float(jnp.max(jnp.abs(x - exact))))
    assert fitted_order(STEPS, errors) >= 0.85


@pytest.mark.parametrize("name", ["vp_linear", "ir_sde"])
def test_euler_maruyama_weak_order_one(name):
    """The discrete law of Euler-Maruyama (uniform-t grid ending at the clean time) tends to the
    data law at order 1, in the mean (Euler's ``1 + d`` is not ``alpha_t / alpha_s``) and the
    variance. Measured orders (N = 40-320): vp_linear mean 1.015, variance 1.035; ir_sde with
    mu mean 1.000, variance 0.931. With 10% too much noise the variance order is 0.13 / -0.02
    (the bias stays near 0.2).
    """
    path = _path(name)
    mean = np.full(DIM, MEAN) if name == "vp_linear" else MEAN - MU
    grid = ej.timesteps.uniform_t
    mean_errors, var_errors = _weak_errors(ej.euler_maruyama(), path, grid, mean)
    assert fitted_order(WEAK_STEPS, mean_errors) >= 0.9
    assert fitted_order(WEAK_STEPS, var_errors) >= 0.9
    assert var_errors[-1] < 0.01
    _, noisy = _weak_errors(ej.euler_maruyama(s_noise=1.1), path, grid, mean)
    assert fitted_order(WEAK_STEPS, noisy) < 0.5 and noisy[-1] > 0.1


@pytest.mark.parametrize("name,sde", [("ir_sde", True), ("vp_linear", False)],
                         ids=["ir_sde-euler_maruyama", "vp_linear-euler_ode"])
def test_euler_last_step_to_clean_time_is_denoising(name, sde):
    """On a grid ending at the clean time the last step maps the state at t_min to the exact
    data prediction there; an Euler step (or no step) would not."""
    path = _path(name)
    with x64():
        mixture = two_component_mixture(jnp.float64)
        model = ej.testing.mixture_model(mixture, path)
        mu = None if name == "vp_linear" else jnp.tile(jnp.asarray(MU[:2]), (8, 1))
        mu0 = 0.0 if mu is None else mu
        x_T = mu0 + ej.prior_sample(jax.random.key(0), path, (8, 2), dtype=jnp.float64)
        ts = ej.timesteps.uniform_t(path, 8)  # ..., t_min, t_clean
        assert ts[-2] == path.t_min and ts[-1] == path.t_clean
        solver = ej.euler_maruyama() if sde else ej.euler_ode()
        res = ej.sample(jax.random.key(2), model, x_T, solver, timesteps=ts, mu=mu,
                        save_fn=lambda info: info.x)
        before = res.saved[-1]  # the state at t_min
        (a,), (s,) = path_coefficients(path, [path.t_min])
        expected = ej.testing.mixture_posterior_mean(mixture, before, a, s, mu0)
        assert_allclose(res.x, expected, rtol=1e-10, atol=1e-12)
        # The last step moves the state by ~1e-4 (sigma(t_min) ~ 1e-2), far above the tolerance.
        assert float(jnp.max(jnp.abs(res.x - before))) > 1e-5


# --------------------------------------------------------------------------------------------
# SDE-DPM-Solver++(2M) = MR SDE, data prediction, order 2, with mu = 0.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,grid", [(ej.paths.vp_linear(), ej.timesteps.uniform_lambda),
                                       (ej.paths.edm(), ej.timesteps.karras)], ids=["vp", "edm"])
def test_sde_dpm_solver_pp_2m_weak_order(path, grid):
    """The variance bias of SDE-DPM-Solver++(2M) falls at order ~2 on the exact Gaussian.

    Measured (N = 40-320, grids ending at the clean time): vp uniform-lambda 2.208, edm Karras
    2.132; the mean is exact. With s_noise = 1.05 the order is 0.18 / 0.32 (bias -> ~0.10).
    """
    mean = np.full(DIM, MEAN)
    mean_errors, var_errors = _weak_errors(ej.mr_sde(2), path, grid, mean)
    assert max(mean_errors) < 1e-12
    assert fitted_order(WEAK_STEPS, var_errors) >= 1.9 and var_errors[-1] < 2e-3
    _, noisy = _weak_errors(ej.mr_sde(2, s_noise=1.05), path, grid, mean)
    assert fitted_order(WEAK_STEPS, noisy) < 1.0 and noisy[-1] > 0.05
