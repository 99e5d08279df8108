"""Restoration quality against NFE on the bundled IR-SDE digits model (the MR Sampler's claim).

The bundled model (``ej.pretrained.restoration_digits``) restores 8x8 scikit-learn digits from a
2x2-average-pooled, noisy version. On the held-out images, every sampler starts from the same
``x_T = mu + max_sigma z`` (``mu`` = the degraded image) and is scored by PSNR and SSIM against
the clean images, at NFE 5, 10, 20, 50, 100:

* ``euler_maruyama``: Euler-Maruyama on the reverse SDE (the IR-SDE sampler, 100 NFE there);
* ``posterior``: posterior sampling = ER-SDE-Solver-1 with phi = x^2 on the MR path;
* ``mr_ode_1..3``, ``mr_sde_1..2``: the MR Sampler, data parameterization;
* ``er_sde_3``: ER-SDE-Solver-3 with "er_sde_5" on the MR path.

The MR Sampler's claim is measured as ``speedup``: 100 / (the smallest NFE, interpolated in
log NFE, at which the best MR solver reaches Euler-Maruyama's PSNR at 100 NFE). When a solver
already reaches it at the smallest NFE tested, the speedup is a lower bound
(``speedup_is_lower_bound``). Per-solver NFEs are in ``mr_nfe_to_match_em`` (None: never).

Run from the repository root::

    python benchmarks/mr_restoration.py [--quick]

Writes ``benchmarks/results/mr_restoration.json`` (``mr_restoration_quick.json`` with
``--quick``) and a plot beside it; the last stdout line is the record as one JSON object.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import arguments, finish, make_record

import ersde_jax as ej

SCHEDULE = "linspace"  # the MR Sampler's default grid, uniform in the index


def solvers() -> dict:
    """Name -> (solver, grid function of (path, nfe))."""
    mr_grid = lambda path, n: ej.mr_grid(path, n, SCHEDULE)  # noqa: E731
    return {
        "euler_maruyama": (ej.euler_maruyama(), mr_grid),
        "posterior": (ej.er_sde(1, "sde"), mr_grid),
        **{f"mr_ode_{k}": (ej.mr_ode(k), mr_grid) for k in (1, 2, 3)},
        **{f"mr_sde_{k}": (ej.mr_sde(k), mr_grid) for k in (1, 2)},
        "er_sde_3": (ej.er_sde(3, "er_sde_5"), mr_grid),
    }


def nfe_for(nfes, values, target) -> float | None:
    """Smallest NFE (log-linear interpolation) at which ``values`` reach ``target``."""
    for i, v in enumerate(values):
        if v >= target:
            if i == 0:
                return float(nfes[0])
            lo, hi = np.log(nfes[i - 1]), np.log(nfes[i])
            frac = (target - values[i - 1]) / (v - values[i - 1])
            return float(np.exp(lo + frac * (hi - lo)))
    return None


def run(quick: bool) -> dict:
    """Scores every solver at every NFE and returns the record."""
    start = time.perf_counter()
    nfes = (5,) if quick else (5, 10, 20, 50, 100)
    model = ej.pretrained.restoration_digits()
    clean, degraded = ej.pretrained.restoration_digits_data("test")
    if quick:
        clean, degraded = clean[:64], degraded[:64]
    mu = jnp.asarray(degraded)
    x_T = ej.prior_sample(jax.random.key(0), model.path, mu.shape, mu=mu, dtype=jnp.float32)
    key = jax.random.key(1)
    records = [
        dict(solver="degraded_input", nfe=0, psnr=float(jnp.mean(ej.metrics.psnr(mu, clean))),
             ssim=float(jnp.mean(ej.metrics.ssim(mu, clean))))
    ]
    for name, (solver, grid) in solvers().items():
        for nfe in nfes:
            ts = grid(model.path, nfe)
            run_one = jax.jit(lambda k, x, m, s, t: ej.sample(k, m, x, s, timesteps=t, mu=mu).x)
            x = run_one(key, x_T, model, solver, jnp.asarray(ts, jnp.float32))
            records.append(dict(solver=name, nfe=nfe,
                                psnr=float(jnp.mean(ej.metrics.psnr(x, clean))),
                                ssim=float(jnp.mean(ej.metrics.ssim(x, clean)))))
            print(f"  {name:15s} NFE {nfe:4d}  PSNR {records[-1]['psnr']:6.2f} dB  "
                  f"SSIM {records[-1]['ssim']:.4f}", flush=True)

    curve = lambda name: [r["psnr"] for r in records if r["solver"] == name]  # noqa: E731
    target = curve("euler_maruyama")[-1]
    mr_names = [n for n in solvers() if n.startswith("mr_")]
    needed = {n: nfe_for(nfes, curve(n), target) for n in mr_names}
    reached = {n: v for n, v in needed.items() if v is not None}
    at = lambda n: curve(n)[nfes.index(min(nfes, key=lambda k: abs(k - reached[n])))]  # noqa: E731
    best = min(reached, key=lambda n: (reached[n], -at(n))) if reached else None
    return make_record(
        "mr_restoration",
        quick,
        images=int(clean.shape[0]),
        schedule=SCHEDULE,
        nfes=list(nfes),
        results=records,
        em_psnr_at_max_nfe=target,
        mr_nfe_to_match_em=needed,
        best_mr_solver=best,
        speedup=(nfes[-1] / reached[best]) if best else None,
        speedup_is_lower_bound=bool(best) and reached[best] <= nfes[0],
        seconds=round(time.perf_counter() - start, 1),
    )


def plot(record: dict, png: Path) -> None:
    """PSNR and SSIM against NFE, one line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = dict.fromkeys(r["solver"] for r in record["results"] if r["nfe"] > 0)
    base = record["results"][0]
    for ax, metric in zip(axes, ("psnr", "ssim"), strict=True):
        for name in names:
            rows = [r for r in record["results"] if r["solver"] == name]
            ax.plot([r["nfe"] for r in rows], [r[metric] for r in rows], marker="o", label=name)
        ax.axhline(base[metric], color="gray", ls="--", label="degraded input")
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric.upper())
    axes[0].legend(fontsize=7)
    fig.suptitle(f"IR-SDE digits restoration, {record['images']} held-out images")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def summary(record: dict, out: Path) -> None:
    """The plot beside the record and the headline: MR's NFE to match Euler-Maruyama."""
    plot(record, out.with_suffix(".png"))
    print(f"EM PSNR at NFE {record['nfes'][-1]}: {record['em_psnr_at_max_nfe']:.2f} dB; "
          f"best MR solver {record['best_mr_solver']} matches it at NFE "
          f"{record['mr_nfe_to_match_em'].get(record['best_mr_solver'])}: speedup "
          f"{'>= ' if record['speedup_is_lower_bound'] else ''}{record['speedup']}")


def main() -> None:
    args = arguments("mr_restoration", __doc__, "64 images, NFE 5")
    finish(run(args.quick), args.out, summary)

if __name__ == "__main__":
    main()
