"""Generation benchmark: samples/s of ``ej.generate`` against devices, processes, batch size.

The bundled digits model (8x8x1, class-conditional), the default sampler (ER-SDE-Solver-3,
"er_sde_5"), balanced labels. Each job writes the full output (shards, ``samples.npz``, PNG,
manifest) into a temporary directory; ``samples_per_s`` is the manifest's: samples over the
sampling time of process 0, from the end of its compile to the last shard on disk (so it
includes the device-to-host copies and the shard writes, not the compile, which is
``compile_s``). ``wall_s`` is the whole job, imports and compile included.

On CPU (``jax.default_backend() == "cpu"``), each job runs in fresh processes:

* ``devices``: one process with 1, 2, 4, 8 forced host devices
  (``--xla_force_host_platform_device_count``), the same global batch split over them;
* ``processes``: 1 and 2 processes (``jax.distributed`` on localhost, one device each), the
  same per-process batch. One process is the same job as one device, run again: the two rows
  show the run-to-run noise.

Each job runs ``rounds`` times (2; the rounds alternate the jobs) and the best samples/s is
kept. ``speedup`` is relative to the first row and ``efficiency = speedup / devices`` (or
``/ processes``). Forced host devices and processes share the machine's cores: on a 2-core
machine no speedup above 2 is possible, and other busy processes inflate every time (the record
carries the 1-minute load average before and after).

On a GPU, one device: ``batches``, samples/s of one process against the batch size (N = 8
batches, at least 131072 samples; the forced-host-device sweep does not apply). No timing is
asserted.

Run from the repository root::

    python benchmarks/generate.py                  # CPU: N = 2048, batch 64, 20 steps
    python benchmarks/generate.py --quick          # N = 128, batch 32, 5 steps, 1-2 devices
    PYTHONPATH=. python3 benchmarks/generate.py --out benchmarks/results/generate_gpu.json
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
from _common import arguments, finish, make_record

import ersde_jax as ej

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "full": dict(num_samples=2048, batch_size=64, steps=20, devices=(1, 2, 4, 8),
                 processes=(1, 2), rounds=2, gpu_batches=(256, 1024, 4096, 16384, 65536),
                 gpu_samples=131072),
    "quick": dict(num_samples=128, batch_size=32, steps=5, devices=(1, 2), processes=(1, 2),
                  rounds=1, gpu_batches=(256, 1024), gpu_samples=8192),
}


def _timings(manifest: dict) -> dict:
    return {key: manifest[key] for key in ("samples_per_s", "compile_s", "sampling_s")}


def cpu_job(num_samples: int, batch_size: int, steps: int, devices: int,
            processes: int) -> dict:
    """One ``ersde-jax generate`` job in fresh processes: its timings, or its error."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ersde_jax", "generate", "--model", "digits",
                   "--num-samples", str(num_samples), "--batch-size", str(batch_size),
                   "--steps", str(steps), "--quiet", "--out", out]
        if processes > 1:
            with socket.socket() as s:
                s.bind(("localhost", 0))
                port = s.getsockname()[1]
            command += ["--coordinator", f"localhost:{port}", "--num-processes", str(processes)]
        start = time.perf_counter()
        procs = [subprocess.Popen(command + (["--process-id", str(i)] if processes > 1 else []),
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(processes)]
        errors = [proc.communicate(timeout=3600)[1] for proc in procs]
        wall_s = round(time.perf_counter() - start, 2)
        failed = [err for proc, err in zip(procs, errors, strict=True) if proc.returncode]
        if failed:
            return dict(error=(failed[0].strip().splitlines() or ["no message"])[-1])
        manifest = json.loads((Path(out) / "manifest.json").read_text())
    return dict(_timings(manifest), wall_s=wall_s)


def gpu_job(num_samples: int, batch_size: int, steps: int) -> dict:
    """One ``ej.generate`` job in this process (one GPU)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = ej.generate("digits", num_samples, out=out, batch_size=batch_size, steps=steps,
                               progress=False)
        return dict(_timings(manifest), wall_s=round(time.perf_counter() - start, 2))


def with_scaling(rows: list[dict], unit: str) -> list[dict]:
    """Adds ``speedup`` (over the first row) and ``efficiency`` (speedup per ``unit``)."""
    base = rows[0].get("samples_per_s")
    for row in rows:
        if base and "samples_per_s" in row:
            row["speedup"] = round(row["samples_per_s"] / base, 3)
            row["efficiency"] = round(row["speedup"] / (row[unit] / rows[0][unit]), 3)
    return rows


def print_table(record_: dict, out) -> None:
    del out
    for name, unit in (("devices", "devices"), ("processes", "processes"),
                       ("batches", "batch_size")):
        for row in record_.get(name, ()):
            if "error" in row:
                print(f"  {unit} {row[unit]:>6}: failed: {row['error']}")
            else:
                scaling = (f"speedup {row['speedup']:5.2f}  efficiency {row['efficiency']:5.2f}  "
                           if "speedup" in row else "")
                print(f"  {unit} {row[unit]:>6}: {row['samples_per_s']:10.1f} samples/s  "
                      f"{scaling}compile {row['compile_s']:.1f} s")


def main() -> None:
    args = arguments("generate", __doc__, "N = 128, 5 steps, 1-2 devices / batch sizes")
    config = CONFIGS["quick" if args.quick else "full"]
    n, batch, steps = config["num_samples"], config["batch_size"], config["steps"]
    load_before = os.getloadavg()[0]
    fields = dict(model="digits", sampler="ej.er_sde() (ER-SDE-Solver-3, er_sde_5)", steps=steps)
    if jax.default_backend() == "cpu":
        jobs = [("devices", d, 1) for d in config["devices"]]
        jobs += [("processes", 1, p) for p in config["processes"]]
        rounds = [[cpu_job(n, batch, steps, devices=d, processes=p) for _, d, p in jobs]
                  for _ in range(config["rounds"])]  # rounds alternate the jobs: the same load
        rows = {"devices": [], "processes": []}
        for k, (name, d, p) in enumerate(jobs):
            results = [results_[k] for results_ in rounds]
            best = max(results, key=lambda r: r.get("samples_per_s", 0))
            rows[name].append(dict({name: d if name == "devices" else p}, num_samples=n,
                                   batch_size=batch, **best,
                                   samples_per_s_rounds=[r.get("samples_per_s") for r in results]))
        fields |= dict(rounds=config["rounds"], devices=with_scaling(rows["devices"], "devices"),
                       processes=with_scaling(rows["processes"], "processes"))
    else:
        fields["batches"] = [dict(batch_size=b, num_samples=max(8 * b, config["gpu_samples"]),
                                  **gpu_job(max(8 * b, config["gpu_samples"]), b, steps))
                             for b in config["gpu_batches"]]
    fields |= dict(load_average_1min=dict(before=load_before, after=os.getloadavg()[0]))
    finish(make_record("generate", args.quick, **fields), args.out, print_table)


if __name__ == "__main__":
    main()
