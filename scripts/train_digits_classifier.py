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

from ersde_jax.pretrained._classifier import SIGMA_CLEAN, classifier_logits, init_digits_classifier
from ersde_jax.pretrained._data import N_TRAIN, load_clean, load_labels
from ersde_jax.pretrained._layers import flatten_params

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "digits_classifier.npz"
SIGMA_MAX = 80.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimisation steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, default=200, help="steps between log lines")
    return parser.parse_args(argv)


def noisy_batch(key, x0, sigma_data):
    """Half clean, half log-uniform noise levels; returns ``(x, sigma)``."""
    del sigma_data
    k_sigma, k_eps = jax.random.split(key)
    n = x0.shape[0]
    log_sigma = jax.random.uniform(k_sigma, (n,), minval=math.log(SIGMA_CLEAN),
                                   maxval=math.log(SIGMA_MAX))
    sigma = jnp.where(jnp.arange(n) < n // 2, SIGMA_CLEAN, jnp.exp(log_sigma))
    return x0 + sigma[:, None, None, None] * jax.random.normal(k_eps, x0.shape), sigma


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
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, warmup_steps=min(100, args.steps // 10), decay_steps=args.steps,
        end_value=args.lr * 0.01,
    )
    optimizer = optax.adamw(schedule, weight_decay=args.weight_decay)
    opt_state = optimizer.init(params)

    def loss_fn(params, x0, y, key):
        x, sigma = noisy_batch(key, x0, sigma_data)
        logits = classifier_logits(params, x, sigma, sigma_data)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, step):
        k_batch, k_loss = jax.random.split(jax.random.fold_in(k_train, step))
        idx = jax.random.randint(k_batch, (args.batch,), 0, N_TRAIN)
        value, grads = jax.value_and_grad(loss_fn)(params, train_x[idx], train_y[idx], k_loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    losses = []
    for step in range(args.steps):
        params, opt_state, value = train_step(params, opt_state, step)
        losses.append(value)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            recent = float(np.mean(np.asarray(losses[-args.log_every:])))
            print(f"step {step + 1:5d}  loss {recent:.4f}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    train_time = time.perf_counter() - start

    test_accuracy = {str(s): accuracy(params, test_x, test_y, s, sigma_data, k_eval)
                     for s in (0.0, 0.1, 0.5, 1.0, 2.0)}
    flat = flatten_params(params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **flat)
    config = dict(
        sigma_data=sigma_data, sigma_clean=SIGMA_CLEAN, sigma_max=SIGMA_MAX, steps=args.steps,
        batch=args.batch, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        test_accuracy_by_sigma=test_accuracy,
        final_loss=float(np.mean(np.asarray(losses[-min(200, len(losses)):]))),
        param_count=int(sum(v.size for v in flat.values())),
        train_seconds=round(train_time, 1), jax_version=jax.__version__,
    )
    args.out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))
    return config


if __name__ == "__main__":
    train(parse_args())
