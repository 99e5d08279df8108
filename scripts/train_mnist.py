"""Trains the bundled class-conditional MNIST model (EDM, Karras et al. 2022), on CPU or GPU.

The data are the 4,000 training digits (28x28, scaled to [-1, 1]) of the fixed split of
``ersde_jax/pretrained/_mnist.py``, with their labels; the 1,000 held-out digits are the
reference of the MNIST FD. The network is the UNet of ``ersde_jax/pretrained/_unet.py`` (2x2
patches, levels 14x14 and 7x7) wrapped in EDM's preconditioning; the loss is EDM's (section 5 and
Table 1): ``log sigma ~ N(P_mean, P_std^2)`` and the weighted denoising error, written on the raw
network output ``F``. Labels are replaced by the null label with probability ``--label-dropout``
so that the one network is also the unconditional model (classifier-free guidance).

Training stops after ``--steps`` steps or ``--max-seconds`` of training (after compilation),
whichever comes first, and the learning rate warms up and decays along a cosine over whichever
runs out first (``ersde_jax/pretrained/_training.py``), on a GPU (many steps) as on a CPU (few).
Batches and initialisation are seeded; with a binding time budget the number of steps depends on
the machine (the JSON records it). The run writes the EMA weights (``.npz``; the EMA decay warms
up as ``min(ema, (1 + step) / (10 + step))``) and a JSON of the configuration next to them.

Usage:
    .venv/bin/python scripts/train_mnist.py [--data .gpu/mnist.npz] [--max-seconds 150]
        [--batch-size 512] [--out PATH.npz]
    On 2 CPU cores: --batch-size 64 --max-seconds 3600 (an hour).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ersde_jax.pretrained._mnist import IMAGE_SIZE, load_mnist, split_index
from ersde_jax.pretrained._training import (
    add_edm_arguments,
    edm_loss,
    make_step,
    save_run,
    train_loop,
    training_parser,
)
from ersde_jax.pretrained._unet import NULL_LABEL, init_unet, unet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "mnist_unet.npz"
MULTIPLIERS = (1, 2)
PATCH = 2
WARMUP, END_LR = 0.02, 0.02  # fractions of the run and of the peak learning rate


def parse_args(argv=None):
    parser = training_parser(__doc__.splitlines()[0], out=DEFAULT_OUT, steps=200_000, batch=512,
                             lr=2e-3, log_every=500, max_seconds=150.0)
    add_edm_arguments(parser, channels=48, size="14x14", ema=0.999)
    return parser.parse_args(argv)


def train(args) -> dict:
    """Runs the training and writes the weights and the JSON configuration."""
    start = time.perf_counter()
    images, labels = load_mnist(args.data)
    index = split_index(labels, "train")
    images, labels = jnp.asarray(images[index]), jnp.asarray(labels[index])
    sigma_data = float(np.std(np.asarray(images)))

    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = init_unet(k_init, args.channels, MULTIPLIERS, PATCH)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())
    loss_fn = edm_loss(unet, sigma_data, args.p_mean, args.p_std, args.label_dropout)
    train_step = make_step(loss_fn, optimizer, (images, labels), k_train, args.batch, args.ema)
    state = (params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    (_, ema, _), losses = train_loop(
        train_step, state, steps=args.steps, max_seconds=args.max_seconds,
        peak_lr=args.lr, warmup=WARMUP, end=END_LR, log_every=args.log_every)
    config = dict(
        path="edm", sigma_min=0.002, sigma_max=80.0, sigma_data=sigma_data, prediction="x0",
        null_label=NULL_LABEL, image_size=IMAGE_SIZE, train_images=int(images.shape[0]),
        channels=args.channels, multipliers=list(MULTIPLIERS), patch=PATCH, steps=args.steps,
        steps_done=len(losses), max_seconds=args.max_seconds, batch=args.batch, lr=args.lr,
        ema=args.ema, label_dropout=args.label_dropout, p_mean=args.p_mean, p_std=args.p_std,
        seed=args.seed,
    )
    return save_run(args.out, ema, config, losses, 500, time.perf_counter() - start)


if __name__ == "__main__":
    train(parse_args())
