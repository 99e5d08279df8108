"""Gradients through the whole sampler equal central finite differences (x64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, x64

import ersde_jax as ej


def _problem():
    path = ej.paths.edm()
    mixture = ej.testing.GaussianMixture(jnp.array([0.4, 0.6]),
                                         jnp.array([[1.5, 0.0], [-1.0, 1.0]]),
                                         jnp.array([0.4, 0.6]))
    x_T = ej.prior_sample(jax.random.key(0), path, (4, 2), dtype=jnp.float64)
    grid = jnp.asarray(ej.timesteps.karras(path, 8))
    return path, mixture, x_T, grid


def _loss(mixture, x_T, grid, *, solver, checkpoint=False):
    path = ej.paths.edm()
    model = ej.testing.mixture_model(mixture, path)
    x = ej.sample(jax.random.key(1), model, x_T, solver, timesteps=grid,
                  checkpoint=checkpoint).x
    return jnp.sum(jnp.sin(x))


def _central(f, x, direction, eps=1e-6):
    return (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)


@pytest.mark.parametrize("solver", [ej.er_sde(3, "ode"), ej.er_sde(3, "er_sde_5"), ej.edm_heun(),
                                    ej.edm_stochastic(20.0, 0.01, 60.0)])
def test_gradients_match_finite_differences(solver):
    with x64():
        _, mixture, x_T, grid = _problem()
        loss = lambda m, x, g: _loss(m, x, g, solver=solver)  # noqa: E731
        g_m, g_x, g_grid = jax.grad(loss, argnums=(0, 1, 2))(mixture, x_T, grid)
        d_x = jax.random.normal(jax.random.key(2), x_T.shape, jnp.float64)
        assert_allclose(jnp.vdot(g_x, d_x), _central(lambda x: loss(mixture, x, grid), x_T, d_x),
                        rtol=1e-6)
        d_means = jax.random.normal(jax.random.key(3), mixture.means.shape, jnp.float64)
        fd = _central(lambda m: loss(mixture._replace(means=m), x_T, grid), mixture.means,
                      d_means)
        assert_allclose(jnp.vdot(g_m.means, d_means), fd, rtol=1e-6)
        d_grid = jnp.zeros_like(grid).at[1:-1].set(
            jax.random.normal(jax.random.key(4), (grid.shape[0] - 2,)) * grid[1:-1] * 1e-2)
        fd = _central(lambda g: loss(mixture, x_T, g), grid, d_grid)
        assert_allclose(jnp.vdot(g_grid, d_grid), fd, rtol=1e-5)


def test_checkpointed_gradients_equal_plain_ones():
    with x64():
        _, mixture, x_T, grid = _problem()
        for solver in (ej.er_sde(3, "er_sde_5"), ej.edm_stochastic(20.0, 0.01, 60.0)):
            plain = jax.grad(lambda x, s=solver: _loss(mixture, x, grid, solver=s))(x_T)
            remat = jax.grad(lambda x, s=solver: _loss(mixture, x, grid, solver=s,
                                                        checkpoint=True))(x_T)
            assert_allclose(remat, plain, rtol=1e-12)
            assert np.all(np.isfinite(np.asarray(plain)))
