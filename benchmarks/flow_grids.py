"""Time grids on rectified-flow paths: which one to make the default (issue 18, part 3).

Every grid starts at ``t_max = 0.999`` of ``ej.paths.flow()`` (where sampling starts today), calls
the network last at its ``t_min = 1e-3`` and ends at the clean time ``t = 0`` (the denoising step):

* ``karras``: ``ej.timesteps.karras``, uniform in ``rho^(1/7)``, ``rho = sigma/alpha = t/(1-t)``
  from 999 to 0.001 (the library's default on every path);
* ``uniform_t``: ``ej.timesteps.uniform_t``;
* ``shifted_t``: SD3's shifted uniform grid (Esser et al. 2024), ``t = s u / (1 + (s - 1) u)``
  with ``s = 3`` and ``u`` uniform between the unshifted images of ``t_max`` and ``t_min``
  (:func:`shifted_uniform_t`, local: the library lacks it);
* ``uniform_lambda``: ``ej.timesteps.uniform_lambda``, uniform in ``log(alpha/sigma)``.

Solvers: ``er_sde_3`` (``ej.er_sde(3, "er_sde_5")``, the library's default), ``er_sde_3_ode``,
``dpm_solver_pp_2m`` (``ej.mr_ode(2)``: with ``mu = 0`` the data-prediction MR ODE solver is
DPM-Solver++(2M), MATH.md section 4; ``ej.er_sde(2, "ode")`` is another second-order rule, a
Taylor expansion in ``rho`` rather than in ``lambda``, and differs from it) and ``ddim``
(``ej.ddim(0.0)``), each at NFE 5, 10, 20 and 50 from the same starts and keys on every grid.

Problems (``dataset`` in the records):

* ``gaussian``: ``N(0.7, 0.3^2)`` in one dimension, its exact x0-predicting denoiser on the flow
  path, float32 samples of ``N(0, 1)`` starts. ``exact_mean`` / ``exact_var``: the exact mean and
  variance of the discrete sampler's output law (``ej.testing.gaussian_sampler_moments``, float64:
  no Monte-Carlo error); ``mean`` / ``var``: the same from the samples, with standard errors
  ``sd / sqrt(n)`` and ``var sqrt(2 / (n - 1))`` (``se``). The truth is 0.7 and 0.09.
* ``gmm``: the ring of eight 2-D Gaussians of ``benchmarks/quality.py`` (weights 1 : ... : 2) with
  its exact denoiser on the flow path. ``swd``: sliced 1-Wasserstein distance to exact samples
  (quality.py's definition, 128 directions; floor: between exact sample sets of the same size,
  mean and spread over 5 repeats); ``pf_ode_rmse`` (deterministic solvers): RMS distance to the
  probability-flow ODE's solution from the same start (ER-SDE-3 ODE at 4000 steps on the
  uniform-lambda grid, float64; its distance to the same at 4000 steps on the uniform-t grid is
  recorded as its error); ``second_moment``: ``E|x|^2`` of the samples (exact: 4 + 2 E[s^2]),
  with standard error.
* ``digits``: the bundled digits model (``ej.pretrained.digits_model()``, trained on
  ``ej.paths.edm()``) sampled through the flow path. A denoiser on one Gaussian path serves any
  other through ``rho = sigma/alpha``: the flow model's x0 prediction at ``(x_t, t)`` is the EDM
  model's at ``(x_t / alpha_t, sigma = t / (1 - t))`` (:func:`flow_digits_model`). ``digits_fd``:
  ``ej.pretrained.digits_fd`` of 500 class-balanced samples (50 per class; ``info.digits``); the
  floor is the FD of 500 real training digits, 50 per class. At NFE 10 and 20 every sampler also
  runs from four more starts and keys (``info.digits.seeds``: five values, the same starts for
  every grid). The flow start ``t = 0.999`` calls the network at ``rho = 999``, above the EDM
  model's ``sigma_max = 80``; it has seen neither (its training noise is log-normal around 0.3).

``summary`` ranks the grids per problem, metric, solver and NFE 10 and 20 (gaussian:
``|exact_var - 0.09|``; gmm: ``swd`` and ``pf_ode_rmse``; digits: the mean FD over the five
seeds), with the grids tied with the best, and counts each grid's firsts (``wins``).

Run from the repository root::

    python benchmarks/flow_grids.py            # full: ~17 minutes on 2 CPU cores
    python benchmarks/flow_grids.py --quick    # NFE 5, two solvers, small sizes: ~30 s of CPU

Writes ``benchmarks/results/flow_grids.json`` (``flow_grids_quick.json`` with ``--quick``, or
``--out PATH``) and a plot beside it; the last stdout line is the record as one JSON object.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import arguments, finish, make_record, ring_mixture
from quality import RING_WEIGHTS, ranking, swd, swd_directions

import ersde_jax as ej

MEAN, STD = 0.7, 0.3  # the one Gaussian
SHIFT = 3.0  # SD3's shift
FLOOR_REPEATS = 5

# ``compare_nfes``: where the digits run from every seed and ``summary`` ranks the grids.
CONFIGS = {
    "full": dict(nfes=(5, 10, 20, 50), compare_nfes=(10, 20), solvers=None,
                 gaussian_samples=100_000, gmm_samples=50_000, gmm_reference_samples=5000,
                 reference_steps=4000, digits_per_class=50, digits_seeds=5),
    "quick": dict(nfes=(5,), compare_nfes=(5,), solvers=("er_sde_3", "ddim"),
                  gaussian_samples=2000, gmm_samples=1000, gmm_reference_samples=200,
                  reference_steps=100, digits_per_class=2, digits_seeds=2),
}


GRIDS = {
    "karras": ej.timesteps.karras,
    "uniform_t": ej.timesteps.uniform_t,
    "shifted_t": functools.partial(ej.timesteps.shifted_uniform_t, shift=SHIFT),
    "uniform_lambda": ej.timesteps.uniform_lambda,
}

SOLVERS = {
    "er_sde_3": ej.er_sde(3, "er_sde_5"),
    "er_sde_3_ode": ej.er_sde(3, "ode"),
    "dpm_solver_pp_2m": ej.mr_ode(2),
    "ddim": ej.ddim(0.0),
}


def record(dataset, solver, grid, nfe, metric, value, se=None) -> dict:
    row = dict(dataset=dataset, solver=solver, grid=grid, nfe=int(nfe), metric=metric,
               value=float(value))
    if se is not None:
        row["se"] = float(se)
    return row


def runs(config):
    """Every (solver name, solver, grid name, NFE), grids innermost (they share a compilation)."""
    for name, solver in SOLVERS.items():
        if config["solvers"] is not None and name not in config["solvers"]:
            continue
        for nfe in config["nfes"]:
            for grid in GRIDS:
                yield name, solver, grid, nfe


def grid_of(path, grid: str, nfe: int) -> np.ndarray:
    return GRIDS[grid](path, nfe)


# ----------------------------------------------------------------------------------- problems


def gaussian_rows(config, key) -> list[dict]:
    path = ej.paths.flow()
    mixture = ej.testing.GaussianMixture(jnp.ones(1), jnp.full((1, 1), MEAN), jnp.full((1,), STD))
    model = ej.testing.mixture_model(mixture, path)
    n = config["gaussian_samples"]
    k_x, k_sample = jax.random.split(key)
    x_T = ej.prior_sample(k_x, path, (n, 1), dtype=jnp.float32)
    rows = []
    for name, solver, grid, nfe in runs(config):
        ts = grid_of(path, grid, nfe)
        mean, var = ej.testing.gaussian_sampler_moments(solver, path, ts, MEAN, STD, 0.0,
                                                        path.prior_std())
        x = np.asarray(ej.sample(k_sample, model, x_T, solver, timesteps=ts).x, np.float64)[:, 0]
        m, v = x.mean(), x.var(ddof=1)
        rows += [record("gaussian", name, grid, nfe, "exact_mean", mean),
                 record("gaussian", name, grid, nfe, "exact_var", var),
                 record("gaussian", name, grid, nfe, "mean", m, np.sqrt(v / n)),
                 record("gaussian", name, grid, nfe, "var", v, v * np.sqrt(2 / (n - 1)))]
    return rows


def _float64(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def gmm_rows(config, key) -> tuple[list[dict], dict]:
    path = ej.paths.flow()
    mixture = ring_mixture(RING_WEIGHTS)
    model = ej.testing.mixture_model(mixture, path)
    n, n_ref = config["gmm_samples"], config["gmm_reference_samples"]
    k_x, k_ref, k_floor, k_sample, k_swd = jax.random.split(key, 5)
    x_T = ej.prior_sample(k_x, path, (n, 2), dtype=jnp.float32)
    data, _ = ej.testing.mixture_sample(k_ref, mixture, n)
    directions = swd_directions(k_swd, 2)
    floors = [swd(directions, data, ej.testing.mixture_sample(k, mixture, n)[0])
              for k in jax.random.split(k_floor, FLOOR_REPEATS)]
    # The PF-ODE's solution from the first n_ref starts, and its error: the same solver on
    # another grid.
    with jax.enable_x64(True):
        model64 = ej.testing.mixture_model(_float64(mixture), path)
        start = jnp.asarray(x_T[:n_ref], jnp.float64)
        steps = config["reference_steps"]
        refs = [np.asarray(ej.sample(None, model64, start, ej.er_sde(3, "ode"),
                                     timesteps=GRIDS[g](path, steps)).x)
                for g in ("uniform_lambda", "uniform_t")]
    rmse = lambda x, y: float(np.sqrt(np.mean(np.sum((x - y) ** 2, -1))))  # noqa: E731
    w, m, s = (np.asarray(a, np.float64) for a in mixture)
    second_moment = float(np.sum(w * (np.sum(m**2, 1) + 2 * s**2)))
    rows = []
    for name, solver, grid, nfe in runs(config):
        x = np.asarray(ej.sample(k_sample, model, x_T, solver, timesteps=grid_of(path, grid, nfe)
                                 ).x, np.float64)
        r2 = np.sum(x**2, 1)
        rows += [record("gmm", name, grid, nfe, "swd", swd(directions, data, x)),
                 record("gmm", name, grid, nfe, "second_moment", r2.mean(),
                        r2.std(ddof=1) / np.sqrt(n))]
        if not solver.stochastic:
            rows.append(record("gmm", name, grid, nfe, "pf_ode_rmse", rmse(x[:n_ref], refs[0])))
    info = dict(samples=n, pf_ode_samples=n_ref, exact_second_moment=second_moment,
                swd_floor=dict(mean=float(np.mean(floors)), std=float(np.std(floors, ddof=1)),
                               values=floors),
                pf_ode_reference=dict(solver="er_sde_3_ode", steps=config["reference_steps"],
                                      grid="uniform_lambda",
                                      rmse_to_uniform_t_grid=rmse(refs[0], refs[1])))
    return rows, info


@functools.cache
def flow_digits_model() -> ej.Model:
    """The EDM digits model as an x0-predicting model on ``ej.paths.flow()``.

    At flow time ``t`` (``alpha = 1 - t``, ``sigma = t``), ``x_t / alpha`` is an EDM state at noise
    level ``rho = t / (1 - t)`` with the same clean image, so the x0 prediction carries over.
    """
    edm = ej.pretrained.digits_model()
    edm_apply = edm.apply_fn

    def apply_fn(params, x, t, cond):
        alpha = 1.0 - t
        return edm_apply(params, x / alpha, t / alpha, cond)

    return ej.Model(apply_fn, edm.params, path=ej.paths.flow(), prediction="x0")


def balanced_training_digits(per_class: int) -> np.ndarray:
    """The first ``per_class`` real digits of each class from the model's training half."""
    images, labels = (np.asarray(a)[ej.pretrained.GENERATIVE_HALF]
                      for a in ej.pretrained.digits_data())
    return np.concatenate([images[labels == k][:per_class] for k in range(10)])


def digits_rows(config, key) -> tuple[list[dict], dict]:
    model = flow_digits_model()
    per_class = config["digits_per_class"]
    labels = jnp.repeat(jnp.arange(10), per_class)
    floor = float(ej.pretrained.digits_fd(balanced_training_digits(per_class)))
    starts = []
    for seed in range(config["digits_seeds"]):
        k_x, k_sample = jax.random.split(jax.random.fold_in(key, seed))
        starts.append((ej.prior_sample(k_x, model.path, (labels.shape[0], 8, 8, 1),
                                       dtype=jnp.float32), k_sample))
    rows, seeds = [], {}
    for name, solver, grid, nfe in runs(config):
        ts = grid_of(model.path, grid, nfe)
        values = []
        for x_T, k_sample in starts[: len(starts) if nfe in config["compare_nfes"] else 1]:
            x = ej.sample(k_sample, model, x_T, solver, timesteps=ts, cond=labels).x
            values.append(float(ej.pretrained.digits_fd(x)))
        rows.append(record("digits", name, grid, nfe, "digits_fd", values[0]))
        if len(values) > 1:
            seeds.setdefault(str(nfe), {}).setdefault(name, {})[grid] = values
        print(f"  digits {name:18s} {grid:15s} NFE {nfe:3d}  FD {np.round(values, 2)}",
              flush=True)
    return rows, dict(images=int(labels.shape[0]), digits_fd_floor=floor, seeds=seeds)


# ------------------------------------------------------------------------------------ summary


def _score(rows, dataset, metric, solver, grid, nfe, transform=lambda v: v):
    found = [r for r in rows if (r["dataset"], r["metric"], r["solver"], r["grid"], r["nfe"])
             == (dataset, metric, solver, grid, nfe)]
    return transform(found[0]["value"]) if found else None


def summarize(rows, info, nfes) -> dict:
    """Grids ranked per (problem, metric, solver, NFE), lower is better, with the grids tied with
    the best (quality.py's rule: the 95% t-interval of the paired differences over the digits
    seeds, or of the SWD floor's spread; the exact variance and the PF-ODE error have no noise).
    ``wins`` counts the firsts of each grid."""
    criteria = [("gaussian", "exact_var", lambda v: abs(v - STD**2)), ("gmm", "swd", abs),
                ("gmm", "pf_ode_rmse", abs), ("digits", "digits_fd", abs)]
    seeds = info.get("digits", {}).get("seeds", {})
    swd_noise = info.get("gmm", {}).get("swd_floor", {}).get("values")
    out, wins = {}, {g: 0 for g in GRIDS}
    for dataset, metric, transform in criteria:
        for solver in SOLVERS:
            for nfe in nfes:
                spread = seeds.get(str(nfe), {}).get(solver) if dataset == "digits" else None
                scores = spread or {g: [_score(rows, dataset, metric, solver, g, nfe, transform)]
                                    for g in GRIDS}
                scores = {g: v for g, v in scores.items() if None not in v}
                if not scores:
                    continue
                ranked = ranking(scores, swd_noise if metric == "swd" else None)
                wins[ranked["ranking"][0]] += 1
                out[f"{dataset}/{metric}/{solver}/nfe_{nfe}"] = {
                    k: ranked[k] for k in ("ranking", "values", "tied_with_best", "runs")}
    return dict(rankings=out, wins=wins)


def print_tables(rows, info) -> None:
    """One table per (problem, metric, solver): grids by row, NFE by column."""
    keys = dict.fromkeys((r["dataset"], r["metric"], r["solver"]) for r in rows)
    for dataset, metric, solver in keys:
        sel = [r for r in rows if (r["dataset"], r["metric"], r["solver"]) == (dataset, metric,
                                                                               solver)]
        nfes = sorted({r["nfe"] for r in sel})
        print(f"\n{dataset} {metric} {solver}")
        for grid in GRIDS:
            cells = []
            for nfe in nfes:
                r = [r for r in sel if (r["grid"], r["nfe"]) == (grid, nfe)][0]
                se = f"+-{r['se']:.2g}" if "se" in r else ""
                cells.append(f"{nfe:>3d}: {r['value']:.4g}{se}")
            print(f"  {grid:15s} " + "  ".join(cells))
    if "gmm" in info:
        print(f"\ngmm swd floor {info['gmm']['swd_floor']['mean']:.4g} "
              f"+- {info['gmm']['swd_floor']['std']:.2g}; exact second moment "
              f"{info['gmm']['exact_second_moment']:.4g}")
    if "digits" in info:
        print(f"digits FD floor ({info['digits']['images']} real images): "
              f"{info['digits']['digits_fd_floor']:.4g}")


def plot(record_, png) -> None:
    """One row per problem metric, one column per solver, one line per grid; floors dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, info = record_["results"], record_["info"]
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    nfes = sorted({r["nfe"] for r in rows})
    floors = dict(swd=info.get("gmm", {}).get("swd_floor", {}).get("mean"),
                  digits_fd=info.get("digits", {}).get("digits_fd_floor"))
    panels = [("gaussian", "exact_var", "|variance error| (exact)", lambda v: abs(v - STD**2)),
              ("gmm", "swd", "SWD to exact samples", abs),
              ("gmm", "pf_ode_rmse", "RMSE to the PF-ODE solution", abs),
              ("digits", "digits_fd", "digits FD (first seed)", abs)]
    panels = [p for p in panels if any(r["dataset"] == p[0] for r in rows)]
    fig, axes = plt.subplots(len(panels), len(solvers), squeeze=False,
                             figsize=(3.6 * len(solvers), 2.9 * len(panels)))
    for row_axes, (dataset, metric, label, transform) in zip(axes, panels, strict=True):
        for ax, solver in zip(row_axes, solvers, strict=True):
            for grid in GRIDS:
                pts = sorted((r["nfe"], transform(r["value"])) for r in rows
                             if (r["dataset"], r["metric"], r["solver"], r["grid"])
                             == (dataset, metric, solver, grid))
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=grid)
            if not ax.lines:  # a metric of the deterministic solvers only
                ax.set_axis_off()
                continue
            if floors.get(metric) is not None:
                ax.axhline(floors[metric], color="black", ls=":", lw=1, label="floor")
            ax.set(xscale="log", yscale="log", title=f"{dataset}: {solver}", xlabel="NFE",
                   ylabel=label)
            ax.set_xticks(nfes, [str(n) for n in nfes], minor=False)
            ax.set_xticks([], minor=True)
    axes[1 if len(panels) > 1 else 0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=70)
    plt.close(fig)


def main() -> None:
    args = arguments("flow_grids", __doc__, "NFE 5 and 10, small sizes")
    config = CONFIGS["quick" if args.quick else "full"]
    key = jax.random.key(0)
    k_gauss, k_gmm, k_digits = jax.random.split(key, 3)
    timings, info = {}, {}
    start = time.perf_counter()
    rows = gaussian_rows(config, k_gauss)
    timings["gaussian"] = time.perf_counter() - start
    print(f"gaussian done ({timings['gaussian']:.0f} s)", flush=True)
    start = time.perf_counter()
    gmm, info["gmm"] = gmm_rows(config, k_gmm)
    timings["gmm"] = time.perf_counter() - start
    print(f"gmm done ({timings['gmm']:.0f} s)", flush=True)
    start = time.perf_counter()
    digits, info["digits"] = digits_rows(config, k_digits)
    timings["digits"] = time.perf_counter() - start
    rows += gmm + digits
    record_ = make_record(
        "flow_grids", args.quick,
        settings=dict(config, path="flow(t_min=1e-3, t_max=0.999)", shift=SHIFT,
                      gaussian=dict(mean=MEAN, std=STD), grids=list(GRIDS),
                      solvers={k: repr(v) for k, v in SOLVERS.items()}),
        seconds=timings, info=info, summary=summarize(rows, info, config["compare_nfes"]),
        results=rows)

    def summary(rec, out):
        print_tables(rec["results"], rec["info"])
        print(f"\nbest grid at NFE {config['compare_nfes']} (firsts):", rec["summary"]["wins"])
        plot(rec, out.with_suffix(".png"))

    finish(record_, args.out, summary)


if __name__ == "__main__":
    main()
