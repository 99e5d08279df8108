"""A progress bar that works inside jit-compiled sampling, through ``jax.debug.callback``."""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["report_step"]

_bars: dict[int, object] = {}
_lock = threading.Lock()


def _tick(step, total) -> None:
    # Under vmap the callback may see a batch of (identical) step indices; under shard_map or pmap
    # every device calls it, from several threads: a lock, forward-only updates, and no new bar
    # for a late duplicate of a finished run's last steps.
    step, total = int(np.max(step)), int(np.max(total))
    with _lock:
        bar = _bars.get(total)
        if bar is None:
            if step != 0:
                return
            from tqdm.auto import tqdm

            bar = _bars[total] = tqdm(total=total, desc="sampling", leave=False)
        if step + 1 > bar.n:
            bar.update(step + 1 - bar.n)
        if step + 1 >= total:
            bar.close()
            del _bars[total]


def report_step(step, total: int) -> None:
    """Advances the host-side progress bar to ``step + 1`` of ``total`` (call inside the scan)."""
    import jax

    jax.debug.callback(_tick, step, total)
