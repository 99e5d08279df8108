"""Semi-linear Gaussian paths ``x_t = mu + alpha_t (x0 - mu) + sigma_t eps`` (MATH.md section 1).

Every model family the library supports is one of these paths. A path is a frozen, hashable
description of the schedule (it is static under ``jax.jit``); ``mu`` is data (the degraded image of
mean-reverting diffusion, 0 otherwise) and is passed to the samplers, never stored here.

Each path maps the *model time* ``t`` (what the network is called with: sigma for EDM, the index
for discrete schedules, continuous time otherwise) to ``alpha(t)``, ``sigma(t)``, the noise level
``rho(t) = sigma/alpha`` (EDM's sigma of ``x / alpha``) and the half log-SNR
``lam(t) = log(alpha/sigma) = -log rho``, and inverts ``rho`` and ``lam``. Its kind is told by
class-level flags (``is_discrete``, ``mean_reverting``, ``variance_preserving``,
``variance_exploding``), so no caller needs to test classes or attributes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._numerics import eval_f64, sqrt_vanishing

__all__ = [
    "GaussianPath", "edm", "vp_linear", "vp_cosine", "vp_discrete", "flow", "ir_sde",
    "prior_sample", "rescale_zero_terminal_snr",
]


@dataclasses.dataclass(frozen=True)
class GaussianPath:
    """Base class of the Gaussian paths.

    Attributes:
        t_min: smallest model time a default grid evaluates the network at.
        t_max: largest model time (where sampling starts).
        t_clean: model time at which ``sigma = 0`` (the data); a grid may end there.
        v_scale: scale of the noise in the path's v-parameterization (``max_sigma`` for
            mean-reverting paths, 1 otherwise).
    """

    t_min: float
    t_max: float

    t_clean: float = dataclasses.field(default=0.0, init=False)
    v_scale: float = dataclasses.field(default=1.0, init=False)

    default_grid: ClassVar[str] = "karras"  # the family's default grid (ej.timesteps.default)
    is_discrete: ClassVar[bool] = False  # model time is a training-step index, data at -1
    mean_reverting: ClassVar[bool] = False  # reverts to a mean mu (IR-SDE)
    variance_preserving: ClassVar[bool] = False  # alpha^2 + (sigma / v_scale)^2 = 1
    variance_exploding: ClassVar[bool] = False  # alpha = 1 and the model time is sigma

    def alpha(self, t):
        """Signal coefficient ``alpha_t``."""
        raise NotImplementedError

    def sigma(self, t):
        """Noise coefficient ``sigma_t``."""
        raise NotImplementedError

    def lam(self, t):
        """Half log-SNR ``lam_t = log(alpha_t / sigma_t)`` (``+inf`` at ``t_clean``)."""
        return jnp.log(self.alpha(t)) - jnp.log(self.sigma(t))

    def t_from_lambda(self, lam):
        """Inverse of :meth:`lam`."""
        raise NotImplementedError

    def rho(self, t):
        """Noise level ``rho_t = sigma_t / alpha_t`` (0 at ``t_clean``), the ER-SDE variable."""
        return self.sigma(t) / self.alpha(t)

    def t_from_rho(self, rho):
        """Inverse of :meth:`rho`; ``rho = 0`` maps to ``t_clean`` (with a zero gradient there)."""
        rho = jnp.asarray(rho)
        positive = rho > 0
        t = self.t_from_lambda(-jnp.log(jnp.where(positive, rho, 1.0)))
        return jnp.where(positive, t, self.t_clean)

    @property
    def num_indices(self) -> int | None:
        """Number of training-step indices of a discrete path (model time ``0 .. N-1``)."""
        return None

    @property
    def zero_snr_start(self) -> bool:
        """Whether sampling starts from pure noise, ``alpha(t_max) = 0`` (``rho = inf``)."""
        return float(eval_f64(self.alpha, self.t_max)) == 0.0

    def in_domain(self, t) -> np.ndarray:
        """Whether model times ``t`` (numpy) lie where the path is defined with ``alpha > 0``."""
        raise NotImplementedError

    def prior_std(self) -> float:
        """Standard deviation of ``x_T - mu`` used to start sampling at ``t_max``."""
        return float(eval_f64(self.sigma, self.t_max))


def _index_table(values: tuple[float, ...], like):
    """``(index, table)`` of a per-index schedule, extended by 0 at the clean index -1."""
    table = jnp.asarray((0.0, *values), dtype=jnp.result_type(like, float))
    return jnp.arange(-1, len(values), dtype=table.dtype), table


def _index_domain(t, values: tuple[float, ...]) -> np.ndarray:
    return np.isfinite(t) & (t >= -1) & (t <= len(values) - 1)


def _validate_range(name, lo, hi, lo_bound=-math.inf, hi_bound=math.inf):
    if not (math.isfinite(lo) and math.isfinite(hi) and lo_bound <= lo < hi <= hi_bound):
        raise ValueError(
            f"{name}: need {lo_bound} <= t_min < t_max <= {hi_bound}, finite; got t_min={lo}, "
            f"t_max={hi}."
        )


@dataclasses.dataclass(frozen=True)
class EDM(GaussianPath):
    """Variance-exploding path of EDM/NCSN: ``alpha = 1``, ``sigma = t`` (model time is sigma)."""

    variance_exploding: ClassVar[bool] = True

    def alpha(self, t):
        """``alpha_t = 1``."""
        return jnp.ones_like(t)

    def sigma(self, t):
        """``sigma_t = t``."""
        return t

    def lam(self, t):
        """``lam_t = -log t``."""
        return -jnp.log(t)

    def t_from_lambda(self, lam):
        """``t = exp(-lam)``."""
        return jnp.exp(-lam)

    def in_domain(self, t):
        """``t >= 0``, finite."""
        return np.isfinite(t) & (t >= 0)


def edm(sigma_min: float = 0.002, sigma_max: float = 80.0) -> EDM:
    """The EDM / variance-exploding path; the network is indexed by sigma.

    Args:
        sigma_min: smallest noise level of the default grids.
        sigma_max: noise level where sampling starts (``x_T = sigma_max * z``).
    """
    _validate_range("edm", float(sigma_min), float(sigma_max), lo_bound=1e-300)
    return EDM(float(sigma_min), float(sigma_max))


@dataclasses.dataclass(frozen=True)
class _VP(GaussianPath):
    """Variance-preserving paths, defined by ``log abar(t)``: ``alpha^2 + sigma^2 = 1``."""

    variance_preserving: ClassVar[bool] = True

    def log_abar(self, t):
        """``log abar_t = 2 log alpha_t``."""
        raise NotImplementedError

    def t_from_log_abar(self, log_abar):
        """Inverse of :meth:`log_abar`."""
        raise NotImplementedError

    def alpha(self, t):
        """``alpha_t = exp(log abar_t / 2)``."""
        return jnp.exp(0.5 * self.log_abar(t))

    def sigma(self, t):
        """``sigma_t = sqrt(1 - abar_t)`` (``-expm1``, gradient-safe at 0)."""
        return sqrt_vanishing(-jnp.expm1(self.log_abar(t)))

    def lam(self, t):
        """``lam_t = (log abar - log(1 - abar)) / 2``."""
        log_abar = self.log_abar(t)
        return 0.5 * (log_abar - jnp.log(-jnp.expm1(log_abar)))

    def t_from_lambda(self, lam):
        """Inverse of :meth:`lam` through ``abar = sigmoid(2 lam)``."""
        # abar = sigmoid(2 lam)  =>  log abar = -softplus(-2 lam).
        return self.t_from_log_abar(-jnp.logaddexp(0.0, -2.0 * lam))


@dataclasses.dataclass(frozen=True)
class VPLinear(_VP):
    """Continuous VP path with a linear beta schedule (Song et al. 2021)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def log_abar(self, t):
        """``-(b0 t + (b1 - b0) t^2 / 2)``."""
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def t_from_log_abar(self, log_abar):
        """Positive root of the quadratic :meth:`log_abar`."""
        # Positive root of (b1 - b0)/2 t^2 + b0 t + log_abar = 0, written without cancellation.
        c = -log_abar
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return 2.0 * c / (b0 + jnp.sqrt(b0**2 + 2.0 * db * c))

    def in_domain(self, t):
        """``0 <= t <= 1``."""
        return np.isfinite(t) & (t >= 0) & (t <= 1)


def vp_linear(
    beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3, t_max: float = 1.0
) -> VPLinear:
    """Continuous VP path, ``log abar_t = -(b0 t + (b1 - b0) t^2 / 2)`` (MATH.md section 1)."""
    _validate_range("vp_linear", float(t_min), float(t_max), lo_bound=0.0, hi_bound=1.0)
    if not (beta_min > 0 and beta_max >= beta_min):
        raise ValueError(f"vp_linear: need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}.")
    return VPLinear(float(t_min), float(t_max), float(beta_min), float(beta_max))


@dataclasses.dataclass(frozen=True)
class VPCosine(_VP):
    """Continuous cosine schedule of Nichol & Dhariwal: ``abar(t) = f(t)/f(0)``."""

    s: float = 0.008

    def _log_f(self, t):
        return 2.0 * jnp.log(jnp.cos((t + self.s) / (1.0 + self.s) * (jnp.pi / 2)))

    def log_abar(self, t):
        """``log f(t) - log f(0)``."""
        return self._log_f(t) - self._log_f(jnp.zeros_like(t))

    def t_from_log_abar(self, log_abar):
        """Inverse of :meth:`log_abar` through ``arccos``."""
        log_f0 = self._log_f(jnp.zeros_like(log_abar))
        c = jnp.exp(0.5 * (log_abar + log_f0))
        return 2.0 * (1.0 + self.s) / jnp.pi * jnp.arccos(c) - self.s

    def in_domain(self, t):
        """``0 <= t < 1``."""
        return np.isfinite(t) & (t >= 0) & (t < 1)


def vp_cosine(s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946) -> VPCosine:
    """Continuous cosine VP path, ``f(t) = cos((t+s)/(1+s) pi/2)^2``.

    ``abar(1) = 0``, so sampling starts below 1; the default ``t_max`` (as in DPM-Solver) has
    ``lam(t_max)`` about -5. Grids accept ``lambda_min`` to clip the start further.
    """
    _validate_range("vp_cosine", float(t_min), float(t_max), lo_bound=0.0)
    if not t_max < 1.0:
        raise ValueError(f"vp_cosine: t_max must be < 1 (abar(1) = 0), got {t_max}.")
    return VPCosine(float(t_min), float(t_max), float(s))


@dataclasses.dataclass(frozen=True)
class VPDiscrete(_VP):
    """Discrete VP path (DDPM); model time is the index, the data sits at index -1.

    ``log abar`` is interpolated linearly in the index, so fractional indices are allowed and
    ``alpha``, ``sigma``, ``lam`` stay consistent with each other.
    """

    log_abar_table: tuple[float, ...] = ()

    is_discrete: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "t_clean", -1.0)

    @property
    def num_indices(self) -> int:
        """Number of training-step indices ``N`` (model time ``0 .. N-1``)."""
        return len(self.log_abar_table)

    def log_abar(self, t):
        """``log abar`` interpolated linearly between indices (0 at index -1).

        A zero-terminal-SNR table (``abar_T = 0``, ``log abar_T = -inf``) gives ``-inf`` on
        ``(T - 1, T]`` and interpolates the finite part elsewhere.
        """
        index, table = _index_table(self.log_abar_table, t)
        if np.isfinite(self.log_abar_table[-1]):
            return jnp.interp(t, index, table)
        last = index[-2]  # T - 1, the last finite entry
        finite = jnp.interp(jnp.minimum(t, last), index[:-1], table[:-1])
        return jnp.where(t > last, -jnp.inf, finite)

    def t_from_log_abar(self, log_abar):
        """Inverse of :meth:`log_abar` (linear interpolation of the table)."""
        index, table = _index_table(self.log_abar_table, log_abar)
        if np.isfinite(self.log_abar_table[-1]):
            return jnp.interp(log_abar, table[::-1], index[::-1])
        finite = jnp.interp(log_abar, table[:-1][::-1], index[:-1][::-1])
        return jnp.where(log_abar == -jnp.inf, index[-1], finite)

    def in_domain(self, t):
        """Indices in ``[-1, N - 1]``."""
        return _index_domain(t, self.log_abar_table)


def vp_discrete(betas=None) -> VPDiscrete:
    """Discrete VP path from a beta schedule (default: DDPM's ``linspace(1e-4, 0.02, 1000)``).

    A last beta of 1 is a zero-terminal-SNR schedule (Lin et al. 2023, e.g.
    :func:`ersde_jax.timesteps.rescale_zero_terminal_snr`): ``abar_T = 0``, sampling starts from
    pure noise at index T (use v-, x0- or flow-prediction there, and the default "trailing"
    grid, which includes T).

    Args:
        betas: 1-D array of per-step betas in (0, 1); the last may be 1.
    """
    betas = np.linspace(1e-4, 0.02, 1000) if betas is None else np.asarray(betas, np.float64)
    if (betas.ndim != 1 or betas.size < 2 or not np.all((betas > 0) & (betas <= 1))
            or not np.all(betas[:-1] < 1)):
        raise ValueError("vp_discrete: betas must be a 1-D array (length >= 2) in (0, 1); only "
                         "the last may be 1 (zero terminal SNR).")
    with np.errstate(divide="ignore"):
        log_abar = np.cumsum(np.log1p(-betas))
    return VPDiscrete(0.0, float(betas.size - 1), tuple(float(v) for v in log_abar))


def rescale_zero_terminal_snr(betas) -> np.ndarray:
    """Betas rescaled to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules
    and Sample Steps are Flawed", Algorithm 1).

    ``sqrt(abar)`` is shifted so that its last value is 0 and scaled so that its first is
    unchanged; the betas are recovered from the new ``abar``. The last beta is 1.

    Args:
        betas: 1-D array of betas in (0, 1), e.g. ``np.linspace(1e-4, 0.02, 1000)`` or the
            "scaled linear" schedule of latent diffusion.

    Returns:
        float64 betas for :func:`vp_discrete`.
    """
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.size < 2 or not np.all((betas > 0) & (betas < 1)):
        raise ValueError("rescale_zero_terminal_snr: betas must be a 1-D array (length >= 2) in "
                         "(0, 1).")
    root = np.sqrt(np.cumprod(1.0 - betas))
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    abar = root**2
    return 1.0 - np.concatenate([abar[:1], abar[1:] / abar[:-1]])


@dataclasses.dataclass(frozen=True)
class Flow(GaussianPath):
    """Rectified-flow path ``alpha = 1 - t``, ``sigma = t``."""

    default_grid: ClassVar[str] = "uniform_t"  # measured best at NFE 10-20 (flow_grids.py)

    def alpha(self, t):
        """``alpha_t = 1 - t``."""
        return 1.0 - t

    def sigma(self, t):
        """``sigma_t = t``."""
        return t

    def lam(self, t):
        """``lam_t = log(1 - t) - log t``."""
        return jnp.log1p(-t) - jnp.log(t)

    def t_from_lambda(self, lam):
        """``t = sigmoid(-lam)``."""
        return 1.0 / (1.0 + jnp.exp(lam))

    def in_domain(self, t):
        """``0 <= t <= 1``."""
        return np.isfinite(t) & (t >= 0) & (t <= 1)

    def prior_std(self) -> float:
        """1: flow starts from ``N(0, I)``."""
        return 1.0


def flow(t_min: float = 1e-3, t_max: float = 0.999) -> Flow:
    """Rectified-flow path, ``alpha = 1 - t``, ``sigma = t``; sampling starts from N(0, I).

    Models trained from pure noise at ``t = 1`` (SD3/Flux-style rectified flow) should start
    there: ``flow(t_max=1.0)``, where ``alpha = 0`` and every solver takes its exact limit on the
    first step. The default ``t_max = 0.999`` starts just below, as older samplers do.
    """
    _validate_range("flow", float(t_min), float(t_max), lo_bound=0.0, hi_bound=1.0)
    return Flow(float(t_min), float(t_max))


@dataclasses.dataclass(frozen=True)
class IRSDE(GaussianPath):
    """Mean-reverting path of IR-SDE (Luo et al. 2023) in centred form; model time is the index.

    ``alpha_i = exp(-thetabar_i)``, ``sigma_i = max_sigma sqrt(1 - alpha_i^2)`` at the indices
    ``0..T``; the clean image sits at index -1 (``thetabar = 0``). Fractional indices interpolate
    ``thetabar`` linearly, which keeps ``alpha``, ``sigma`` and ``lam`` consistent with each other
    (the authors' release interpolates the three separately; at integer indices both agree).
    """

    max_sigma: float = 10.0 / 255.0
    thetabar_table: tuple[float, ...] = ()

    is_discrete: ClassVar[bool] = True
    mean_reverting: ClassVar[bool] = True
    variance_preserving: ClassVar[bool] = True  # alpha^2 + (sigma / max_sigma)^2 = 1

    def __post_init__(self):
        object.__setattr__(self, "t_clean", -1.0)
        object.__setattr__(self, "v_scale", self.max_sigma)

    @property
    def num_indices(self) -> int:
        """Number of training-step indices ``T + 1`` (model time ``0 .. T``)."""
        return len(self.thetabar_table)

    def thetabar(self, t):
        """Cumulative mean-reversion ``thetabar(t)``."""
        index, table = _index_table(self.thetabar_table, t)
        return jnp.interp(t, index, table)

    def alpha(self, t):
        """``alpha_t = exp(-thetabar_t)``."""
        return jnp.exp(-self.thetabar(t))

    def sigma(self, t):
        """``sigma_t = max_sigma sqrt(1 - alpha_t^2)``."""
        return self.max_sigma * sqrt_vanishing(-jnp.expm1(-2.0 * self.thetabar(t)))

    def lam(self, t):
        """``lam_t = log(alpha_t / sigma_t)``, written in ``thetabar``."""
        tb = self.thetabar(t)
        return -tb - jnp.log(self.max_sigma) - 0.5 * jnp.log(-jnp.expm1(-2.0 * tb))

    def t_from_lambda(self, lam):
        """Inverse of :meth:`lam` (linear interpolation of the table)."""
        # exp(-2 thetabar) = sigmoid(2 (lam + log max_sigma)).
        tb = 0.5 * jnp.logaddexp(0.0, -2.0 * (lam + jnp.log(self.max_sigma)))
        index, table = _index_table(self.thetabar_table, lam)
        return jnp.interp(tb, table, index)

    def in_domain(self, t):
        """Indices in ``[-1, T]``."""
        return _index_domain(t, self.thetabar_table)

    def prior_std(self) -> float:
        """``max_sigma``: sampling starts at ``mu + max_sigma z``."""
        return self.max_sigma


_THETA_SCHEDULES = ("cosine", "linear", "constant")


def ir_sde(max_sigma: float = 10.0, T: int = 100, schedule: str = "cosine", eps: float = 0.01
           ) -> IRSDE:
    """The IR-SDE mean-reverting path (MATH.md section 1).

    ``T + 1`` discrete thetas (cosine: ``1 - abar[1:-1]`` of the cosine schedule on ``T + 3``
    points; linear: ``linspace(1e-4, 0.02) * 1000 / (T + 1)``; constant: ones),
    ``dt = -log(eps) / sum(theta)``, ``thetabar_i = dt * cumsum(theta)_i``, so ``alpha_T = eps``.
    Sampling starts at ``x_T = mu + max_sigma z``.

    Args:
        max_sigma: stationary noise level; values >= 1 are read in pixel units and divided by 255.
        T: number of diffusion steps of the trained model (model time is the index 0..T).
        schedule: "cosine", "linear" or "constant".
        eps: ``alpha`` at index T.
    """
    if schedule not in _THETA_SCHEDULES:
        raise ValueError(
            f"Unknown theta schedule {schedule!r}; expected one of {_THETA_SCHEDULES}."
        )
    if type(T) is not int or T < 2:
        raise ValueError(f"ir_sde: T must be an int >= 2, got {T!r}.")
    if not (max_sigma > 0 and 0 < eps < 1):
        raise ValueError(f"ir_sde: need max_sigma > 0 and 0 < eps < 1, got {max_sigma}, {eps}.")
    sigma = max_sigma / 255.0 if max_sigma >= 1 else max_sigma
    if schedule == "cosine":
        x = np.linspace(0.0, T + 2, T + 3)
        abar = np.cos((x / (T + 2) + 0.008) / 1.008 * np.pi / 2) ** 2
        theta = 1.0 - (abar / abar[0])[1:-1]
    elif schedule == "linear":
        scale = 1000.0 / (T + 1)
        theta = np.linspace(scale * 1e-4, scale * 0.02, T + 1)
    else:
        theta = np.ones(T + 1)
    cumsum = np.cumsum(theta)
    thetabar = cumsum * (-np.log(eps) / cumsum[-1])
    return IRSDE(0.0, float(T), float(sigma), tuple(float(v) for v in thetabar))


def prior_sample(key, path: GaussianPath, shape, *, mu=None, dtype=None):
    """Draws ``x_T = mu + s z`` with ``s = path.prior_std()`` (sigma at ``t_max``; 1 for flow).

    Args:
        key: a ``jax.random`` key.
        path: the Gaussian path.
        shape: shape of ``x_T``, batch axis first.
        mu: optional mean (the degraded image of mean-reverting diffusion).
        dtype: floating dtype, default the default float dtype.
    """
    z = jax.random.normal(key, shape, dtype or jnp.result_type(float))
    x = path.prior_std() * z
    return x if mu is None else x + mu
