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

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ersde_jax.pretrained._data import GENERATIVE_HALF, load_clean, load_labels
from ersde_jax.pretrained._layers import flatten_params
from ersde_jax.pretrained._unet import NULL_LABEL, digits_unet, init_digits_unet

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "ersde_jax" / "pretrained" / "weights" / "digits_unet.npz"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="optimisation steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("--batch", type=int, default=96, help="batch size")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--channels", type=int, default=24, help="feature maps at 8x8")
    parser.add_argument("--ema", type=float, default=0.998, help="decay of the saved EMA weights")
    parser.add_argument("--label-dropout", type=float, default=0.1, help="P(label -> null)")
    parser.add_argument("--p-mean", type=float, default=-1.2, help="mean of log sigma")
    parser.add_argument("--p-std", type=float, default=1.2, help="std of log sigma")
    parser.add_argument("--seed", type=int, default=0, help="seed of init and batches")
    parser.add_argument("--log-every", type=int, default=200, help="steps between log lines")
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
        f = digits_unet(params, x / jnp.sqrt(norm2), jnp.log(sigma[:, 0, 0, 0]) / 4, labels)
        return jnp.mean((f - (x0 - c_skip * x) / c_out) ** 2)

    return loss


def train(args) -> dict:
    """Runs the training and writes the weights and the JSON configuration."""
    start = time.perf_counter()
    images = jnp.asarray(load_clean()[0][GENERATIVE_HALF])
    labels = jnp.asarray(load_labels()[GENERATIVE_HALF])
    sigma_data = float(np.std(np.asarray(images)))
    n = images.shape[0]

    k_init, k_train = jax.random.split(jax.random.key(args.seed))
    params = init_digits_unet(k_init, args.channels)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, args.lr, warmup_steps=min(200, args.steps // 10), decay_steps=args.steps,
        end_value=args.lr * 0.02,
    )
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    opt_state = optimizer.init(params)
    ema = jax.tree.map(jnp.copy, params)
    loss_fn = make_loss(sigma_data, args.p_mean, args.p_std, args.label_dropout)

    # One jitted step driven from Python: XLA:CPU runs convolutions inside a ``lax.scan`` far
    # slower than the same step compiled on its own.
    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def train_step(params, ema, opt_state, step):
        k_batch, k_loss = jax.random.split(jax.random.fold_in(k_train, step))
        idx = jax.random.randint(k_batch, (args.batch,), 0, n)
        value, grads = jax.value_and_grad(loss_fn)(params, images[idx], labels[idx], k_loss)
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
        path="edm", sigma_min=0.002, sigma_max=80.0, sigma_data=sigma_data, prediction="x0",
        null_label=NULL_LABEL, train_images=int(n), channels=args.channels, steps=args.steps,
        batch=args.batch, lr=args.lr, ema=args.ema, label_dropout=args.label_dropout,
        p_mean=args.p_mean, p_std=args.p_std, seed=args.seed,
        final_loss=float(np.mean(losses[-min(200, len(losses)):])),
        param_count=int(sum(v.size for v in flat.values())),
        param_bytes=int(sum(v.nbytes for v in flat.values())),
        train_seconds=round(train_time, 1), jax_version=jax.__version__,
    )
    args.out.with_suffix(".json").write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(config))
    return config


if __name__ == "__main__":
    train(parse_args())
