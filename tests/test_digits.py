"""The bundled digits model and classifier: packaging, contract, Fréchet distance, guidance.

No network is trained here; the weights come from ``scripts/train_digits.py`` and
``scripts/train_digits_classifier.py``. An independent pixel-space judge (logistic regression,
fitted in about a second) checks the guidance tests' classes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_conditional_edm_contract,
    assert_tree_all_finite,
    default_samples,
    run_installed,
)

import ersde_jax as ej
from ersde_jax.pretrained._data import GENERATIVE_HALF, REFERENCE_HALF

pytest.importorskip("sklearn")

N_FD = ej.pretrained.DIGITS_FD_SAMPLES


@pytest.fixture(scope="module")
def model():
    return ej.pretrained.digits_model()


@pytest.fixture(scope="module")
def classifier():
    return ej.pretrained.digits_classifier()


@pytest.fixture(scope="module")
def samples(model):
    return default_samples(model, N_FD, 8)


def test_weights_load_from_a_built_installed_package(tmp_path):
    """Installs the package (not editable) into a folder and loads the digits model from it,
    outside the source tree: the weights must be package data of the distribution."""
    result = run_installed(tmp_path, """
        import json
        import jax, jax.numpy as jnp, ersde_jax as ej
        model, clf = ej.pretrained.digits_model(), ej.pretrained.digits_classifier()
        x_T = ej.prior_sample(jax.random.key(0), model.path, (10, 8, 8, 1))
        x = ej.ersde_sample(jax.random.key(1), model, x_T, steps=5, cond=jnp.arange(10))
        print(json.dumps(dict(file=ej.__file__, finite=bool(jnp.isfinite(x).all()),
                              logits=list(clf.logits(x).shape))))
    """)
    assert result["finite"] and result["logits"] == [10, 10]


def test_model_contract(model):
    config = ej.pretrained.digits_config()
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    assert_conditional_edm_contract(model, x, ej.pretrained.DIGITS_NULL_LABEL)
    leaves = jax.tree_util.tree_leaves(model.params)
    assert sum(leaf.size for leaf in leaves) == config["model"]["param_count"]
    assert sum(leaf.nbytes for leaf in leaves) < 4_000_000
    assert ej.pretrained.digits_model().apply_fn is model.apply_fn  # compiled programs reused
    # EDM preconditioning: at tiny sigma the denoiser is (nearly) the identity, c_skip -> 1.
    clean = jnp.asarray(ej.pretrained.digits_data()[0][:4])
    np.testing.assert_allclose(model.apply_fn(model.params, clean, 1e-4, jnp.arange(4)), clean,
                               atol=1e-3)


def test_frechet_distance_closed_form_for_an_affine_map():
    """For y = a x + m: FD = |m + (a - 1) mean(x)|^2 + (1 - a)^2 tr(cov x), exactly."""
    x = np.asarray(jax.random.normal(jax.random.key(0), (500, 6))) @ np.diag([1, 2, 3, 1, 1, .5])
    a, m = 1.7, np.arange(6.0) / 3
    expected = np.sum((m + (a - 1) * x.mean(0)) ** 2) + (1 - a) ** 2 * np.trace(np.cov(x.T))
    assert ej.metrics.frechet_distance(x, a * x + m) == pytest.approx(expected, rel=1e-9)
    assert abs(ej.metrics.frechet_distance(x, x)) < 1e-9
    with pytest.raises(ValueError, match="features"):
        ej.metrics.frechet_distance(x, x[:, :3])
    with pytest.raises(ValueError, match="8, 8, 1"):
        ej.pretrained.digits_fd(jnp.zeros((4, 64)))


def test_frechet_distance_is_never_negative():
    """FD(x, x) = 0 up to round-off, which made it negative (-0.014 here) before the clamp."""
    x = np.random.default_rng(1).normal(size=(6, 31)) * 100  # rank-deficient covariance
    assert ej.metrics.frechet_distance(x, x) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=(rng.integers(5, 60), rng.integers(2, 40))) * rng.uniform(0.1, 100)
        assert 0.0 <= ej.metrics.frechet_distance(x, x) < 1e-12 * np.trace(np.cov(x.T))


def test_classifier_accuracy_on_held_out_digits(classifier):
    images, labels = ej.pretrained.digits_data()
    held_out = slice(1500, None)  # not seen in the classifier's training
    predicted = jnp.argmax(classifier.logits(jnp.asarray(images[held_out])), -1)
    assert float(jnp.mean(predicted == labels[held_out])) > 0.95


def test_default_sampler_fd_at_nfe_20_below_four_times_the_floor(samples, classifier):
    images, labels = samples
    assert_tree_all_finite(images)
    fd, floor = ej.pretrained.digits_fd(images), ej.pretrained.digits_fd_floor()
    assert 0 < floor and fd < 4 * floor, (fd, floor)
    # The samples are of the requested classes.
    accuracy = jnp.mean(jnp.argmax(classifier.logits(images), -1) == labels)
    assert float(accuracy) > 0.9


def test_fd_separates_good_from_degraded_samples(samples):
    """The 4x-floor criterion can fail: blurred or very noisy samples are far above it."""
    images, _ = samples
    floor = ej.pretrained.digits_fd_floor()
    pooled = images.reshape(-1, 4, 2, 4, 2, 1).mean(axis=(2, 4))
    blurred = jnp.repeat(jnp.repeat(pooled, 2, axis=1), 2, axis=2)
    noisy = images + jax.random.normal(jax.random.key(3), images.shape)
    assert ej.pretrained.digits_fd(blurred) > 4 * floor
    assert ej.pretrained.digits_fd(noisy) > 4 * floor


def _pixels(images):
    return np.asarray(images).reshape(len(images), -1)


@pytest.fixture(scope="module")
def pixel_judge():
    """An independent judge of the classes: logistic regression on the pixels of the half of the
    real digits that the generative model never saw."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    images, labels = ej.pretrained.digits_data()
    with threadpool_limits(1):  # 0.1 s; OpenMP threads beside JAX's made the fit 50x slower
        return LogisticRegression(max_iter=1000).fit(_pixels(images[REFERENCE_HALF]),
                                                     labels[REFERENCE_HALF])


def test_pixel_judge_recognises_real_digits(pixel_judge):
    images, labels = ej.pretrained.digits_data()
    accuracy = pixel_judge.score(_pixels(images[GENERATIVE_HALF]), labels[GENERATIVE_HALF])
    assert accuracy > 0.9, accuracy


def test_classifier_guidance_moves_unconditional_samples_to_the_class(model, classifier,
                                                                     pixel_judge):
    """Success is measured by the guiding classifier and by the independent pixel judge, which
    the guidance cannot have fooled."""
    n = 100
    targets = jnp.arange(n) % 10
    unconditional = ej.Model(lambda p, x, t, c: model.apply_fn(p, x, t, None), model.params,
                             path=model.path, prediction=model.prediction)
    k_noise, k_sample = jax.random.split(jax.random.key(2))
    x_T = ej.prior_sample(k_noise, model.path, (n, 8, 8, 1))
    accuracy = {}  # scale: (by the classifier, by the pixel judge)

    @jax.jit
    def guided_classes(scale):
        """The guiding classifier's classes of the guided samples, and the samples."""
        guided = ej.guidance.classifier_guidance(unconditional, classifier.log_prob_fn,
                                                 classifier, scale)
        x = ej.ersde_sample(k_sample, guided, x_T, steps=20, cond=targets)
        return jnp.argmax(classifier.logits(x), -1), x

    for scale in (0.0, 2.0):
        by_classifier, x = guided_classes(scale)
        accuracy[scale] = (float(jnp.mean(by_classifier == targets)),
                           float(np.mean(pixel_judge.predict(_pixels(x)) == targets)))
    # Unconditional samples hit an arbitrary target about 1 time in 10. Measured: 0.07 -> 0.98
    # by the classifier, 0.06 -> 0.95 by the pixel judge.
    for before, after in zip(accuracy[0.0], accuracy[2.0], strict=True):
        assert before < 0.3 and after > 0.6 and after > before + 0.4, accuracy


def test_classifier_free_guidance_sharpens_classes(model, classifier):
    n = 100
    labels = jnp.arange(n) % 10
    null = jnp.full((n,), ej.pretrained.DIGITS_NULL_LABEL)
    k_noise, k_sample = jax.random.split(jax.random.key(4))
    x_T = ej.prior_sample(k_noise, model.path, (n, 8, 8, 1))

    @jax.jit
    def accuracy(w):
        guided = ej.guidance.classifier_free(model, w, null)
        x = ej.ersde_sample(k_sample, guided, x_T, steps=10, cond=labels)
        return jnp.mean(jnp.argmax(classifier.logits(x), -1) == labels)

    assert float(accuracy(0.0)) < 0.3 < 0.8 < float(accuracy(1.0)) <= float(accuracy(3.0)) + 0.02
