"""Every path of ``ej.paths`` against an independent float64 transcription of its published
definition (issue 18, part 2).

The references below are written from the papers in numpy; none calls the library. Each pin
compares alpha, sigma and lambda = log(alpha / sigma) at several model times to ``RTOL``, far below
the effect of a changed constant: ``test_pins_fail_under_perturbed_constants`` rebuilds each path
with one constant moved slightly and checks that the same comparison then fails, by a margin.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import x64

import ersde_jax as ej

# Reference and library agree to ~1e-14 (the DDPM table: a 1000-term cumulative product against the
# library's sum of logs); the smallest perturbation below moves some value by ~3e-4.
RTOL = 1e-12


def _log_alpha_sigma(log_abar):
    """``(log alpha, log sigma)`` of a variance-preserving path from ``log abar``."""
    log_abar = np.asarray(log_abar, np.float64)
    return 0.5 * log_abar, 0.5 * np.log(-np.expm1(log_abar))


# ------------------------------------------------------------------------------- references


def edm_reference(t):
    """EDM (Karras et al. 2022, Table 1): ``sigma(t) = t``, ``s(t) = 1``."""
    t = np.asarray(t, np.float64)
    return np.zeros_like(t), np.log(t)


def vp_linear_reference(t, beta_min=0.1, beta_max=20.0):
    """VP SDE (Song et al. 2021, eq. 33): ``log alpha_t = -t^2 (b1 - b0) / 4 - t b0 / 2``."""
    t = np.asarray(t, np.float64)
    log_alpha = -(t**2) * (beta_max - beta_min) / 4 - t * beta_min / 2
    return _log_alpha_sigma(2 * log_alpha)


def vp_cosine_reference(t, s=0.008):
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17) in continuous time, as DPM-Solver (Lu et
    al. 2022, appendix) writes it: ``log alpha_t = log cos(pi/2 (t + s)/(1 + s)) -
    log cos(pi/2 s/(1 + s))``. The paper's 0.999 clip of the discrete betas never binds on the
    path's domain (``test_vp_cosine_beta_clip_is_inactive``)."""
    t = np.asarray(t, np.float64)
    log_f = lambda u: np.log(np.cos(np.pi / 2 * (u + s) / (1 + s)))  # noqa: E731
    log_alpha = log_f(t) - log_f(0.0)
    return _log_alpha_sigma(2 * log_alpha)


def vp_cosine_discrete_abar(steps=1000, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal's discrete schedule: ``beta_i = min(1 - abar((i+1)/T) / abar(i/T),
    0.999)``, ``abar_i = prod_{j <= i} (1 - beta_j)`` for indices i = 0..T-1 (time (i + 1)/T)."""
    f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.minimum(1 - f[1:] / f[:-1], max_beta)
    return np.cumprod(1 - betas), betas


def ddpm_betas(beta_1=1e-4, beta_T=0.02, steps=1000):
    """DDPM (Ho et al. 2020, section 4): betas linear from 1e-4 to 0.02 over T = 1000 steps."""
    return np.linspace(beta_1, beta_T, steps)


def ddpm_reference(index, betas):
    """``abar_i = prod_{j <= i} (1 - beta_j)`` at integer indices (the model's time is i)."""
    abar = np.cumprod(1 - np.asarray(betas, np.float64))
    return _log_alpha_sigma(np.log(abar[np.asarray(index)]))


def flow_reference(t):
    """Rectified flow (Liu et al. 2023; SD3, Esser et al. 2024): ``x_t = (1 - t) x0 + t eps``."""
    t = np.asarray(t, np.float64)
    return np.log1p(-t), np.log(t)


def ir_sde_reference(index, max_sigma=10.0, steps=100, eps=0.01, s=0.008):
    """IR-SDE (Luo et al. 2023) with the authors' release's cosine theta schedule.

    ``theta = 1 - abar[1:-1]`` of the cosine ``abar`` on ``T + 3`` points, ``abar(x) =
    cos((x/(T+2) + s)/(1 + s) pi/2)^2`` normalised by its first value;
    ``thetabar_i = dt * sum_{j <= i} theta_j`` with ``dt = -log(eps) / sum(theta)`` (MATH.md
    section 1); ``alpha = exp(-thetabar)``, ``sigma = sigma_inf sqrt(1 - alpha^2)``,
    ``sigma_inf`` in pixel units (/255) when >= 1.

    The thetas are the release's; its cumulative sum differs: the release subtracts ``theta_0``
    (``thetabar_0 = 0``: the data sits at index 0 and ``dt = -log(eps) / (sum(theta) -
    theta_0)``), where MATH.md and the library put the data at index -1. The two agree at index T
    and differ by up to ``dt theta_0`` (5.6e-5 at T = 100) below it.
    """
    x = np.arange(steps + 3, dtype=np.float64)
    abar = np.cos((x / (steps + 2) + s) / (1 + s) * np.pi / 2) ** 2
    theta = 1 - abar[1:-1] / abar[0]
    thetabar = np.cumsum(theta) * (-np.log(eps) / np.sum(theta))
    sigma_inf = max_sigma / 255 if max_sigma >= 1 else max_sigma
    tb = thetabar[np.asarray(index)]
    return -tb, np.log(sigma_inf) + 0.5 * np.log(-np.expm1(-2 * tb))


def zero_terminal_snr_betas(betas):
    """Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"),
    Algorithm 1: shift ``sqrt(abar)`` so its last value is 0, scale it so its first is unchanged,
    and recover the betas from the ratios of consecutive ``abar``."""
    sqrt_abar = np.sqrt(np.cumprod(1 - np.asarray(betas, np.float64)))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    return 1 - np.concatenate([abar[:1], abar[1:] / abar[:-1]])


def sd_scaled_linear_betas(steps=1000):
    """Stable Diffusion's "scaled linear" betas, the schedule Lin et al. rescale."""
    return np.linspace(0.00085**0.5, 0.012**0.5, steps) ** 2


# ------------------------------------------------------------------------------ comparison


def _evaluate(path, t):
    with x64():
        t = jnp.asarray(t, jnp.float64)
        return tuple(np.asarray(v, np.float64) for v in (path.alpha(t), path.sigma(t), path.lam(t)))


def _deviation(path, t, reference) -> float:
    """Largest deviation of alpha, sigma (relative) and lambda (relative, absolute near 0) from
    ``reference = (log alpha, log sigma)`` at times ``t``."""
    log_alpha, log_sigma = reference
    want = np.exp(log_alpha), np.exp(log_sigma), log_alpha - log_sigma
    scales = np.abs(want[0]), np.abs(want[1]), np.maximum(np.abs(want[2]), 1.0)
    got = _evaluate(path, t)
    return max(float(np.max(np.abs(g - w) / c)) for g, w, c in zip(got, want, scales, strict=True))


def assert_matches(path, t, reference):
    deviation = _deviation(path, t, reference)
    assert deviation < RTOL, f"relative deviation {deviation:.3g} from the published definition"


T_EDM = np.array([0.002, 0.01, 0.1, 1.0, 7.5, 80.0])
T_UNIT = np.array([1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
T_COSINE = np.array([1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.9946])
T_FLOW = np.array([1e-3, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
I_DDPM = np.array([0, 1, 10, 100, 250, 500, 750, 999])
I_IR = np.array([0, 1, 5, 25, 50, 75, 99, 100])

# (name, the library's path with its default constants, times, reference)
PINS = {
    "edm": (ej.paths.edm, T_EDM, edm_reference),
    "vp_linear": (ej.paths.vp_linear, T_UNIT, vp_linear_reference),
    "vp_cosine": (ej.paths.vp_cosine, T_COSINE, vp_cosine_reference),
    "vp_discrete": (ej.paths.vp_discrete, I_DDPM, lambda i: ddpm_reference(i, ddpm_betas())),
    "flow": (ej.paths.flow, T_FLOW, flow_reference),
    "ir_sde": (ej.paths.ir_sde, I_IR, ir_sde_reference),
    "ir_sde_pixels": (lambda: ej.paths.ir_sde(max_sigma=50.0, T=40), I_IR[I_IR <= 40],
                      lambda i: ir_sde_reference(i, max_sigma=50.0, steps=40)),
}


@pytest.mark.parametrize("name", PINS)
def test_path_matches_published_definition(name):
    make, t, reference = PINS[name]
    assert_matches(make(), t, reference(t))


def test_default_ranges_are_published():
    # EDM's sigma range (Karras et al., Table 1), the VP SDE's sampling eps = 1e-3 (Song et al.),
    # DPM-Solver's T = 0.9946 for the cosine schedule, DDPM's 1000 indices, IR-SDE's T = 100.
    ranges = dict(edm=(0.002, 80.0), vp_linear=(1e-3, 1.0), vp_cosine=(1e-3, 0.9946),
                  vp_discrete=(0.0, 999.0), ir_sde=(0.0, 100.0))
    for name, (t_min, t_max) in ranges.items():
        path = getattr(ej.paths, name)()
        assert (path.t_min, path.t_max) == (t_min, t_max), name


def test_clean_end_of_discrete_paths():
    # The data sits one index below the first noisy index: alpha = 1, sigma = 0.
    for path in (ej.paths.vp_discrete(), ej.paths.ir_sde()):
        alpha, sigma, _ = _evaluate(path, np.array([path.t_clean]))
        assert path.t_clean == -1.0 and alpha[0] == 1.0 and sigma[0] == 0.0


def test_vp_cosine_beta_clip_is_inactive():
    """The continuous cosine path equals Nichol & Dhariwal's clipped discrete schedule there.

    The 0.999 clip binds only at the last index (time 1), outside the default domain t <= 0.9946;
    the continuous beta(t) = -d log abar / dt stays below the clip's 999 per unit time there.
    """
    abar, betas = vp_cosine_discrete_abar()
    assert betas[-1] == 0.999 and np.all(betas[:-1] < 0.999)
    path = ej.paths.vp_cosine()
    index = np.arange(int(round(path.t_max * 1000)))  # time (i + 1)/1000 <= t_max
    alpha, _, _ = _evaluate(path, (index + 1) / 1000)
    np.testing.assert_allclose(alpha**2, abar[index], rtol=RTOL)
    with x64():
        beta = jax.vmap(jax.grad(lambda t: -2 * jnp.log(path.alpha(t))))(jnp.asarray(T_COSINE))
    s = 0.008
    want = np.pi / (1 + s) * np.tan(np.pi / 2 * (T_COSINE + s) / (1 + s))
    np.testing.assert_allclose(np.asarray(beta), want, rtol=1e-10)
    assert want[-1] < 999


# Each pin against the same path with one constant moved. The comments give the largest change
# the move makes in alpha or sigma at the pin's times (measured in float64), all > 1e8 RTOL.
# EDM (alpha = 1, sigma = t) and flow (alpha = 1 - t, sigma = t) have no constant to move.
PERTURBED = {
    # cosine s 0.008 -> 0.0085: sigma at t = 1e-3 by 2.8e-2, alpha at t = 0.9946 by 4.9e-4
    "vp_cosine s": ("vp_cosine", lambda: ej.paths.vp_cosine(s=0.0085)),
    # beta_max 20 -> 20.5: alpha at t = 0.99 by 12%, sigma at t = 0.1 by 1.1e-2
    "vp_linear beta_max": ("vp_linear", lambda: ej.paths.vp_linear(beta_max=20.5)),
    # beta_min 0.1 -> 0.105: sigma at t = 1e-3 by 2.2e-2
    "vp_linear beta_min": ("vp_linear", lambda: ej.paths.vp_linear(beta_min=0.105)),
    # DDPM beta_T 0.02 -> 0.0201: alpha at index 999 by 2.5e-2
    "vp_discrete beta_T": ("vp_discrete",
                           lambda: ej.paths.vp_discrete(ddpm_betas(beta_T=0.0201))),
    # DDPM beta_1 1e-4 -> 1.1e-4: sigma at index 0 by 4.9e-2
    "vp_discrete beta_1": ("vp_discrete",
                           lambda: ej.paths.vp_discrete(ddpm_betas(beta_1=1.1e-4))),
    # IR-SDE eps 0.01 -> 0.0105: alpha at index 100 by 5e-2
    "ir_sde eps": ("ir_sde", lambda: ej.paths.ir_sde(eps=0.0105)),
    # IR-SDE sigma_inf 10/255 -> 10.5/255: sigma everywhere by 5e-2
    "ir_sde max_sigma": ("ir_sde", lambda: ej.paths.ir_sde(max_sigma=10.5)),
}


@pytest.mark.parametrize("case", PERTURBED)
def test_pins_fail_under_perturbed_constants(case):
    name, make = PERTURBED[case]
    _, t, reference = PINS[name]
    deviation = _deviation(make(), t, reference(t))
    assert deviation > 1e6 * RTOL
    with pytest.raises(AssertionError):
        assert_matches(make(), t, reference(t))


def test_ir_sde_cosine_offset_is_pinned():
    # The constant s = 0.008 of the release's cosine theta schedule is not a parameter of
    # ej.paths.ir_sde, so the reference moves instead: s -> 0.0085 moves sigma at index 0 by 1.8e-2.
    t = I_IR
    assert _deviation(ej.paths.ir_sde(), t, ir_sde_reference(t, s=0.0085)) > 1e6 * RTOL


# ------------------------------------------------------------- zero terminal SNR (Lin et al.)


@pytest.mark.parametrize("betas", [ddpm_betas(), sd_scaled_linear_betas()],
                         ids=["ddpm", "sd_scaled_linear"])
def test_zero_terminal_snr_reference(betas):
    rescaled = zero_terminal_snr_betas(betas)
    abar, abar_old = np.cumprod(1 - rescaled), np.cumprod(1 - betas)
    assert rescaled.shape == betas.shape
    assert abar[-1] == 0.0 and rescaled[-1] == 1.0
    np.testing.assert_allclose(abar[0], abar_old[0], rtol=1e-14)
    assert np.all((rescaled > 0) & (rescaled <= 1))
    assert np.all(np.diff(abar) < 0)
    # Algorithm 1 is an affine map of sqrt(abar): interior ratios of its increments are unchanged.
    np.testing.assert_allclose(np.diff(np.sqrt(abar)) / np.diff(np.sqrt(abar_old)),
                               np.sqrt(abar[0]) / (np.sqrt(abar_old[0]) - np.sqrt(abar_old[-1])),
                               rtol=1e-9)


def test_library_rescale_matches_lin_et_al_algorithm_1():
    for betas in (sd_scaled_linear_betas(), np.linspace(1e-4, 0.02, 1000)):
        np.testing.assert_allclose(ej.paths.rescale_zero_terminal_snr(betas),
                                   zero_terminal_snr_betas(betas), rtol=1e-12, atol=1e-15)


def test_vp_discrete_accepts_zero_terminal_snr():
    rescaled = zero_terminal_snr_betas(sd_scaled_linear_betas())
    path = ej.paths.vp_discrete(rescaled)
    abar = np.cumprod(1 - rescaled)
    index = np.array([0, 1, 10, 500, 998, 999])
    alpha, sigma, _ = _evaluate(path, index)
    assert alpha[-1] == 0.0 and sigma[-1] == 1.0
    np.testing.assert_allclose(alpha[:-1], np.sqrt(abar[index[:-1]]), rtol=RTOL)
    np.testing.assert_allclose(sigma[:-1], np.sqrt(1 - abar[index[:-1]]), rtol=1e-10)
