"""Command line: ``python -m ersde_jax demo --out DIR`` (also the ``ersde-jax`` script)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ersde-jax`` command."""
    parser = argparse.ArgumentParser(prog="ersde-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample the bundled digits model and compare solvers")
    demo.add_argument("--out", default="demo_out", help="output directory")
    demo.add_argument("--quick", action="store_true", help="a reduced run (for tests)")
    args = parser.parse_args(argv)
    from .pretrained._demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
