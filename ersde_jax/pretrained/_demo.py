"""The demo: the bundled class-conditional MNIST model sampled by ER-SDE-Solvers and baselines.

Draws one balanced set of ``DEMO_SAMPLES`` 28x28 digits per solver and NFE from the same starting
noise (seed 0), measures the MNIST Fréchet distance (FD) of each set to the 1,000 held-out
digits, prints the table beside the floor (the FD of as many real training digits), and writes a
labelled grid (one row per class) of the default sampler's digits: ER-SDE-Solver-3 with
``phi = er_sde_5`` at 20 NFE (Cui et al., section 4). One FD of 500 images moves with the
starting noise by about the gaps between the leading samplers (``benchmarks/quality.py``
measures the seed spread).
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
from ._fd import mnist_fd, mnist_fd_floor
from ._models import mnist_model

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
DEMO_SAMPLES = 500  # 50 per class: the full table takes about 1-3 minutes on 2 CPU cores
QUICK_SAMPLES = 100
IMAGE_SIZE = 28


def run_demo(out: str, quick: bool = False) -> dict:
    """Runs the demo, writes ``out/samples.png`` and ``out/demo.json``; returns the summary.

    Args:
        out: output directory (created if needed).
        quick: fewer images (``QUICK_SAMPLES``), solvers (``QUICK_SOLVERS``) and NFEs (10, 20),
            for tests; the floor is then that of as many images.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    nfes = (10, 20) if quick else (10, 20, 50)
    n = QUICK_SAMPLES if quick else DEMO_SAMPLES
    model = mnist_model()
    labels = jnp.arange(n) % 10
    k_noise, k_sample = jax.random.split(jax.random.key(0))
    x_T = prior_sample(k_noise, model.path, (n, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=jnp.float32)
    floor = mnist_fd_floor(n)

    solvers = QUICK_SOLVERS if quick else tuple(SOLVERS)
    runs = [(solver, nfe) for solver in solvers for nfe in nfes]
    results, shown = [], None
    for solver, nfe in tqdm(runs, desc="MNIST FD", unit="run"):
        order, scale = SOLVERS[solver]
        run = jax.jit(lambda k, m, x, y, o=order, s=scale, steps=nfe: ersde_sample(
            k, m, x, steps=steps, order=o, noise_scale=s, cond=y))
        images = run(k_sample, model, x_T, labels)
        results.append(dict(solver=solver, nfe=nfe, fd=mnist_fd(images)))
        if solver == DEFAULT and nfe == DEFAULT_NFE:
            shown = np.asarray(images)

    _print_table(results, solvers, nfes, floor, n)
    png = out_dir / "samples.png"
    _plot(png, shown, np.asarray(labels))
    summary = dict(
        png=str(png),
        fd=next(r["fd"] for r in results if r["solver"] == DEFAULT and r["nfe"] == DEFAULT_NFE),
        fd_floor=floor,
        image_size=IMAGE_SIZE,
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
    print(f"\nMNIST FD of {n} class-balanced samples to the 1,000 held-out digits (lower is "
          f"better); floor, the FD of {n} real training digits: {floor:.1f}")
    print(f"{'solver':32s}" + "".join(f"  NFE {k:<4d}" for k in nfes))
    for solver in solvers:
        row = [r["fd"] for r in results if r["solver"] == solver]
        print(f"{solver:32s}" + "".join(f"  {v:8.1f}" for v in row))
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
