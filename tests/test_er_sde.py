"""ER-SDE-Solvers against update rules written independently in float64 numpy (MATH.md section 3).

Every test runs the library (``ej.ersde_sample``) on the exact denoiser of a 3-component Gaussian
mixture in D = 3 and replays the same sampler in a plain numpy loop, written from the formulas:
the path coefficients, the posterior mean (MATH.md section 5), the integrals and the update are
all re-implemented here, and the Gaussian noise is the library's own draw at step ``i``,
``jax.random.normal(jax.random.fold_in(key, i), x.shape, float64)``. Agreement is required to a
relative 1e-10 of the sample's size, and each test also checks that a plausible wrong variant of
the rule is far (>= 1e-6) from the reference, so the comparison can tell the rules apart.

x64 is switched on per test by an autouse fixture (``jax.enable_x64`` as a context manager), so
nothing leaks into other test modules.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import MEANS, STDS, WEIGHTS, ddim_reference, np_posterior_mean, rel_err, x64_each_test

import ersde_jax as ej

_x64 = pytest.fixture(autouse=True)(x64_each_test)

RTOL = 1e-10
BATCH, DIM = 8, 3
KEY_SEED = 1234



# --------------------------------------------------------------------------------------------
# Independent numpy ingredients.
# --------------------------------------------------------------------------------------------

DDPM_BETAS = np.linspace(1e-4, 0.02, 1000)


def np_alpha_sigma(name, ts):
    """(alpha_t, sigma_t) of the paths used here, from their definitions (MATH.md section 1)."""
    ts = np.asarray(ts, np.float64)
    if name == "edm":  # VE: alpha = 1, sigma = t
        return np.ones_like(ts), ts.copy()
    if name == "vp_linear":  # log abar = -(b0 t + (b1 - b0) t^2 / 2), b0 = 0.1, b1 = 20
        log_abar = -(0.1 * ts + 0.5 * (20.0 - 0.1) * ts**2)
    elif name == "vp_discrete":  # abar = cumprod(1 - beta), index -1 is the data
        abar = np.concatenate([[1.0], np.cumprod(1.0 - DDPM_BETAS)])
        idx = np.rint(ts).astype(int)
        assert np.array_equal(idx, ts), "integer indices only"
        log_abar = np.log(abar[idx + 1])
    else:
        raise ValueError(name)
    return np.exp(0.5 * log_abar), np.sqrt(-np.expm1(log_abar))


PHI = {
    "ode": lambda x: x,
    "sde": lambda x: x**2,
    "er_sde_4": lambda x: x**0.9 * np.log10(1.0 + 100.0 * x**1.5),
    "er_sde_5": lambda x: x * (np.exp(x**0.3) + 10.0),
}


def riemann_integrals(phi, rho_s, rho_t, n=100):
    """The release's left Riemann sums in r: nodes rho_t + k/n (rho_s - rho_t), k = 0..n-1."""
    w = (rho_s - rho_t) / n
    r = rho_t + np.arange(n) / n * (rho_s - rho_t)
    return np.sum(w / phi(r)), np.sum((r - rho_s) / phi(r) * w)


@functools.cache
def _leggauss(n):
    return np.polynomial.legendre.leggauss(n)


def gauss_log_integrals(phi, rho_s, rho_t, n=200):
    """I1, I2 by n-node Gauss-Legendre in u = log r (dr = r du), accurate to round-off."""
    x, w = _leggauss(n)
    lo, hi = np.log(rho_t), np.log(rho_s)
    u = 0.5 * (hi + lo) + 0.5 * (hi - lo) * x
    r = np.exp(u)
    wu = 0.5 * (hi - lo) * w * r / phi(r)
    return np.sum(wu), np.sum((r - rho_s) * wu)


def ode_closed_integrals(phi, rho_s, rho_t):
    """phi(x) = x: I1 = log(rho_s/rho_t), I2 = (rho_s - rho_t) - rho_s log(rho_s/rho_t)."""
    del phi
    lr = np.log(rho_s / rho_t)
    return lr, (rho_s - rho_t) - rho_s * lr


def ersde_reference(x_T, alpha, sigma, phi, order, zs, *, integrals, derivative="quadratic",
                    release_clip=False):
    """ER-SDE-Solver-k in the VP form of MATH.md section 3, step by step.

    Order min(k, i + 1) at step i; a step to sigma_t = 0 is the denoising step alpha_t x0_hat.
    ``zs`` is None for a deterministic sampler (phi = x), else the noise of every step.
    ``release_clip`` zeroes variances below 1e-6 as the authors' release does (used only to show
    that the library does not).
    """
    rho = sigma / alpha
    x = np.array(x_T, np.float64)
    x0s = []
    for i in range(len(alpha) - 1):
        a_s, a_t, rho_s, rho_t = alpha[i], alpha[i + 1], rho[i], rho[i + 1]
        x0 = np_posterior_mean(x, a_s, sigma[i])
        x0s.append(x0)
        if sigma[i + 1] == 0:
            x = a_t * x0
            continue
        k = min(order, i + 1)
        r = phi(rho_t) / phi(rho_s)
        d = rho_t - rho_s
        x_new = (a_t / a_s) * r * x + a_t * (1.0 - r) * x0
        if k >= 2:
            i1, i2 = integrals(phi, rho_s, rho_t)
            d1 = (x0s[-1] - x0s[-2]) / (rho[i] - rho[i - 1])
            if k == 3:
                d1_prev = (x0s[-2] - x0s[-3]) / (rho[i - 1] - rho[i - 2])
                d2 = 2.0 * (d1 - d1_prev) / (rho[i] - rho[i - 2])
                if derivative == "quadratic":
                    d1 = d1 + 0.5 * d2 * (rho[i] - rho[i - 1])
                x_new += a_t * (0.5 * d**2 + phi(rho_t) * i2) * d2
            x_new += a_t * (d + phi(rho_t) * i1) * d1
        if zs is not None:
            # The release also zeroes any variance below an absolute 1e-6; the library
            # deliberately does not (MATH.md section 3), so neither does this reference.
            var = rho_t**2 - rho_s**2 * r**2
            if release_clip and var < 1e-6:
                var = 0.0
            x_new += a_t * np.sqrt(max(var, 0.0)) * zs[i]
        x = x_new
    return x


def ersde_reference_ve(x_T, alpha, sigma, phi, order, zs, *, integrals):
    """The VE form (no alpha anywhere) applied to y = x / alpha with rho = sigma / alpha.

    Returns alpha_N y_N. The denoiser is called at x_s = alpha_s y_s.
    """
    rho = sigma / alpha
    y = np.array(x_T, np.float64) / alpha[0]
    x0s = []
    for i in range(len(alpha) - 1):
        rho_s, rho_t = rho[i], rho[i + 1]
        x0 = np_posterior_mean(alpha[i] * y, alpha[i], sigma[i])
        x0s.append(x0)
        if rho_t == 0:
            y = x0
            continue
        k = min(order, i + 1)
        r = phi(rho_t) / phi(rho_s)
        d = rho_t - rho_s
        y_new = r * y + (1.0 - r) * x0
        if k >= 2:
            i1, i2 = integrals(phi, rho_s, rho_t)
            d1 = (x0s[-1] - x0s[-2]) / (rho[i] - rho[i - 1])
            if k == 3:
                d1_prev = (x0s[-2] - x0s[-3]) / (rho[i - 1] - rho[i - 2])
                d2 = 2.0 * (d1 - d1_prev) / (rho[i] - rho[i - 2])
                d1 = d1 + 0.5 * d2 * (rho[i] - rho[i - 1])
                y_new += (0.5 * d**2 + phi(rho_t) * i2) * d2
            y_new += (d + phi(rho_t) * i1) * d1
        if zs is not None:
            y_new += np.sqrt(max(rho_t**2 - rho_s**2 * r**2, 0.0)) * zs[i]
        y = y_new
    return alpha[-1] * y


# --------------------------------------------------------------------------------------------
# Library side.
# --------------------------------------------------------------------------------------------

PATHS = {
    "edm": ej.paths.edm,
    "vp_linear": ej.paths.vp_linear,
    "vp_discrete": ej.paths.vp_discrete,
}


def make_model(path):
    mixture = ej.testing.GaussianMixture(
        jnp.asarray(WEIGHTS, jnp.float64), jnp.asarray(MEANS, jnp.float64),
        jnp.asarray(STDS, jnp.float64),
    )
    return ej.testing.mixture_model(mixture, path)


def start_noise(path, seed=0):
    z = np.random.default_rng(seed).standard_normal((BATCH, DIM))
    return path.prior_std() * z


def library_noise(key, steps):
    """The library's per-step draws for a single key."""
    draw = lambda i: jax.random.normal(jax.random.fold_in(key, i), (BATCH, DIM), jnp.float64)
    return list(np.asarray(jax.vmap(draw)(jnp.arange(steps))))


def run_library(path, ts, x_T, key, **kwargs):
    out = ej.ersde_sample(
        key, make_model(path), jnp.asarray(x_T, jnp.float64), steps=len(ts) - 1,
        timesteps=jnp.asarray(ts, jnp.float64), **kwargs,
    )
    assert out.dtype == jnp.float64
    return np.asarray(out)


def assert_matches(actual, reference, tol=RTOL):
    err = rel_err(actual, reference)
    assert np.all(np.isfinite(actual))
    assert err <= tol, f"relative error {err:.3e} > {tol:.0e}"


def grid(name, kind, steps):
    path = PATHS[name]()
    if kind == "karras":
        ts = ej.timesteps.karras(path, steps)
    elif kind == "uniform_t":
        ts = ej.timesteps.uniform_t(path, steps)
    elif kind == "index":  # an explicit DDPM index grid ending at the data (index -1)
        ts = np.concatenate([np.linspace(999, 0, steps).round(), [-1.0]])
    elif kind == "index_to_0":  # ends at index 0 (sigma > 0): the last step is a regular one
        ts = np.linspace(999, 0, steps + 1).round()
    else:
        raise ValueError(kind)
    return path, np.asarray(ts, np.float64)


# --------------------------------------------------------------------------------------------
# 1. phi = x, order 1 is DDIM (eta = 0).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, steps",
    [
        ("vp_linear", "karras", 10),
        ("vp_linear", "uniform_t", 15),
        ("vp_discrete", "index", 10),
        ("vp_discrete", "index_to_0", 10),
        ("edm", "karras", 10),
    ],
)
def test_ode_order1_is_ddim(name, kind, steps):
    path, ts = grid(name, kind, steps)
    alpha, sigma = np_alpha_sigma(name, ts)
    x_T = start_noise(path)
    key = jax.random.key(KEY_SEED)
    ref = ddim_reference(x_T, alpha, sigma)
    out = run_library(path, ts, x_T, key, order=1, noise_scale="ode")
    assert_matches(out, ref)
    # The same check rejects a different (here: second-order) deterministic sampler.
    out2 = run_library(path, ts, x_T, key, order=2, noise_scale="ode")
    assert rel_err(out2, ref) > 1e-6


# --------------------------------------------------------------------------------------------
# 2. phi = x^2, order 1 is ancestral sampling with the exact forward posterior.
# --------------------------------------------------------------------------------------------


def ancestral_reference(x_T, alpha, sigma, zs, *, wrong_variance=False):
    """x_t ~ q(x_t | x_s, x0 = x0_hat) by Gaussian conditioning.

    Given x0: x_t ~ N(alpha_t x0, sigma_t^2), and the forward Markov transition
    x_s = a x_t + sqrt(v) n with a = alpha_s / alpha_t, v = sigma_s^2 - a^2 sigma_t^2, so that
    Cov(x_t, x_s) = a sigma_t^2 and Var(x_s) = sigma_s^2. Hence
        E[x_t | x_s, x0]   = alpha_t x0 + (a sigma_t^2 / sigma_s^2) (x_s - alpha_s x0),
        Var[x_t | x_s, x0] = sigma_t^2 - (a sigma_t^2)^2 / sigma_s^2.
    ``wrong_variance`` uses the forward transition variance v instead (a classic mistake).
    """
    x = np.array(x_T, np.float64)
    for i in range(len(alpha) - 1):
        a_s, s_s, a_t, s_t = alpha[i], sigma[i], alpha[i + 1], sigma[i + 1]
        x0 = np_posterior_mean(x, a_s, s_s)
        a = a_s / a_t
        mean = a_t * x0 + (a * s_t**2 / s_s**2) * (x - a_s * x0)
        var = s_t**2 - (a * s_t**2) ** 2 / s_s**2
        if wrong_variance:
            var = s_s**2 - a**2 * s_t**2 if s_t > 0 else 0.0
        x = mean + np.sqrt(max(var, 0.0)) * zs[i]
    return x


@pytest.mark.parametrize(
    "name, kind, steps",
    [("vp_linear", "karras", 10), ("vp_discrete", "index", 10), ("edm", "karras", 10)],
)
def test_sde_order1_is_ancestral_posterior_sampling(name, kind, steps):
    path, ts = grid(name, kind, steps)
    alpha, sigma = np_alpha_sigma(name, ts)
    x_T = start_noise(path)
    key = jax.random.key(KEY_SEED + 1)
    zs = library_noise(key, steps)
    ref = ancestral_reference(x_T, alpha, sigma, zs)
    out = run_library(path, ts, x_T, key, order=1, noise_scale="sde")
    assert_matches(out, ref)
    assert rel_err(ancestral_reference(x_T, alpha, sigma, zs, wrong_variance=True), ref) > 1e-6
    # And the noise matters: without it the reference is far off.
    assert rel_err(ancestral_reference(x_T, alpha, sigma, [0 * z for z in zs]), ref) > 1e-3


def test_sde_order1_per_sample_keys_match_per_sample_noise():
    """With one key per sample, sample b's noise at step i is normal(fold_in(key[b], i), (D,))."""
    path, ts = grid("vp_linear", "karras", 10)
    alpha, sigma = np_alpha_sigma("vp_linear", ts)
    x_T = start_noise(path, seed=3)
    keys = jax.random.split(jax.random.key(7), BATCH)
    zs = [
        np.stack([
            np.asarray(jax.random.normal(jax.random.fold_in(keys[b], i), (DIM,), jnp.float64))
            for b in range(BATCH)
        ])
        for i in range(len(ts) - 1)
    ]
    out = run_library(path, ts, x_T, keys, order=1, noise_scale="sde")
    assert_matches(out, ancestral_reference(x_T, alpha, sigma, zs))


# --------------------------------------------------------------------------------------------
# 3. alpha = 1 turns the VP formulas into the VE ones.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3])
def test_vp_formulas_with_alpha_one_are_the_ve_sampler(order):
    """On edm (alpha = 1) the library equals the VP-form reference evaluated with alpha == 1."""
    path, ts = grid("edm", "karras", 10)
    sigma = np.asarray(ts, np.float64)
    alpha = np.ones_like(sigma)
    x_T = start_noise(path, seed=order)
    key = jax.random.key(KEY_SEED + 10 + order)
    zs = library_noise(key, len(ts) - 1)
    ref = ersde_reference(x_T, alpha, sigma, PHI["er_sde_5"], order, zs,
                          integrals=gauss_log_integrals)
    out = run_library(path, ts, x_T, key, order=order, noise_scale="er_sde_5")
    assert_matches(out, ref)
    # The VE form gives the same numbers when alpha = 1.
    ref_ve = ersde_reference_ve(x_T, alpha, sigma, PHI["er_sde_5"], order, zs,
                                integrals=gauss_log_integrals)
    assert rel_err(ref_ve, ref) <= 1e-13


@pytest.mark.parametrize("order", [1, 2, 3])
def test_vp_sampler_is_ve_sampler_on_x_over_alpha(order):
    """On a VP path, x_t / alpha_t follows the VE update in rho = sigma / alpha."""
    name = "vp_linear"
    path, ts = grid(name, "karras", 15)
    alpha, sigma = np_alpha_sigma(name, ts)
    x_T = start_noise(path, seed=10 + order)
    key = jax.random.key(KEY_SEED + 20 + order)
    zs = library_noise(key, len(ts) - 1)
    ref = ersde_reference_ve(x_T, alpha, sigma, PHI["er_sde_5"], order, zs,
                             integrals=gauss_log_integrals)
    out = run_library(path, ts, x_T, key, order=order, noise_scale="er_sde_5")
    assert_matches(out, ref)
    # Both numpy forms agree with each other ...
    ref_vp = ersde_reference(x_T, alpha, sigma, PHI["er_sde_5"], order, zs,
                             integrals=gauss_log_integrals)
    assert rel_err(ref_vp, ref) <= 1e-12
    # ... but the VE update applied to x itself (alpha ignored) on the VP grid is a different,
    # wrong, sampler.
    wrong = ersde_reference_ve(x_T, np.ones_like(alpha), sigma / alpha, PHI["er_sde_5"], order,
                               zs, integrals=gauss_log_integrals)
    assert rel_err(wrong, ref) > 1e-6


# --------------------------------------------------------------------------------------------
# 4. The release's rule: 100-point left Riemann sums and backward differences.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, steps, phi_name",
    [
        ("edm", 10, "er_sde_5"),
        ("edm", 15, "er_sde_5"),
        ("edm", 10, "er_sde_4"),
        ("edm", 15, "er_sde_4"),
        ("vp_linear", 10, "er_sde_5"),
        ("vp_linear", 15, "er_sde_4"),
    ],
)
def test_release_rule_riemann_backward(name, steps, phi_name):
    path, ts = grid(name, "karras", steps)
    alpha, sigma = np_alpha_sigma(name, ts)
    phi = PHI[phi_name]
    x_T = start_noise(path, seed=steps)
    key = jax.random.key(KEY_SEED + 30 + steps)
    zs = library_noise(key, steps)
    ref = ersde_reference(x_T, alpha, sigma, phi, 3, zs, integrals=riemann_integrals,
                          derivative="backward")
    out = run_library(path, ts, x_T, key, order=3, noise_scale=phi_name, riemann_points=100,
                      derivative="backward")
    assert_matches(out, ref)
    if phi_name == "er_sde_5" and name == "edm":  # late variances < 1e-6: no release clip
        clipped = ersde_reference(x_T, alpha, sigma, phi, 3, zs, integrals=riemann_integrals,
                                  derivative="backward", release_clip=True)
        assert rel_err(clipped, ref) > 1e-6
    # The Riemann sums are coarse: exact integrals give a visibly different sampler.
    exact = ersde_reference(x_T, alpha, sigma, phi, 3, zs, integrals=gauss_log_integrals,
                            derivative="backward")
    assert rel_err(exact, ref) > 1e-6
    # ... which is what the library computes without riemann_points.
    out_exact = run_library(path, ts, x_T, key, order=3, noise_scale=phi_name,
                            derivative="backward")
    assert_matches(out_exact, exact)


# --------------------------------------------------------------------------------------------
# 5. The default "quadratic" derivative for third-order steps.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, steps, phi_name",
    [
        ("edm", 10, "ode"),
        ("edm", 15, "er_sde_5"),
        ("vp_linear", 10, "ode"),
        ("vp_linear", 15, "er_sde_5"),
        ("vp_linear", 10, "er_sde_4"),
    ],
)
def test_quadratic_derivative(name, steps, phi_name):
    path, ts = grid(name, "karras", steps)
    alpha, sigma = np_alpha_sigma(name, ts)
    phi = PHI[phi_name]
    integrals = ode_closed_integrals if phi_name == "ode" else gauss_log_integrals
    x_T = start_noise(path, seed=100 + steps)
    key = jax.random.key(KEY_SEED + 40 + steps)
    zs = None if phi_name == "ode" else library_noise(key, steps)
    ref = ersde_reference(x_T, alpha, sigma, phi, 3, zs, integrals=integrals)
    out = run_library(path, ts, x_T, key, order=3, noise_scale=phi_name)
    assert_matches(out, ref)
    backward = ersde_reference(x_T, alpha, sigma, phi, 3, zs, integrals=integrals,
                               derivative="backward")
    assert rel_err(backward, ref) > 1e-6
    assert_matches(run_library(path, ts, x_T, key, order=3, noise_scale=phi_name,
                               derivative="backward"), backward)


def test_ode_closed_form_integrals_match_quadrature():
    """The reference's own ingredients agree: closed forms for phi = x vs Gauss-Legendre."""
    for rho_s, rho_t in [(80.0, 57.0), (1.0, 0.3), (0.01, 0.002), (150.0, 0.05)]:
        exact = ode_closed_integrals(None, rho_s, rho_t)
        quad = gauss_log_integrals(PHI["ode"], rho_s, rho_t)
        np.testing.assert_allclose(quad, exact, rtol=1e-13)


def test_defaults_are_order3_er_sde_5_quadratic_on_karras_grid():
    """``ersde_sample`` with only ``steps`` given: Karras grid to sigma = 0, order 3, er_sde_5,
    quadratic derivative, Gauss-Legendre integrals (15 steps keep array shapes shared with the
    other tests, so the eager kernels are compiled once)."""
    steps = 15
    path = ej.paths.edm()
    ts = ej.timesteps.karras(path, steps)
    alpha, sigma = np_alpha_sigma("edm", ts)
    x_T = start_noise(path, seed=5)
    key = jax.random.key(KEY_SEED + 99)
    zs = library_noise(key, steps)
    ref = ersde_reference(x_T, alpha, sigma, PHI["er_sde_5"], 3, zs,
                          integrals=gauss_log_integrals)
    x_T = jnp.asarray(x_T, jnp.float64)
    out = np.asarray(ej.ersde_sample(key, make_model(path), x_T, steps=steps))
    assert_matches(out, ref)


@pytest.mark.parametrize("name", ["ode", "sde"])
def test_riemann_points_win_over_closed_forms(name):
    """``riemann_points`` reproduces the release's Riemann sums for the named closed-form scales
    too: the table equals that of the same phi given as a plain callable (which has no closed
    form), and differs from the closed-form table by the Riemann error."""
    phis = {"ode": lambda r: r, "sde": lambda r: r**2}
    path = ej.paths.edm()
    grid = ej.Grid.on(path, jnp.asarray(ej.timesteps.karras(path, 12)))
    named = ej.er_sde(3, name, riemann_points=100).coefficients(grid)
    plain = ej.er_sde(3, phis[name], riemann_points=100).coefficients(grid)
    closed = ej.er_sde(3, name).coefficients(grid)
    for a, b in zip(named, plain, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert float(jnp.max(jnp.abs(named.outputs - closed.outputs))) > 1e-4


def test_ddim_concrete_zero_eta_of_any_type_is_deterministic():
    for eta in (0, 0.0, np.float64(0.0), jnp.float32(0.0), jnp.zeros(())):
        assert not ej.ddim(eta).stochastic
    assert ej.ddim(jnp.float32(0.5)).stochastic
    with pytest.raises(ValueError, match="eta must be in"):
        ej.ddim(jnp.float32(1.5))
