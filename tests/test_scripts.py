"""The training scripts reproduce the bundled models' settings and write loadable weights."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "ersde_jax" / "pretrained" / "weights"
SCRIPTS = {  # script -> the weights it writes by default
    "train_digits.py": "digits_unet",
    "train_digits_classifier.py": "digits_classifier",
    "train_restoration.py": "restoration_digits",
}


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_defaults_are_the_shipped_settings(script):
    """Running a script without arguments retrains the shipped model (same settings, same file)."""
    args = vars(_load_script(script).parse_args([]))
    shipped = json.loads((WEIGHTS / f"{SCRIPTS[script]}.json").read_text())
    assert Path(args["out"]).resolve() == (WEIGHTS / f"{SCRIPTS[script]}.npz").resolve()
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
    new, old = np.load(out), np.load(WEIGHTS / "restoration_digits.npz")
    assert {k: new[k].shape for k in new.files} == {k: old[k].shape for k in old.files}
    assert all(np.all(np.isfinite(new[k])) for k in new.files)
