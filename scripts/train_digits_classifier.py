"""Trains the bundled noise-aware digits classifier (guidance and the digits FD) on CPU.

Trained on the 1500 training digits of ``ersde_jax/pretrained/_data.py`` (the 297 others measure its
accuracy) with cross-entropy on noisy images ``x0 + sigma eps``: half of every batch is clean
(``sigma = SIGMA_CLEAN``) and half has ``log sigma`` uniform over the EDM range
``[log 0.002, log 80]``, so that one network serves both as the feature extractor of the
digits Fréchet distance (clean) and as the ``log p(y | x_t)`` of classifier guidance (noisy).

Usage:
    .venv/bin/python scripts/train_digits_classifier.py [--steps 2000] [--out PATH.npz]
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

from ersde_jax.pretrained._classifier import SIGMA_CLEAN, classifier_logits, init_digits_classifier
from ersde_jax.pretrained._data import N_TRAIN, load_clean, load_labels
from ersde_jax.pretrained._training import (
    batch_gradient,
    classifier_loss,
    save_run,
    train_loop,
    training_parser,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "digits_classifier.npz"
SIGMA_MAX = 80.0
WARMUP_STEPS, END_LR = 100, 0.01  # warm-up: at most 100 steps and 10% of the run


def parse_args(argv=None):
    parser = training_parser(__doc__.splitlines()[0], out=DEFAULT_OUT, steps=2000, batch=128,
                             lr=3e-3, log_every=200)
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    return parser.parse_args(argv)


def accuracy(params, images, labels, sigma, sigma_data, key) -> float:
    """Accuracy on ``images`` noised at one level ``sigma``."""
    x = images + sigma * jax.random.normal(key, images.shape)
    logits = classifier_logits(params, x, sigma, sigma_data)
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


def train(args) -> dict:
    """Runs the training and writes the weights and the JSON configuration."""
    start = time.perf_counter()
    images, labels = jnp.asarray(load_clean()[0]), jnp.asarray(load_labels())
    sigma_data = float(np.std(np.asarray(images)))
    train_x, train_y = images[:N_TRAIN], labels[:N_TRAIN]
    test_x, test_y = images[N_TRAIN:], labels[N_TRAIN:]

    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    params = init_digits_classifier(k_init)
    warmup = min(WARMUP_STEPS, args.steps // 10)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, warmup_steps=warmup, decay_steps=args.steps, end_value=args.lr * END_LR)
    optimizer = optax.adamw(schedule, weight_decay=args.weight_decay)
    loss_fn = classifier_loss(sigma_data, SIGMA_MAX)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, step, lr):
        del lr  # the shipped model's arithmetic: optax's schedule, equal to train_loop's
        params, opt_state = state
        value, grads = batch_gradient(loss_fn, params, (train_x, train_y), k_train, step,
                                      args.batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, _), losses = train_loop(
        train_step, (params, optimizer.init(params)), steps=args.steps, max_seconds=math.inf,
        peak_lr=args.lr, warmup=warmup / args.steps, end=END_LR, log_every=args.log_every)
    train_time = time.perf_counter() - start

    test_accuracy = {str(s): accuracy(params, test_x, test_y, s, sigma_data, k_eval)
                     for s in (0.0, 0.1, 0.5, 1.0, 2.0)}
    config = dict(
        sigma_data=sigma_data, sigma_clean=SIGMA_CLEAN, sigma_max=SIGMA_MAX, steps=args.steps,
        batch=args.batch, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        test_accuracy_by_sigma=test_accuracy,
    )
    return save_run(args.out, params, config, losses, 200, train_time)


if __name__ == "__main__":
    train(parse_args())
