"""The training loop of the MNIST and restoration scripts: a step budget and a clock budget.

Training stops after ``steps`` steps or ``max_seconds`` of wall-clock time (counted from the end
of the first, compiling, step), whichever comes first. The learning rate warms up linearly and
then decays along a cosine over whichever of the two budgets runs out first,
``progress = max(step / steps, seconds / max_seconds)``, so that a run cut by the clock still
ends at a low learning rate, on a GPU (many steps) as on a CPU (few).
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["learning_rate", "train_loop"]


def learning_rate(peak: float, progress: float, warmup: float, end: float) -> float:
    """Linear warm-up to ``peak`` over the first ``warmup`` of training, then cosine decay to
    ``end * peak`` at ``progress = 1`` (optax's ``warmup_cosine_decay_schedule``, in fractions
    of the run)."""
    if progress < warmup:
        return peak * progress / warmup
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - warmup) / (1.0 - warmup))))
    return peak * (end + (1.0 - end) * cosine)


def train_loop(step_fn, state, *, steps: int, max_seconds: float, peak_lr: float,
               warmup: float, end: float, log_every: int):
    """Runs ``state, loss = step_fn(state, step, lr)`` within both budgets.

    Args:
        step_fn: one jitted optimisation step; ``lr`` is a Python float (no recompilation).
        state: its initial state (any pytree).
        steps: the most steps.
        max_seconds: the most seconds of training after the first step (``inf``: none).
        peak_lr, warmup, end: as :func:`learning_rate`.
        log_every: steps between log lines.

    Returns:
        ``(state, losses)``: the final state and the loss of every step run (numpy).
    """
    losses, step, start, clock = [], 0, time.perf_counter(), None
    while step < steps:
        seconds = 0.0 if clock is None else time.perf_counter() - clock
        if seconds >= max_seconds:
            break
        lr = learning_rate(peak_lr, max(step / steps, seconds / max_seconds), warmup, end)
        state, loss = step_fn(state, step, lr)
        losses.append(loss)
        step += 1
        if clock is None or step % 10 == 0:  # at most 10 steps queued: the clock stays honest
            loss.block_until_ready()
            clock = clock or time.perf_counter()
        if step % log_every == 0:
            recent = float(np.mean(np.asarray(losses[-log_every:])))
            print(f"step {step:6d}  loss {recent:.4f}  lr {lr:.2e}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return state, np.asarray(losses)
