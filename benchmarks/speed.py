"""Speed benchmark: how much the sampler costs on top of the network it calls.

A small convolutional Flax denoiser (four 3x3 convolutions, 32 channels, GELU, ``log(sigma)``
embedded as a per-channel bias, EDM preconditioning, random weights) on ``(B, 16, 16, 3)`` images
is wrapped as an ``ej.Model`` on ``ej.paths.edm()`` predicting x0. On it we measure (wall clock,
best of several repeats after a warm-up call, ``block_until_ready``):

* ``model_call_s``: one jitted network call.
* ``sample_s[N]``: one jitted ``ej.ersde_sample`` run of N steps with the default solver
  (ER-SDE-Solver-3, "er_sde_5"), compile excluded.
* ``overhead_ratio = sample_s[N_max] / (N_max * model_call_s)``: 1.0 means the sampler costs
  nothing beyond its N network calls (target <= 1.10).
* ``compile_s[N]``: ``jax.jit(...).lower(...).compile()`` time of the sampler (tracing included)
  for a short and a long grid, and ``compile_ratio`` between them: the scan should make compile
  time almost independent of the number of steps (target <= 1.5).
* ``coefficient_s``: the solver's coefficient table alone (``solver.coefficients`` on the Karras
  grid of N_max steps, jitted with the grid as an argument), and its share of ``sample_s[N_max]``.
* ``bare_scan_s``: a ``lax.scan`` of N_max bare network calls (no solver at all): the floor of any
  scan-based sampler; ``scan_floor_ratio`` relates it to N standalone calls and
  ``solver_overhead_ratio = sample_s[N_max] / bare_scan_s`` isolates the solver's own cost.
* ``noise_draw_s``: one ``jax.random.normal`` draw shaped like the batch, the work an SDE solver
  adds per step (threefry + inverse-erf on CPU), also as a share of a model call.
* ``ode_order1``: ``sample_s`` and ``overhead_ratio`` of the deterministic first-order solver
  (noise scale "ode": no random numbers), the cheapest update the library has.

* ``throughput``: samples per second of the default sampler (20 steps) against the batch size,
  one jitted program per batch size, best of several runs.
* ``versus_diffrax``: at an equal budget of network evaluations (20), wall time and accuracy of
  the library's samplers and of diffrax solvers on ``ersde_jax.diffrax`` terms (on the same
  Karras grid, ``diffrax.StepTo``, plus the final denoising call; ``benchmarks/quality.py``
  builds both). Times are medians over rounds that alternate the programs; ``time_ratio`` is
  relative to ER-SDE-3 ("ode") in the same round. Accuracy of the deterministic ones is the
  relative RMS distance to the PF-ODE solution from the same ``x_T`` (diffrax Tsit5, rtol =
  atol = 1e-5, float32, then the same denoising call); the stochastic ones have no pathwise
  reference and report time only.

The record (device, versions, date, CPU count, the 1-minute load average before and after the
run, since other busy processes inflate wall-clock times, batch and all numbers) is written to
``benchmarks/results/speed.json`` (``speed_quick.json`` with ``--quick``, or ``--out PATH``); a
table is printed, and the last stdout line is the record as one JSON object. No timing is asserted.

Run from the repository root::

    python benchmarks/speed.py            # batch 256, N = 10 and 50, compile at 10 and 200 steps
    python benchmarks/speed.py --quick    # batch 32, N = 5 and 10, compile at 10 and 50 steps

No GPU was lent to the runs recorded in ``benchmarks/results/``: every number there is from a
shared 2-core CPU (the record's ``device`` and ``load_average_1min`` say so).
"""

from __future__ import annotations

import functools
import os
import statistics
import time

import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _common import arguments, finish, make_record
from quality import diffrax_program

import ersde_jax as ej
import ersde_jax.diffrax as ejd

IMAGE_SHAPE = (16, 16, 3)
SIGMA_DATA = 0.5  # EDM's data standard deviation, used by the preconditioning

# Settings of the full run and of --quick: batch, timing repeats, sampler step counts (the last
# one is N_max) and the two step counts whose compile times are compared.
CONFIGS = {
    "full": dict(
        batch=256, model_repeats=20, sample_repeats=5, steps=(10, 50), compile_steps=(10, 200),
        throughput_batches=(1, 4, 16, 64, 256), throughput_steps=20, diffrax_nfe=20,
    ),
    "quick": dict(
        batch=32, model_repeats=10, sample_repeats=3, steps=(5, 10), compile_steps=(10, 50),
        throughput_batches=(1, 32), throughput_steps=5, diffrax_nfe=5,
    ),
}


class ConvDenoiser(nn.Module):
    """Four 3x3 convolutions with GELU; ``c_noise`` enters every hidden layer as a channel bias."""

    channels: int = 32
    hidden_layers: int = 3

    @nn.compact
    def __call__(self, x, c_noise):
        embedding = jnp.reshape(c_noise, (1,)).astype(x.dtype)
        h = x
        for _ in range(self.hidden_layers):
            h = nn.Conv(self.channels, (3, 3))(h)
            h = nn.gelu(h + nn.Dense(self.channels)(embedding))
        return nn.Conv(x.shape[-1], (3, 3))(h)


def make_model(key, batch: int) -> ej.Model:
    """The benchmark model: :class:`ConvDenoiser` with EDM preconditioning, random weights."""
    net = ConvDenoiser()

    def apply_fn(params, x, t, cond):
        del cond
        norm = jnp.sqrt(t**2 + SIGMA_DATA**2)
        c_skip = SIGMA_DATA**2 / norm**2
        c_out = t * SIGMA_DATA / norm
        return c_skip * x + c_out * net.apply(params, x / norm, jnp.log(t) / 4)

    params = net.init(key, jnp.zeros((batch, *IMAGE_SHAPE)), jnp.zeros(()))
    return ej.Model(apply_fn, params, path=ej.paths.edm(), prediction="x0")


def best_time(fn, *args, repeats: int) -> float:
    """Best (minimum) wall time of ``fn(*args)`` over ``repeats`` calls, after a warm-up call.

    The minimum is the estimate least disturbed by other processes on a shared machine.
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved_times(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Times zero-argument functions once per round, alternating them, after a warm-up call.

    Ratios taken within a round cancel the slow drifts of a shared machine's speed.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return times


def chained_calls(call, params, x, t, n: int):
    """``n`` dependent standalone network calls (each one's output is the next one's input)."""
    for _ in range(n):
        x = call(params, x, t)
    return x


def sampler(steps: int, order: int = 3, noise_scale: str = "er_sde_5"):
    """``ej.ersde_sample(key, model, x_T)`` with the step count and solver fixed (not jitted)."""
    return functools.partial(ej.ersde_sample, steps=steps, order=order, noise_scale=noise_scale)


def compile_time(steps: int, key, model, x_T) -> float:
    """Seconds to trace, lower and compile a fresh jit of the default sampler for ``steps``."""
    start = time.perf_counter()
    jax.jit(sampler(steps)).lower(key, model, x_T).compile()
    return time.perf_counter() - start


def sample_times(config, key, model, x_T, order, noise_scale) -> dict[int, float]:
    """Best run time of the jitted sampler for every step count of ``config``."""
    return {
        n: best_time(
            jax.jit(sampler(n, order, noise_scale)), key, model, x_T,
            repeats=config["sample_repeats"],
        )
        for n in config["steps"]
    }


def coefficient_time(path, steps: int, repeats: int) -> float:
    """Best run time of the default solver's coefficient table on the Karras grid."""
    solver = ej.er_sde(3, "er_sde_5")
    t = jnp.asarray(ej.timesteps.karras(path, steps), jnp.float32)
    coefficients = jax.jit(lambda t: solver.coefficients(path.alpha(t), path.sigma(t)))
    return best_time(coefficients, t, repeats=repeats)


def bare_scan(model):
    """A ``lax.scan`` of bare network calls over a grid: the floor of any scan-based sampler."""

    def scan(params, x, t):
        return jax.lax.scan(lambda y, t_i: (model.apply_fn(params, y, t_i, None), None), x, t)[0]

    return scan


def noise_time(config, x_T) -> float:
    """Run time of one standard-normal draw shaped like the batch (the SDE solvers' extra work)."""
    draw = jax.jit(lambda key: jax.random.normal(key, x_T.shape, x_T.dtype))
    return best_time(draw, jax.random.key(1), repeats=config["model_repeats"])


def throughput(config, model_key, key) -> list[dict]:
    """Samples per second of the default sampler for every batch size of ``config``."""
    rows = []
    steps = config["throughput_steps"]
    for batch in config["throughput_batches"]:
        model = make_model(model_key, batch)
        x_T = ej.prior_sample(jax.random.key(batch), model.path, (batch, *IMAGE_SHAPE))
        s = best_time(jax.jit(sampler(steps)), key, model, x_T, repeats=config["sample_repeats"])
        rows.append(dict(batch=batch, steps=steps, sample_s=s, samples_per_s=batch / s))
    return rows


def pf_ode_reference(model, x_T):
    """PF-ODE solution from ``x_T`` to sigma_min (Tsit5, rtol = atol = 1e-5), then denoised."""
    path = model.path
    y0, rho_max = ejd.to_state(path, x_T, path.t_max)
    rho_min = float(ejd.to_state(path, x_T, path.t_min)[1])
    sol = jax.jit(lambda y0: diffrax.diffeqsolve(
        ejd.pf_ode_term(model), diffrax.Tsit5(), float(rho_max), rho_min, -1.0, y0,
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5), max_steps=4096,
    ))(y0)
    return ejd.denoise_state(model, sol.ys[-1], rho_min), int(sol.stats["num_steps"])


def versus_diffrax(config, key, model, x_T) -> dict:
    """Time and accuracy of library and diffrax samplers at an equal NFE (see the docstring)."""
    nfe = config["diffrax_nfe"]
    karras = ej.timesteps.karras
    library = {"er_sde_3_ode": ej.er_sde(3, "ode"), "er_sde_3": ej.er_sde(3, "er_sde_5"),
               "edm_heun": ej.edm_heun()}
    programs, spent, stochastic = {}, {}, {}
    for name, solver in library.items():
        steps = solver.steps_for_nfe(nfe)
        grid = karras(model.path, steps)
        fn = jax.jit(lambda k, m, x, s=solver, g=grid: ej.sample(k, m, x, s, timesteps=g).x)
        programs[name] = functools.partial(fn, key, model, x_T)
        spent[name] = solver.nfe(steps)
        stochastic[name] = solver.stochastic
    for name, args in {"diffrax_euler": ("Euler", 1, None), "diffrax_heun": ("Heun", 2, None),
                       "diffrax_euler_sde": ("Euler", 1, "er_sde_5")}.items():
        fn, spent[name] = diffrax_program(*args, model.path, karras, nfe)
        programs[name] = functools.partial(fn, key, model, x_T, None, None)
        stochastic[name] = args[2] is not None
    rounds = interleaved_times(programs, config["sample_repeats"])
    base = np.asarray(rounds["er_sde_3_ode"])
    reference, reference_steps = pf_ode_reference(model, x_T)
    scale = float(jnp.sqrt(jnp.mean(reference**2)))
    rows = {}
    for name, program in programs.items():
        row = dict(nfe=spent[name], stochastic=stochastic[name],
                   time_s=statistics.median(rounds[name]),
                   time_ratio=statistics.median(np.asarray(rounds[name]) / base))
        if not stochastic[name]:
            row["relative_rmse"] = float(jnp.sqrt(jnp.mean((program() - reference) ** 2))) / scale
        rows[name] = row
    return dict(nfe_budget=nfe, reference_tsit5_steps=reference_steps, solvers=rows)


def run(quick: bool) -> dict:
    """Runs every measurement and returns the record."""
    load_start = os.getloadavg()[0]
    config = CONFIGS["quick" if quick else "full"]
    batch, n_max = config["batch"], config["steps"][-1]
    model_key, noise_key, sample_key = jax.random.split(jax.random.key(0), 3)
    model = make_model(model_key, batch)
    x_T = ej.prior_sample(noise_key, model.path, (batch, *IMAGE_SHAPE))

    call = jax.jit(lambda p, x, t: model.apply_fn(p, x, t, None))
    t_one = jnp.asarray(1.0, jnp.float32)
    model_call_s = best_time(call, model.params, x_T, t_one, repeats=config["model_repeats"])
    noise_s = noise_time(config, x_T)
    sample_s = sample_times(config, sample_key, model, x_T, 3, "er_sde_5")
    ode_sample_s = sample_times(config, sample_key, model, x_T, 1, "ode")

    # The headline ratios: the sampler against N chained standalone calls and against a scan of
    # N bare calls, timed in alternation and compared round by round.
    t_grid = jnp.asarray(ej.timesteps.karras(model.path, n_max)[:-1], jnp.float32)
    default, ode = jax.jit(sampler(n_max)), jax.jit(sampler(n_max, 1, "ode"))
    bare = jax.jit(bare_scan(model))
    rounds = interleaved_times(
        dict(
            calls=lambda: chained_calls(call, model.params, x_T, t_one, n_max),
            bare_scan=lambda: bare(model.params, x_T, t_grid),
            default=lambda: default(sample_key, model, x_T),
            ode=lambda: ode(sample_key, model, x_T),
        ),
        config["sample_repeats"],
    )
    ratio = lambda a, b: statistics.median(np.asarray(rounds[a]) / np.asarray(rounds[b]))
    bare_scan_s = min(rounds["bare_scan"])

    short, long = config["compile_steps"]
    compile_s = {n: compile_time(n, sample_key, model, x_T) for n in (short, long)}

    coefficient_s = coefficient_time(model.path, n_max, config["model_repeats"])
    throughput_rows = throughput(config, model_key, sample_key)
    diffrax_rows = versus_diffrax(config, sample_key, model, x_T)

    return make_record(
        "speed",
        quick,
        load_average_1min=dict(start=load_start, end=os.getloadavg()[0]),
        batch=batch,
        image_shape=list(IMAGE_SHAPE),
        solver=dict(order=3, noise_scale="er_sde_5"),
        model_call_s=model_call_s,
        sample_s={str(n): s for n, s in sample_s.items()},
        overhead_ratio=ratio("default", "calls"),
        bare_scan_s=bare_scan_s,
        scan_floor_ratio=ratio("bare_scan", "calls"),
        solver_overhead_ratio=ratio("default", "bare_scan"),
        noise_draw_s=noise_s,
        noise_share_per_step=noise_s / model_call_s,
        compile_s={str(n): s for n, s in compile_s.items()},
        compile_ratio=compile_s[long] / compile_s[short],
        coefficient_s=coefficient_s,
        coefficient_share=coefficient_s / sample_s[n_max],
        ode_order1=dict(
            sample_s={str(n): s for n, s in ode_sample_s.items()},
            overhead_ratio=ratio("ode", "calls"),
            solver_overhead_ratio=ratio("ode", "bare_scan"),
        ),
        throughput=throughput_rows,
        versus_diffrax=diffrax_rows,
    )


def print_table(record: dict, out) -> None:
    """Human-readable summary of the record written to ``out``."""
    ms = lambda s: f"{1e3 * s:9.2f} ms"
    device = record["device"]
    print(
        f"ersde_jax speed, {device['platform']} ({device['kind']}), {record['cpu_count']} CPUs, "
        f"batch {record['batch']}, images {tuple(record['image_shape'])}"
    )
    load = record["load_average_1min"]
    print(f"  load average (1 min)          {load['start']:.2f} before, {load['end']:.2f} after")
    print(f"  model call                    {ms(record['model_call_s'])}")
    rows = (("er_sde order 3, er_sde_5", record), ("er_sde order 1, ode", record["ode_order1"]))
    for name, row in rows:
        for n, s in row["sample_s"].items():
            per_step = s / int(n) / record["model_call_s"]
            print(f"  {name:<24} N={n:<4}{ms(s)}   ({per_step:.3f} model calls per step)")
        print(f"  {name:<24} overhead ratio  {row['overhead_ratio']:.3f}   (target <= 1.10)")
        print(f"  {name:<24} vs bare scan    {row['solver_overhead_ratio']:.3f}")
    print(f"  scan of bare network calls    {record['scan_floor_ratio']:9.3f} model calls per step")
    print(f"  one normal draw (noise)       {ms(record['noise_draw_s'])}   "
          f"({100 * record['noise_share_per_step']:.1f} % of a model call)")
    for n, s in record["compile_s"].items():
        print(f"  compile                  N={n:<4}{ms(s)}")
    print(f"  compile ratio                 {record['compile_ratio']:9.3f}      (target <= 1.5)")
    print(
        f"  coefficients alone            {ms(record['coefficient_s'])}   "
        f"({100 * record['coefficient_share']:.2f} % of the longest sample)"
    )
    print(f"  throughput ({record['throughput'][0]['steps']} steps, default solver)")
    for row in record["throughput"]:
        print(f"    batch {row['batch']:4d}   {row['samples_per_s']:10.1f} samples/s"
              f"   ({ms(row['sample_s'])} per batch)")
    versus = record["versus_diffrax"]
    print(f"  against diffrax at an NFE budget of {versus['nfe_budget']} (time ratio to "
          "er_sde_3_ode in the same round; relative RMSE to the PF-ODE solution)")
    for name, row in versus["solvers"].items():
        accuracy = f"{row['relative_rmse']:.2e}" if "relative_rmse" in row else "     -"
        print(f"    {name:18s} NFE {row['nfe']:3d}  {ms(row['time_s'])}  x{row['time_ratio']:.2f}"
              f"   rmse {accuracy}")
    print(f"written to {out}")


def main() -> None:
    args = arguments("speed", __doc__, "batch 32, fewer steps and repeats")
    finish(run(args.quick), args.out, print_table)

if __name__ == "__main__":
    main()
