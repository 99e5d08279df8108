"""The demo runs end to end (reduced) and writes a valid PNG and a JSON summary."""

import importlib.metadata
import json
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

import ersde_jax as ej
import ersde_jax.__main__
from ersde_jax.pretrained._demo import DEFAULT, GRID_COLUMNS, QUICK_SAMPLES, QUICK_SOLVERS


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "ersde_jax", "demo", "--out", str(out), "--quick"],
        capture_output=True, text=True, check=True, timeout=600,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    png = out / "samples.png"
    assert summary["png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    image = matplotlib.image.imread(png)  # 10 rows of GRID_COLUMNS digits, 0.6 x 0.55 in at 100 dpi
    assert image.shape[:2] == (600, 55 * GRID_COLUMNS) and np.std(image[..., :3]) > 0.05
    assert summary["image_size"] == 28 and summary["images"] == QUICK_SAMPLES
    assert summary["fd_floor"] == pytest.approx(ej.pretrained.mnist_fd_floor(QUICK_SAMPLES))
    assert summary["fd"] > 0 and summary["seconds"] > 0
    assert summary["nfe"] == 20 and summary["solver"] == DEFAULT
    results = json.loads((out / "demo.json").read_text())["results"]
    assert {(r["solver"], r["nfe"]) for r in results} == {
        (solver, nfe) for solver in QUICK_SOLVERS for nfe in (10, 20)}
    assert [r["fd"] for r in results if r["solver"] == DEFAULT and r["nfe"] == 20] == [
        summary["fd"]]


def test_console_script_entry_point():
    (script,) = [entry for entry in importlib.metadata.entry_points(group="console_scripts")
                 if entry.name == "ersde-jax"]
    assert script.value == "ersde_jax.__main__:main"
    assert script.load() is ersde_jax.__main__.main
