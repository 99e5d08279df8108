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
from ersde_jax.pretrained._mnist import IMAGE_SIZE, class_interleaved, load_mnist, split_index
from ersde_jax.pretrained._training import (
    classifier_loss,
    make_step,
    save_run,
    train_loop,
    training_parser,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "mnist_classifier.npz"
REFERENCE = "mnist_reference.npz"
SIGMA_MAX = 80.0
PATCH = 2
WARMUP, END_LR = 0.02, 0.01  # fractions of the run and of the peak learning rate
FLOOR_SAMPLES = (200, 1000)


def parse_args(argv=None):
    parser = training_parser(__doc__.splitlines()[0], out=DEFAULT_OUT, steps=100_000, batch=512,
                             lr=3e-3, log_every=500, max_seconds=45.0)
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    return parser.parse_args(argv)


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

    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    params = init_classifier(k_init, IMAGE_SIZE, PATCH)
    optimizer = optax.chain(optax.scale_by_adam(),
                            optax.add_decayed_weights(args.weight_decay))
    train_step = make_step(classifier_loss(sigma_data, SIGMA_MAX), optimizer, (train_x, train_y),
                           k_train, args.batch)
    (params, _), losses = train_loop(
        train_step, (params, optimizer.init(params)), steps=args.steps,
        max_seconds=args.max_seconds, peak_lr=args.lr, warmup=WARMUP, end=END_LR,
        log_every=args.log_every)
    train_time = time.perf_counter() - start

    @jax.jit
    def correct(x, sigma, key):
        x = x + sigma * jax.random.normal(key, x.shape)
        return jnp.mean(jnp.argmax(classifier_logits(params, x, sigma, sigma_data), -1) == test_y)

    test_accuracy = {str(s): float(correct(test_x, s, k_eval)) for s in (0.0, 0.1, 0.5, 1.0, 2.0)}
    reference = reference_statistics(params, train_x, train_y, test_x, sigma_data)
    held_out_features = reference.pop("held_out_features")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out.with_name(REFERENCE), **reference)
    config = dict(
        sigma_data=sigma_data, sigma_clean=SIGMA_CLEAN, sigma_max=SIGMA_MAX,
        image_size=IMAGE_SIZE, patch=PATCH, train_images=int(train_x.shape[0]),
        steps=args.steps, steps_done=len(losses), max_seconds=args.max_seconds,
        batch=args.batch, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        test_accuracy_by_sigma=test_accuracy,
        fd_floor_by_samples=floors(reference["train_features"], held_out_features),
    )
    return save_run(args.out, params, config, losses, 500, train_time)


if __name__ == "__main__":
    train(parse_args())
