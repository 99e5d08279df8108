"""Every benchmark script runs with --quick and prints one JSON object as its last line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["speed.py", "mr_restoration.py", "convergence.py"])
def test_benchmark_quick(script, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out)],
        capture_output=True, text=True, check=True, timeout=900, cwd=ROOT,
    )
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == record
    assert record["quick"] and record["versions"]["jax"] and record["date"]
    if script == "speed.py":
        assert record["overhead_ratio"] > 0 and record["compile_ratio"] > 0
    elif script == "convergence.py":
        assert all(np.isfinite(r["order"]) for r in record["results"])
    else:
        assert out.with_suffix(".png").stat().st_size > 10_000
        degraded = record["results"][0]
        assert degraded["solver"] == "degraded_input"
        best = max(r["psnr"] for r in record["results"])
        assert best > degraded["psnr"] + 2.0
