"""Bad input raises a clear error at the API boundary, before tracing where possible."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import two_component_mixture

import ersde_jax as ej


@pytest.fixture(scope="module")
def setup():
    path = ej.paths.edm()
    model = ej.testing.mixture_model(two_component_mixture(), path)
    return model, ej.prior_sample(jax.random.key(0), path, (4, 2))


def _sample(setup, **kwargs):
    model, x_T = setup
    return ej.ersde_sample(jax.random.key(1), model, x_T, **kwargs)


def test_unknown_prediction():
    with pytest.raises(ValueError, match="Unknown prediction 'velocity'"):
        ej.Model(lambda p, x, t, c: x, None, path=ej.paths.edm(), prediction="velocity")


def test_model_needs_a_path_and_a_callable():
    with pytest.raises(TypeError, match="path must be"):
        ej.Model(lambda p, x, t, c: x, None, path="edm", prediction="x0")
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        ej.Model(None, None, path=ej.paths.edm(), prediction="x0")


def test_unknown_noise_scale(setup):
    with pytest.raises(ValueError, match="Unknown noise scale 'er_sde_9'"):
        _sample(setup, noise_scale="er_sde_9")
    with pytest.raises(TypeError, match="noise_scale must be"):
        _sample(setup, noise_scale=3)


def test_noise_scale_violating_the_constraint(setup):
    # phi(x)/x = exp(-x) decreases.
    with pytest.raises(ValueError, match="non-decreasing"):
        _sample(setup, noise_scale=lambda x: x * jnp.exp(-x))
    with pytest.raises(ValueError, match="finite and > 0"):
        _sample(setup, noise_scale=lambda x: x - 1.0)
    with pytest.raises(ValueError, match="eta must be"):
        _sample(setup, eta=-0.5)


@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one(setup, steps):
    with pytest.raises(ValueError, match="steps must be >= 1"):
        _sample(setup, steps=steps)


def test_steps_not_an_int(setup):
    with pytest.raises(TypeError, match="steps must be an int"):
        _sample(setup, steps=2.5)


@pytest.mark.parametrize("order", [0, 4, True])
def test_order_out_of_range(setup, order):
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        _sample(setup, order=order)


def test_unknown_derivative_and_bad_riemann(setup):
    with pytest.raises(ValueError, match="Unknown derivative"):
        _sample(setup, derivative="central")
    with pytest.raises(ValueError, match="riemann_points"):
        _sample(setup, riemann_points=0)


@pytest.mark.parametrize(
    "grid,match",
    [
        ([80.0, 10.0, 0.0], "length steps \\+ 1"),
        ([80.0, 1.0, 10.0, 0.0], "strictly decreasing"),
        ([80.0, 10.0, 10.0, 0.0], "duplicates"),
        ([80.0, np.nan, 1.0, 0.0], "finite"),
        ([80.0, 10.0, 0.0, -1.0], "outside the path's domain"),
        ([80.0, 10.0, 0.0, 0.0], "duplicates"),
    ],
)
def test_bad_grids(setup, grid, match):
    with pytest.raises(ValueError, match=match):
        _sample(setup, steps=3, timesteps=np.asarray(grid))


def test_grid_domain():
    model = ej.testing.mixture_model(two_component_mixture(), ej.paths.vp_linear())
    x_T = jnp.zeros((2, 2))
    for grid in ([0.9, 0.5, 0.0], [0.9, 0.5, 0.1]):  # ending at the clean time or before it
        assert np.all(np.isfinite(ej.ersde_sample(jax.random.key(0), model, x_T, steps=2,
                                                  timesteps=np.array(grid))))
    with pytest.raises(ValueError, match="outside the path's domain"):
        ej.ersde_sample(jax.random.key(0), model, x_T, steps=2,
                        timesteps=np.array([1.5, 0.5, 0.0]))


def test_x_T_not_floating(setup):
    model, _ = setup
    with pytest.raises(TypeError, match="x_T must be a floating-point array"):
        ej.ersde_sample(jax.random.key(0), model, jnp.zeros((4, 2), jnp.int32))
    with pytest.raises(TypeError, match="x_T must be a floating-point array"):
        ej.ersde_sample(jax.random.key(0), model, [[0.0, 1.0]])


def test_model_output_shape_mismatch():
    model = ej.Model(lambda p, x, t, c: x[..., :1], None, path=ej.paths.edm(), prediction="x0")
    with pytest.raises(ValueError, match="Model output shape .* differs from the input shape"):
        ej.ersde_sample(jax.random.key(0), model, jnp.zeros((4, 2)))


def test_bad_key_and_mu(setup):
    model, x_T = setup
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        ej.ersde_sample(None, model, x_T)
    with pytest.raises(ValueError, match="one key per sample"):
        ej.ersde_sample(jax.random.split(jax.random.key(0), 3), model, x_T)
    with pytest.raises(ValueError, match="mu of shape"):
        ej.ersde_sample(jax.random.key(0), model, x_T, mu=jnp.zeros((3, 2)))


def test_bad_paths_and_grids():
    with pytest.raises(ValueError, match="edm"):
        ej.paths.edm(sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="flow: need 0.0 <= t_min < t_max <= 1.0"):
        ej.paths.flow(t_max=1.5)  # t_max = 1 (pure noise) is allowed: tests/test_zero_snr.py
    with pytest.raises(ValueError, match="betas"):
        ej.paths.vp_discrete(np.array([0.1, 1.5]))
    with pytest.raises(ValueError, match="lambda_min"):
        ej.timesteps.uniform_lambda(ej.paths.vp_cosine(), 10, lambda_min=20.0)
    with pytest.raises(ValueError, match="Unknown grid end"):
        ej.timesteps.karras(ej.paths.edm(), 10, end="zero")


def test_frechet_distance_of_non_finite_features():
    """A diverged sampler returns NaN by design; the metric says so instead of a LinAlgError."""
    x = np.random.default_rng(0).normal(size=(50, 4))
    bad = x.copy()
    bad[[3, 7], 1] = [np.nan, np.inf]
    with pytest.raises(ValueError, match="2 of the 50 rows of y are not finite"):
        ej.metrics.frechet_distance(x, bad)
    with pytest.raises(ValueError, match="rows of x are not finite"):
        ej.metrics.frechet_distance(bad, x)


def test_an_int_key_is_a_clear_type_error(setup):
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        ej.ersde_sample(0, *setup)


@pytest.mark.parametrize("s_noise", [float("nan"), -0.5])
def test_bad_concrete_s_noise(setup, s_noise):
    with pytest.raises(ValueError, match="s_noise must be finite and >= 0"):
        _sample(setup, s_noise=s_noise)
    with pytest.raises(ValueError, match="s_noise must be finite and >= 0"):
        ej.sample(jax.random.key(0), setup[0], setup[1], ej.mr_sde(2, s_noise=s_noise))


def test_grid_starting_above_t_max(setup):
    model, x_T = setup
    grid = np.array([100.0, 10.0, 1.0, 0.0])  # edm's t_max is 80
    with pytest.raises(ValueError, match="above the path's t_max"):
        _sample(setup, steps=3, timesteps=grid)
    grid[0] = model.path.t_max
    assert np.all(np.isfinite(np.asarray(_sample(setup, steps=3, timesteps=grid))))


def test_solver_and_driver_options_of_the_wrong_type(setup):
    model, x_T = setup
    with pytest.raises(TypeError, match="solver must be an ej.AbstractSolver"):
        ej.sample(jax.random.key(0), model, x_T, "er_sde")
    with pytest.raises(TypeError, match="noise must be IndependentNoise or BrownianNoise"):
        ej.sample(jax.random.key(0), model, x_T, ej.er_sde(), noise="brownian")
    with pytest.raises(ValueError, match="either noise or brownian=True"):
        ej.sample(jax.random.key(0), model, x_T, ej.er_sde(), noise=ej.BrownianNoise(),
                  brownian=True)
    with pytest.raises(ValueError, match="either adjoint or checkpoint"):
        ej.sample(jax.random.key(0), model, x_T, ej.er_sde(), adjoint=ej.RematAdjoint(),
                  checkpoint=True)
    with pytest.raises(ValueError, match="TruncatedAdjoint steps must be >= 1"):
        ej.TruncatedAdjoint(0)


def test_bad_input_to_the_new_schedule_helpers():
    with pytest.raises(ValueError, match="shift must be finite and > 0"):
        ej.timesteps.shifted_uniform_t(ej.paths.flow(), 10, shift=0.0)
    with pytest.raises(ValueError, match="continuous path with model time in"):
        ej.timesteps.shifted_uniform_t(ej.paths.edm(), 10)
    with pytest.raises(ValueError, match="rescale_zero_terminal_snr: betas"):
        ej.paths.rescale_zero_terminal_snr(np.array([0.1, 1.0]))
    with pytest.raises(ValueError, match="only the last may be 1"):
        ej.paths.vp_discrete(np.array([0.1, 1.0, 0.2]))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        ej.timesteps.default(ej.paths.flow(), 0)
