"""The demo runs end to end (reduced) and writes a valid PNG and a JSON summary."""

import importlib.metadata
import json
import subprocess
import sys

import matplotlib.image
import numpy as np

import ersde_jax.__main__
from ersde_jax.pretrained._demo import GRID_COLUMNS


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
    assert 0 < summary["fd_floor"] < summary["fd"] and summary["seconds"] > 0
    assert summary["nfe"] == 20 and summary["solver"] == "er-sde-3, er_sde_5 (default)"
    results = json.loads((out / "demo.json").read_text())["results"]
    assert {r["solver"] for r in results} >= {"er-sde-3, er_sde_5 (default)"}


def test_console_script_entry_point():
    (script,) = [entry for entry in importlib.metadata.entry_points(group="console_scripts")
                 if entry.name == "ersde-jax"]
    assert script.value == "ersde_jax.__main__:main"
    assert script.load() is ersde_jax.__main__.main
