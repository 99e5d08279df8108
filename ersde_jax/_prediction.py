"""Turning any network output into the data and noise predictions (MATH.md section 2).

Every converter works in centred coordinates ``y = x - mu`` and returns ``(x0 - mu, eps)``; the
choice of converter is made once, when a :class:`~ersde_jax.Model` is built, never inside a step.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Denoised", "PREDICTIONS"]


class Denoised(NamedTuple):
    """The two predictions of one network call, in centred coordinates."""

    x0: object  # x0_hat - mu, same shape as x
    eps: object  # eps_hat, same shape as x


def _from_x0(out, y, alpha, sigma, mu, v_scale):
    del v_scale
    x0 = out - mu
    return Denoised(x0, (y - alpha * x0) / sigma)


def _from_eps(out, y, alpha, sigma, mu, v_scale):
    del mu, v_scale
    return Denoised((y - sigma * out) / alpha, out)


def _from_score(out, y, alpha, sigma, mu, v_scale):
    del mu, v_scale
    return Denoised((y + sigma**2 * out) / alpha, -sigma * out)


def _from_v(out, y, alpha, sigma, mu, v_scale):
    # v = alpha eps' - s x0 with s = sigma / v_scale and eps' = v_scale eps; for VP paths
    # v_scale = 1 and alpha^2 + s^2 = 1, for mean-reverting ones v_scale = max_sigma.
    del mu
    s = sigma / v_scale
    norm = alpha**2 + s**2
    return Denoised((alpha * y - s * out) / norm, (s * y + alpha * out) / (norm * v_scale))


def _from_flow(out, y, alpha, sigma, mu, v_scale):
    # u = eps - x0 (rectified flow; alpha + sigma = 1 there, kept general here).
    del mu, v_scale
    norm = alpha + sigma
    return Denoised((y - sigma * out) / norm, (y + alpha * out) / norm)


PREDICTIONS = {
    "x0": _from_x0,
    "eps": _from_eps,
    "score": _from_score,
    "v": _from_v,
    "flow": _from_flow,
}

PREDICTION_NAMES = tuple(PREDICTIONS)
