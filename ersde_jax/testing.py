"""Exact references for tests and benchmarks (MATH.md section 5).

* :class:`GaussianMixture` and :func:`mixture_model`: the exact posterior mean ``E[x0 | x_t]`` of
  an isotropic Gaussian mixture on any path, as a :class:`~ersde_jax.Model`. Any error left in a
  sample is then the solver's own.
* :func:`gaussian_pf_ode`: the closed-form probability-flow ODE solution for one Gaussian.
* :func:`gaussian_sampler_moments`: the exact mean and variance of a linear multistep sampler's
  *discrete* output distribution when the data is one Gaussian (the denoiser is then affine).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._grid import Grid
from ._model import Model
from ._numerics import eval_f64
from ._path import GaussianPath
from ._solvers.base import data_target

__all__ = [
    "GaussianMixture", "mixture_posterior_mean", "mixture_model", "mixture_sample",
    "gaussian_pf_ode", "gaussian_sampler_moments",
]


class GaussianMixture(NamedTuple):
    """``x0 ~ sum_k w_k N(m_k, s_k^2 I)`` in ``D`` dimensions."""

    weights: jnp.ndarray  # (K,) non-negative, summing to 1
    means: jnp.ndarray  # (K, D)
    stds: jnp.ndarray  # (K,)


def mixture_posterior_mean(mixture: GaussianMixture, x, alpha, sigma, mu=0.0):
    """``E[x0 | x_t = x]`` for the mixture on the path ``x = mu + alpha (x0 - mu) + sigma eps``.

    Args:
        mixture: the data distribution.
        x: array (..., D).
        alpha, sigma: path coefficients (scalars).
        mu: the path's mean, broadcastable to ``x``.

    Written without dividing by ``alpha``: exact at ``alpha = 0`` (the data mean) too.
    """
    w, m, s = mixture
    y = x - mu
    m_c = m - jnp.broadcast_to(mu, x.shape)[..., None, :]  # (..., K, D)
    var = alpha**2 * s**2 + sigma**2  # (K,) variance of y given the component
    diff = y[..., None, :] - alpha * m_c
    dim = x.shape[-1]
    logits = jnp.log(w) - 0.5 * dim * jnp.log(var) - 0.5 * jnp.sum(diff**2, -1) / var
    pi = jax.nn.softmax(logits, axis=-1)
    comp = m_c + (alpha * s**2 / var)[:, None] * diff
    return mu + jnp.sum(pi[..., None] * comp, axis=-2)


def mixture_model(mixture: GaussianMixture, path: GaussianPath) -> Model:
    """The exact denoiser of ``mixture`` as a data-predicting :class:`Model`.

    The mixture is the model's ``params`` (so gradients flow into it); the model reads the
    sampler's ``mu`` (``takes_mu=True``; 0 when called without it) and ignores ``cond``.
    """

    def apply_fn(params, x, t, cond, mu=0.0):
        del cond
        return mixture_posterior_mean(params, x, path.alpha(t), path.sigma(t), mu)

    return Model(apply_fn, mixture, path=path, prediction="x0", takes_mu=True)


def mixture_sample(key, mixture: GaussianMixture, n: int):
    """``n`` exact samples of ``x0`` and their component labels."""
    k_comp, k_noise = jax.random.split(key)
    w, m, s = mixture
    labels = jax.random.choice(k_comp, w.shape[0], (n,), p=w)
    z = jax.random.normal(k_noise, (n, m.shape[1]), m.dtype)
    return m[labels] + s[labels][:, None] * z, labels


def gaussian_pf_ode(mean, std, path: GaussianPath, t_start, t_end, x_start):
    """Exact probability-flow ODE solution from ``t_start`` to ``t_end`` for ``N(mean, std^2 I)``.

    ``x_t = alpha_t m + sqrt(alpha_t^2 s^2 + sigma_t^2) / sqrt(alpha_s^2 s^2 + sigma_s^2)
    (x_s - alpha_s m)`` (MATH.md section 5; ``mu = 0``).
    """
    a_s, s_s = path.alpha(t_start), path.sigma(t_start)
    a_t, s_t = path.alpha(t_end), path.sigma(t_end)
    scale = jnp.sqrt(a_t**2 * std**2 + s_t**2) / jnp.sqrt(a_s**2 * std**2 + s_s**2)
    return a_t * mean + scale * (x_start - a_s * mean)


def gaussian_sampler_moments(solver, path: GaussianPath, timesteps, mean, std, x_T_mean, x_T_std):
    """Exact mean and variance of a linear multistep sampler's output for ``N(mean, std^2 I)``.

    With one Gaussian the exact denoiser is affine, ``q_i = A_i y_i + B_i``, so every step is
    affine in the state and the history plus independent Gaussian noise; propagating the mean and
    the 3 x 3 covariance of ``(y_i, y_{i-1}, y_{i-2})`` gives the output law of the *discrete*
    sampler exactly (per coordinate; ``mu = 0``). Computed in float64 numpy.

    Args:
        solver: an :class:`~ersde_jax.AbstractLinearMultistep` solver.
        path: the path; ``timesteps`` its grid of model times.
        mean: data mean per coordinate (scalar or array); ``std``: data standard deviation.
        x_T_mean, x_T_std: law of the starting state per coordinate.

    Returns:
        ``(mean, var)`` of the output per coordinate (``mean`` broadcast like the inputs).
    """
    ts = np.asarray(timesteps, np.float64)
    alpha, sigma = eval_f64(path.alpha, ts), eval_f64(path.sigma, ts)
    with jax.enable_x64(True):
        coefs = solver.coefficients(Grid.from_values(jnp.asarray(alpha), jnp.asarray(sigma)))
        c_x, w, c_z = (np.asarray(v, np.float64) for v in coefs)
    mean = np.asarray(mean, np.float64)
    a, s = alpha[:-1], sigma[:-1]
    k = std**2 * a / (a**2 * std**2 + s**2)  # x0_hat = m + k (y - alpha m)
    if solver.target is data_target:
        gain, offset = k, 1.0 - k * a
    else:  # eps_hat = (y - alpha x0_hat) / sigma
        gain, offset = (1.0 - a * k) / s, -a * (1.0 - k * a) / s
    means = [np.asarray(x_T_mean, np.float64) + 0 * mean, 0 * mean, 0 * mean]  # y_i, y_i-1, y_i-2
    cov = np.diag([x_T_std**2, 0.0, 0.0])
    gains, offsets = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]  # of q at s, s-1, s-2
    for i in range(ts.size - 1):
        gains, offsets = [gain[i], *gains[:2]], [offset[i], *offsets[:2]]
        row = np.array([c_x[i] + w[i, 0] * gains[0], w[i, 1] * gains[1], w[i, 2] * gains[2]])
        shift = sum(w[i, j] * offsets[j] for j in range(3)) * mean
        new_mean = row[0] * means[0] + row[1] * means[1] + row[2] * means[2] + shift
        means = [new_mean, means[0], means[1]]
        trans = np.array([row, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        cov = trans @ cov @ trans.T
        cov[0, 0] += c_z[i] ** 2
    return np.asarray(means[0], np.float64), cov[0, 0]
