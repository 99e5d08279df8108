"""MR Sampler against update rules written independently in float64 numpy (MATH.md sections 1, 4).

Every test runs the library on the exact denoiser of a 3-component isotropic Gaussian mixture in
D = 3 (``ej.testing.mixture_model``; a ``mu`` passed to a sampler reaches the model as ``cond`` and
is the path's mean) and replays the same sampler in a plain numpy loop written from the formulas:
the path coefficients, the posterior mean (MATH.md section 5) and the update rules are all
re-implemented here; only the time grid and the Gaussian draws come from the library side (the
draw at step ``i`` is ``jax.random.normal(jax.random.fold_in(key, i), x.shape, float64)``).
Agreement is required to ``max|lib - ref| / max|ref| <= 1e-10``, and the tests also check that
a plausible wrong variant of each rule is far (>= 1e-6) from the reference, so that the
comparison can tell the rules apart.

Covered reductions:

1. mu = 0, VP path: the data-prediction MR ODE of orders 1/2/3 is DPM-Solver++ 1S/2M/3M (both
   third-order weights), and the data-prediction MR SDE of orders 1/2 is SDE-DPM-Solver++ 1/2M.
2. The mean-reverting IR-SDE path with a non-zero mu: all MR rules of MATH.md section 4 in
   absolute coordinates (with their mu terms), the final denoising step to the clean time, and
   the lowered order of the last steps on short grids: DPM-Solver's rule min(order, i + 1, N - i)
   below 15 steps (``ej.mr_ode(..., lower_order_below=15)``), and mr_sample's defaults (data ODE
   below 10 steps, noise ODE and SDEs never). The plain reductions use >= 15 steps.
3. Posterior sampling on the IR-SDE path is ER-SDE-Solver-1 with phi = x^2.
4. Euler-Maruyama and PF-ODE Euler on consecutive IR-SDE indices are the IR-SDE release's rules.
5. mu = 0: MR ODE order 1 (data and noise) is DDIM, i.e. ER-SDE-Solver-1 with phi = x.

x64 is switched on per test by an autouse fixture (``jax.enable_x64`` as a context manager).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    MEANS,
    STDS,
    WEIGHTS,
    ddim_reference,
    np_posterior_mean,
    rel_err,
    x64_each_test,
)

import ersde_jax as ej

_x64 = pytest.fixture(autouse=True)(x64_each_test)

RTOL = 1e-10
FAR = 1e-6  # a wrong variant must differ from the reference by at least this (relative)
BATCH, DIM = 8, 3


IR_T, IR_MAX_SIGMA, IR_EPS = 100, 0.5, 0.01
# Integer indices of the IR-SDE path (non-uniform in lambda), ending at index 0 (sigma > 0).
IR_GRID = np.array([100, 90, 81, 72, 64, 56, 49, 42, 36, 30, 25, 20, 16, 12, 9, 6, 4, 2, 1, 0],
                   np.float64)


# --------------------------------------------------------------------------------------------
# Independent numpy ingredients.
# --------------------------------------------------------------------------------------------


def np_vp_linear(ts):
    """(alpha, sigma) of the continuous VP path: log abar = -(b0 t + (b1 - b0) t^2 / 2)."""
    ts = np.asarray(ts, np.float64)
    log_abar = -(0.1 * ts + 0.5 * (20.0 - 0.1) * ts**2)
    return np.exp(0.5 * log_abar), np.sqrt(-np.expm1(log_abar))


def np_ir_sde_thetas(T=IR_T, eps=IR_EPS):
    """IR-SDE cosine thetas (T + 1 of them), dt and thetabar at the indices 0..T."""
    x = np.linspace(0.0, T + 2, T + 3)  # the cosine schedule on T + 3 points
    abar = np.cos((x / (T + 2) + 0.008) / 1.008 * np.pi / 2) ** 2
    theta = 1.0 - (abar / abar[0])[1:-1]
    dt = -np.log(eps) / np.sum(theta)
    return theta, dt, dt * np.cumsum(theta)


def np_ir_sde(ts, max_sigma=IR_MAX_SIGMA):
    """(alpha, sigma) of the IR-SDE path at integer indices; index -1 is the clean image."""
    ts = np.asarray(ts, np.float64)
    idx = np.rint(ts).astype(int)
    assert np.array_equal(idx, ts) and np.all(idx >= -1), "integer indices only"
    _, _, thetabar = np_ir_sde_thetas()
    tb = np.concatenate([[0.0], thetabar])[idx + 1]
    return np.exp(-tb), max_sigma * np.sqrt(-np.expm1(-2.0 * tb))


def draws(key, n, shape):
    """The library's Gaussian draw of every step i < n."""
    return [np.asarray(jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float64))
            for i in range(n)]


def step_orders(order, steps, lower_below=15):
    """Warm-up order min(order, i + 1); on grids of fewer than ``lower_below`` steps also
    min(order, steps - i) (DPM-Solver's ``lower_order_final``: below 15 steps)."""
    orders = [min(order, i + 1) for i in range(steps)]
    if steps < lower_below:
        orders = [min(k, steps - i) for i, k in enumerate(orders)]
    return orders


def dpm_solver_pp(x_T, alpha, sigma, order, *, third="taylor", zs=None, lower_below=15):
    """DPM-Solver++ 1S/2M/3M (ODE) and SDE-DPM-Solver++ 1/2M, multistep, mu = 0.

    Exponential-integrator form of Lu et al.: with lam = log(alpha / sigma), h = lam_t - lam_s,
    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lam_s}^{lam_t} e^lam x0(lam) dlam, and x0
    Taylor-expanded in lam at lam_s; the k-th derivative term integrates to
    alpha_t int_0^h e^{-(h - u)} u^k / k! du:  (1 - e^{-h}),  (h - 1 + e^{-h}),
    (h^2/2 - h + 1 - e^{-h}). The derivatives come from backward differences of the history
    (D1_0 ~ h x0', D2 ~ h^2 x0''/2). ``third="release"`` weights D2 as the published 3M rule
    (alpha_t phi_3, i.e. half the Taylor weight). ``zs`` switches to the SDE-DPM-Solver++ rule.
    """
    steps = len(alpha) - 1
    lam = np.log(alpha) - np.log(sigma)
    x = np.array(x_T, np.float64)
    x0s = []
    for i, k in enumerate(step_orders(order, steps, lower_below)):
        a_t, s_s, s_t = alpha[i + 1], sigma[i], sigma[i + 1]
        h = lam[i + 1] - lam[i]
        x0s.append(np_posterior_mean(x, alpha[i], s_s))
        if k >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = (x0s[-1] - x0s[-2]) / r0
        if zs is None:
            x_new = (s_t / s_s) * x + a_t * (1.0 - np.exp(-h)) * x0s[-1]
            c1 = a_t * (h - 1.0 + np.exp(-h)) / h  # alpha_t int e^{-(h-u)} u du / h
            if k == 2:
                x_new += c1 * d1_0
            elif k == 3:
                r1 = (lam[i - 1] - lam[i - 2]) / h
                d1_1 = (x0s[-2] - x0s[-3]) / r1
                d2 = (d1_0 - d1_1) / (r0 + r1)
                d1 = d1_0 + r0 * d2  # derivative of the quadratic through the 3 points
                c2 = a_t * (0.5 * h**2 - h + 1.0 - np.exp(-h)) / h**2  # = -alpha_t phi_3
                weight = 2.0 if third == "taylor" else 1.0
                x_new += c1 * d1 + weight * c2 * d2
        else:
            p = 1.0 - np.exp(-2.0 * h)
            x_new = (s_t / s_s) * np.exp(-h) * x + a_t * p * x0s[-1]
            if k == 2:
                x_new += a_t * (1.0 - p / (2.0 * h)) * d1_0
            x_new += s_t * np.sqrt(p) * zs[i]
        x = x_new
    return x


def mr_reference(x_T, mu, alpha, sigma, order, *, solver, param, third="release", zs=None,
                 lower_below=15, mu_terms=True):
    """MATH.md section 4, literally: absolute coordinates, q = x0_hat or eps_hat, mu terms.

    A step to sigma_t = 0 is the denoising step: data ``x = alpha_t x0_hat + (1 - alpha_t) mu``,
    noise ``x = mu + alpha_t (x_s - mu - sigma_s eps_hat) / alpha_s``.
    ``third="taylor"`` doubles the weight of D2 in the third-order ODE rules.
    ``mu_terms=False`` drops the ``+ mu (...)`` terms of the regular steps (the model still sees
    mu): what a sampler that forgot to centre would compute.
    """
    steps = len(alpha) - 1
    mu = np.zeros_like(x_T) if mu is None else np.asarray(mu, np.float64)
    lam = np.log(alpha) - np.log(np.where(sigma == 0, 1.0, sigma))
    x = np.array(x_T, np.float64)
    qs = []
    w3 = 2.0 if third == "taylor" else 1.0
    m = mu if mu_terms else 0.0 * mu
    for i, k in enumerate(step_orders(order, steps, lower_below)):
        a_s, a_t, s_s, s_t = alpha[i], alpha[i + 1], sigma[i], sigma[i + 1]
        x0 = np_posterior_mean(x, a_s, s_s, mu)
        eps = (x - mu - a_s * (x0 - mu)) / s_s
        qs.append(x0 if param == "data" else eps)
        if s_t == 0:
            if param == "data":
                x = a_t * x0 + (1.0 - a_t) * mu
            else:
                x = mu + a_t * (x - mu - s_s * eps) / a_s
            continue
        h = lam[i + 1] - lam[i]
        q0 = qs[-1]
        if k >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = (qs[-1] - qs[-2]) / r0
        if k == 3:
            r1 = (lam[i - 1] - lam[i - 2]) / h
            d1_1 = (qs[-2] - qs[-3]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
        if solver == "ode" and param == "data":
            phi1 = np.expm1(-h)
            phi2 = phi1 / h + 1.0
            phi3 = phi2 / h - 0.5
            bracket = phi1 * q0
            if k == 2:
                bracket = phi1 * q0 - phi2 * d1_0
            elif k == 3:
                bracket = phi1 * q0 - phi2 * d1 + w3 * phi3 * d2
            x = ((s_t / s_s) * x - a_t * bracket
                 + m * (1.0 - s_t / s_s + (s_t / s_s) * a_s - a_t))
        elif solver == "ode":
            phi1 = np.expm1(h)
            phi2 = phi1 / h - 1.0
            phi3 = phi2 / h - 0.5
            bracket = phi1 * q0
            if k == 2:
                bracket = phi1 * q0 + phi2 * d1_0
            elif k == 3:
                bracket = phi1 * q0 + phi2 * d1 + w3 * phi3 * d2
            x = (a_t / a_s) * x - s_t * bracket + m * (1.0 - a_t / a_s)
        elif param == "data":
            p = -np.expm1(-2.0 * h)
            x_new = (s_t / s_s) * np.exp(-h) * x + a_t * p * q0
            if k == 2:
                x_new += a_t * (1.0 - p / (2.0 * h)) * d1_0
            x = (x_new + s_t * np.sqrt(p) * zs[i]
                 + m * (1.0 - (a_t / a_s) * np.exp(-2.0 * h) - a_t * p))
        else:
            x_new = (a_t / a_s) * x - 2.0 * s_t * np.expm1(h) * q0
            if k == 2:
                x_new -= 2.0 * s_t * (np.expm1(h) / h - 1.0) * d1_0
            x = x_new + s_t * np.sqrt(np.expm1(2.0 * h)) * zs[i] + m * (1.0 - a_t / a_s)
    return x


# --------------------------------------------------------------------------------------------
# Library side.
# --------------------------------------------------------------------------------------------


_MODELS = {}


def mixture_model(path):
    """The exact mixture denoiser on ``path``; one Model per path, so that samplers with the
    same static configuration reuse their compiled program across tests."""
    if path not in _MODELS:
        mixture = ej.testing.GaussianMixture(
            np.asarray(WEIGHTS, np.float64), np.asarray(MEANS, np.float64),
            np.asarray(STDS, np.float64),
        )
        _MODELS[path] = ej.testing.mixture_model(mixture, path)
    return _MODELS[path]


def vp_setup(steps, end="t_min"):
    path = ej.paths.vp_linear()
    grid = np.asarray(ej.timesteps.karras(path, steps, end=end), np.float64)
    alpha, sigma = np_vp_linear(grid)
    if end == "clean":
        assert grid[-1] == path.t_clean
        alpha[-1], sigma[-1] = 1.0, 0.0
    x_T = np.random.default_rng(0).standard_normal((BATCH, DIM))
    return mixture_model(path), grid, alpha, sigma, x_T


def ir_setup(grid=IR_GRID):
    path = ej.paths.ir_sde(max_sigma=IR_MAX_SIGMA, T=IR_T)
    alpha, sigma = np_ir_sde(grid)
    rng = np.random.default_rng(1)
    mu = 0.8 * rng.standard_normal((BATCH, DIM)) + np.array([0.3, -0.2, 0.5])
    x_T = mu + IR_MAX_SIGMA * rng.standard_normal((BATCH, DIM))
    return mixture_model(path), np.asarray(grid, np.float64), alpha, sigma, mu, x_T


def run_mr(model, x_T, mu, grid, **kwargs):
    key = jax.random.PRNGKey(2024)
    out = ej.mr_sample(key, model, jnp.asarray(x_T), None if mu is None else jnp.asarray(mu),
                       steps=len(grid) - 1, timesteps=grid, **kwargs)
    assert out.dtype == jnp.float64
    return np.asarray(out), key


# --------------------------------------------------------------------------------------------
# 1. mu = 0: DPM-Solver++ (ODE) and SDE-DPM-Solver++.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2])
def test_mr_data_ode_is_dpm_solver_pp(order):
    model, grid, alpha, sigma, x_T = vp_setup(20)
    lib, _ = run_mr(model, x_T, None, grid, order=order, solver="ode", parameterization="data")
    ref = dpm_solver_pp(x_T, alpha, sigma, order)
    assert rel_err(lib, ref) <= RTOL
    if order == 2:
        # Algorithm 2 of the paper weights D1_0 by alpha_t (1 - e^{-h}) / 2 instead of
        # alpha_t (h - 1 + e^{-h}) / h: another second-order rule, far from this one, as is 1S.
        assert rel_err(dpm_solver_pp_2m_algorithm2(x_T, alpha, sigma), ref) > FAR
        assert rel_err(dpm_solver_pp(x_T, alpha, sigma, 1), ref) > FAR


def dpm_solver_pp_2m_algorithm2(x_T, alpha, sigma):
    """DPM-Solver++(2M) as in Algorithm 2 of Lu et al.: D = (1 + 1/(2 r)) x0_s - x0_{s-1}/(2 r),
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D (first step: D = x0_s)."""
    lam = np.log(alpha) - np.log(sigma)
    x = np.array(x_T, np.float64)
    prev = None
    for i in range(len(alpha) - 1):
        h = lam[i + 1] - lam[i]
        x0 = np_posterior_mean(x, alpha[i], sigma[i])
        d = x0
        if prev is not None:
            r = (lam[i] - lam[i - 1]) / h
            d = (1.0 + 1.0 / (2.0 * r)) * x0 - prev / (2.0 * r)
        x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * np.expm1(-h) * d
        prev = x0
    return x


@pytest.mark.parametrize("rule", ["release", "taylor"])
def test_mr_data_ode_order3_is_dpm_solver_pp_3m(rule):
    model, grid, alpha, sigma, x_T = vp_setup(20)
    lib, _ = run_mr(model, x_T, None, grid, order=3, solver="ode", parameterization="data",
                    third_order=rule)
    assert rel_err(lib, dpm_solver_pp(x_T, alpha, sigma, 3, third=rule)) <= RTOL


def test_third_order_rules_differ():
    """The two third-order weights give results far apart (so the test above tells them apart),
    and both differ from 2M."""
    path = ej.paths.vp_linear()
    grid = np.asarray(ej.timesteps.karras(path, 20, end="t_min"), np.float64)
    alpha, sigma = np_vp_linear(grid)
    x_T = np.random.default_rng(0).standard_normal((BATCH, DIM))
    release = dpm_solver_pp(x_T, alpha, sigma, 3, third="release")
    taylor = dpm_solver_pp(x_T, alpha, sigma, 3, third="taylor")
    assert rel_err(release, taylor) > 1e3 * RTOL
    assert rel_err(release, taylor) > FAR
    assert rel_err(dpm_solver_pp(x_T, alpha, sigma, 2), taylor) > FAR
    assert rel_err(dpm_solver_pp(x_T, alpha, sigma, 2), release) > FAR


@pytest.mark.parametrize("order", [1, 2])
def test_mr_data_sde_is_sde_dpm_solver_pp(order):
    model, grid, alpha, sigma, x_T = vp_setup(20)
    lib, key = run_mr(model, x_T, None, grid, order=order, solver="sde", parameterization="data")
    zs = draws(key, len(grid) - 1, x_T.shape)
    ref = dpm_solver_pp(x_T, alpha, sigma, order, zs=zs)
    assert rel_err(lib, ref) <= RTOL
    # The noise matters: dropping it, or drawing step i's noise from another index, is far off.
    assert rel_err(dpm_solver_pp(x_T, alpha, sigma, order, zs=[0 * z for z in zs]), ref) > FAR
    assert rel_err(dpm_solver_pp(x_T, alpha, sigma, order, zs=zs[1:] + zs[:1]), ref) > FAR


# --------------------------------------------------------------------------------------------
# 2. Mean-reverting path with mu != 0: MATH.md section 4 in absolute coordinates.
# --------------------------------------------------------------------------------------------

MR_CASES = [
    ("ode", "data", 1, "release"), ("ode", "data", 2, "release"), ("ode", "data", 3, "release"),
    ("ode", "data", 3, "taylor"),
    ("ode", "noise", 1, "release"), ("ode", "noise", 2, "release"),
    ("ode", "noise", 3, "release"), ("ode", "noise", 3, "taylor"),
    ("sde", "data", 1, None), ("sde", "data", 2, None),
    ("sde", "noise", 1, None), ("sde", "noise", 2, None),
]


def _mr_kwargs(solver, param, order, third):
    kwargs = dict(order=order, solver=solver, parameterization=param)
    if third is not None:
        kwargs["third_order"] = third
    return kwargs


@pytest.mark.parametrize("solver,param,order,third", MR_CASES)
def test_mr_rules_on_mean_reverting_path(solver, param, order, third):
    model, grid, alpha, sigma, mu, x_T = ir_setup()
    assert len(grid) - 1 >= 15  # no lowering of the final orders
    lib, key = run_mr(model, x_T, mu, grid, **_mr_kwargs(solver, param, order, third))
    zs = draws(key, len(grid) - 1, x_T.shape) if solver == "sde" else None
    ref = mr_reference(x_T, mu, alpha, sigma, order, solver=solver, param=param,
                       third=third or "release", zs=zs)
    assert rel_err(lib, ref) <= RTOL
    # The mu terms matter (the library must centre): without them the result is far off.
    wrong = mr_reference(x_T, mu, alpha, sigma, order, solver=solver, param=param,
                         third=third or "release", zs=zs, mu_terms=False)
    assert rel_err(wrong, ref) > FAR
    if order == 3:
        other = "taylor" if third == "release" else "release"
        assert rel_err(mr_reference(x_T, mu, alpha, sigma, 3, solver=solver, param=param,
                                    third=other), ref) > FAR


@pytest.mark.parametrize("solver,param,order", [
    ("ode", "data", 3), ("ode", "noise", 3), ("sde", "data", 2), ("sde", "noise", 2),
])
def test_mr_final_step_to_clean_time_is_denoising(solver, param, order):
    """A grid ending at sigma = 0 ends with x = x0_hat (data) or (x_s - sigma_s eps)/alpha_s."""
    grid = np.concatenate([IR_GRID[:-1], [-1.0]])  # ..., 2, 1, then the clean image
    model, grid, alpha, sigma, mu, x_T = ir_setup(grid)
    assert sigma[-1] == 0.0 and alpha[-1] == 1.0 and len(grid) - 1 >= 15
    lib, key = run_mr(model, x_T, mu, grid, order=order, solver=solver, parameterization=param)
    zs = draws(key, len(grid) - 1, x_T.shape) if solver == "sde" else None
    ref = mr_reference(x_T, mu, alpha, sigma, order, solver=solver, param=param, zs=zs,
                       third="taylor")
    assert rel_err(lib, ref) <= RTOL
    # Written out: the output is the data prediction at the last evaluation point.
    x_prev = mr_reference(x_T, mu, alpha[:-1], sigma[:-1], order, solver=solver, param=param,
                          zs=zs, third="taylor")
    x0_last = np_posterior_mean(x_prev, alpha[-2], sigma[-2], mu)
    assert rel_err(lib, x0_last) <= RTOL


@pytest.mark.parametrize("param", ["data", "noise"])
def test_mr_final_step_to_clean_time_vp_mu_zero(param):
    model, grid, alpha, sigma, x_T = vp_setup(15, end="clean")
    lib, _ = run_mr(model, x_T, None, grid, order=3, solver="ode", parameterization=param)
    ref = mr_reference(x_T, None, alpha, sigma, 3, solver="ode", param=param, third="taylor")
    assert rel_err(lib, ref) <= RTOL


SHORT_GRID = np.array([100, 80, 60, 45, 30, 20, 12, 6, 2], np.float64)  # 8 steps on ir_sde


@pytest.mark.parametrize("param", ["data", "noise"])
def test_mr_ode_lower_order_final_dpm_solver_rule(param):
    """``lower_order_below=15`` (DPM-Solver's rule): order min(3, i + 1, N - i) below 15 steps."""
    model, grid, alpha, sigma, mu, x_T = ir_setup(SHORT_GRID)
    steps = len(grid) - 1
    assert step_orders(3, steps, 15) == [1, 2, 3, 3, 3, 3, 2, 1]
    solver = ej.mr_ode(3, param, lower_order_below=15)
    lib = np.asarray(ej.sample(jax.random.PRNGKey(5), model, jnp.asarray(x_T), solver,
                               timesteps=grid, mu=jnp.asarray(mu)).x)
    ref = mr_reference(x_T, mu, alpha, sigma, 3, solver="ode", param=param, third="taylor",
                       lower_below=15)
    assert rel_err(lib, ref) <= RTOL
    plain = mr_reference(x_T, mu, alpha, sigma, 3, solver="ode", param=param, third="taylor",
                         lower_below=0)
    assert rel_err(plain, ref) > FAR


# mr_sample's defaults: the ODE lowers the final orders below 10 steps for data prediction and
# never for noise prediction; the SDE solvers never lower (ersde_jax/_solvers/mr.py, mr_ode).
DEFAULT_LOWER_BELOW = {("ode", "data"): 10, ("ode", "noise"): 0, ("sde", "data"): 0,
                       ("sde", "noise"): 0}


@pytest.mark.parametrize("solver,param,order", [
    ("ode", "data", 3), ("ode", "noise", 3), ("sde", "data", 2), ("sde", "noise", 2),
])
def test_mr_sample_short_grid_orders(solver, param, order):
    """8 steps with mr_sample's defaults, against the reference with the documented rule."""
    model, grid, alpha, sigma, mu, x_T = ir_setup(SHORT_GRID)
    steps = len(grid) - 1
    below = DEFAULT_LOWER_BELOW[solver, param]
    lib, key = run_mr(model, x_T, mu, grid, order=order, solver=solver, parameterization=param)
    zs = draws(key, steps, x_T.shape) if solver == "sde" else None
    ref = mr_reference(x_T, mu, alpha, sigma, order, solver=solver, param=param, zs=zs,
                       third="taylor", lower_below=below)
    assert rel_err(lib, ref) <= RTOL
    other = mr_reference(x_T, mu, alpha, sigma, order, solver=solver, param=param, zs=zs,
                         third="taylor", lower_below=15 if below == 0 else 0)
    assert rel_err(other, ref) > FAR


def test_mr_lower_order_final_vp_dpm_solver_pp():
    """DPM-Solver++ 3M with lower_order_final at 6 steps: orders 1, 2, 3, 3, 2, 1."""
    model, grid, alpha, sigma, x_T = vp_setup(6)
    assert step_orders(3, 6) == [1, 2, 3, 3, 2, 1]
    solver = ej.mr_ode(3, "data", lower_order_below=15)
    lib = np.asarray(ej.sample(jax.random.PRNGKey(5), model, jnp.asarray(x_T), solver,
                               timesteps=grid).x)
    assert rel_err(lib, dpm_solver_pp(x_T, alpha, sigma, 3)) <= RTOL
    # mr_sample's default lowers below 10 steps for data prediction: the same result here.
    lib, _ = run_mr(model, x_T, None, grid, order=3, solver="ode", parameterization="data")
    assert rel_err(lib, dpm_solver_pp(x_T, alpha, sigma, 3, lower_below=10)) <= RTOL


# --------------------------------------------------------------------------------------------
# 3. Posterior sampling on the mean-reverting path = ER-SDE-Solver-1 with phi = x^2.
# --------------------------------------------------------------------------------------------


def posterior_sampling(x_T, mu, alpha, sigma, zs):
    """x_t ~ q(x_t | x_s, x0 = x0_hat) of the forward process x = mu + alpha (x0 - mu) + sigma eps.

    In y = x - mu the forward process is Markov with y_s = a y_t + sqrt(v) e, a = alpha_s/alpha_t,
    v = sigma_s^2 - a^2 sigma_t^2, and y_t | y0 ~ N(alpha_t y0, sigma_t^2). Bayes' rule for the
    two Gaussians in y_t gives precision 1/sigma_t^2 + a^2/v and mean
    var (alpha_t y0 / sigma_t^2 + a y_s / v).
    """
    x = np.array(x_T, np.float64)
    for i in range(len(alpha) - 1):
        a_s, a_t, s_s, s_t = alpha[i], alpha[i + 1], sigma[i], sigma[i + 1]
        y0 = np_posterior_mean(x, a_s, s_s, mu) - mu
        y_s = x - mu
        if s_t == 0:  # q(x_t | x_s, x0) is a point mass at x0
            x = mu + a_t * y0
            continue
        a = a_s / a_t
        v = s_s**2 - a**2 * s_t**2
        var = 1.0 / (1.0 / s_t**2 + a**2 / v)
        mean = var * (a_t * y0 / s_t**2 + a * y_s / v)
        x = mu + mean + np.sqrt(var) * zs[i]
    return x


@pytest.mark.parametrize("end", ["t_min", "clean"])
def test_posterior_sampling_is_ersde_1_sde(end):
    grid = IR_GRID if end == "t_min" else np.concatenate([IR_GRID[:-1], [-1.0]])
    model, grid, alpha, sigma, mu, x_T = ir_setup(grid)
    key = jax.random.PRNGKey(7)
    lib = np.asarray(ej.ersde_sample(key, model, jnp.asarray(x_T), mu=jnp.asarray(mu), order=1,
                                     noise_scale="sde", timesteps=grid))
    zs = draws(key, len(grid) - 1, x_T.shape)
    ref = posterior_sampling(x_T, mu, alpha, sigma, zs)
    assert rel_err(lib, ref) <= RTOL
    # The first-order data-prediction MR SDE (SDE-DPM-Solver++ 1) is the same posterior step
    # (its drift and variance coincide algebraically), while the deterministic step is not.
    mr = mr_reference(x_T, mu, alpha, sigma, 1, solver="sde", param="data", zs=zs)
    assert rel_err(mr, ref) <= RTOL
    assert rel_err(posterior_sampling(x_T, mu, alpha, sigma, [0 * z for z in zs]), ref) > FAR


# --------------------------------------------------------------------------------------------
# 4. IR-SDE baselines on consecutive integer indices.
# --------------------------------------------------------------------------------------------


def irsde_euler(x_T, mu, grid, zs, sde=True):
    """IR-SDE release: x_{i-1} = x_i - (theta_i (mu - x_i) - g_i^2 score) dt + g_i sqrt(dt) z."""
    theta, dt, thetabar = np_ir_sde_thetas()
    x = np.array(x_T, np.float64)
    for n, i in enumerate(np.rint(grid[:-1]).astype(int)):
        alpha_i = np.exp(-thetabar[i])
        sigma_i = IR_MAX_SIGMA * np.sqrt(1.0 - np.exp(-2.0 * thetabar[i]))
        eps = (x - mu - alpha_i * (np_posterior_mean(x, alpha_i, sigma_i, mu) - mu)) / sigma_i
        score = -eps / sigma_i
        g2 = 2.0 * IR_MAX_SIGMA**2 * theta[i]
        if sde:
            x = x - (theta[i] * (mu - x) - g2 * score) * dt + np.sqrt(g2) * np.sqrt(dt) * zs[n]
        else:
            x = x - (theta[i] * (mu - x) - 0.5 * g2 * score) * dt
    return x


@pytest.mark.parametrize("sde", [True, False])
def test_euler_baselines_are_irsde_release(sde):
    grid = np.arange(IR_T, 19, -1, dtype=np.float64)  # T, T-1, ..., T-80 (sigma > 0 at the end)
    model, grid, _, _, mu, x_T = ir_setup(grid)
    key = jax.random.PRNGKey(99)
    solver = ej.euler_maruyama() if sde else ej.euler_ode()
    lib = np.asarray(ej.sample(key, model, jnp.asarray(x_T), solver, timesteps=grid,
                               mu=jnp.asarray(mu)).x)
    zs = draws(key, len(grid) - 1, x_T.shape)
    ref = irsde_euler(x_T, mu, grid, zs, sde=sde)
    assert rel_err(lib, ref) <= RTOL
    if sde:
        assert rel_err(irsde_euler(x_T, mu, grid, zs, sde=False), ref) > FAR


# --------------------------------------------------------------------------------------------
# 5. mu = 0, VP: MR ODE order 1 = DDIM = ER-SDE-Solver-1 with phi = x.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["t_min", "clean"])
@pytest.mark.parametrize("sampler", ["ersde_ode", "mr_data", "mr_noise"])
def test_mr_ode_order1_is_ddim_and_ersde_ode(sampler, end):
    """All three equal the same numpy DDIM loop to 1e-10, hence each other."""
    model, grid, alpha, sigma, x_T = vp_setup(15, end=end)
    if sampler == "ersde_ode":
        lib = np.asarray(ej.ersde_sample(jax.random.PRNGKey(3), model, jnp.asarray(x_T), order=1,
                                         noise_scale="ode", timesteps=grid))
    else:
        lib, _ = run_mr(model, x_T, None, grid, order=1, solver="ode",
                        parameterization=sampler.split("_")[1])
    assert rel_err(lib, ddim_reference(x_T, alpha, sigma)) <= RTOL
