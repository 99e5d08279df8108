"""A progress bar that works inside jit-compiled sampling, through ``jax.debug.callback``."""

from __future__ import annotations

import numpy as np

__all__ = ["report_step"]

_bars: dict[int, object] = {}


def _tick(step, total) -> None:
    # Under vmap or sharding the callback may see a batch of (identical) step indices.
    step, total = int(np.max(step)), int(np.max(total))
    if step == 0 or total not in _bars:
        from tqdm.auto import tqdm

        if total in _bars:
            _bars[total].close()
        _bars[total] = tqdm(total=total, desc="sampling", leave=False)
    bar = _bars[total]
    bar.update(step + 1 - bar.n)
    if step + 1 >= total:
        bar.close()
        del _bars[total]


def report_step(step, total: int) -> None:
    """Advances the host-side progress bar to ``step + 1`` of ``total`` (call inside the scan)."""
    import jax

    jax.debug.callback(_tick, step, total)
