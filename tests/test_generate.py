"""ej.generate and ``ersde-jax generate``: samples depend on the global index only (batch size,
device count, process count, restarts), a run killed with SIGKILL resumes to the same file with
no index twice and none missing, and bad input fails with one line before anything is written.

The equality bound (XLA may round differently at different batch shapes): the uint8 arrays
agree in at least 99.9% of values and never differ by more than 1; labels agree exactly.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import matplotlib.image
import numpy as np
import pytest

import ersde_jax as ej

N, STEPS, SEED = 60, 4, 3  # N: the last batch is padded at every batch size used
ARGS = ["--num-samples", str(N), "--steps", str(STEPS), "--seed", str(SEED), "--quiet"]
SLOW_MODEL = textwrap.dedent("""
    import time
    import jax
    import ersde_jax as ej

    def slow_digits():
        '''The digits model, 0.05 s slower per network call: a run long enough to kill.'''
        model = ej.pretrained.digits_model()

        def apply_fn(params, x, t, cond):
            jax.debug.callback(lambda: time.sleep(0.05))
            return model.apply_fn(params, x, t, cond)

        return ej.Model(apply_fn, model.params, path=model.path, prediction=model.prediction), 10
""")


def _env(tmp_path_factory, devices: int = 1) -> dict:
    cache = tmp_path_factory.getbasetemp() / "jax_cache"  # one compile per program across runs
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _cli(*args, env, cwd=None, wait=True):
    command = [sys.executable, "-m", "ersde_jax", "generate", *map(str, args)]
    proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def assert_same_samples(a_dir, b_dir):
    with np.load(a_dir / "samples.npz") as a, np.load(b_dir / "samples.npz") as b:
        np.testing.assert_array_equal(a["arr_1"], b["arr_1"])
        x, y = a["arr_0"].astype(int), b["arr_0"].astype(int)
    assert x.shape == y.shape
    assert np.abs(x - y).max() <= 1
    assert np.mean(x == y) >= 0.999


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, one device, batch 32."""
    out = tmp_path_factory.mktemp("reference")
    ej.generate("digits", N, out=out, batch_size=32, seed=SEED, steps=STEPS, progress=False)
    return out


def test_output_files_and_batch_size_invariance(reference, tmp_path):
    with np.load(reference / "samples.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert images.dtype == np.uint8 and images.shape == (N, 8, 8, 1)
    np.testing.assert_array_equal(labels, np.arange(N) % 10)
    assert images.std() > 30  # not blank
    grid = matplotlib.image.imread(reference / "samples.png")  # 6 rows of 10, 1-pixel gaps, x4
    assert grid.shape == (4 * (6 * 9 + 1), 4 * (10 * 9 + 1))
    tile = np.round(grid[4:36, 40:72] * 255).astype(np.uint8)  # sample 1
    np.testing.assert_array_equal(tile, images[1, :, :, 0].repeat(4, 0).repeat(4, 1))
    assert not (reference / "shards").exists()
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["settings"]["num_samples"] == N and manifest["samples_resumed"] == 0
    assert manifest["samples_per_s"] > 0 and manifest["versions"]["jax"]

    ej.generate("digits", N, out=tmp_path, batch_size=8, seed=SEED, steps=STEPS, progress=False)
    assert_same_samples(reference, tmp_path)


def test_other_seed_other_samples(reference, tmp_path):
    ej.generate("digits", 8, out=tmp_path, batch_size=8, seed=SEED + 1, steps=STEPS,
                progress=False)
    with np.load(reference / "samples.npz") as a, np.load(tmp_path / "samples.npz") as b:
        assert np.mean(a["arr_0"][:8] != b["arr_0"]) > 0.1
        np.testing.assert_array_equal(a["arr_1"][:8], b["arr_1"])


def test_guidance_weight_one_is_the_conditional_model(reference, tmp_path):
    ej.generate("digits", 8, out=tmp_path, batch_size=8, seed=SEED, steps=STEPS, guidance=1.0,
                progress=False)
    with np.load(reference / "samples.npz") as a, np.load(tmp_path / "samples.npz") as b:
        x, y = a["arr_0"][:8].astype(int), b["arr_0"].astype(int)
        np.testing.assert_array_equal(a["arr_1"][:8], b["arr_1"])
    assert np.abs(x - y).max() <= 1 and np.mean(x == y) >= 0.99  # out_u + (out_c - out_u)


def test_device_count_invariance(reference, tmp_path, tmp_path_factory):
    """Four forced host devices (batch 16, four samples per device) give the same file."""
    code, _, err = _cli(*ARGS, "--batch-size", 16, "--out", tmp_path,
                        env=_env(tmp_path_factory, devices=4))
    assert code == 0, err[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["devices_per_process"] == 4
    assert_same_samples(reference, tmp_path)


def test_two_processes_equal_one(reference, tmp_path, tmp_path_factory):
    """jax.distributed on localhost: two processes with two CPU devices each (gloo)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path_factory, devices=2)
    procs = [_cli(*ARGS, "--batch-size", 8, "--out", tmp_path, "--coordinator", f"localhost:{port}",
                  "--num-processes", 2, "--process-id", i, "--init-timeout", 60, env=env,
                  wait=False) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["devices_per_process"] == 2
    assert_same_samples(reference, tmp_path)


def test_sigkill_then_resume(reference, tmp_path, tmp_path_factory, monkeypatch):
    """Killed after two of eight batches, the run refuses to restart without --resume, then
    finishes the other six; the model is the user's own (``module:function``)."""
    (tmp_path / "slow_digits_module.py").write_text(SLOW_MODEL)
    monkeypatch.syspath_prepend(tmp_path)
    out = tmp_path / "out"
    model = "slow_digits_module:slow_digits"
    args = [*ARGS, "--model", model, "--shape", "8,8,1", "--batch-size", 8, "--out", out]
    env = _env(tmp_path_factory)
    proc = _cli(*args, env=env, cwd=tmp_path, wait=False)
    deadline = time.monotonic() + 300
    while len(list((out / "shards").glob("shard-*.npz"))) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists() and not (out / "samples.npz").exists()
    ranges = sorted(tuple(int(v) for v in p.stem.split("-")[1:])
                    for p in (out / "shards").glob("shard-*.npz"))
    assert 2 <= len(ranges) < -(-N // 8)
    assert all(start % 8 == 0 and stop == min(start + 8, N) for start, stop in ranges)

    kwargs = dict(out=out, batch_size=8, seed=SEED, steps=STEPS, shape=(8, 8, 1),
                  progress=False)
    with pytest.raises(ValueError, match=r"partial run .* pass resume=True \(--resume\)"):
        ej.generate(model, N, **kwargs)
    code, _, err = _cli(*args, "--resume", env=env, cwd=tmp_path)
    assert code == 0, err[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    # the done batches were not redone
    assert manifest["samples_resumed"] == sum(stop - start for start, stop in ranges)
    assert not (out / "shards").exists()
    assert_same_samples(reference, out)
    assert ej.generate(model, N, resume=True, **kwargs) == manifest  # complete: kept as it is


def test_other_settings_refuse(reference):
    with pytest.raises(ValueError, match="other settings .*seed"):
        ej.generate("digits", N, out=reference, batch_size=32, seed=SEED + 1, steps=STEPS,
                    resume=True, progress=False)
    with pytest.raises(ValueError, match="complete"):
        ej.generate("digits", N, out=reference, batch_size=32, seed=SEED, steps=STEPS,
                    progress=False)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_samples=0), ValueError, "num_samples must be >= 1"),
    (dict(num_samples=2.0), TypeError, "num_samples must be an int"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(model="imagenet"), ValueError, "Unknown model 'imagenet'"),
    (dict(model="no_such_module:f"), ValueError, "Cannot load model"),
    (dict(model=3), TypeError, "model must be"),
    (dict(labels=np.zeros(3, int)), ValueError, "labels must be 8 integers"),
    (dict(labels="random"), ValueError, "labels must be 'balanced', 'null' or an array"),
    (dict(shape=(8, 8)), ValueError, "contradicts"),
])
def test_bad_arguments_raise(tmp_path, kwargs, error, match):
    args = dict(model="digits", num_samples=8, out=tmp_path / "out", batch_size=8) | kwargs
    with pytest.raises(error, match=match):
        ej.generate(args.pop("model"), args.pop("num_samples"), progress=False, **args)
    assert not (tmp_path / "out").exists()


def test_bundled_models():
    from ersde_jax._model_registry import MODELS, resolve

    assert "digits" in MODELS
    name, spec = resolve("digits")
    assert name == "digits" and spec.shape == (8, 8, 1) and spec.num_classes == 10
    assert spec.null_label == ej.pretrained.DIGITS_NULL_LABEL


def test_guidance_needs_classes(tmp_path):
    model = ej.pretrained.digits_model()
    with pytest.raises(ValueError, match="guidance needs a class-conditional model"):
        ej.generate(model, 8, out=tmp_path, batch_size=8, shape=(8, 8, 1), guidance=2.0)
    with pytest.raises(ValueError, match="shape"):
        ej.generate(model, 8, out=tmp_path, batch_size=8)


def test_cli_bad_input_one_line(tmp_path, tmp_path_factory):
    """Each: one line on stderr, a non-zero exit, nothing written."""
    (tmp_path / "file").write_text("")
    out = tmp_path / "out"
    cases = {
        "num_samples must be >= 1": (["--num-samples", 0, "--out", out], 1),
        "not a multiple of the 2 local devices": (
            ["--num-samples", 8, "--batch-size", 3, "--out", out], 2),
        "is a file": (["--num-samples", 8, "--out", tmp_path / "file"], 1),
        "cannot reach the coordinator": (
            ["--num-samples", 8, "--out", out, "--coordinator", "localhost:1",
             "--num-processes", 2, "--process-id", 1, "--init-timeout", 1], 1),
    }
    procs = {match: _cli(*args, env=_env(tmp_path_factory, devices), wait=False)
             for match, (args, devices) in cases.items()}
    for match, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode != 0, match
        assert len(err.strip().splitlines()) == 1 and match in err, err[-2000:]
    assert not out.exists()
