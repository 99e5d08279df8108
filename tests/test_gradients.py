"""Gradients through the whole sampler equal central finite differences (x64).

Each check projects the reverse-mode gradient on a random direction and compares it with the
central difference of the same compiled loss, to a relative tolerance of 5e-6 (the differences
err by at most 1e-6 here), far below the 1e-2 of a gradient that is off by 1%.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, x64

import ersde_jax as ej

SOLVERS = {
    "er_sde_ode": ej.er_sde(3, "ode"),
    "er_sde_5": ej.er_sde(3, "er_sde_5"),
    "edm_heun": ej.edm_heun(),
    "edm_stochastic": ej.edm_stochastic(20.0, 0.01, 60.0),
    "ddim_0.5": ej.ddim(0.5),
    "mr_sde_2": ej.mr_sde(2),  # SDE-DPM-Solver++(2M) on this path (mu = 0)
}


def _mixture():
    return ej.testing.GaussianMixture(jnp.array([0.4, 0.6]),
                                      jnp.array([[1.5, 0.0], [-1.0, 1.0]]),
                                      jnp.array([0.4, 0.6]))


def _conditional_model(mixture, path):
    """Exact denoiser of ``mixture`` with its means shifted by ``cond`` (shape ``(d,)``)."""

    def apply_fn(params, x, t, cond):
        shifted = params._replace(means=params.means + cond)
        return ej.testing.mixture_posterior_mean(shifted, x, path.alpha(t), path.sigma(t))

    return ej.Model(apply_fn, mixture, path=path, prediction="x0")


def _problem(path):
    x_T = ej.prior_sample(jax.random.key(0), path, (4, 2), dtype=jnp.float64)
    grid = jnp.asarray(ej.timesteps.karras(path, 8))
    return x_T, grid


def _loss(mixture, x_T, grid, solver, *, path=None, cond=None, checkpoint=False):
    """``(sum(sin(x)), x)`` for the sample ``x``."""
    model = _conditional_model(mixture, path or ej.paths.edm())
    cond = jnp.zeros(x_T.shape[1:]) if cond is None else cond
    x = ej.sample(jax.random.key(1), model, x_T, solver, timesteps=grid, cond=cond,
                  checkpoint=checkpoint).x
    return jnp.sum(jnp.sin(x)), x


def _random_like(key, tree, scale=1.0):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, jnp.shape(v), jnp.float64)
                              for k, v in zip(keys, leaves, strict=True)])


def _assert_gradients(loss, args, directions, rtol=5e-6, eps=1e-5):
    """``<grad_i loss, d_i>`` equals the central difference along ``d_i`` for each ``i: d_i``.

    ``loss`` returns ``(value, aux)``; one compiled ``value_and_grad`` serves the gradient and the
    differences.

    Returns:
        The gradients with respect to every argument, and ``aux`` at ``args``.
    """
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(args))),
                                                has_aux=True))
    (_, aux), grads = value_and_grad(*args)
    for i, direction in directions.items():

        def moved(step, i=i, direction=direction):
            arg = jax.tree_util.tree_map(lambda a, v: a + step * v, args[i], direction)
            return value_and_grad(*args[:i], arg, *args[i + 1:])[0][0]

        fd = (moved(eps) - moved(-eps)) / (2 * eps)
        ad = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads[i]),
                                                jax.tree_util.tree_leaves(direction),
                                                strict=True))
        assert_allclose(ad, fd, rtol=rtol, err_msg=f"argument {i}")
        assert not np.isclose(1.01 * ad, fd, rtol=rtol, atol=0.0)  # the check can fail
    return grads, aux


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_gradients_match_finite_differences(solver):
    """Mixture parameters, ``x_T``, ``cond`` and the grid but its clean end (EDM path)."""
    with x64():
        mixture = _mixture()
        x_T, grid = _problem(ej.paths.edm())
        cond = jnp.array([0.3, -0.2])
        key = jax.random.split(jax.random.key(2), 4)
        d_mixture = jax.tree_util.tree_map(jnp.zeros_like, mixture)._replace(
            means=_random_like(key[0], mixture.means))
        d_grid = _random_like(key[1], grid, 1e-2) * grid  # 0 at the clean end
        directions = {0: d_mixture, 1: _random_like(key[2], x_T), 2: d_grid,
                      3: _random_like(key[3], cond)}
        _assert_gradients(lambda m, x, g, c: _loss(m, x, g, solver, cond=c),
                          (mixture, x_T, grid, cond), directions)


def _user_phi(rho, p):
    """``phi(rho) = rho (exp(p0 rho^p1) + 10)``; ``phi / rho`` is non-decreasing for ``p > 0``."""
    return rho * (jnp.exp(p[0] * rho ** p[1]) + 10.0)


@pytest.mark.parametrize("make, theta", [
    (lambda eta, s_noise: ej.er_sde(3, "er_sde_5", eta=eta, s_noise=s_noise), (0.7, 0.8)),
    (lambda p: ej.er_sde(3, _user_phi, noise_scale_params=p), ([0.8, 0.4],)),
    (lambda eta: ej.ddim(eta), (0.5,)),
], ids=["er_sde_eta_s_noise", "er_sde_user_phi_params", "ddim_eta"])
def test_gradients_wrt_solver_hyperparameters_match_finite_differences(make, theta):
    """``eta``, ``s_noise`` and noise-scale parameters are differentiable pytree leaves."""
    with x64():
        mixture = _mixture()
        x_T, grid = _problem(ej.paths.edm())
        theta = tuple(jnp.asarray(v, jnp.float64) for v in theta)
        key = jax.random.split(jax.random.key(3), len(theta))
        directions = {i: _random_like(k, v) for i, (k, v) in enumerate(zip(key, theta,
                                                                          strict=True))}
        _assert_gradients(lambda *th: _loss(mixture, x_T, grid, make(*th)), theta, directions)


@pytest.mark.parametrize("name", ["er_sde_5", "ddim_0.5", "edm_heun"])
def test_gradient_wrt_whole_grid_matches_on_vp_linear(name):
    """Every grid point on a VP path, where ``d sigma / dt`` is infinite at the clean end.

    The last step, to ``t_N = 0``, is the denoising step ``x = alpha(t_N) x0_hat``, so
    ``d loss / d t_N = alpha'(0) <d loss / dx, x>`` with ``alpha'(0) = -beta_min / 2``; no central
    difference exists there (``t_N < 0`` is off the path).
    """
    solver = SOLVERS[name]
    with x64():
        path = ej.paths.vp_linear(t_max=0.9)
        mixture = _mixture()
        x_T, grid = _problem(path)
        d_grid = _random_like(jax.random.key(4), grid, 1e-2) * grid  # 0 at t_N = 0
        (g_grid,), x = _assert_gradients(lambda g: _loss(mixture, x_T, g, solver, path=path),
                                         (grid,), {0: d_grid})
        assert_allclose(g_grid[-1], -0.5 * path.beta_min * jnp.vdot(jnp.cos(x), x), rtol=1e-10)


def test_checkpointed_gradients_equal_plain_ones():
    with x64():
        mixture = _mixture()
        x_T, grid = _problem(ej.paths.edm())
        for solver in (ej.er_sde(3, "er_sde_5"), ej.edm_stochastic(20.0, 0.01, 60.0)):
            plain = jax.grad(lambda x, s=solver: _loss(mixture, x, grid, s)[0])(x_T)
            remat = jax.grad(lambda x, s=solver: _loss(mixture, x, grid, s, checkpoint=True)[0])(
                x_T)
            assert_allclose(remat, plain, rtol=1e-12)
            assert np.all(np.isfinite(np.asarray(plain)))


def test_checkpoint_bounds_the_memory_of_the_backward_pass():
    """Plain reverse mode stores every step's activations; ``checkpoint=True`` only the states."""
    path = ej.paths.edm()
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    params = (jax.random.normal(k1, (16, 1024)) / 4, jax.random.normal(k2, (1024, 16)) / 32)
    x_T = ej.prior_sample(k3, path, (64, 16))

    def apply_fn(params, x, t, cond):  # an MLP with a wide hidden layer
        w1, w2 = params
        return jnp.tanh(x @ w1 + jnp.log(t)) @ w2

    def temp_bytes(steps, checkpoint):
        def loss(params):
            model = ej.Model(apply_fn, params, path=path, prediction="eps")
            x = ej.sample(None, model, x_T, ej.ddim(), steps=steps, checkpoint=checkpoint).x
            return jnp.sum(x**2)

        stats = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis()
        if stats is None:
            pytest.skip("memory_analysis() is not available on this backend")
        return stats.temp_size_in_bytes

    plain = temp_bytes(40, False) - temp_bytes(10, False)
    remat = temp_bytes(40, True) - temp_bytes(10, True)
    assert plain > 30 * 64 * 1024 * 4  # at least one hidden activation per step
    assert remat < plain / 3
