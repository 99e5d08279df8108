"""A progress bar that works inside jit-compiled sampling, through ``jax.debug.callback``."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np

__all__ = ["report_step"]


@dataclasses.dataclass
class _Run:
    """The bar of one sampling run and which of its callers (devices) started and finished."""

    bar: object
    callers: int
    started: set = dataclasses.field(default_factory=set)
    finished: set = dataclasses.field(default_factory=set)


_runs: dict[int, _Run] = {}  # by step count
_lock = threading.Lock()


def _tick(step, total, caller=0, callers=1) -> None:
    # Under vmap the callback may see a batch of (identical) step indices. Under shard_map or pmap
    # every device calls it (``caller`` of ``callers``), from several threads and far out of step
    # with each other: one bar per run, forward-only updates, and the run kept until every
    # caller has reported its last step, so that a late device's steps draw no second bar. A
    # caller reporting step 0 again starts a new run: the previous one was aborted, its bar is
    # closed and a fresh one starts.
    step, total, caller = int(np.max(step)), int(np.max(total)), int(np.max(caller))
    with _lock:
        run = _runs.get(total)
        if step == 0 and (run is None or caller in run.started):
            if run is not None:
                run.bar.close()
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="sampling", leave=False)
            run = _runs[total] = _Run(bar, int(np.max(callers)))
        if run is None:
            return
        if step == 0:
            run.started.add(caller)
        if step + 1 > run.bar.n:
            run.bar.update(step + 1 - run.bar.n)
        if step + 1 >= total:
            run.bar.close()
            run.finished.add(caller)
            if len(run.finished) >= run.callers:
                del _runs[total]


def report_step(step, total: int) -> None:
    """Advances the host-side progress bar to ``step + 1`` of ``total`` (call inside the scan).

    Inside ``shard_map`` (or ``pmap``) every device reports; the callback is told which device
    it is, so the devices share one bar.
    """
    import jax

    mesh = jax.sharding.get_abstract_mesh()
    manual = tuple(mesh.manual_axes)
    if not manual:
        jax.debug.callback(_tick, step, total)
        return
    callers = math.prod(mesh.shape[name] for name in manual)
    jax.debug.callback(_tick, step, total, jax.lax.axis_index(manual), callers)
