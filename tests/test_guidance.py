"""Guidance transforms: CFG limits, exact classifier guidance on a mixture, thresholding, and
the errors they raise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, x64

import ersde_jax as ej

WEIGHTS, MEANS, STDS = (0.5, 0.5), ((2.0, 0.0), (-2.0, 0.0)), (0.4, 0.4)


def _mixture(dtype=jnp.float32):
    return ej.testing.GaussianMixture(jnp.array(WEIGHTS, dtype), jnp.array(MEANS, dtype),
                                      jnp.array(STDS, dtype))


def _class_conditional_model(path):
    """Label k >= 0: the exact denoiser of component k; label -1: of the whole mixture."""

    def apply_fn(mixture, x, t, label):
        a, s = path.alpha(t), path.sigma(t)
        full = ej.testing.mixture_posterior_mean(mixture, x, a, s)
        per = [ej.testing.mixture_posterior_mean(
            ej.testing.GaussianMixture(jnp.ones(1), mixture.means[k:k + 1],
                                       mixture.stds[k:k + 1]), x, a, s) for k in range(2)]
        out = jnp.where((label == 0)[:, None], per[0], per[1])
        return jnp.where((label < 0)[:, None], full, out)

    return ej.Model(apply_fn, _mixture(), path=path, prediction="x0")


def test_cfg_limits_are_exact():
    path = ej.paths.edm()
    with x64():
        model = _class_conditional_model(path)
        model = ej.Model(model.apply_fn, _mixture(jnp.float64), path=path, prediction="x0")
        x = jax.random.normal(jax.random.key(0), (6, 2), jnp.float64) * 3
        label, null = jnp.array([0, 1, 0, 1, 0, 1]), jnp.full((6,), -1)
        t = jnp.array(1.3)
        for w, expected in ((1.0, label), (0.0, null)):
            guided = ej.guidance.classifier_free(model, w, null)
            assert_allclose(guided.apply_fn(guided.params, x, t, label),
                            model.apply_fn(model.params, x, t, expected), rtol=1e-12)
        guided = ej.guidance.classifier_free(model, 3.0, null)
        out = guided.apply_fn(guided.params, x, t, label)
        c, u = model.apply_fn(model.params, x, t, label), model.apply_fn(model.params, x, t, null)
        assert_allclose(out, u + 3.0 * (c - u), rtol=1e-12)


def test_cfg_is_one_network_call_and_samples():
    calls = []
    path = ej.paths.edm()
    base = _class_conditional_model(path)

    def counting(params, x, t, cond):
        calls.append(x.shape)
        return base.apply_fn(params, x, t, cond)

    model = ej.Model(counting, base.params, path=path, prediction="x0")
    guided = ej.guidance.classifier_free(model, 2.0, jnp.full((8,), -1))
    x_T = ej.prior_sample(jax.random.key(1), path, (8, 2))
    x = ej.ersde_sample(jax.random.key(2), guided, x_T, steps=8, cond=jnp.zeros(8, jnp.int32))
    assert calls == [(16, 2)] and bool(jnp.all(x[:, 0] > 0))


def test_exact_classifier_guidance_samples_the_class():
    """With the exact p(y | x_t) and scale 1, guided samples follow component y exactly."""
    path = ej.paths.edm()
    mixture = _mixture()
    exact = ej.testing.mixture_model(mixture, path)  # unconditional; it would read cond as mu
    model = ej.Model(lambda p, x, t, c: exact.apply_fn(p, x, t, None), mixture, path=path,
                     prediction="x0")

    def log_prob(mix, x, t, label):
        a, s = path.alpha(t), path.sigma(t)
        var = mix.stds**2 * a**2 + s**2
        logits = (jnp.log(mix.weights) - jnp.sum((x[:, None, :] - a * mix.means) ** 2, -1)
                  / (2 * var) - x.shape[-1] / 2 * jnp.log(var))
        return jnp.take_along_axis(jax.nn.log_softmax(logits), label[:, None], 1)[:, 0]

    n = 4000
    guided = ej.guidance.classifier_guidance(model, log_prob, mixture, 1.0)
    x_T = ej.prior_sample(jax.random.key(3), path, (n, 2))
    label = jnp.ones(n, jnp.int32)
    x = np.asarray(jax.jit(lambda k, x: ej.ersde_sample(k, guided, x, steps=40, order=2,
                                                        cond=label))(jax.random.key(4), x_T))
    assert np.mean(x[:, 0] < 0) > 0.995
    assert np.all(np.abs(x.mean(0) - np.asarray(MEANS[1])) < 5 * STDS[1] / np.sqrt(n) + 0.01)
    assert np.all(np.abs(x.std(0) / STDS[1] - 1) < 0.05)


def test_dynamic_thresholding():
    x0 = jnp.array([[0.5, -3.0, 2.0, 0.1], [0.2, 0.3, -0.4, 0.9]])
    out = ej.guidance.dynamic_thresholding(x0, ratio=1.0, max_value=2.5)
    assert_allclose(out[0], jnp.clip(x0[0], -2.5, 2.5) / 2.5, rtol=1e-6)
    assert_allclose(out[1], x0[1], rtol=1e-6)  # threshold clipped up to 1: unchanged


def test_dynamic_thresholding_quantile_between_one_and_max_value():
    """Per sample: s inside (1, max_value), above it (clipped to it) and below 1 (set to 1)."""
    x0 = jnp.stack([jnp.linspace(-2.0, 2.0, 16), jnp.linspace(-6.0, 6.0, 16),
                    jnp.linspace(-0.5, 0.5, 16)]).reshape(3, 4, 4)
    ratio, max_value = 0.8, 2.5
    flat = np.abs(np.asarray(x0).reshape(3, -1))
    s = np.clip(np.quantile(flat, ratio, axis=1), 1.0, max_value)
    assert 1.0 < s[0] < max_value and s[1] == max_value and s[2] == 1.0
    expected = np.clip(x0, -s[:, None, None], s[:, None, None]) / s[:, None, None]
    out = ej.guidance.dynamic_thresholding(x0, ratio=ratio, max_value=max_value)
    assert_allclose(out, expected, rtol=1e-6)
    assert float(jnp.max(jnp.abs(out))) <= 1.0


def _eps_model(path):
    """The exact mixture denoiser, re-expressed as a noise prediction."""
    exact = ej.testing.mixture_model(_mixture(), path)

    def apply_fn(params, x, t, cond):
        a, s = path.alpha(t), path.sigma(t)
        return (x - a * exact.apply_fn(params, x, t, None)) / s

    return ej.Model(apply_fn, _mixture(), path=path, prediction="eps")


def test_thresholded_is_dynamic_thresholding_of_the_x0_prediction():
    path = ej.paths.vp_linear()
    model = _eps_model(path)
    x = 3.0 * jax.random.normal(jax.random.key(5), (6, 2))
    t = jnp.array(0.3)
    guided = ej.guidance.thresholded(model, ratio=0.9, max_value=1.5)
    assert guided.prediction == "x0" and guided.path == path
    eps = model.apply_fn(model.params, x, t, None)
    x0 = (x - path.sigma(t) * eps) / path.alpha(t)
    assert_allclose(guided.apply_fn(guided.params, x, t, None),
                    ej.guidance.dynamic_thresholding(x0, 0.9, 1.5), rtol=1e-5, atol=1e-6)


def test_thresholded_samples_lie_in_the_unit_box():
    path = ej.paths.edm()
    mixture = ej.testing.GaussianMixture(jnp.ones(1), jnp.full((1, 3), 0.9), jnp.full((1,), 0.3))
    model = ej.testing.mixture_model(mixture, path)
    x_T = ej.prior_sample(jax.random.key(6), path, (200, 3))
    sample = jax.jit(lambda m: ej.ersde_sample(jax.random.key(7), m, x_T, steps=10))
    plain, clipped = sample(model), sample(ej.guidance.thresholded(model, 0.995))
    assert float(jnp.max(plain)) > 1.0
    assert float(jnp.max(jnp.abs(clipped))) <= 1.0 + 1e-6


def _identity_model(path, prediction):
    return ej.Model(lambda p, x, t, c: x, None, path=path, prediction=prediction)


def test_transforms_reject_what_is_not_a_model():
    with pytest.raises(TypeError, match="classifier_free: model must be an ej.Model"):
        ej.guidance.classifier_free(lambda p, x, t, c: x, 1.0, jnp.zeros(2))
    with pytest.raises(TypeError, match="classifier_guidance: model must be an ej.Model"):
        ej.guidance.classifier_guidance(None, lambda *a: 0.0, None, 1.0)
    with pytest.raises(TypeError, match="thresholded: model must be an ej.Model"):
        ej.guidance.thresholded("model")
    model = _identity_model(ej.paths.edm(), "x0")
    with pytest.raises(TypeError, match="log_prob_fn must be callable"):
        ej.guidance.classifier_guidance(model, "log_prob", None, 1.0)
    with pytest.raises(ValueError, match="uncond .* must not be None"):
        ej.guidance.classifier_free(model, 1.0, None)


@pytest.mark.parametrize("cond,uncond", [
    (jnp.zeros(8, jnp.int32), jnp.zeros(4, jnp.int32)),  # batch sizes differ
    ({"label": jnp.zeros(8)}, jnp.zeros(8)),  # tree structures differ
    (None, jnp.zeros(8)),  # the sampler passes no cond
    (jnp.zeros(()), jnp.zeros(())),  # no batch axis
])
def test_cfg_uncond_must_match_cond(cond, uncond):
    model = _identity_model(ej.paths.edm(), "x0")
    guided = ej.guidance.classifier_free(model, 2.0, uncond)
    x = jnp.zeros((8, 2))
    with pytest.raises(ValueError, match="uncond must have the tree structure and shapes.*got "
                                         "cond .* and uncond"):
        jax.jit(guided.apply_fn)(guided.params, x, 1.0, cond)


@pytest.mark.parametrize("ratio,max_value,match", [
    (0.0, 2.0, "ratio must be in \\(0, 1\\]"),
    (1.5, 2.0, "ratio must be in \\(0, 1\\]"),
    (float("nan"), 2.0, "ratio must be in \\(0, 1\\]"),
    (0.9, 0.5, "max_value must be >= 1"),
])
def test_thresholding_hyperparameters(ratio, max_value, match):
    with pytest.raises(ValueError, match=match):
        ej.guidance.dynamic_thresholding(jnp.ones((2, 3)), ratio, max_value)
    with pytest.raises(ValueError, match=match):
        ej.guidance.thresholded(_identity_model(ej.paths.edm(), "x0"), ratio, max_value)


def test_transforms_see_mu_on_mean_reverting_paths():
    """On ir_sde the transforms convert predictions with the sampler's mu: thresholding an exact
    mixture denoiser equals thresholding its x0 by hand, CFG with scale 1 is the model itself,
    and classifier guidance with a zero log-probability leaves eps unchanged."""
    path = ej.paths.ir_sde(max_sigma=0.5, T=100)
    mixture = ej.testing.GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.5], [1.5]]),
                                         jnp.array([0.3, 0.3]))
    model = ej.testing.mixture_model(mixture, path)
    key = jax.random.key(3)
    mu = jax.random.normal(key, (6, 1))
    x = mu + 0.4 * jax.random.normal(jax.random.fold_in(key, 1), (6, 1))
    t = jnp.float32(40.0)
    alpha, sigma = path.alpha(t), path.sigma(t)
    plain = model.denoise(x - mu, t, alpha, sigma, mu, None)
    thr = ej.guidance.thresholded(model, 0.9, 1.2).denoise(x - mu, t, alpha, sigma, mu, None)
    by_hand = ej.guidance.dynamic_thresholding(plain.x0 + mu, 0.9, 1.2)
    assert_allclose(thr.x0 + mu, by_hand, rtol=1e-5, atol=1e-6)
    assert not jnp.allclose(by_hand, plain.x0 + mu)  # the threshold bites here
    labels = jnp.zeros(6, jnp.int32)
    cfg = ej.guidance.classifier_free(model, 1.0, labels + 1)
    assert_allclose(cfg.denoise(x - mu, t, alpha, sigma, mu, labels).x0, plain.x0, rtol=1e-5,
                    atol=1e-6)
    zero = lambda p, z, s, c: jnp.zeros(z.shape[0])  # noqa: E731
    guided = ej.guidance.classifier_guidance(model, zero, None, 2.0)
    assert_allclose(guided.denoise(x - mu, t, alpha, sigma, mu, None).eps, plain.eps, rtol=1e-4,
                    atol=1e-5)
    # And a whole guided sampler run on the mean-reverting path, from x_T = mu + max_sigma z.
    x_T = mu + path.prior_std() * jax.random.normal(jax.random.fold_in(key, 2), mu.shape)
    out = ej.mr_sample(key, cfg, x_T, mu, steps=10, cond=labels)
    assert out.shape == x_T.shape and bool(jnp.all(jnp.isfinite(out)))
