"""Learned sampler settings: time grids and noise-scale functions tuned by gradient descent.

A :class:`Preset` is an ER-SDE-Solver setting for a fixed number of network evaluations whose
time grid and noise-scale function were optimised with optax, through the whole stochastic
sampler, to minimise a distribution distance to a reference (``benchmarks/tuned.py``; results in
``benchmarks/results/tuned.json``). The grid is held in ``rho = sigma / alpha`` (the EDM sigma),
so it applies to any path whose sampling starts at ``rho = 80``; the noise-scale function is a
non-negative combination of the ER-SDE paper's functions (:func:`mixed_noise_scale`), which
keeps ``phi(rho) / rho`` non-decreasing, as the ER SDE requires.

A grid tuned on one model is tuned for that model. The presets, each shipped because it beat the
best hand-designed setting of the paper by more than 10% on held-out seeds:

* ``gmm_nfe5``, ``gmm_nfe10``: tuned on an exact 2-D Gaussian mixture (8 modes of std 0.15 on a
  ring of radius 2, EDM path) against exact samples; sliced 1-Wasserstein on held-out seeds
  0.26x and 0.63x that of the best hand-designed setting (ER-SDE-3, log-SNR grid). An example of
  what tuning buys, not a general-purpose grid.
* ``digits_nfe5``: tuned on the bundled digits model (``ej.pretrained.digits_model``) against
  its own ER-SDE-3 samples at NFE 100; Fréchet distance in the digits classifier's features
  0.61x that of the best hand-designed setting (ER-SDE-3 ODE, Karras grid). The tuned noise
  scale is the ODE (all weights 0): only the grid changed. At NFE 10 the hand-designed setting is
  already as close to the reference as two reference sets are to each other, so no NFE 10 digits
  preset is shipped.

Example:
    >>> from ersde_jax import presets
    >>> preset = presets.get("digits_nfe5")
    >>> model = ej.pretrained.digits_model()
    >>> x0 = ej.ersde_sample(key, model, x_T, cond=labels, **preset.sampler_kwargs(model.path))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ._noise_scale import NoiseScale, noise_scale
from ._numerics import eval_f64, is_concrete
from ._path import GaussianPath

__all__ = ["Preset", "NOISE_BASIS", "PRESETS", "get", "mixed_noise_scale"]

NOISE_BASIS = ("sde", "er_sde_1", "er_sde_2", "er_sde_3", "er_sde_4", "er_sde_5")


def _mixed_log_g(rho, weights):
    terms = zip(NOISE_BASIS, weights, strict=True)
    return sum(w * noise_scale(name).log_g(rho) for name, w in terms)


def mixed_noise_scale(weights) -> NoiseScale:
    """The noise scale ``log(phi/rho) = sum_k w_k log(phi_k/rho)`` over ``NOISE_BASIS``.

    Each ``phi_k(rho) / rho`` of the ER-SDE paper (section 3) is non-decreasing, so any
    non-negative combination is a valid noise scale; all weights 0 is the probability-flow ODE,
    a one-hot weight is the named function. ``weights`` may be traced (differentiable).

    Args:
        weights: ``len(NOISE_BASIS)`` non-negative weights, or a mapping from names in
            ``NOISE_BASIS`` to weights (missing names weigh 0).

    Raises:
        ValueError: for unknown names, a wrong length, or negative or non-finite weights.
    """
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(NOISE_BASIS)
        if unknown:
            raise ValueError(f"Unknown noise scales {sorted(unknown)}; expected {NOISE_BASIS}.")
        weights = [weights.get(name, 0.0) for name in NOISE_BASIS]
    if np.shape(weights) != (len(NOISE_BASIS),):
        raise ValueError(f"weights must have length {len(NOISE_BASIS)} ({NOISE_BASIS}), got "
                         f"shape {np.shape(weights)}.")
    if is_concrete(weights):
        w = np.asarray(weights, np.float64)
        if not np.all(np.isfinite(w) & (w >= 0)):
            raise ValueError(f"weights must be finite and >= 0, got {w}.")
    return NoiseScale(_mixed_log_g, jnp.asarray(weights), name="mixed", known_valid=True)


class Preset(NamedTuple):
    """A tuned ER-SDE-Solver setting.

    Attributes:
        name: the preset's name.
        order: the solver's order.
        rho: the grid in ``rho = sigma / alpha``, ``nfe + 1`` decreasing values ending at 0.
        noise_weights: weights of :func:`mixed_noise_scale`, by name in ``NOISE_BASIS``.
        tuned_on: what it was tuned on and against which reference.
    """

    name: str
    order: int
    rho: tuple[float, ...]
    noise_weights: dict
    tuned_on: str

    @property
    def nfe(self) -> int:
        """Number of network evaluations."""
        return len(self.rho) - 1

    def noise_scale(self) -> NoiseScale:
        """The tuned noise-scale function; the closed-form ``"ode"`` when every weight is 0."""
        if not any(self.noise_weights.values()):
            return noise_scale("ode")
        return mixed_noise_scale(self.noise_weights)

    def timesteps(self, path: GaussianPath) -> np.ndarray:
        """The grid in ``path``'s model time.

        Raises:
            ValueError: when sampling on ``path`` does not start at the preset's ``rho[0]``.
        """
        rho_start = float(eval_f64(path.rho, path.t_max))
        if not np.isclose(rho_start, self.rho[0], rtol=1e-6):
            raise ValueError(f"Preset {self.name!r} starts at rho = {self.rho[0]}, but the path "
                             f"starts at sigma/alpha = {rho_start:.6g}.")
        t = eval_f64(path.t_from_rho, self.rho).copy()
        t[0] = path.t_max  # exactly where sampling starts
        return t

    def sampler_kwargs(self, path: GaussianPath) -> dict:
        """Keyword arguments of :func:`ersde_jax.ersde_sample` for ``path``."""
        return dict(order=self.order, noise_scale=self.noise_scale(),
                    timesteps=self.timesteps(path))


# name: (order, rho grid, noise weights, what it was tuned on); benchmarks/results/tuned.json.
_TUNED = {
    "gmm_nfe5": (
        3,
        (
            80.0, 1.1202293634414673, 0.27863579988479614, 0.019986985251307487,
            0.0016495287418365479, 0.0,
        ),
        {
            "sde": 0.6466849446296692,
            "er_sde_1": 0.4580354690551758,
            "er_sde_2": 0.646684467792511,
            "er_sde_3": 0.6466847658157349,
            "er_sde_4": 3.0672686100006104,
            "er_sde_5": 0.2550407946109772,
        },
        (
            "the exact 8-mode ring mixture of benchmarks/tuned.py (2-D, EDM path), against "
            "exact samples (sliced W1); NFE 5 held-out ratio to the best hand-designed "
            "setting 0.26"
        ),
    ),
    "gmm_nfe10": (
        3,
        (
            80.0, 20.564048767089844, 6.1020002365112305, 1.6147098541259766,
            0.5980867147445679, 0.23929914832115173, 0.11161935329437256,
            0.029950201511383057, 0.008219532668590546, 0.002322125481441617, 0.0,
        ),
        {
            "sde": 0.11390085518360138,
            "er_sde_1": 0.2046779841184616,
            "er_sde_2": 1.1139012575149536,
            "er_sde_3": 0.11390093713998795,
            "er_sde_4": 0.156416654586792,
            "er_sde_5": 0.03321167081594467,
        },
        (
            "the exact 8-mode ring mixture of benchmarks/tuned.py (2-D, EDM path), against "
            "exact samples (sliced W1); NFE 10 held-out ratio to the best hand-designed "
            "setting 0.63"
        ),
    ),
    "digits_nfe5": (
        3,
        (
            80.0, 10.217516899108887, 1.1591808795928955, 0.07811646908521652,
            0.001577422022819519, 0.0,
        ),
        {
            "sde": 0.0,
            "er_sde_1": 0.0,
            "er_sde_2": 0.0,
            "er_sde_3": 0.0,
            "er_sde_4": 0.0,
            "er_sde_5": 0.0,
        },
        (
            "the bundled digits model (balanced labels), against its ER-SDE-3 samples at NFE "
            "100 (per-class MMD in the digits classifier's features); NFE 5 held-out ratio to "
            "the best hand-designed setting 0.61"
        ),
    ),
}

PRESETS: dict[str, Preset] = {name: Preset(name, *value) for name, value in _TUNED.items()}


def get(name: str) -> Preset:
    """The preset called ``name`` (one of ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {tuple(PRESETS)}.")
    return PRESETS[name]
