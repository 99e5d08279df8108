"""Time grids and their validation.

A grid for ``steps`` network evaluations is a strictly decreasing array of ``steps + 1`` model
times: the network is called at the first ``steps`` of them and the sampler lands on the last.
The default grids end at the path's clean time (``sigma = 0``), where the last step is the
denoising step.
"""

from __future__ import annotations

import jax
import numpy as np

from ._numerics import eval_f64
from ._path import GaussianPath

__all__ = [
    "karras", "karras_t", "uniform_t", "shifted_uniform_t", "uniform_lambda", "leading",
    "trailing", "check_steps", "check_timesteps",
]


def _from_lambda(path: GaussianPath, lam: np.ndarray, lambda_min: float | None) -> np.ndarray:
    """Model times of decreasing-in-t values of ``lam``, with the range ends snapped exactly."""
    t = eval_f64(path.t_from_lambda, lam).copy()
    t[-1] = path.t_min
    if lambda_min is None or lam[0] <= float(eval_f64(path.lam, path.t_max)):
        t[0] = path.t_max
    return t


def _lambda_range(path: GaussianPath, lambda_min: float | None) -> tuple[float, float]:
    lam_hi = float(eval_f64(path.lam, path.t_min))
    lam_lo = float(eval_f64(path.lam, path.t_max))
    if lam_lo == -np.inf and lambda_min is None:
        raise ValueError(
            "The path starts at zero SNR (alpha(t_max) = 0), where grids spaced in rho or lambda "
            "are undefined: give lambda_min, or use a grid in model time (uniform_t, "
            "shifted_uniform_t, trailing), or the default grid."
        )
    if lambda_min is not None:
        if not lambda_min < lam_hi:
            raise ValueError(
                f"lambda_min={lambda_min} is above the path's range: lambda(t_min) = {lam_hi:.4g}."
            )
        lam_lo = max(lam_lo, float(lambda_min))
    return lam_lo, lam_hi


def _finish(path: GaussianPath, t_eval: np.ndarray, end: str) -> np.ndarray:
    if end == "clean":
        return np.concatenate([t_eval, [path.t_clean]])
    if end == "t_min":
        return t_eval
    raise ValueError(f"Unknown grid end {end!r}; expected 'clean' or 't_min'.")


def _eval_points(steps: int, end: str) -> int:
    check_steps(steps)
    return steps if end == "clean" else steps + 1


def karras(
    path: GaussianPath, steps: int, *, rho: float = 7.0, lambda_min: float | None = None,
    end: str = "clean",
) -> np.ndarray:
    """EDM's grid (Karras et al. 2022, eq. 5), uniform in ``(sigma/alpha)^(1/rho)``.

    For ``edm`` this is ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``
    followed by 0; for other paths the same rule is applied to ``sigma/alpha`` and mapped back to
    model time through ``lambda``.

    Args:
        path: the Gaussian path.
        steps: number of network evaluations.
        rho: the exponent (7 in EDM).
        lambda_min: optional lower clip of ``lambda`` at the start (a later, less noisy start).
        end: "clean" (last point at ``sigma = 0``) or "t_min" (last point is ``path.t_min``).

    Returns:
        float64 numpy array of ``steps + 1`` decreasing model times.
    """
    n = _eval_points(steps, end)
    lam_lo, lam_hi = _lambda_range(path, lambda_min)
    r_max, r_min = np.exp(-lam_lo), np.exp(-lam_hi)
    frac = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    r = (r_max ** (1 / rho) + frac * (r_min ** (1 / rho) - r_max ** (1 / rho))) ** rho
    return _finish(path, _from_lambda(path, -np.log(r), lambda_min), end)


def uniform_t(path: GaussianPath, steps: int, *, end: str = "clean") -> np.ndarray:
    """Grid uniform in model time from ``t_max`` to ``t_min`` (DDIM's uniform spacing)."""
    n = _eval_points(steps, end)
    return _finish(path, np.linspace(path.t_max, path.t_min, n), end)


def shifted_uniform_t(path: GaussianPath, steps: int, *, shift: float = 3.0, end: str = "clean"
                      ) -> np.ndarray:
    """SD3's shifted uniform grid ``t = s u / (1 + (s - 1) u)`` (Esser et al. 2024), u uniform.

    Meant for flow paths (model time in ``[0, 1]``): ``s > 1`` moves the points toward ``t = 1``
    (the noise). ``u`` runs between the unshifted images ``t / (s - (s - 1) t)`` of ``t_max``
    and ``t_min``, so the grid starts at ``t_max`` and makes its last call at ``t_min``.

    Args:
        path: the Gaussian path (continuous, model time in ``[0, 1]``).
        steps: number of network evaluations.
        shift: the warp ``s`` (3 in SD3; 1 is :func:`uniform_t`).
        end: "clean" or "t_min", as in :func:`karras`.
    """
    if not (np.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be finite and > 0, got {shift}.")
    if path.is_discrete or not 0.0 <= path.t_min < path.t_max <= 1.0:
        raise ValueError("shifted_uniform_t needs a continuous path with model time in [0, 1].")
    n = _eval_points(steps, end)
    unshift = lambda t: t / (shift - (shift - 1.0) * t)  # noqa: E731
    u = np.linspace(unshift(path.t_max), unshift(path.t_min), n)
    return _finish(path, shift * u / (1.0 + (shift - 1.0) * u), end)


def uniform_lambda(
    path: GaussianPath, steps: int, *, lambda_min: float | None = None, end: str = "clean"
) -> np.ndarray:
    """Grid uniform in the half log-SNR ``lambda`` (DPM-Solver's "logSNR" spacing).

    Args:
        path: the Gaussian path.
        steps: number of network evaluations.
        lambda_min: clip ``lambda`` from below at the start; DPM-Solver uses -5.1 for cosine
            schedules, where the last, huge jump otherwise breaks multistep solvers.
        end: "clean" or "t_min", as in :func:`karras`.
    """
    n = _eval_points(steps, end)
    lam_lo, lam_hi = _lambda_range(path, lambda_min)
    return _finish(path, _from_lambda(path, np.linspace(lam_lo, lam_hi, n), lambda_min), end)


def karras_t(path: GaussianPath, steps: int, *, rho: float = 7.0, end: str = "clean"
             ) -> np.ndarray:
    """The Karras rule applied to model time itself, from ``t_max`` to ``t_min``."""
    n = _eval_points(steps, end)
    frac = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    lo, hi = path.t_min ** (1 / rho), path.t_max ** (1 / rho)
    return _finish(path, (hi + frac * (lo - hi)) ** rho, end)


def _discrete_range(path: GaussianPath, steps: int, name: str) -> int:
    n_train = int(round(path.t_max - path.t_min)) + 1
    if not path.is_discrete or n_train < 2:
        raise ValueError(f"The {name!r} schedule needs a discrete path (vp_discrete, ir_sde).")
    if steps > n_train:
        raise ValueError(
            f"{name!r} spacing of {n_train} indices cannot give {steps} distinct evaluations; "
            "it would change the number of network evaluations."
        )
    return n_train


def leading(path: GaussianPath, steps: int) -> np.ndarray:
    """Integer indices ``t_min + k * (n // steps)``, k = steps-1..0, then the clean time."""
    n_train = _discrete_range(path, steps, "leading")
    t_eval = path.t_min + np.arange(steps)[::-1] * (n_train // steps)
    return _finish(path, t_eval.astype(np.float64), "clean")


def trailing(path: GaussianPath, steps: int) -> np.ndarray:
    """Integer indices spaced ``n / steps`` down from ``t_max``, then the clean time."""
    n_train = _discrete_range(path, steps, "trailing")
    t_eval = path.t_min + np.round(np.arange(n_train, 0, -n_train / steps)) - 1
    return _finish(path, t_eval[:steps].astype(np.float64), "clean")


def check_steps(steps) -> int:
    """Raises unless ``steps`` is an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be an int, got {type(steps).__name__}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    return int(steps)


def check_timesteps(path: GaussianPath, timesteps, steps: int):
    """Validates a user grid and returns it as an array (numpy when concrete).

    Shape is always checked. Values are checked when concrete: finite, strictly decreasing,
    inside the path's domain, not above ``t_max``, and ``sigma > 0`` at every evaluation point
    (only the last point may be the clean time ``sigma = 0``). A traced grid is checked at run
    time by the sampler, which returns NaN rather than a silently wrong sample.
    """
    shape = np.shape(timesteps)
    if shape != (steps + 1,):
        raise ValueError(
            f"timesteps must be a 1-D grid of length steps + 1 = {steps + 1}, got shape {shape}."
        )
    if isinstance(timesteps, jax.core.Tracer):
        return timesteps
    ts = np.asarray(timesteps, np.float64)
    if not np.all(np.isfinite(ts)):
        raise ValueError(f"timesteps must be finite, got {ts}.")
    dt = np.diff(ts)
    if np.any(dt == 0):
        raise ValueError(f"timesteps contain duplicates: {ts[1:][dt == 0]}.")
    if np.any(dt > 0):
        raise ValueError(f"timesteps must be strictly decreasing, got {ts}.")
    if not np.all(path.in_domain(ts)):
        raise ValueError(f"timesteps {ts[~path.in_domain(ts)]} lie outside the path's domain.")
    if ts[0] > path.t_max * (1 + 1e-12) + 1e-12:
        raise ValueError(
            f"timesteps start at {ts[0]}, above the path's t_max = {path.t_max} (where sampling "
            "starts and x_T is drawn); build the path with a larger t_max to start higher."
        )
    sigma = eval_f64(path.sigma, ts[:-1])
    if np.any(sigma <= 0):
        raise ValueError(
            "Only the last time step may be the clean time (sigma = 0); the network is evaluated "
            f"at every other one, got {ts}."
        )
    return ts
