"""The shipped digits restoration model: loading, data, network contract and restoration quality.

Nothing here trains; the weights come from ``scripts/train_restoration.py``.
"""

from importlib import resources
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_tree_all_finite, x64

import ersde_jax as ej
import ersde_jax.pretrained  # noqa: F401  (makes ej.pretrained available)
from ersde_jax.pretrained._data import degrade

pytest.importorskip("sklearn")

# Measured with the shipped weights on the first 64 held-out images: the degraded input is at
# 13.17 dB, ER-SDE-Solver-1 posterior sampling (20 steps) at 17.19 dB with the keys below (a gain
# of 4.0 dB; 4.0 to 4.6 dB over six seeds). The threshold leaves 1 dB for platform differences.
MIN_GAIN_DB = 3.0
# MR SDE-2 at NFE 20 (linspace grid): 15.64 dB with these keys, 15.6-15.9 dB over four seeds.
MIN_GAIN_MR_SDE2_DB = 1.5


def psnr(x, clean):
    """Mean over images of the per-image PSNR (images in [-1, 1], data range 2)."""
    return float(jnp.mean(ej.metrics.psnr(x, clean)))


@pytest.fixture(scope="module")
def model():
    return ej.pretrained.restoration_digits()


@pytest.fixture(scope="module")
def test_data():
    return ej.pretrained.restoration_digits_data("test")


def test_weights_ship_inside_the_installed_package():
    weights = resources.files("ersde_jax.pretrained").joinpath("weights")
    package_dir = Path(ej.pretrained.__file__).resolve().parent
    for name in ("restoration_digits.npz", "restoration_digits.json"):
        assert weights.joinpath(name).is_file()
        assert Path(str(weights.joinpath(name))).resolve() == package_dir / "weights" / name


def test_model_loads_with_its_path_and_finite_small_params(model):
    config = ej.pretrained.restoration_digits_config()
    assert isinstance(model, ej.Model) and model.prediction == "eps"
    assert isinstance(model.path, ej.paths.IRSDE)
    assert model.path.t_max == config["T"] == 100
    assert model.path.max_sigma == pytest.approx(config["max_sigma"]) == 0.5
    leaves = jax.tree_util.tree_leaves(model.params)
    assert_tree_all_finite(model.params)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert sum(leaf.size for leaf in leaves) == config["param_count"]
    assert sum(leaf.nbytes for leaf in leaves) < 1_000_000
    assert np.isfinite(config["final_loss"]) and config["final_loss"] < 0.2
    # Loading twice gives the same network function, so compiled samplers are reused.
    assert ej.pretrained.restoration_digits().apply_fn is model.apply_fn


def test_network_output_shape_for_scalar_and_per_image_times(model, test_data):
    _, degraded = test_data
    x = jnp.asarray(degraded[:5])
    assert model.takes_mu  # the network is conditioned on the degraded image, the path's mean
    out = model.apply_fn(model.params, x, jnp.asarray(50.0), None, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert_tree_all_finite(out)
    per_image = model.apply_fn(model.params, x, jnp.full((5,), 50.0), None, x)
    np.testing.assert_allclose(per_image, out, rtol=1e-5, atol=1e-5)
    with x64():  # float32 weights, float64 state: the output follows x's dtype
        out64 = model.apply_fn(model.params, x.astype(jnp.float64), jnp.asarray(50.0), None, x)
        assert out64.dtype == jnp.float64
    np.testing.assert_allclose(out64, out, rtol=1e-5, atol=1e-5)


def test_data_splits_sizes_ranges_and_determinism(test_data):
    clean, degraded = test_data
    train_clean, train_degraded = ej.pretrained.restoration_digits_data("train")
    assert clean.shape == degraded.shape == (297, 8, 8, 1)
    assert train_clean.shape == train_degraded.shape == (1500, 8, 8, 1)
    assert clean.dtype == degraded.dtype == np.float32
    assert clean.min() == -1.0 and clean.max() == 1.0
    again = ej.pretrained.restoration_digits_data("test")
    np.testing.assert_array_equal(again[0], clean)
    np.testing.assert_array_equal(again[1], degraded)
    # The degradation: 2x2 average pool, nearest upsample, noise of std 0.1.
    blocks = clean.reshape(297, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    blurred = np.repeat(np.repeat(blocks, 2, axis=1), 2, axis=2)
    assert np.std(degraded - blurred) == pytest.approx(0.1, rel=0.05)
    # The noise is fixed per image: the same image degrades the same way in any batch.
    index = np.arange(3)
    np.testing.assert_array_equal(degrade(clean[:3], index)[1:], degrade(clean[1:3], index[1:]))
    with pytest.raises(ValueError, match="split"):
        ej.pretrained.restoration_digits_data("validation")


def test_posterior_sampling_restores_held_out_digits(model, test_data):
    clean, degraded = (a[:64] for a in test_data)
    mu = jnp.asarray(degraded)
    k_prior, k_sample = jax.random.split(jax.random.key(0))
    x_T = mu + model.path.prior_std() * jax.random.normal(k_prior, mu.shape)
    restored = ej.ersde_sample(k_sample, model, x_T, steps=20, order=1, noise_scale="sde", mu=mu)
    assert restored.shape == mu.shape
    assert_tree_all_finite(restored)
    assert psnr(restored, clean) > psnr(degraded, clean) + MIN_GAIN_DB


def test_mr_sde2_restores_held_out_digits(model, test_data):
    clean, degraded = (a[:64] for a in test_data)
    mu = jnp.asarray(degraded)
    k_prior, k_sample = jax.random.split(jax.random.key(0))
    x_T = ej.prior_sample(k_prior, model.path, mu.shape, mu=mu)
    restored = ej.mr_sample(k_sample, model, x_T, mu, steps=20, order=2, solver="sde")
    assert_tree_all_finite(restored)
    assert psnr(restored, clean) > psnr(degraded, clean) + MIN_GAIN_MR_SDE2_DB
