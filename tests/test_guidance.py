"""Guidance transforms: CFG limits, exact classifier guidance on a mixture, thresholding."""

import jax
import jax.numpy as jnp
import numpy as np
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
