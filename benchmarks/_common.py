"""What every benchmark shares: the command line, the record's environment (device, versions,
date, CPU count), writing the record, and the ring mixture two benchmarks sample."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import ersde_jax as ej

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    """Device, library versions, date and usable CPU count of this run."""
    device = jax.devices()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = dict(python=platform.python_version())
    for package in ("jax", "jaxlib", "flax", "numpy", "ersde_jax"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=dict(platform=device.platform, kind=device.device_kind),
        cpu_count=cpus,
        versions=versions,
    )


def arguments(
    benchmark: str,
    doc: str,
    quick_help: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parses ``--quick`` and ``--out`` (and whatever ``add_arguments`` adds).

    ``args.out`` defaults to ``RESULTS_DIR/<benchmark>.json`` (``<benchmark>_quick.json`` with
    ``--quick``).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help="output JSON path (default benchmarks/results/)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS_DIR / f"{benchmark}{'_quick' if args.quick else ''}.json"
    return args


def make_record(benchmark: str, quick: bool, **fields) -> dict:
    """The record of one run: its name, ``quick``, :func:`environment`, then ``fields``."""
    return dict(benchmark=benchmark, quick=quick, **environment(), **fields)


def write(record_: dict, out: Path) -> None:
    """Writes ``record_`` to ``out`` as indented JSON (creating its folder)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record_, indent=2) + "\n")


def finish(record_: dict, out: Path, summary: Callable[[dict, Path], None] | None = None) -> None:
    """Writes ``record_`` to ``out``, runs ``summary(record_, out)`` (tables, plots), and prints
    the record as one JSON object on the last stdout line."""
    write(record_, out)
    if summary is not None:
        summary(record_, out)
    print(json.dumps(record_))


def ring_mixture(
    weights=(1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0), std_scale: float = 1.0,
) -> ej.testing.GaussianMixture:
    """Eight 2-D Gaussians on a circle of radius 2, std ``0.15 std_scale``, float32.

    ``weights`` are relative (normalised here); the default is 1:2:3:4:1:2:3:4.
    """
    angles = np.arange(8) * 2 * np.pi / 8
    weights = np.asarray(weights, np.float64)
    return ej.testing.GaussianMixture(
        jnp.asarray(weights / weights.sum(), jnp.float32),
        jnp.asarray(2.0 * np.stack([np.cos(angles), np.sin(angles)], 1), jnp.float32),
        jnp.full((8,), 0.15 * std_scale, jnp.float32),
    )
