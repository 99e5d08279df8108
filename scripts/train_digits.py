"""Trains the bundled class-conditional digits model (EDM, Karras et al. 2022) on CPU.

The data are the 899 scikit-learn digits (8x8, scaled to [-1, 1]) of ``GENERATIVE_HALF`` of the
package's shuffled order, with their labels; the other half is the reference of the digits FD. The
network is the UNet of ``ersde_jax/pretrained/_unet.py`` wrapped in EDM's preconditioning; the
loss is EDM's
(section 5 and Table 1): ``log sigma ~ N(P_mean, P_std^2)`` and the weighted denoising error,
written on the raw network output ``F``. Labels are replaced by the null label with probability
``--label-dropout`` so that the one network is also the unconditional model (classifier-free
guidance). Everything is seeded; the run writes the EMA weights (``.npz``) and a JSON of the
configuration next to them.

Usage:
    .venv/bin/python scripts/train_digits.py [--steps 4000] [--out PATH.npz]
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ersde_jax.pretrained._data import GENERATIVE_HALF, load_clean, load_labels
from ersde_jax.pretrained._training import (
    add_edm_arguments,
    batch_gradient,
    edm_loss,
    save_run,
    train_loop,
    training_parser,
)
from ersde_jax.pretrained._unet import NULL_LABEL, digits_unet, init_digits_unet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "digits_unet.npz"
WARMUP_STEPS, END_LR = 200, 0.02  # warm-up: at most 200 steps and 10% of the run


def parse_args(argv=None):
    parser = training_parser(__doc__.splitlines()[0], out=DEFAULT_OUT, steps=4000, batch=96,
                             lr=2e-3, log_every=200)
    add_edm_arguments(parser, channels=24, size="8x8", ema=0.998)
    return parser.parse_args(argv)


def train(args) -> dict:
    """Runs the training and writes the weights and the JSON configuration."""
    start = time.perf_counter()
    images = jnp.asarray(load_clean()[0][GENERATIVE_HALF])
    labels = jnp.asarray(load_labels()[GENERATIVE_HALF])
    sigma_data = float(np.std(np.asarray(images)))

    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = init_digits_unet(k_init, args.channels)
    warmup = min(WARMUP_STEPS, args.steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, warmup_steps=warmup, decay_steps=args.steps, end_value=args.lr * END_LR)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    loss_fn = edm_loss(digits_unet, sigma_data, args.p_mean, args.p_std, args.label_dropout)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, step, lr):
        del lr  # the shipped model's arithmetic: optax's schedule, equal to train_loop's
        params, ema, opt_state = state
        value, grads = batch_gradient(loss_fn, params, (images, labels), k_train, step,
                                      args.batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: args.ema * e + (1.0 - args.ema) * p, ema, params)
        return (params, ema, opt_state), value

    state = (params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    (_, ema, _), losses = train_loop(
        train_step, state, steps=args.steps, max_seconds=math.inf, peak_lr=args.lr,
        warmup=warmup / args.steps, end=END_LR, log_every=args.log_every)
    config = dict(
        path="edm", sigma_min=0.002, sigma_max=80.0, sigma_data=sigma_data, prediction="x0",
        null_label=NULL_LABEL, train_images=int(images.shape[0]), channels=args.channels,
        steps=args.steps, batch=args.batch, lr=args.lr, ema=args.ema,
        label_dropout=args.label_dropout, p_mean=args.p_mean, p_std=args.p_std, seed=args.seed,
    )
    return save_run(args.out, ema, config, losses, 200, time.perf_counter() - start)


if __name__ == "__main__":
    train(parse_args())
