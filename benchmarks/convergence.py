"""Convergence orders of the ODE solvers against closed-form solutions (x64).

* ER-SDE-Solvers 1-3 with the ODE noise scale on an exact single Gaussian, EDM path and Karras
  grid, errors at sigma_min for N = 10, 20, 40, 80; third order with both first-derivative
  estimates ("quadratic", the default, and the release's "backward").
* MR Sampler ODE 1-3, data and noise parameterization, on an exact conditional Gaussian
  (``x0 - mu`` Gaussian) on the IR-SDE path, uniform-lambda grids, N = 20, 40, 80, 160; third order
  with both second-difference weights ("taylor", the default, and the published "release").

The error is the largest absolute deviation from the closed-form PF-ODE solution; the order is
minus the least-squares slope of log(error) against log(N). Run from the repository root::

    python benchmarks/convergence.py [--quick]

Writes ``benchmarks/results/convergence.json`` (``convergence_quick.json`` with ``--quick``); the
last stdout line is the record as one JSON object.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _common import arguments, finish, make_record

import ersde_jax as ej

MEAN, STD = 0.3, 0.2


def slope(steps, errors) -> float:
    """Minus the least-squares slope of log(error) against log(steps)."""
    return float(-np.polyfit(np.log(steps), np.log(errors), 1)[0])


def gaussian(path, mu):
    """Exact denoiser of x0 ~ N(MEAN, STD^2 I) and a start x_T = mu + prior_std z."""
    mixture = ej.testing.GaussianMixture(jnp.ones(1), jnp.full((1, 4), MEAN), jnp.full((1,), STD))
    x_T = ej.prior_sample(jax.random.key(0), path, (32, 4), mu=mu, dtype=jnp.float64)
    return ej.testing.mixture_model(mixture, path), x_T


def er_sde_rows(steps) -> list[dict]:
    path = ej.paths.edm()
    model, x_T = gaussian(path, None)
    rows = []
    for order, derivative in ((1, "quadratic"), (2, "quadratic"), (3, "quadratic"),
                              (3, "backward")):
        errors = []
        for n in steps:
            ts = ej.timesteps.karras(path, n, end="t_min")
            x = ej.ersde_sample(None, model, x_T, order=order, noise_scale="ode", timesteps=ts,
                                derivative=derivative)
            exact = ej.testing.gaussian_pf_ode(MEAN, STD, path, ts[0], ts[-1], x_T)
            errors.append(float(jnp.max(jnp.abs(x - exact))))
        rows.append(dict(solver=f"er_sde_{order}", variant=derivative, steps=list(steps),
                         errors=errors, order=slope(steps, errors)))
    return rows


def mr_rows(steps) -> list[dict]:
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    mu = 0.5 * jax.random.normal(jax.random.key(5), (32, 4), jnp.float64)
    model, x_T = gaussian(path, mu)
    rows = []
    for parameterization in ("data", "noise"):
        for order, rule in ((1, "taylor"), (2, "taylor"), (3, "taylor"), (3, "release")):
            errors = []
            for n in steps:
                ts = ej.timesteps.uniform_lambda(path, n, end="t_min")
                x = ej.mr_sample(None, model, x_T, mu, steps=n, order=order, timesteps=ts,
                                 parameterization=parameterization, third_order=rule)
                exact = mu + ej.testing.gaussian_pf_ode(MEAN - mu, STD, path, ts[0], ts[-1],
                                                        x_T - mu)
                errors.append(float(jnp.max(jnp.abs(x - exact))))
            rows.append(dict(solver=f"mr_ode_{order}_{parameterization}", variant=rule,
                             steps=list(steps), errors=errors, order=slope(steps, errors)))
    return rows


def print_table(record_: dict, out) -> None:
    """One line per solver: errors against N and the fitted order."""
    del out
    for row in record_["results"]:
        errors = " ".join(f"{e:.1e}" for e in row["errors"])
        print(f"  {row['solver']:18s} {row['variant']:9s} {errors}   order {row['order']:.2f}")


def main() -> None:
    args = arguments("convergence", __doc__, "fewer step counts")
    with jax.enable_x64(True):
        er_steps = (10, 20) if args.quick else (10, 20, 40, 80)
        mr_steps = (20, 40) if args.quick else (20, 40, 80, 160)
        rows = er_sde_rows(er_steps) + mr_rows(mr_steps)
    finish(make_record("convergence", args.quick, results=rows), args.out, print_table)


if __name__ == "__main__":
    main()
