#!/usr/bin/env python3
"""Project tasks that work on a fresh machine with only python3: ``demo``, ``test``, ``lint``.

Each task creates ``.venv`` (once, and again when pyproject.toml changes), installs the package
with its test extras into it, and runs inside it.

    python3 dev.py demo [--out DIR]   # the demo on the bundled default model
    python3 dev.py test [pytest args] # ruff, then the test suite (parallel workers)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if sys.platform == "win32" else "bin")
STAMP = VENV / ".installed"


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_env() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        _run(sys.executable, "-m", "venv", VENV)
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[test]")
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "lint"):
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    ensure_env()
    try:
        if task == "demo":
            _run(BIN / "python", "-m", "ersde_jax", "demo", *(rest or ["--out", "demo_out"]))
        else:
            _run(BIN / "ruff", "check", ".")
            if task == "test":
                # Tests run in parallel worker processes (pytest-xdist), at most 4.
                _run(BIN / "python", "-m", "pytest",
                     *(rest or ["-q", "-n", "auto", "--maxprocesses", "4"]))
    except subprocess.CalledProcessError as err:
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
