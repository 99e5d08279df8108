"""Command line: ``python -m ersde_jax demo --out DIR`` and ``python -m ersde_jax generate ...``
(also the ``ersde-jax`` script)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

SOLVERS = ("er_sde", "mr_ode", "mr_sde", "ddim", "euler_ode", "euler_maruyama", "edm_heun",
           "edm_stochastic")
_ORDERED = ("er_sde", "mr_ode", "mr_sde")


def _add_generate(sub) -> None:
    gen = sub.add_parser(
        "generate", help="sample N images over every device and process, resumably",
        description="Samples N images with any sampler of the library, in batches, over every "
        "local device and every process (jax.distributed), and writes DIR/samples.npz (arr_0 "
        "uint8 NHWC, arr_1 labels), DIR/samples.png and DIR/manifest.json when complete.")
    gen.add_argument("--model", default="digits",
                     help="a bundled model (digits) or module:function returning an ej.Model "
                     "or (ej.Model, num_classes)")
    gen.add_argument("--num-samples", type=int, required=True, help="N")
    gen.add_argument("--batch-size", type=int, default=256,
                     help="samples per compiled call of each process, a multiple of the local "
                     "device count (default 256)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True, help="output directory")
    gen.add_argument("--shape", help="H,W,C of one sample (models that do not declare it)")
    gen.add_argument("--num-classes", type=int, help="class count (models that do not declare it)")
    gen.add_argument("--null-label", type=int, help="unconditional label (default num-classes)")
    gen.add_argument("--labels", choices=("balanced", "null"),
                     help="conditional models: label i %% num_classes (balanced, default) or the "
                     "unconditional model (null)")
    gen.add_argument("--solver", choices=SOLVERS, default="er_sde")
    gen.add_argument("--order", type=int, help="order of er_sde (3), mr_ode and mr_sde (2)")
    gen.add_argument("--noise-scale", help="noise scale of er_sde (er_sde_5; ode, sde, ...)")
    gen.add_argument("--steps", type=int, default=20, help="number of steps (default 20)")
    gen.add_argument("--guidance", type=float, help="classifier-free guidance weight")
    gen.add_argument("--resume", action="store_true", help="continue the partial run in DIR")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    dist = gen.add_argument_group(
        "multi-process", "passed to jax.distributed.initialize; each flag falls back to "
        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; on TPU pods, Slurm or Open "
        "MPI, --num-processes alone lets jax detect the rest")
    dist.add_argument("--coordinator", metavar="HOST:PORT")
    dist.add_argument("--num-processes", type=int)
    dist.add_argument("--process-id", type=int)
    dist.add_argument("--init-timeout", type=int, default=300,
                      help="seconds to wait for the coordinator (default 300)")


def _solver(args):
    import ersde_jax as ej

    if args.order is not None and args.solver not in _ORDERED:
        raise ValueError(f"--order applies to {', '.join(_ORDERED)}, not {args.solver}.")
    if args.noise_scale is not None and args.solver != "er_sde":
        raise ValueError(f"--noise-scale applies to er_sde, not {args.solver}.")
    if args.solver == "er_sde":
        return ej.er_sde(3 if args.order is None else args.order, args.noise_scale or "er_sde_5")
    if args.solver in ("mr_ode", "mr_sde"):
        return getattr(ej, args.solver)(2 if args.order is None else args.order)
    return getattr(ej, args.solver)()


def _wait_for(address: str, timeout: float) -> None:
    """Raises RuntimeError unless a TCP connection to ``address`` opens within ``timeout`` s
    (jax aborts the process when its coordinator cannot be reached)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach the coordinator {address} within {timeout} s "
                                   f"({error}).") from None
            time.sleep(0.2)


def _initialize(args) -> None:
    """``jax.distributed.initialize`` from the flags or the environment, if any is given."""
    env = os.environ.get
    coordinator = args.coordinator or env("JAX_COORDINATOR_ADDRESS")
    num_processes = args.num_processes or (int(env("JAX_NUM_PROCESSES"))
                                           if env("JAX_NUM_PROCESSES") else None)
    process_id = args.process_id if args.process_id is not None else (
        int(env("JAX_PROCESS_ID")) if env("JAX_PROCESS_ID") else None)
    if coordinator is None and num_processes is None and process_id is None:
        return
    import jax

    if coordinator is not None and ":" not in coordinator:
        raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}.")
    if coordinator is not None and process_id not in (None, 0):
        _wait_for(coordinator, args.init_timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=args.init_timeout)


def _generate(args) -> None:
    import ersde_jax as ej

    if os.getcwd() not in sys.path:  # module:function from the working directory
        sys.path.insert(0, os.getcwd())
    shape = None
    if args.shape is not None:
        try:
            shape = tuple(int(d) for d in args.shape.split(","))
        except ValueError:
            raise ValueError(f"--shape must be H,W,C, got {args.shape!r}.") from None
    solver = _solver(args)
    _initialize(args)
    manifest = ej.generate(
        args.model, args.num_samples, out=args.out, batch_size=args.batch_size, seed=args.seed,
        solver=solver, steps=args.steps, guidance=args.guidance, labels=args.labels, shape=shape,
        num_classes=args.num_classes, null_label=args.null_label, resume=args.resume,
        progress=not args.quiet)
    if not args.quiet:
        print(f"{args.out}/samples.npz: {manifest['settings']['num_samples']} samples, "
              f"{manifest['samples_per_s']} samples/s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ersde-jax`` command."""
    parser = argparse.ArgumentParser(prog="ersde-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="sample the bundled MNIST model and compare solvers")
    demo.add_argument("--out", default="demo_out", help="output directory")
    demo.add_argument("--quick", action="store_true", help="a reduced run (for tests)")
    _add_generate(sub)
    args = parser.parse_args(argv)
    if args.command == "generate":
        try:
            _generate(args)
        except (ValueError, TypeError, RuntimeError, OSError, ImportError) as error:
            message = " ".join(str(error).split())
            print(f"ersde-jax generate: error: {message}", file=sys.stderr)
            return 2 if isinstance(error, (ValueError, TypeError)) else 1
        return 0
    from .pretrained._demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
