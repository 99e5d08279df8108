"""Every benchmark script runs with --quick and prints one JSON object as its last line; the
quality benchmark's ranking statistics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402


@pytest.mark.parametrize(
    "script",
    ["speed.py", "mr_restoration.py", "convergence.py", "tuned.py", "flow_grids.py"])
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
        assert [r["batch"] for r in record["throughput"]] == [1, 32]
        assert all(r["samples_per_s"] > 0 for r in record["throughput"])
        versus = record["versus_diffrax"]
        for name, row in versus["solvers"].items():
            assert 0 < row["nfe"] <= versus["nfe_budget"] and row["time_s"] > 0, name
            assert ("relative_rmse" in row) == (not row["stochastic"]), name
    elif script == "convergence.py":
        assert all(np.isfinite(r["order"]) for r in record["results"])
    elif script == "flow_grids.py":
        grids = {row["grid"] for row in record["results"]}
        assert grids == {"karras", "uniform_t", "shifted_t", "uniform_lambda"}
        assert all(np.isfinite(row["value"]) for row in record["results"])
    elif script == "tuned.py":
        assert out.with_suffix(".png").stat().st_size > 10_000
        for row in record["results"]:
            assert row["ratio"] == pytest.approx(row["tuned"] / row["baseline"], rel=1e-12)
            rho = np.asarray(row["tuned_setting"]["rho"])
            assert rho.shape == (row["nfe"] + 1,) and np.all(np.diff(rho) < 0) and rho[-1] == 0
    else:
        assert out.with_suffix(".png").stat().st_size > 10_000
        degraded = record["results"][0]
        assert degraded["solver"] == "degraded_input"
        best = max(r["psnr"] for r in record["results"])
        assert best > degraded["psnr"] + 2.0


def test_quality_quick(tmp_path):
    """quality.py --quick: one JSON object last, records of the schema, plots, sane values."""
    out = tmp_path / "quality.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, check=True, timeout=900, cwd=ROOT,
    )
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == record
    assert record["quick"] and record["versions"]["jax"] and record["date"]
    rows = record["results"]
    for row in rows:
        assert set(row) == {"dataset", "solver", "nfe", "metric", "value"}, row
        assert isinstance(row["nfe"], int) and 0 <= row["nfe"] <= 5 and np.isfinite(row["value"])
    datasets = {r["dataset"] for r in rows}
    assert datasets == {"gmm", "gmm_imperfect", "digits", "restoration"}
    for dataset in datasets:
        assert out.with_name(f"quality_{dataset}.png").stat().st_size > 10_000
    value = {(r["dataset"], r["solver"], r["metric"]): r["value"] for r in rows}
    # Only the deterministic samplers are scored against the exact PF-ODE solution.
    assert ("gmm", "er_sde_3_ode", "pf_ode_rmse") in value
    assert ("gmm", "er_sde_3", "pf_ode_rmse") not in value
    # ER-SDE-3 is well above the sampling floor at 5 NFE yet far from failing, and restores.
    floor = value["gmm", "exact_samples", "swd"]
    assert floor < value["gmm", "er_sde_3", "swd"] < 1.0
    assert value["restoration", "er_sde_3", "psnr"] > value[
        "restoration", "degraded_input", "psnr"] + 2.0
    # The digits seed spread runs (one extra seed) and feeds the stochastic ranking.
    spread = record["info"]["digits"]["seeds"]["5"]["er_sde_3"]
    assert len(spread) == 2 and spread[0] == value["digits", "er_sde_3", "digits_fd"]
    ranked = record["targets"]["digits_best_stochastic_at_nfe_5"]
    assert ranked["runs"] == 2 and ranked["values"]["er_sde_3"] == pytest.approx(np.mean(spread))


def test_ranking_ties_use_the_paired_t_interval():
    """Paired differences over shared seeds decide ties, not the (much larger) seed effect."""
    seed = np.array([0.0, 10.0, -10.0, 5.0, -5.0])
    scores = {"a": 20 + seed, "b": 21 + seed + [0, 0.1, -0.1, 0.05, -0.05],
              "c": 20.2 + seed + [1.0, -1.0, 1.0, -1.0, 0.0]}
    out = quality.ranking({k: list(v) for k, v in scores.items()})
    assert out["ranking"] == ["a", "c", "b"] and out["runs"] == 5
    t = scipy.stats.t.ppf(0.975, 4)
    for name in "bc":
        d = scores[name] - scores["a"]
        tied = d.mean() <= t * d.std(ddof=1) / np.sqrt(5)
        assert (name in out["tied_with_best"]) == tied
    assert out["tied_with_best"] == ["a", "c"]  # b is 1.0 behind on every seed: not tied
    assert out["standard_errors"]["b"] == pytest.approx(np.std(scores["b"], ddof=1) / np.sqrt(5))


def test_ranking_of_single_runs_uses_the_noise_of_one_measurement():
    noise = [0.9, 1.1, 1.0, 0.8, 1.2]  # std 0.158; 95% interval of a difference: 0.62
    out = quality.ranking({"a": [10.0], "b": [10.5], "c": [10.8]}, noise_values=noise)
    half_width = np.sqrt(2) * np.std(noise, ddof=1) * scipy.stats.t.ppf(0.975, 4)
    assert 0.5 < half_width < 0.8
    assert out["tied_with_best"] == ["a", "b"] and not out["er_sde_3_is_best"]


def test_benchmark_networks_have_the_sizes_of_the_issue():
    """UNet >= 30M parameters on 64x64x3, DiT >= 100M on 32x32x4 (8 output channels: learned
    variance), decoder to 256x256x3; all parameters bfloat16 (shapes only, nothing allocated)."""
    import jax
    import jax.numpy as jnp
    import networks

    def inputs(shape):
        return (jax.ShapeDtypeStruct((2, *shape), jnp.bfloat16),
                jax.ShapeDtypeStruct((2,), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32))

    for module, shape, channels, minimum in ((networks.UNet(), (64, 64, 3), 3, 30e6),
                                             (networks.DiT(), (32, 32, 4), 8, 100e6)):
        out, variables = jax.eval_shape(module.init_with_output, jax.random.key(0),
                                        *inputs(shape))
        assert networks.param_count(variables) >= minimum, type(module).__name__
        dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)}
        assert dtypes == {jnp.dtype(jnp.bfloat16)}
        assert out.shape == (2, *shape[:2], channels)
    latent = jax.ShapeDtypeStruct((2, 32, 32, 4), jnp.float32)
    image, _ = jax.eval_shape(networks.Decoder().init_with_output, jax.random.key(0), latent)
    assert image.shape == (2, 256, 256, 3)


def test_device_script_quick(tmp_path):
    """benchmarks/device.sh --quick on CPU: tiny networks and the conv stack, records written to
    --out-dir and naming the device; NCHW and NHWC convolutions agree."""
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device.sh"), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "speed_gpu_quick.json").read_text())
    assert record["quick"] and record["networks_run"]["device"]["platform"] == "cpu"
    assert [r["name"] for r in record["networks"]] == ["unet", "dit"]
    for row in record["networks"]:
        assert row["params"] > 0 and row["dtype"] == "bfloat16" and row["finite"], row["name"]
        assert row["overhead_ratio"] > 0 and row["compile_ratio"] > 0 and row["memory_ratio"] > 0
        assert row["peak_bytes_sampler"] > row["state_bytes"] > 0
        assert [t["batch"] for t in row["throughput"]] == [2]
    assert "decoder" in record["networks"][1]
    layout = record["layout"]["results"]
    assert layout["float32"]["max_abs_difference"] < 1e-4
    assert layout["bfloat16"]["max_abs_difference"] < 0.1
    if (ROOT / "benchmarks" / "generate.py").exists():
        generate = json.loads((tmp_path / "generate_gpu_quick.json").read_text())
        assert generate["device"]["platform"] == "cpu"
    else:
        assert "does not exist yet; skipped" in proc.stdout
