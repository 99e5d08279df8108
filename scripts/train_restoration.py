"""Trains the conditional IR-SDE restoration model on the scikit-learn digits.

The task (see ``ersde_jax/pretrained/_data.py``): recover a clean 8x8 digit from its
2x2-average-pooled,
noisy version ``mu``. The model predicts the noise of the mean-reverting path
``x_t = mu + alpha_t (x0 - mu) + sigma_t eps`` of ``ej.paths.ir_sde(0.5, T=100, "cosine")`` at
uniformly drawn integer indices ``t`` in [0, T]. Everything is seeded; the run writes the
weights (``.npz``, keys like "conv0/w") and a JSON of the configuration next to them.

Usage:
    .venv/bin/python scripts/train_restoration.py [--steps 3000] [--out PATH.npz]
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import ersde_jax as ej
from ersde_jax.pretrained._data import load_split
from ersde_jax.pretrained._networks import flatten_params, init_restoration_net, restoration_net

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "restoration_digits.npz"
PATH_CONFIG = dict(max_sigma=0.5, T=100, schedule="cosine", eps=0.01)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="optimisation steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--lr", type=float, default=5e-3, help="peak learning rate")
    parser.add_argument("--channels", type=int, default=64, help="hidden feature maps")
    parser.add_argument("--ema", type=float, default=0.995, help="decay of the saved EMA weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    return parser.parse_args(argv)


def make_loss(path, T: int):
    """Returns ``loss(params, x0, mu, key)``: eps-prediction MSE at random integer indices."""
    index = jnp.arange(T + 1, dtype=jnp.float32)
    alphas, sigmas = path.alpha(index), path.sigma(index)

    def loss(params, x0, mu, key):
        k_t, k_eps = jax.random.split(key)
        t = jax.random.randint(k_t, (x0.shape[0],), 0, T + 1)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        a, s = alphas[t][:, None, None, None], sigmas[t][:, None, None, None]
        x_t = mu + a * (x0 - mu) + s * eps
        out = restoration_net(params, x_t, t.astype(jnp.float32), mu, T)
        return jnp.mean((out - eps) ** 2)

    return loss


def train(args) -> dict:
    """Runs the training and writes the weights and the JSON configuration."""
    start = time.perf_counter()
    path = ej.paths.ir_sde(**PATH_CONFIG)
    T = PATH_CONFIG["T"]
    clean, degraded = (jnp.asarray(a) for a in load_split("train"))
    n = clean.shape[0]

    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = init_restoration_net(k_init, args.channels)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, warmup_steps=min(100, args.steps // 10), decay_steps=args.steps,
        end_value=args.lr * 0.01,
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = optimizer.init(params)
    ema = jax.tree.map(jnp.copy, params)
    loss_fn = make_loss(path, T)

    # One jitted step driven from Python: XLA:CPU compiles convolutions inside a ``lax.scan``
    # into a loop ~40x slower than the same step compiled on its own.
    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, ema, opt_state, step):
        k_batch, k_loss = jax.random.split(jax.random.fold_in(k_train, step))
        idx = jax.random.randint(k_batch, (args.batch,), 0, n)
        value, grads = jax.value_and_grad(loss_fn)(params, clean[idx], degraded[idx], k_loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: args.ema * e + (1.0 - args.ema) * p, ema, params)
        return params, ema, opt_state, value

    losses = []
    for step in range(args.steps):
        params, ema, opt_state, value = train_step(params, ema, opt_state, step)
        losses.append(value)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            recent = float(np.mean(np.asarray(losses[-args.log_every:])))
            print(f"step {step + 1:5d}  loss {recent:.4f}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    losses = np.asarray(losses)
    train_time = time.perf_counter() - start

    flat = flatten_params(ema)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **flat)
    config = dict(
        **PATH_CONFIG, prediction="eps", channels=args.channels, steps=args.steps,
        batch=args.batch, lr=args.lr, ema=args.ema, seed=args.seed,
        final_loss=float(np.mean(losses[-min(100, len(losses)):])),
        param_count=int(sum(v.size for v in flat.values())),
        param_bytes=int(sum(v.nbytes for v in flat.values())),
        train_seconds=round(train_time, 1), jax_version=jax.__version__,
    )
    args.out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))
    return config


if __name__ == "__main__":
    train(parse_args())
