"""Quality against NFE: every sampler of the library and its baselines, on four problems.

Each sampler runs at an NFE budget of 5, 10, 20, 50 and 100 network evaluations, from the same
``x_T`` (and, for the stochastic ones, the same key), on the problem's grid. The record stores the
NFE actually spent (``SampleResult.nfe`` for the library's samplers), never more than the budget:
the Heun-type samplers (EDM Heun and stochastic: ``2N - 1``; diffrax Heun: 2 per step plus the
final denoising call) get the largest step count that fits.

Samplers ("_ode": the probability-flow ODE; everything else is stochastic):

* ``er_sde_1/2/3`` (noise scale "er_sde_5", the paper's default) and ``er_sde_1/2/3_ode``;
  ``er_sde_3_backward`` and ``er_sde_3_ode_backward``: the same with the release's third-order
  derivative estimate (``derivative="backward"``);
* ``ddim`` (eta = 0) and ``ddim_eta1`` (ancestral);
* ``dpm_solver_pp_2m``, ``sde_dpm_solver_pp_2m``: ``ej.mr_ode(2)`` and ``ej.mr_sde(2)``, data
  prediction (DPM-Solver++ when ``mu = 0``; the multistep updates in the exponential-integrator
  Taylor form of MATH.md section 4); ``dpm_solver_pp_3m``: ``ej.mr_ode(3, third_order="release")``,
  the published third-order rule (measured order ~2.2), and ``dpm_solver_pp_3m_taylor``: the
  library's default ``ej.mr_ode(3)`` with the corrected weight ``2 phi_3`` (order ~4 measured);
* ``edm_heun`` and ``edm_stochastic`` (EDM's ImageNet-64 churn: S_churn 40, S_min 0.05,
  S_max 50, S_noise 1.003);
* ``euler_maruyama``: ``ej.euler_maruyama()`` on the reverse SDE where the path is VP-like
  (restoration); on the EDM path, where that solver does not apply, the same SDE
  (``phi(rho) = rho^2``) stepped by ``diffrax.Euler`` on ``ersde_jax.diffrax`` terms;
* diffrax on ``ersde_jax.diffrax`` terms, on the problem's grid (``diffrax.StepTo`` through its
  noise levels ``rho = sigma / alpha``), ending with one denoising call
  (``ersde_jax.diffrax.denoise_state``) as the discrete samplers do: ``diffrax_euler`` and
  ``diffrax_heun`` on the PF-ODE, ``diffrax_euler_sde`` and ``diffrax_heun_sde`` on the ER SDE
  with "er_sde_5" (the noise is additive, so Heun's Stratonovich limit is the Ito one).

Problems (``dataset`` in the records):

* ``gmm``: a ring of eight 2-D Gaussians (radius 2, std 0.15, weights 1 : ... : 2) with its exact
  denoiser, EDM path, Karras grid, float32. ODE samplers: ``pf_ode_rmse``, the root mean square
  distance to the exact PF-ODE solution from the same ``x_T`` (the first 5000 starts; diffrax
  Dopri8 in float64, rtol = atol = 1e-12, then the same final denoising call; checked against
  ER-SDE-3 at 2000 steps). Every sampler: ``swd``, the sliced 1-Wasserstein
  distance to exact samples (128 directions); the floor (``solver = "exact_samples"``) is the
  SWD between two exact sample sets of the same size.
* ``gmm_imperfect``: the same data and start, with a deliberately imperfect denoiser: the exact
  posterior mean of the mixture with every std doubled, blended into the exact one as
  ``b(rho) = rho^2 / (rho^2 + 0.5^2)`` (wrong at high noise, exact as ``rho -> 0``). The errors
  are inconsistent across noise levels, as a trained network's are; a stochastic sampler that
  reaches the accurate low-noise region can forget part of them, an ODE sampler transports them
  to the data (the ER-SDE paper's and EDM's argument for stochasticity). Metric ``swd`` to exact
  samples of the true mixture.
* ``digits``: digits FD (``ej.pretrained.digits_fd``) of class-balanced samples of the bundled
  class-conditional digits model (``ej.pretrained.digits_model``), EDM path, Karras grid, no
  guidance, 900 images (90 per class), NFE 5-50 (and 100, 200 for five samplers, to see where
  they converge); floor ``ej.pretrained.digits_fd_floor()``. One
  FD of 900 images varies by a few units between seeds, more than the gaps between the leading
  samplers, so every stochastic sampler also runs at NFE 10 and 20 from four more starts and keys
  (``info.digits.seeds``, shared by all samplers); ``targets`` ranks those means.
* ``restoration``: mean PSNR of the bundled IR-SDE restoration model
  (``ej.pretrained.restoration_digits``) on the held-out digits, from ``x_T = mu + max_sigma z``
  on the MR Sampler's uniform-index ("linspace") grid, as ``mr_restoration.py``; the degraded
  input is recorded at NFE 0.

The SWD is ``ej.metrics.sliced_wasserstein``'s definition (same directions from the same key)
evaluated with numpy's sort: XLA's CPU sort made one 50 000-sample SWD take ~10 s here. The two
are checked to agree at startup.

Run from the repository root::

    python benchmarks/quality.py            # full: ~15 minutes on 2 CPU cores
    python benchmarks/quality.py --quick    # NFE 5, small sizes, 1-3 samplers: ~20 s of CPU

Writes ``benchmarks/results/quality.json`` (``quality_quick.json`` with ``--quick``, or
``--out PATH``): environment, settings, floors, the issue's targets and ``results``, a list of
``{"dataset", "solver", "nfe", "metric", "value"}`` records; one plot per dataset beside it
(``quality_<dataset>.png``). The last stdout line is the record as one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from _common import arguments, environment, finish, make_record, ring_mixture

import ersde_jax as ej
import ersde_jax.diffrax as ejd

SWD_PROJECTIONS = 128
IMPERFECT_STD_SCALE, IMPERFECT_RHO = 2.0, 0.5
FLOOR_REPEATS = 5
RING_WEIGHTS = np.linspace(1.0, 2.0, 8)  # of the eight modes of the gmm problems

# Settings of the full run and of --quick: NFE budgets per dataset, sizes, and the samplers
# (a filter per dataset). The digits model costs ~0.4 s of CPU per NFE for 900 images, so digits
# stops at NFE 50 and leaves out ddim, diffrax_euler and diffrax_heun, which are exactly
# er_sde_1_ode and edm_heun (on any path; the gmm rows show the equality to round-off).
CONFIGS = {
    "full": dict(
        quick=False, nfes=dict(gmm=(5, 10, 20, 50, 100), digits=(5, 10, 20, 50),
                               restoration=(5, 10, 20, 50, 100)),
        gmm_samples=50_000, gmm_pf_ode_samples=5000, digits_per_class=90, restoration_images=None,
        # Extra digits runs of the stochastic samplers at these NFE (the FD's seed spread), and
        # a few samplers run on toward their common limit (NFE 100, 200).
        spread_seeds=4, spread_budgets=(10, 20), limit_nfes=(100, 200),
        limit_samplers=("er_sde_3", "er_sde_3_ode", "edm_stochastic", "euler_maruyama",
                        "diffrax_euler_sde"),
        samplers=dict(digits=lambda name: name not in ("ddim", "diffrax_euler", "diffrax_heun")),
    ),
    "quick": dict(
        quick=True, nfes=dict(gmm=(5,), digits=(5,), restoration=(5,)),
        gmm_samples=512, gmm_pf_ode_samples=512, digits_per_class=4, restoration_images=16,
        spread_seeds=1, spread_budgets=(5,), limit_nfes=(), limit_samplers=(),
        samplers=dict(gmm=lambda name: name in ("er_sde_3", "er_sde_3_ode", "diffrax_heun"),
                      default=lambda name: name == "er_sde_3"),
    ),
}
DATASETS = ("gmm", "digits", "restoration")  # gmm also writes gmm_imperfect


# ----------------------------------------------------------------------------------- samplers


class Problem(NamedTuple):
    """What a sampler needs: the model, the start, the path's mean and conditioning, the grid."""

    model: ej.Model
    x_T: Any
    mu: Any
    cond: Any
    grid: Callable  # grid(path, steps) -> steps + 1 decreasing model times


class Sampler(NamedTuple):
    stochastic: bool
    run: Callable  # run(key, problem, budget) -> (x, nfe)


def library(solver) -> Sampler:
    """A solver of the library on the one driver, with the most steps that fit the budget."""

    def run(key, p: Problem, budget: int):
        steps = solver.steps_for_nfe(budget)
        res = ej.sample(key, p.model, p.x_T, solver, timesteps=p.grid(p.model.path, steps),
                        mu=p.mu, cond=p.cond)
        return res.x, int(res.nfe)

    return Sampler(solver.stochastic, run)


@functools.cache
def _diffrax_program(solver_name: str, noise_scale: str | None, t_start: float, rho: tuple):
    """Jitted diffrax solve through the noise levels ``rho``, then one denoising call."""
    solver = getattr(diffrax, solver_name)()
    rho_max, rho_min = rho[0], rho[-1]

    @jax.jit
    def solve(key, model, x_T, mu, cond):
        y0, _ = ejd.to_state(model.path, x_T, t_start, mu)
        if noise_scale is None:
            terms = ejd.pf_ode_term(model, mu=mu, cond=cond)
        else:
            terms = ejd.er_sde_terms(key, model, noise_scale, shape=y0.shape, rho_max=rho_max,
                                     rho_min=rho_min, mu=mu, cond=cond, dtype=y0.dtype)
        ts = jnp.asarray(rho, y0.dtype)
        sol = diffrax.diffeqsolve(terms, solver, rho_max, rho_min, None, y0,
                                  stepsize_controller=diffrax.StepTo(ts), max_steps=len(rho) - 1)
        return ejd.denoise_state(model, sol.ys[-1], rho_min, mu=mu, cond=cond)

    return solve


def diffrax_program(solver_name: str, evals_per_step: int, noise_scale, path, grid, budget):
    """The jitted diffrax sampler ``fn(key, model, x_T, mu, cond)`` for an NFE budget, and the
    NFE it spends: ``m`` steps through the first ``m + 1`` points of ``grid(path, m + 1)``, then
    one denoising call."""
    m = max(1, (budget - 1) // evals_per_step)
    t = grid(path, m + 1)[:-1]
    rho = tuple(float(r) for r in _eval64(lambda t: path.sigma(t) / path.alpha(t), t))
    return _diffrax_program(solver_name, noise_scale, float(t[0]), rho), evals_per_step * m + 1


def diffrax_sampler(solver_name: str, evals_per_step: int, noise_scale: str | None = None):
    """A diffrax solver on ``ersde_jax.diffrax`` terms (PF-ODE, or the ER SDE of
    ``noise_scale``), on the problem's grid."""

    def run(key, p: Problem, budget: int):
        fn, nfe = diffrax_program(solver_name, evals_per_step, noise_scale, p.model.path, p.grid,
                                  budget)
        return fn(key, p.model, p.x_T, p.mu, p.cond), nfe

    return Sampler(noise_scale is not None, run)


def _eval64(fn, t):
    with jax.enable_x64(True):
        return np.asarray(fn(jnp.asarray(t, jnp.float64)), np.float64)


def samplers(path) -> dict[str, Sampler]:
    """Every sampler of the benchmark by record name (see the module docstring)."""
    try:
        ej.euler_maruyama().check_path(path)
        euler_maruyama = library(ej.euler_maruyama())
    except ValueError:  # not VP-like (EDM): the same reverse SDE through diffrax
        euler_maruyama = diffrax_sampler("Euler", 1, "sde")
    return {
        **{f"er_sde_{k}": library(ej.er_sde(k, "er_sde_5")) for k in (1, 2, 3)},
        **{f"er_sde_{k}_ode": library(ej.er_sde(k, "ode")) for k in (1, 2, 3)},
        "er_sde_3_backward": library(ej.er_sde(3, "er_sde_5", derivative="backward")),
        "er_sde_3_ode_backward": library(ej.er_sde(3, "ode", derivative="backward")),
        "ddim": library(ej.ddim(0.0)),
        "ddim_eta1": library(ej.ddim(1.0)),
        "dpm_solver_pp_2m": library(ej.mr_ode(2)),
        "dpm_solver_pp_3m": library(ej.mr_ode(3, third_order="release")),
        "dpm_solver_pp_3m_taylor": library(ej.mr_ode(3)),
        "sde_dpm_solver_pp_2m": library(ej.mr_sde(2)),
        "edm_heun": library(ej.edm_heun()),
        "edm_stochastic": library(ej.edm_stochastic()),
        "euler_maruyama": euler_maruyama,
        "diffrax_euler": diffrax_sampler("Euler", 1),
        "diffrax_heun": diffrax_sampler("Heun", 2),
        "diffrax_euler_sde": diffrax_sampler("Euler", 1, "er_sde_5"),
        "diffrax_heun_sde": diffrax_sampler("Heun", 2, "er_sde_5"),
    }


# ------------------------------------------------------------------------------------ metrics


def swd_directions(key, dim: int) -> np.ndarray:
    """``ej.metrics.sliced_wasserstein``'s unit directions for ``key`` (dim, projections)."""
    d = np.asarray(jax.random.normal(key, (dim, SWD_PROJECTIONS)), np.float64)
    return d / np.linalg.norm(d, axis=0)


def swd(directions: np.ndarray, x, y) -> float:
    """Sliced 1-Wasserstein distance (``ej.metrics.sliced_wasserstein``), sorted by numpy."""
    px = np.sort(np.asarray(x, np.float64) @ directions, axis=0)
    py = np.sort(np.asarray(y, np.float64) @ directions, axis=0)
    return float(np.mean(np.abs(px - py)))


def check_swd(key) -> None:
    """The numpy SWD equals the library's on a small case."""
    x, y = jax.random.normal(jax.random.key(11), (2, 300, 2))
    ours = swd(swd_directions(key, 2), x, y)
    theirs = float(ej.metrics.sliced_wasserstein(key, x, y, SWD_PROJECTIONS))
    if not math.isclose(ours, theirs, rel_tol=1e-4):
        raise AssertionError(f"numpy SWD {ours} != ej.metrics.sliced_wasserstein {theirs}")


# ----------------------------------------------------------------------------------- problems


def _mixture_apply(params, x, t, cond):
    """Exact posterior mean of ``exact``, moved toward the wide mixture's by ``strength b(rho)``.

    ``b(rho) = rho^2 / (rho^2 + IMPERFECT_RHO^2)``; ``strength = 0`` is the exact denoiser (both
    problems share one function, so they share compiled samplers).
    """
    del cond
    exact, wide, strength = params
    path = ej.paths.edm()
    alpha, sigma = path.alpha(t), path.sigma(t)
    rho2 = (sigma / alpha) ** 2
    b = strength * rho2 / (rho2 + IMPERFECT_RHO**2)
    posterior = lambda m: ej.testing.mixture_posterior_mean(m, x, alpha, sigma)  # noqa: E731
    exact_mean = posterior(exact)
    return exact_mean + b * (posterior(wide) - exact_mean)


def karras_grid(path, steps):
    return ej.timesteps.karras(path, steps)


def gmm_rows(config, nfes, names, key) -> tuple[list[dict], dict]:
    """``gmm`` and ``gmm_imperfect`` records and the floor and reference checks."""
    n, n_ode = config["gmm_samples"], config["gmm_pf_ode_samples"]
    path = ej.paths.edm()
    exact, wide = ring_mixture(RING_WEIGHTS), ring_mixture(RING_WEIGHTS, IMPERFECT_STD_SCALE)
    models = {name: ej.Model(_mixture_apply, (exact, wide, jnp.asarray(strength)), path=path,
                             prediction="x0")
              for name, strength in (("gmm", 0.0), ("gmm_imperfect", 1.0))}
    k_x, k_ref, k_floor, k_sample, k_swd = jax.random.split(key, 5)
    x_T = ej.prior_sample(k_x, path, (n, 2), dtype=jnp.float32)
    data, _ = ej.testing.mixture_sample(k_ref, exact, n)
    directions = swd_directions(k_swd, 2)
    # The floor: SWD between the reference set and independent exact sets of the same size.
    floors = [swd(directions, data, ej.testing.mixture_sample(k, exact, n)[0])
              for k in jax.random.split(k_floor, FLOOR_REPEATS)]
    reference = pf_ode_reference(exact, x_T[:n_ode])
    rmse = lambda x: float(np.sqrt(np.mean(np.sum((x - reference) ** 2, -1))))  # noqa: E731
    table = samplers(path)
    rows = []
    for dataset, model in models.items():
        problem = Problem(model, x_T, None, None, karras_grid)
        rows.append(record(dataset, "exact_samples", 0, "swd", np.mean(floors)))
        for name in names:
            sampler = table[name]
            for budget in nfes:
                x, nfe = sampler.run(k_sample, problem, budget)
                rows.append(record(dataset, name, nfe, "swd", swd(directions, data, x)))
                if dataset == "gmm" and not sampler.stochastic:
                    x = np.asarray(x[:n_ode], np.float64)
                    rows.append(record(dataset, name, nfe, "pf_ode_rmse", rmse(x)))
            print(f"  {dataset} {name} done", flush=True)
    info = dict(samples=n, pf_ode_samples=n_ode, swd_floor=dict(
        mean=float(np.mean(floors)), std=float(np.std(floors, ddof=1)), values=floors))
    if not config["quick"]:  # the reference against ER-SDE-3 at 2000 steps, float64
        with jax.enable_x64(True):
            x = ej.sample(None, ej.testing.mixture_model(_float64(exact), path),
                          jnp.asarray(x_T[:n_ode], jnp.float64), ej.er_sde(3, "ode"),
                          steps=2000).x
        info["reference_vs_er_sde_3_ode_2000_steps_rmse"] = rmse(np.asarray(x))
    return rows, info


def _float64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def pf_ode_reference(mixture, x_T) -> np.ndarray:
    """The exact PF-ODE solution from ``x_T`` to sigma_min, denoised, in float64 (diffrax
    Dopri8, rtol = atol = 1e-12; the exact denoiser of ``mixture`` on the EDM path)."""
    path = ej.paths.edm()
    with jax.enable_x64(True):
        model = ej.testing.mixture_model(_float64(mixture), path)
        rho_max, rho_min = float(path.t_max), float(path.t_min)  # EDM: rho = sigma = t

        @jax.jit
        def solve(x_T):
            y0, _ = ejd.to_state(path, x_T, path.t_max)
            sol = diffrax.diffeqsolve(
                ejd.pf_ode_term(model), diffrax.Dopri8(), rho_max, rho_min, -1.0, y0,
                stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
                max_steps=100_000)
            return ejd.denoise_state(model, sol.ys[-1], rho_min)

        return np.asarray(solve(jnp.asarray(x_T, jnp.float64)))


def record(dataset, solver, nfe, metric, value) -> dict:
    return dict(dataset=dataset, solver=solver, nfe=int(nfe), metric=metric, value=float(value))


def digits_rows(config, nfes, names, key) -> tuple[list[dict], dict]:
    """``digits`` records (digits FD) and the seed spread of the stochastic samplers."""
    model = ej.pretrained.digits_model()
    per_class = config["digits_per_class"]
    labels = jnp.repeat(jnp.arange(10), per_class)
    k_x, k_sample = jax.random.split(key)
    x_T = ej.prior_sample(k_x, model.path, (labels.shape[0], 8, 8, 1), dtype=jnp.float32)
    problem = Problem(model, x_T, None, labels, karras_grid)
    table = samplers(model.path)
    floor = float(ej.pretrained.digits_fd_floor())
    rows = [record("digits", "real_data", 0, "digits_fd", floor)]
    # Every sampler at every budget, then a few run on toward where they converge (the model's
    # own distribution): which NFE-20 differences are solver accuracy and which are errors that
    # happen to offset the model's.
    runs = [(name, budget) for name in names for budget in nfes]
    runs += [(name, budget) for name in config["limit_samplers"] if name in names
             for budget in config["limit_nfes"]]
    for name, budget in runs:
        x, nfe = table[name].run(k_sample, problem, budget)
        rows.append(record("digits", name, nfe, "digits_fd", ej.pretrained.digits_fd(x)))
        print(f"  digits {name:22s} NFE {nfe:4d}  FD {rows[-1]['value']:.3f}", flush=True)
    # The leading samplers differ by less than the FD's own seed spread, so every stochastic
    # sampler also runs from other starts and keys (the same ones for all samplers).
    starts = []  # (problem, sampler key) per extra seed
    for seed in range(1, config["spread_seeds"] + 1):
        k_x, k_seed = jax.random.split(jax.random.fold_in(key, seed))
        start = ej.prior_sample(k_x, model.path, x_T.shape, dtype=jnp.float32)
        starts.append((problem._replace(x_T=start), k_seed))
    seeds = {}
    for budget in config["spread_budgets"]:
        seeds[str(budget)] = {}
        for name in (n for n in names if table[n].stochastic):
            values = [at_budget(rows, "digits", name, "digits_fd", budget)["value"]]
            for seeded, k_seed in starts:
                x, _ = table[name].run(k_seed, seeded, budget)
                values.append(float(ej.pretrained.digits_fd(x)))
            seeds[str(budget)][name] = values
            print(f"  digits {name:22s} NFE {budget} over seeds: {np.round(values, 2)}",
                  flush=True)
    return rows, dict(digits_fd_floor=floor, images=int(labels.shape[0]), seeds=seeds)


def restoration_rows(config, nfes, names, key) -> tuple[list[dict], dict]:
    """``restoration`` records (mean PSNR in dB over the held-out images)."""
    model = ej.pretrained.restoration_digits()
    clean, degraded = ej.pretrained.restoration_digits_data("test")
    if config["restoration_images"]:
        clean = clean[: config["restoration_images"]]
        degraded = degraded[: config["restoration_images"]]
    mu = jnp.asarray(degraded)
    k_x, k_sample = jax.random.split(key)
    x_T = ej.prior_sample(k_x, model.path, mu.shape, mu=mu, dtype=jnp.float32)
    grid = lambda path, steps: ej.mr_grid(path, steps, "linspace")  # noqa: E731
    problem = Problem(model, x_T, mu, None, grid)
    table = samplers(model.path)
    psnr = lambda x: float(jnp.mean(ej.metrics.psnr(x, clean)))  # noqa: E731
    rows = [record("restoration", "degraded_input", 0, "psnr", psnr(mu))]
    for name in names:
        for budget in nfes:
            x, nfe = table[name].run(k_sample, problem, budget)
            rows.append(record("restoration", name, nfe, "psnr", psnr(x)))
    return rows, dict(images=int(clean.shape[0]))


# ------------------------------------------------------------------------------ targets, I/O


def at_budget(rows, dataset, solver, metric, budget):
    """The record of ``solver`` at NFE ``budget`` or, for Heun-type samplers, ``budget - 1``."""
    key = (dataset, solver, metric)
    found = [r for r in rows if (r["dataset"], r["solver"], r["metric"]) == key
             and budget - 1 <= r["nfe"] <= budget]
    return max(found, key=lambda r: r["nfe"]) if found else None


def ranking(scores: dict[str, list[float]], noise_values=None) -> dict:
    """Samplers ranked by mean score (lower is better), with standard errors and ties.

    A sampler ties with the best when the difference of the two means lies within the two-sided
    95% Student-t interval of that difference: from the spread of the paired differences over
    seeds (all samplers share starts and keys) or, for single runs, from ``noise_values``, single
    measurements whose spread is that of one score (e.g. the floor's repeats).
    """
    means = {n: float(np.mean(v)) for n, v in scores.items()}
    order = sorted(means, key=means.get)
    best = order[0]
    runs = len(scores[best])
    noise = float(np.std(noise_values, ddof=1)) if noise_values is not None else None

    def interval(name):
        if runs > 1:
            d = np.asarray(scores[name]) - np.asarray(scores[best])
            return float(np.std(d, ddof=1) / np.sqrt(runs)) * scipy.stats.t.ppf(0.975, runs - 1)
        if noise is None:
            return 0.0
        return math.sqrt(2.0) * noise * scipy.stats.t.ppf(0.975, len(noise_values) - 1)

    ses = {n: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else noise
           for n, v in scores.items()}
    ties = [n for n in order if means[n] - means[best] <= interval(n)]
    return dict(ranking=order, values={n: means[n] for n in order},
                standard_errors={n: ses[n] for n in order}, runs=runs, tied_with_best=ties,
                er_sde_3_is_best=best == "er_sde_3", er_sde_3_ties_best="er_sde_3" in ties)


def targets(rows, info, stochastic: dict[str, bool], budget: int = 20) -> dict:
    """The issue's targets at NFE 20 (left out where the run lacks the records), and the
    stochastic rankings at every NFE the digits seed spread covers."""
    out = {}
    ours = at_budget(rows, "gmm", "er_sde_3_ode", "pf_ode_rmse", budget)
    heun = at_budget(rows, "gmm", "diffrax_heun", "pf_ode_rmse", budget)
    if ours and heun:
        ratio = ours["value"] / heun["value"]
        out["gmm_er_sde_3_ode_vs_diffrax_heun"] = dict(
            er_sde_3_ode=ours["value"], diffrax_heun=heun["value"], diffrax_heun_nfe=heun["nfe"],
            ratio=ratio, target="<= 0.1", met=ratio <= 0.1)
    swd_noise = info.get("gmm", {}).get("swd_floor", {}).get("values")
    problems = [("gmm", "swd", budget, swd_noise), ("gmm_imperfect", "swd", budget, swd_noise)]
    problems += [("digits", "digits_fd", int(b), None) for b in info.get("digits", {}).get(
        "seeds", {})]
    for dataset, metric, nfe, noise in problems:
        seeds = info.get(dataset, {}).get("seeds", {}).get(str(nfe))
        scores = seeds or {name: [r["value"]] for name, is_sde in stochastic.items() if is_sde
                           for r in [at_budget(rows, dataset, name, metric, nfe)] if r}
        if scores:
            out[f"{dataset}_best_stochastic_at_nfe_{nfe}"] = dict(metric=metric,
                                                                  **ranking(scores, noise))
    return out


def print_tables(rows) -> None:
    """One table per (dataset, metric): samplers by row, NFE by column."""
    for dataset, metric in dict.fromkeys((r["dataset"], r["metric"]) for r in rows):
        sel = [r for r in rows if (r["dataset"], r["metric"]) == (dataset, metric)]
        nfes = sorted({r["nfe"] for r in sel if r["nfe"] > 0})
        print(f"\n{dataset}: {metric}")
        for name in dict.fromkeys(r["solver"] for r in sel):
            by_nfe = {r["nfe"]: r["value"] for r in sel if r["solver"] == name}
            if 0 in by_nfe:
                print(f"  {name:22s} {by_nfe[0]:.4g} (reference level)")
                continue
            cells = " ".join(f"{n:>4d}:{by_nfe[n]:9.4g}" for n in nfes if n in by_nfe)
            print(f"  {name:22s} {cells}")


def plot(rows, dataset: str, stochastic: dict[str, bool], png: Path) -> None:
    """Quality against NFE for one dataset: one panel per metric, one colour per sampler (the
    same in every plot), ODE samplers dashed; reference levels dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {name: plt.cm.tab20(i % 20) for i, name in enumerate(stochastic)}
    sel = [r for r in rows if r["dataset"] == dataset]
    metrics = list(dict.fromkeys(r["metric"] for r in sel))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 2.5, 4.6),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        part = [r for r in sel if r["metric"] == metric]
        levels = []
        for name in dict.fromkeys(r["solver"] for r in part):
            pts = sorted((r["nfe"], r["value"]) for r in part if r["solver"] == name)
            if pts[0][0] == 0:
                ax.axhline(pts[0][1], color="black", ls=":", lw=1.5, label=name)
                levels.append(pts[0][1])
                continue
            ax.plot(*zip(*pts, strict=True), marker="o" if stochastic[name] else "s", ms=3,
                    lw=1.3, color=colours[name], ls="-" if stochastic[name] else "--",
                    label=name)
        ax.set_xscale("log")
        if metric != "psnr":
            ax.set_yscale("log")
            low = min([r["value"] for r in part] + levels)
            ax.set_ylim(0.7 * low, min(ax.get_ylim()[1], 30 * max(levels or [low]) + 3))
        else:
            ax.set_ylim(max(ax.get_ylim()[0], min(levels or [0]) - 3), ax.get_ylim()[1])
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="center right", fontsize=7)
    fig.suptitle(f"{dataset}: quality against NFE (dashed: ODE samplers; dotted: reference "
                 "level; axes clipped)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 2.3 / (5.5 * len(metrics) + 2.5), 1))
    fig.savefig(png, dpi=100)
    plt.close(fig)


def cpu_seconds() -> float:
    """CPU time of this process (all threads): on a shared machine, steadier than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


ROWS = dict(gmm=gmm_rows, digits=digits_rows, restoration=restoration_rows)


def run(quick: bool, datasets) -> tuple[dict, dict[str, bool]]:
    """Runs the problems of ``datasets`` and returns the record and which samplers are
    stochastic."""
    start = time.perf_counter()
    config = CONFIGS["quick" if quick else "full"]
    table = samplers(ej.paths.edm())
    stochastic = {name: s.stochastic for name, s in table.items()}
    keys = dict(zip(DATASETS, jax.random.split(jax.random.key(0), len(DATASETS)), strict=True))
    check_swd(jax.random.key(1))
    info, rows = {}, []
    for dataset in datasets:
        t0, cpu0, load0 = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
        keep = config["samplers"].get(dataset, config["samplers"].get("default", bool))
        names = [name for name in table if keep(name)]
        nfes = config["nfes"][dataset]
        new, info[dataset] = ROWS[dataset](config, nfes, names, keys[dataset])
        info[dataset].update(
            nfe_budgets=list(nfes), samplers=names, date=environment()["date"],
            seconds=round(time.perf_counter() - t0, 1), cpu_seconds=round(cpu_seconds() - cpu0, 1),
            load_average_1min=dict(start=load0, end=os.getloadavg()[0]))
        rows += new
        print(f"{dataset}: {len(new)} records in {info[dataset]['seconds']} s "
              f"({info[dataset]['cpu_seconds']} s CPU)", flush=True)
    record_ = make_record(
        "quality",
        quick,
        settings=dict(swd_projections=SWD_PROJECTIONS, floor_repeats=FLOOR_REPEATS,
                      imperfect=dict(std_scale=IMPERFECT_STD_SCALE, blend_rho=IMPERFECT_RHO)),
        info=info,
        seconds=round(time.perf_counter() - start, 1),
        results=rows,
    )
    return record_, stochastic


def merge(record_: dict, previous: dict) -> dict:
    """Keeps the datasets of ``previous`` (an earlier full run) that this run did not redo."""
    redone = set(record_["info"])
    owner = lambda r: "gmm" if r["dataset"].startswith("gmm") else r["dataset"]  # noqa: E731
    kept = [r for r in previous.get("results", []) if owner(r) not in redone]
    info = {k: v for k, v in previous.get("info", {}).items() if k not in redone}
    return dict(record_, info=dict(info, **record_["info"]), results=kept + record_["results"])


def dataset_list(text: str) -> list[str]:
    """``--datasets``: a comma-separated subset of :data:`DATASETS`."""
    datasets = text.split(",")
    if unknown := set(datasets) - set(DATASETS):
        raise argparse.ArgumentTypeError(
            f"unknown datasets {sorted(unknown)}; choose from {DATASETS}")
    return datasets


def summary(record_: dict, out: Path, stochastic: dict[str, bool]) -> None:
    """One plot per dataset beside the record, the tables and the targets."""
    for dataset in dict.fromkeys(r["dataset"] for r in record_["results"]):
        plot(record_["results"], dataset, stochastic,
             out.with_name(f"{out.stem}_{dataset}.png"))
    print_tables(record_["results"])
    print(json.dumps(record_["targets"], indent=1))


def main() -> None:
    args = arguments("quality", __doc__, "NFE 5, small sizes, 1-3 samplers", lambda parser: (
        parser.add_argument("--datasets", type=dataset_list, default=DATASETS,
                            help=f"comma-separated subset of {','.join(DATASETS)} (default: all); "
                                 "a full run merges them into the existing results file")))
    record_, stochastic = run(args.quick, args.datasets)
    if not args.quick and args.out.exists():
        record_ = merge(record_, json.loads(args.out.read_text()))
    record_["targets"] = targets(record_["results"], record_["info"], stochastic)
    finish(record_, args.out, functools.partial(summary, stochastic=stochastic))

if __name__ == "__main__":
    main()
