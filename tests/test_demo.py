"""The demo runs end to end (reduced) and writes a valid PNG and a JSON summary."""

import json
import subprocess
import sys


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
    assert 0 < summary["fd_floor"] < summary["fd"] and summary["seconds"] > 0
    assert summary["nfe"] == 20 and summary["solver"] == "er-sde-3, er_sde_5 (default)"
    results = json.loads((out / "demo.json").read_text())["results"]
    assert {r["solver"] for r in results} >= {"er-sde-3, er_sde_5 (default)"}
