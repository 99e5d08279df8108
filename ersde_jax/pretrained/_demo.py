"""The demo: the bundled class-conditional digits model sampled by ER-SDE-Solvers and baselines.

Draws one balanced set of digits per solver and NFE from the same starting noise, measures the
digits Fréchet distance (FD) of each set to real digits, prints the table beside the real data's
own floor, and writes a labelled grid (one row per class) of the default sampler's digits:
ER-SDE-Solver-3 with ``phi = er_sde_5`` at 20 NFE (Cui et al., section 4).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._path import prior_sample
from .._samplers import ersde_sample
from ._fd import DIGITS_FD_SAMPLES, digits_fd, digits_fd_floor
from ._models import digits_model

DEFAULT = "er-sde-3, er_sde_5 (default)"
SOLVERS = {  # name: (order, noise scale)
    "ddim (er-sde-1, ode)": (1, "ode"),
    "er-sde-3, ode": (3, "ode"),
    "ancestral (er-sde-1, sde)": (1, "sde"),
    "er-sde-1, er_sde_5": (1, "er_sde_5"),
    DEFAULT: (3, "er_sde_5"),
}
QUICK_SOLVERS = ("ddim (er-sde-1, ode)", DEFAULT)
DEFAULT_NFE = 20
GRID_COLUMNS = 12


def run_demo(out: str, quick: bool = False) -> dict:
    """Runs the demo, writes ``out/samples.png`` and ``out/demo.json``; returns the summary.

    Args:
        out: output directory (created if needed).
        quick: fewer images (200), solvers (``QUICK_SOLVERS``) and NFEs (10, 20), for tests;
            the FDs are then biased upwards and not comparable to the floor.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    nfes = (10, 20) if quick else (10, 20, 50)
    n = 200 if quick else DIGITS_FD_SAMPLES
    model = digits_model()
    labels = jnp.arange(n) % 10
    k_noise, k_sample = jax.random.split(jax.random.key(0))
    x_T = prior_sample(k_noise, model.path, (n, 8, 8, 1), dtype=jnp.float32)
    floor = digits_fd_floor()

    solvers = QUICK_SOLVERS if quick else tuple(SOLVERS)
    runs = [(solver, nfe) for solver in solvers for nfe in nfes]
    results, shown = [], None
    for solver, nfe in tqdm(runs, desc="digits FD", unit="run"):
        order, scale = SOLVERS[solver]
        run = jax.jit(lambda k, m, x, y, o=order, s=scale, steps=nfe: ersde_sample(
            k, m, x, steps=steps, order=o, noise_scale=s, cond=y))
        images = run(k_sample, model, x_T, labels)
        results.append(dict(solver=solver, nfe=nfe, fd=digits_fd(images)))
        if solver == DEFAULT and nfe == DEFAULT_NFE:
            shown = np.asarray(images)

    _print_table(results, solvers, nfes, floor, n)
    png = out_dir / "samples.png"
    _plot(png, shown, np.asarray(labels))
    summary = dict(
        png=str(png),
        fd=next(r["fd"] for r in results if r["solver"] == DEFAULT and r["nfe"] == DEFAULT_NFE),
        fd_floor=floor,
        solver=DEFAULT,
        nfe=DEFAULT_NFE,
        images=n,
        seconds=round(time.perf_counter() - start, 2),
        results=results,
    )
    (out_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
    return summary


def _print_table(results, solvers, nfes, floor, n):
    print(f"\nDigits FD of {n} class-balanced samples to real digits (lower is better); "
          f"floor between two halves of the real digits: {floor:.2f}")
    print(f"{'solver':32s}" + "".join(f"  NFE {k:<4d}" for k in nfes))
    for solver in solvers:
        row = [r["fd"] for r in results if r["solver"] == solver]
        print(f"{solver:32s}" + "".join(f"  {v:8.2f}" for v in row))
    print()


def _plot(png: Path, images: np.ndarray, labels: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(10, GRID_COLUMNS, figsize=(GRID_COLUMNS * 0.55, 10 * 0.6))
    for digit in range(10):
        row = images[labels == digit][:GRID_COLUMNS]
        for col, ax in enumerate(axes[digit]):
            if col < len(row):
                ax.imshow(row[col, :, :, 0], cmap="gray_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[digit, 0].set_ylabel(str(digit), rotation=0, labelpad=10, fontsize=11)
    fig.suptitle(f"{DEFAULT}, NFE {DEFAULT_NFE}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(png, dpi=100)
    plt.close(fig)
