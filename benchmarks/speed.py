"""Speed benchmark: how much the sampler costs on top of the network it calls.

Three sections (``--sections``, default all): ``small``, ``networks`` and ``layout``.

``small`` (the record's top-level fields): a small convolutional Flax denoiser (four 3x3
convolutions, 32 channels, GELU, ``log(sigma)`` embedded as a per-channel bias, EDM
preconditioning, random weights) on ``(B, 16, 16, 3)`` images is wrapped as an ``ej.Model`` on
``ej.paths.edm()`` predicting x0. On it we measure (wall clock, best of several repeats after a
warm-up call, ``block_until_ready``):

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

``networks`` (``benchmarks/networks.py``): the same questions for networks of the size users
run, an ADM/EDM-style UNet (40M parameters, 64x64x3 pixels, EDM path, x0) and a DiT-B/2 (130M,
32x32x4 latents, 1000-step DDPM path, eps, learned variance, plus a small convolutional decoder
to 256x256x3 run once after sampling), class-conditional with classifier-free guidance (one call
on the doubled batch), bfloat16 parameters and activations, the solver's state in float32; the
default solver for ``steps`` steps. One record per network, at its headline batch:

* ``overhead_ratio``: time(jitted sampler, N steps) / (N x time(one jitted guided network
  call)), the median over rounds that alternate the two (target <= 1.05).
* ``compile_seconds_sampler`` / ``compile_seconds_network`` (``compile_ratio``; target <= 1.3):
  ``jax.jit(f).lower(...).compile()`` of the whole sampler and of the bare guided call.
* ``peak_bytes_sampler`` / ``peak_bytes_network`` (``memory_ratio``; target <= 1.2): argument +
  output + temp - alias bytes of XLA's ``memory_analysis()`` of those two programs
  (``memory_parts`` keeps the parts and XLA's own ``peak_memory_in_bytes``).
* ``peak_bytes_grad`` / ``peak_bytes_grad_remat``: the same for ``jax.grad`` of the mean square
  of the sample w.r.t. the network parameters, through the sampler without and with per-step
  remat (``checkpoint=True``), beside ``peak_bytes_grad_network`` (through one guided call);
  compiled, not run (``--quick`` skips them).
* ``solver_alone``: the sampler with the network replaced by ``x -> x / 2``: what the solver,
  its tables, state, noise draws and the scan cost on their own (compile, bytes, time).
* ``throughput``: samples/s against batch (and ``pipeline_samples_per_s`` with the decoder).

``layout``: one stack of 3x3 convolutions (+ SiLU) in NHWC and in NCHW (``dimension_numbers``),
bfloat16 and float32, same weights: time of each and their agreement.

The record (device, versions, date, CPU count, the 1-minute load average before and after the
run, since other busy processes inflate wall-clock times, batch and all numbers) is written to
``benchmarks/results/speed.json`` (``speed_quick.json`` with ``--quick``, or ``--out PATH``); a
table is printed, and the last stdout line is the record as one JSON object. No timing is asserted.
The networks and layout sections carry their own environment (``networks_run``, ``layout``);
a full run of some ``--sections`` merges them into the existing file.

Run from the repository root::

    python benchmarks/speed.py            # small: batch 256, N = 10 and 50; networks (CPU):
                                          # batches 1 and 2, 5 steps
    python benchmarks/speed.py --sections networks,layout   # ~15 minutes on 2 busy CPU cores
    python benchmarks/speed.py --quick    # batch 32, N = 5 and 10; tiny networks, no gradients
    bash benchmarks/device.sh             # on a GPU: networks at batches 8, 1, 64, 20 steps

"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import time

import diffrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import networks
import numpy as np
from _common import arguments, environment, finish, make_record, write
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


# The networks section per device: the networks (tiny for --quick), the batch of the headline
# record and of its gradient programs (--quick compiles none: XLA:CPU takes tens of seconds for
# each even at toy widths), the batches of the throughput rows, sampler steps, timing rounds,
# and the conv stack timed in both layouts.
NETWORK_CONFIGS = {
    "cpu": dict(tiny=False, batch=1, batches=(1, 2), steps=5, rounds=7, compile_repeats=2,
                grads=True,
                layout=dict(batch=2, size=64, channels=128, layers=4, repeats=3)),
    "gpu": dict(tiny=False, batch=8, batches=(1, 8, 64), steps=20, rounds=5, compile_repeats=1,
                grads=True,
                layout=dict(batch=16, size=64, channels=128, layers=4, repeats=10)),
    "quick": dict(tiny=True, batch=2, batches=(2,), steps=2, rounds=1, compile_repeats=1,
                  grads=False,
                  layout=dict(batch=2, size=16, channels=16, layers=2, repeats=1)),
}
GRAD_PROGRAMS = ("grad", "grad_remat", "grad_network")
SECTIONS = ("small", "networks", "layout")


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


def interleaved_times(fns: dict, rounds: int, warm_up: bool = True) -> dict[str, list[float]]:
    """Times zero-argument functions once per round, alternating them, after a warm-up call
    (unless the caller made it).

    Ratios taken within a round cancel the slow drifts of a shared machine's speed.
    """
    if warm_up:
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
    coefficients = jax.jit(lambda t: solver.coefficients(ej.Grid.on(path, t)))
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


def small_network(quick: bool) -> dict:
    """The measurements of the small network (every field of the record but the networks')."""
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

    return dict(
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


# ------------------------------------------------------------------ networks of real size


def compiled(fn, *args):
    """A fresh jit of ``fn`` traced, lowered and compiled for ``args``, and the seconds it took."""
    start = time.perf_counter()
    program = jax.jit(fn).lower(*args).compile()
    return program, time.perf_counter() - start


def compiled_in_alternation(programs: dict, repeats: int) -> tuple[dict, dict[str, float]]:
    """Compiles every ``name: (fn, args)`` ``repeats`` times in alternation, JAX's caches cleared
    before each, and returns the programs and the best seconds of each (a busy machine's slow
    drifts hit all of them alike)."""
    out, seconds = {}, {name: math.inf for name in programs}
    for _ in range(repeats):
        for name, (fn, args) in programs.items():
            jax.clear_caches()
            out[name], s = compiled(fn, *args)
            seconds[name] = min(seconds[name], s)
    return out, seconds


def peak_bytes(program) -> tuple[int, dict]:
    """``argument + output + temp - alias`` bytes of a compiled program, and those parts.

    From XLA's ``memory_analysis()``: the buffers a call needs at once if its temporaries all
    live together (an upper bound of the program's own peak; XLA's ``peak_memory_in_bytes``,
    where the backend reports it, is kept beside it in the parts).
    """
    stats = program.memory_analysis()
    parts = {name: int(getattr(stats, f"{name}_size_in_bytes"))
             for name in ("argument", "output", "temp", "alias")}
    parts["xla_peak"] = int(getattr(stats, "peak_memory_in_bytes", 0) or 0)
    return parts["argument"] + parts["output"] + parts["temp"] - parts["alias"], parts


def network_sampler(steps: int, checkpoint: bool = False, noise_scale: str = "er_sde_5"):
    """The measured sampler: the default solver (ER-SDE-3, er_sde_5), ``steps`` steps, labels;
    ``checkpoint`` rematerialises every step in the backward pass."""
    solver = ej.er_sde(3, noise_scale)
    return lambda key, model, x_T, cond: ej.sample(key, model, x_T, solver, steps=steps,
                                                   cond=cond, checkpoint=checkpoint).x


def guided_scan(guided):
    """A ``lax.scan`` of guided network calls over a grid, each output the next input: the
    floor of any scan-based sampler (no solver)."""

    def scan(params, x, t, cond):
        body = lambda y, t_i: (guided.apply_fn(params, y, t_i, cond).astype(y.dtype), None)  # noqa: E731
        return jax.lax.scan(body, x, t)[0]

    return scan


def network_batch(net, batch: int, config: dict, bare: bool = False) -> dict:
    """Call, sampler (and decoder) of ``net`` at ``batch``: compile times, peak bytes, run times.

    The network call and the sampler are compiled and timed in alternation; the overhead ratio
    is the median over rounds of ``sample_s / (steps * call_s)``, both with classifier-free
    guidance on. With ``bare``, also the same for a scan of ``steps`` bare guided calls
    (:func:`guided_scan`).
    """
    steps = config["steps"]
    guided = networks.guided(net, batch)
    cond = networks.labels(batch)
    x_T = ej.prior_sample(jax.random.key(batch), guided.path, (batch, *net.shape))  # float32
    t = jnp.asarray(guided.path.t_max / 2, jnp.float32)
    call_args = (guided.params, x_T, t, cond)
    sample_args = (jax.random.key(1), guided, x_T, cond)
    programs = dict(call=(lambda p, x, t, c: guided.apply_fn(p, x, t, c), call_args),
                    sample=(network_sampler(steps), sample_args))
    if bare:
        grid = jnp.asarray(ej.timesteps.karras(guided.path, steps)[:-1], jnp.float32)
        scan_args = (guided.params, x_T, grid, cond)
        programs["bare_scan"] = (guided_scan(guided), scan_args)
    programs, compile_s = compiled_in_alternation(programs, config["compile_repeats"])
    call, sample = programs["call"], programs["sample"]
    call_compile_s, sample_compile_s = compile_s["call"], compile_s["sample"]
    fns = dict(call=lambda: call(*call_args), sample=lambda: sample(*sample_args))
    if bare:
        scan, scan_compile_s = programs["bare_scan"], compile_s["bare_scan"]
        fns["bare_scan"] = lambda: scan(*scan_args)
    if net.decode is not None:
        decode, _ = compiled(net.decode, net.decoder_params, x_T)
        fns["decode"] = lambda: decode(net.decoder_params, x_T)
    first = {name: jax.block_until_ready(fn()) for name, fn in fns.items()}  # the warm-up
    rounds = interleaved_times(fns, config["rounds"], warm_up=False)
    overhead = np.asarray(rounds["sample"]) / (steps * np.asarray(rounds["call"]))
    sample_s = min(rounds["sample"])
    row = dict(
        batch=batch,
        network_call_s=min(rounds["call"]),
        sample_s=sample_s,
        samples_per_s=batch / sample_s,
        overhead_ratio=statistics.median(overhead),
        compile_seconds_sampler=sample_compile_s,
        compile_seconds_network=call_compile_s,
        compile_ratio=sample_compile_s / call_compile_s,
        peak_bytes_sampler=peak_bytes(sample)[0],
        peak_bytes_network=peak_bytes(call)[0],
        memory_parts=dict(sampler=peak_bytes(sample)[1], network=peak_bytes(call)[1]),
        finite=bool(jnp.all(jnp.isfinite(first["sample"]))),
    )
    row["memory_ratio"] = row["peak_bytes_sampler"] / row["peak_bytes_network"]
    if bare:
        per_round = lambda a, b: statistics.median(np.asarray(rounds[a]) / np.asarray(rounds[b]))  # noqa: E731
        row["bare_scan"] = dict(
            sample_s=min(rounds["bare_scan"]),
            compile_seconds=scan_compile_s,
            peak_bytes=peak_bytes(scan)[0],
            scan_floor_ratio=statistics.median(
                np.asarray(rounds["bare_scan"]) / (steps * np.asarray(rounds["call"]))),
            solver_overhead_ratio=per_round("sample", "bare_scan"),
        )
    if net.decode is not None:
        row["decode_s"] = min(rounds["decode"])
        row["pipeline_samples_per_s"] = batch / (sample_s + row["decode_s"])
    return row


def solver_alone(net, batch: int, config: dict) -> dict:
    """The sampler of :func:`network_batch` with the network replaced by ``x -> x / 2``:
    compile time, peak bytes and run time of everything but the network (the solver's tables,
    state, history and noise, the scan); ``compile_seconds_ode`` is the compile time of the same
    solver without noise (noise scale "ode": no random draws)."""
    model = ej.Model(lambda p, x, t, c: x * p, jnp.float32(0.5), path=net.model.path,
                     prediction=net.model.prediction)
    args = (jax.random.key(1), model,
            ej.prior_sample(jax.random.key(batch), model.path, (batch, *net.shape)),
            networks.labels(batch))
    sample, compile_s = compiled(network_sampler(config["steps"]), *args)
    _, compile_ode_s = compiled(network_sampler(config["steps"], noise_scale="ode"), *args)
    return dict(compile_seconds=compile_s, compile_seconds_ode=compile_ode_s,
                peak_bytes=peak_bytes(sample)[0],
                sample_s=best_time(sample, *args, repeats=max(config["rounds"], 3)))


def grad_peak_bytes(net, batch: int, steps: int) -> dict:
    """Peak bytes and compile seconds of ``jax.grad`` w.r.t. the network parameters: through
    the sampler (``grad``; ``grad_remat`` with per-step remat, ``checkpoint=True``) and through
    one guided network call (``grad_network``).

    The loss is the mean square of the sample (of the call's output); compiled, not run.
    """
    guided = networks.guided(net, batch)
    _, *guidance = guided.params
    rebuild = lambda p: ej.Model(guided.apply_fn, (p, *guidance), path=guided.path,  # noqa: E731
                                 prediction=guided.prediction)

    def through_sampler(p, key, x_T, cond, checkpoint):
        return jnp.mean(jnp.square(network_sampler(steps, checkpoint)(key, rebuild(p), x_T, cond)))

    def through_call(p, x, t, cond):
        return jnp.mean(jnp.square(guided.apply_fn((p, *guidance), x, t, cond)))

    cond = networks.labels(batch)
    x_T = ej.prior_sample(jax.random.key(batch), guided.path, (batch, *net.shape))
    t = jnp.asarray(guided.path.t_max / 2, jnp.float32)
    p = guided.params[0]
    programs = dict(
        grad=(jax.grad(functools.partial(through_sampler, checkpoint=False)),
              (p, jax.random.key(1), x_T, cond)),
        grad_remat=(jax.grad(functools.partial(through_sampler, checkpoint=True)),
                    (p, jax.random.key(1), x_T, cond)),
        grad_network=(jax.grad(through_call), (p, x_T, t, cond)),
    )
    out = {}
    for name, (fn, args) in programs.items():
        program, out[f"compile_seconds_{name}"] = compiled(fn, *args)
        out[f"peak_bytes_{name}"] = peak_bytes(program)[0]
    return out


THROUGHPUT_KEYS = ("batch", "network_call_s", "sample_s", "samples_per_s", "overhead_ratio",
                   "compile_seconds_sampler", "compile_seconds_network", "peak_bytes_sampler",
                   "peak_bytes_network", "decode_s", "pipeline_samples_per_s")


def network_record(name: str, config: dict, deadline: float = math.inf) -> dict:
    """One network's record: the fields at ``config["batch"]``, gradients there, throughput.

    The headline batch and the solver alone come first; the gradient programs and the other
    throughput batches follow while ``time.perf_counter() < deadline`` (what is left out is
    listed in ``skipped``).
    """
    start = time.perf_counter()
    progress = lambda what: print(f"  {name}: {what} ({time.perf_counter() - start:.0f} s)",  # noqa: E731
                                  flush=True)
    net = networks.NETWORKS[name](tiny=config["tiny"])
    headline = network_batch(net, config["batch"], config, bare=True)
    progress(f"batch {config['batch']}, {headline['samples_per_s']:.3g} samples/s, overhead "
             f"{headline['overhead_ratio']:.3f}")
    alone = solver_alone(net, config["batch"], config)
    progress("solver alone")
    skipped = []
    if config["grads"] and time.perf_counter() < deadline:
        grads = grad_peak_bytes(net, config["batch"], config["steps"])
        progress("gradients compiled")
    else:
        grads = {f"{kind}_{program}": None for program in GRAD_PROGRAMS
                 for kind in ("peak_bytes", "compile_seconds")}
        if config["grads"]:
            skipped.append("gradients")
            progress("gradients skipped: out of time")
    rows = [headline]
    for batch in (b for b in config["batches"] if b != config["batch"]):
        if time.perf_counter() > deadline:
            skipped.append(f"batch {batch}")
            progress(f"batch {batch} skipped: out of time")
            continue
        rows.append(network_batch(net, batch, config))
        progress(f"batch {batch}, {rows[-1]['samples_per_s']:.3g} samples/s, overhead "
                 f"{rows[-1]['overhead_ratio']:.3f}")
    rows.sort(key=lambda r: r["batch"])
    record = dict(
        name=name,
        params=net.params,
        resolution=list(net.shape),
        dtype="bfloat16",
        solver_dtype="float32",
        steps=config["steps"],
        cfg_scale=networks.CFG_SCALE,
        **headline,
        **grads,
        state_bytes=4 * config["batch"] * int(np.prod(net.shape)),
        solver_alone=alone,
        throughput=[{k: r[k] for k in THROUGHPUT_KEYS if k in r} for r in rows],
        skipped=skipped,
    )
    if net.decode is not None:
        latent = jax.ShapeDtypeStruct((1, *net.shape), jnp.float32)
        image = jax.eval_shape(net.decode, net.decoder_params, latent)
        record["decoder"] = dict(params=net.decoder_param_count,
                                 output_resolution=list(image.shape[1:]))
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def conv_stack_layouts(config: dict) -> dict:
    """Best times of one conv stack (3x3 convolutions + SiLU) in three layouts.

    ``nhwc`` and ``nchw``: the layout given to XLA through ``dimension_numbers``;
    ``nchw_transposed``: NCHW activations around NHWC convolutions (a transpose before and after
    each, as in a port of channels-first code onto NHWC-only layers such as Flax's ``Conv``).
    Same weights and input; bfloat16 and float32. The outputs are checked to agree (transposed).
    """
    batch, size, channels, layers = (config[k] for k in ("batch", "size", "channels", "layers"))
    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal((3, 3, channels, channels), np.float32) / (3 * channels**0.5)
               for _ in range(layers)]
    x = rng.standard_normal((batch, size, size, channels), np.float32)
    to_nchw, to_nhwc = (0, 3, 1, 2), (0, 2, 3, 1)

    def conv(x, k, dims):
        return jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dims)

    def stack(layer):
        def apply(x, kernels):
            for k in kernels:
                x = jax.nn.silu(layer(x, k))
            return x
        return jax.jit(apply)

    programs = dict(
        nhwc=stack(lambda x, k: conv(x, k, ("NHWC", "HWIO", "NHWC"))),
        nchw=stack(lambda x, k: conv(x, jnp.transpose(k, (3, 2, 0, 1)), ("NCHW", "OIHW", "NCHW"))),
        nchw_transposed=stack(lambda x, k: jnp.transpose(
            conv(jnp.transpose(x, to_nhwc), k, ("NHWC", "HWIO", "NHWC")), to_nchw)),
    )
    rows = {}
    for dtype in (jnp.bfloat16, jnp.float32):
        k = [jnp.asarray(k, dtype) for k in kernels]
        inputs = dict(nhwc=jnp.asarray(x, dtype))
        inputs["nchw"] = inputs["nchw_transposed"] = jnp.transpose(inputs["nhwc"], to_nchw)
        fns = {name: functools.partial(program, inputs[name], k)
               for name, program in programs.items()}
        out = {name: fn().astype(jnp.float32) for name, fn in fns.items()}
        times = interleaved_times(fns, config["repeats"])
        best = {name: min(t) for name, t in times.items()}
        rows[jnp.dtype(dtype).name] = dict(
            **{f"{name}_s": best[name] for name in programs},
            nchw_over_nhwc=best["nchw"] / best["nhwc"],
            nchw_transposed_over_nhwc=best["nchw_transposed"] / best["nhwc"],
            max_abs_difference=max(
                float(jnp.max(jnp.abs(jnp.transpose(out[name], to_nhwc) - out["nhwc"])))
                for name in ("nchw", "nchw_transposed")),
        )
    return dict(**environment(), batch=batch, size=size, channels=channels, layers=layers,
                results=rows)


def networks_section(config: dict, save, budget: float = math.inf) -> tuple[list[dict], dict]:
    """Both networks' records (``save(records)`` after each) and the run's settings.

    With a ``budget`` in seconds, each network starts its optional parts (gradients, further
    batches) until its share of what is left has passed (see :func:`network_record`).
    """
    load_start, start = os.getloadavg()[0], time.perf_counter()
    # The process's first compile pays one-time setup; it should not land on the first network.
    compiled(lambda x, k: jax.nn.silu(jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))) @ jnp.ones((3, 3)),
        jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 3)))
    records = []
    names = list(networks.NETWORKS)
    for i, name in enumerate(names):
        left = budget - (time.perf_counter() - start)
        records.append(network_record(name, config,
                                      time.perf_counter() + left / (len(names) - i)))
        save(records)
    run_info = dict(
        **environment(),
        load_average_1min=dict(start=load_start, end=os.getloadavg()[0]),
        seconds=round(time.perf_counter() - start, 1),
        settings={k: config[k] for k in ("tiny", "batch", "batches", "steps", "rounds",
                                         "compile_repeats", "grads")},
        budget_s=budget if math.isfinite(budget) else None,
        solver=dict(order=3, noise_scale="er_sde_5"),
        peak_bytes="argument + output + temp - alias of XLA's memory_analysis()",
    )
    return records, run_info


def print_small_network(record: dict) -> None:
    """Table of the small network's measurements."""
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


def print_networks(record: dict) -> None:
    """Table of the networks section and of the layout measurement."""
    mib = lambda b: f"{b / 2**20:9.1f} MiB"  # noqa: E731
    if "networks_run" in record:
        run = record["networks_run"]
        print(f"networks, {run['device']['platform']} ({run['device']['kind']}), "
              f"{run['settings']['steps']} steps, CFG on, bf16 network, f32 solver state")
    for r in record.get("networks", []):
        print(f"  {r['name']}: {r['params'] / 1e6:.1f}M parameters, {tuple(r['resolution'])}, "
              f"batch {r['batch']}")
        print(f"    overhead ratio  {r['overhead_ratio']:.3f} (target <= 1.05)   compile "
              f"{r['compile_seconds_sampler']:.1f} s / {r['compile_seconds_network']:.1f} s = "
              f"{r['compile_ratio']:.2f} (target <= 1.3)")
        print(f"    peak bytes      sampler {mib(r['peak_bytes_sampler'])}, network "
              f"{mib(r['peak_bytes_network'])}: {r['memory_ratio']:.2f} (target <= 1.2)")
        bare, alone = r["bare_scan"], r["solver_alone"]
        print(f"    bare scan of {r['steps']} guided calls: time {bare['scan_floor_ratio']:.3f} x "
              f"N calls, sampler / scan {bare['solver_overhead_ratio']:.3f}; compile "
              f"{bare['compile_seconds']:.1f} s; {mib(bare['peak_bytes'])}")
        print(f"    solver alone: compile {alone['compile_seconds']:.1f} s (without noise "
              f"{alone['compile_seconds_ode']:.1f} s), {mib(alone['peak_bytes'])}, "
              f"{1e3 * alone['sample_s']:.2f} ms")
        if r["peak_bytes_grad"] is not None:
            print(f"    grad peak bytes {mib(r['peak_bytes_grad'])}, remat "
                  f"{mib(r['peak_bytes_grad_remat'])}, one call "
                  f"{mib(r['peak_bytes_grad_network'])}")
        for row in r["throughput"]:
            print(f"    batch {row['batch']:3d}  {row['samples_per_s']:10.3f} samples/s   overhead "
                  f"{row['overhead_ratio']:.3f}")
    for dtype, row in record.get("layout", {}).get("results", {}).items():
        print(f"  conv stack {dtype:8s}  NHWC {1e3 * row['nhwc_s']:8.2f} ms   NCHW x"
              f"{row['nchw_over_nhwc']:.2f}   NCHW around NHWC convolutions x"
              f"{row['nchw_transposed_over_nhwc']:.2f}")


def print_table(record: dict, out) -> None:
    """Human-readable summary of the record written to ``out``."""
    if "model_call_s" in record:
        print_small_network(record)
    print_networks(record)
    print(f"written to {out}")


def section_list(text: str) -> list[str]:
    """``--sections``: a comma-separated subset of :data:`SECTIONS`."""
    sections = text.split(",")
    if unknown := set(sections) - set(SECTIONS):
        raise argparse.ArgumentTypeError(
            f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    return sections


def main() -> None:
    args = arguments("speed", __doc__, "small sizes and tiny networks", lambda parser: (
        parser.add_argument("--sections", type=section_list, default=SECTIONS,
                            help=f"comma-separated subset of {','.join(SECTIONS)} (default: all); "
                                 "a full run merges them into the existing results file"),
        parser.add_argument("--budget", type=float, default=math.inf,
                            help="seconds for the networks section: gradients and throughput "
                                 "batches beyond the headline one are skipped once it is spent")))
    merge = not args.quick and args.out.exists()
    record = json.loads(args.out.read_text()) if merge else make_record("speed", args.quick)
    config = NETWORK_CONFIGS["quick" if args.quick else
                             "cpu" if jax.default_backend() == "cpu" else "gpu"]
    if "networks" in args.sections:  # saved after each network (a timeout keeps those done)
        record.pop("networks_run", None)
        save = lambda records: write(dict(record, networks=records), args.out)  # noqa: E731
        record["networks"], record["networks_run"] = networks_section(config, save, args.budget)
    if "layout" in args.sections:
        record["layout"] = conv_stack_layouts(config["layout"])
        write(record, args.out)
    if "small" in args.sections:
        record.update(environment(), **small_network(args.quick))
    finish(record, args.out, print_table)

if __name__ == "__main__":
    main()
