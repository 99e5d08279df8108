"""The conventions of the JAX diffusion codebases, met by ersde_jax.flax; saved parameters loaded.

Each stand-in module has the call signature of a codebase's network, ``net(x, time)``, and
returns that codebase's prediction (score, eps, x, v or velocity) for one Gaussian data law
``N(MEAN, STD^2 I)`` *exactly*, computed from its own time input by the codebase's own formulas
(written out here, not taken from the library). The wrapped model's data prediction must then be
the exact posterior mean, which fails under a wrong time input, output type or preconditioning,
and a short sampler run must match the exact moments of the discrete sampler's output law.

Saved parameters: a tiny NHWC convolutional network is saved with ``flax.serialization``
(msgpack) and with Orbax, restored over (or with the shapes of) differently initialised
parameters, and must sample bit for bit like the original.
"""

import dataclasses
import functools
import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ersde_jax as ej

pytest.importorskip("flax")
import flax.linen as nn  # noqa: E402
from flax import nnx, serialization  # noqa: E402

import ersde_jax.flax as ejf  # noqa: E402

MEAN, STD = 0.5, 0.8
SHAPE = (2, 2, 3)  # one NHWC image per sample
MIXTURE = ej.testing.GaussianMixture(
    jnp.ones(1), jnp.full((1, SHAPE[-1]), MEAN), jnp.full((1,), STD)
)


def posterior_mean(x, alpha, sigma):
    """``E[x0 | x]`` per sample; ``alpha``, ``sigma`` of shape ``(B,)``."""
    one = lambda xi, a, s: ej.testing.mixture_posterior_mean(MIXTURE, xi, a, s)
    return jax.vmap(one)(x, alpha, sigma)


def _bcast(v, x):
    return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def _eps(x, alpha, sigma):
    return (x - _bcast(alpha, x) * posterior_mean(x, alpha, sigma)) / _bcast(sigma, x)


# Each codebase's network output as a function of ITS inputs (x_in, time_in), both per sample.

def score_sde_ve(x, sigma):
    """score_sde VE (NCSN++): fed sigma, returns the score of ``x = x0 + sigma eps``."""
    return (posterior_mean(x, jnp.ones_like(sigma), sigma) - x) / _bcast(sigma, x) ** 2


def score_sde_vp(x, labels):
    """score_sde VP (DDPM++): fed ``labels = 999 t`` of the linear beta schedule, returns eps."""
    t = labels / 999.0
    log_abar = -(0.1 * t + 0.5 * (20.0 - 0.1) * t**2)
    return _eps(x, jnp.exp(0.5 * log_abar), jnp.sqrt(-jnp.expm1(log_abar)))


def vdm(z, gamma):
    """VDM: fed ``gamma = -log SNR``, ``alpha^2 = sigmoid(-gamma)``, returns eps."""
    return _eps(z, jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma)))


def _distillation(kind):
    """Diffusion distillation: fed ``logsnr``, ``alpha^2 = sigmoid(logsnr)``; eps, x or v."""

    def net(z, logsnr):
        alpha, sigma = jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))
        x = posterior_mean(z, alpha, sigma)
        eps = _eps(z, alpha, sigma)
        return {"eps": eps, "x": x, "v": _bcast(alpha, z) * eps - _bcast(sigma, z) * x}[kind]

    return net


def _flaxdiff_edm(sigma_data):
    """FlaxDiff EDM: fed ``c_in x`` and ``c_noise = log(sigma) / 4``, returns F of
    ``D = c_skip x + c_out F`` (Karras et al. 2022, Table 1)."""

    def net(x_in, c_noise):
        sigma = jnp.exp(4.0 * c_noise)
        norm = jnp.sqrt(sigma**2 + sigma_data**2)
        x = x_in * _bcast(norm, x_in)
        c_skip = _bcast(sigma_data**2 / norm**2, x)
        c_out = _bcast(sigma * sigma_data / norm, x)
        return (posterior_mean(x, jnp.ones_like(sigma), sigma) - c_skip * x) / c_out

    return net


def _flow_dit(scale):
    """Flow-matching DiT: fed ``scale * t`` with ``x = (1 - t) x0 + t eps``; velocity eps - x0."""

    def net(x, timestep):
        t = timestep / scale
        x0 = posterior_mean(x, 1.0 - t, t)
        return _eps(x, 1.0 - t, t) - x0

    return net


class LinenStandIn(nn.Module):
    """A Linen network ``net(x, t)`` giving ``answer(x, t)`` plus a (zero) learned bias."""

    answer: Callable

    @nn.compact
    def __call__(self, x, t):
        return self.answer(x, t) + self.param("bias", nn.initializers.zeros, (x.shape[-1],))


class NNXStandIn(nnx.Module):
    """The NNX counterpart of :class:`LinenStandIn`."""

    def __init__(self, answer, channels):
        self.answer = answer
        self.bias = nnx.Param(jnp.zeros(channels))

    def __call__(self, x, t):
        return self.answer(x, t) + self.bias[...]


KINDS = ("linen", "nnx")


def wrap(kind, answer, **options):
    if kind == "linen":
        net = LinenStandIn(answer)
        variables = net.init(jax.random.key(0), jnp.ones((1, *SHAPE)), jnp.ones(1))
        return ejf.from_linen(net, variables, **options)
    return ejf.from_nnx(NNXStandIn(answer, SHAPE[-1]), **options)


# (name, network, path, adapter options, options that are accepted but wrong for the network)
CONVENTIONS = [
    ("score_sde VE", score_sde_ve, ej.paths.edm(0.01, 50.0),
     dict(prediction="score", time_input="model"), dict(time_input="neg_log_snr")),
    ("score_sde VP", score_sde_vp, ej.paths.vp_linear(),
     dict(prediction="eps", time_input="discrete"), dict(time_input="continuous")),
    ("VDM", vdm, ej.paths.vp_cosine(),
     dict(prediction="eps", time_input="neg_log_snr"), dict(time_input="log_snr")),
    ("distillation eps", _distillation("eps"), ej.paths.vp_cosine(),
     dict(prediction="eps", time_input="log_snr"), dict(time_input="neg_log_snr")),
    ("distillation x", _distillation("x"), ej.paths.vp_cosine(),
     dict(prediction="x0", time_input="log_snr"), dict(time_input="neg_log_snr")),
    ("distillation v", _distillation("v"), ej.paths.vp_cosine(),
     dict(prediction="v", time_input="log_snr"), dict(time_input="sigma")),
    ("FlaxDiff EDM", _flaxdiff_edm(0.5), ej.paths.edm(),
     dict(prediction="x0", time_input="edm"), dict(time_input="model")),
    ("FlaxDiff EDM sigma_data=1", _flaxdiff_edm(1.0), ej.paths.edm(),
     dict(prediction="x0", time_input="edm", sigma_data=1.0), dict(sigma_data=0.5)),
    ("flow DiT t", _flow_dit(1.0), ej.paths.flow(),
     dict(prediction="flow", time_input="model"), dict(time_input="sigma")),
    ("flow DiT continuous t", _flow_dit(1.0), ej.paths.flow(),
     dict(prediction="flow", time_input="continuous"), dict(time_input="log_snr")),
    ("flow DiT 1000 t", _flow_dit(1000.0), ej.paths.flow(),
     dict(prediction="flow", time_input="discrete", num_train_steps=1001),
     dict(num_train_steps=None)),
]
IDS = [case[0] for case in CONVENTIONS]


def _x0_errors(model, x_at):
    """Largest error of the model's data prediction against the exact posterior mean, over a
    grid of model times; ``x_at(alpha, sigma)`` is a draw from the path's marginal there."""
    path = model.path
    errors = []
    for t in ej.timesteps.default(path, 6)[:-1]:
        t = jnp.float32(t)
        alpha, sigma = path.alpha(t), path.sigma(t)
        x = x_at(alpha, sigma)
        got = model.denoise(x, t, alpha, sigma, 0.0, None).x0
        want = posterior_mean(x, jnp.full(x.shape[0], alpha), jnp.full(x.shape[0], sigma))
        errors.append(float(jnp.max(jnp.abs(got - want)) / (1.0 + sigma / alpha)))
    return max(errors)


@pytest.mark.parametrize("kind, name, net, path, options, wrong",
                         [(kind, *case) for kind, case in zip(itertools.cycle(KINDS), CONVENTIONS)],
                         ids=IDS)
def test_data_prediction_is_the_posterior_mean(kind, name, net, path, options, wrong):
    """Linen and NNX stand-ins alternate (the adapters' two kinds are compared in test_flax)."""
    k0, k1 = jax.random.split(jax.random.key(0))
    x0 = MEAN + STD * jax.random.normal(k0, (4, *SHAPE))
    eps = jax.random.normal(k1, x0.shape)
    x_at = lambda alpha, sigma: alpha * x0 + sigma * eps
    # Errors are relative to 1 + sigma / alpha (float32 conversions lose that much at high
    # noise); the right convention measured below 4e-7.
    assert _x0_errors(wrap(kind, net, path=path, **options), x_at) < 5e-6, name
    # A wrong convention fails the check: by 7e-4 for 999 t instead of 1000 t, by 0.3 or more
    # (or NaN) for the others.
    wrong_error = _x0_errors(wrap(kind, net, path=path, **{**options, **wrong}), x_at)
    assert not wrong_error < 1e-4, name


# One run per codebase; each compiles the sampler (about a second).
SAMPLED = ["score_sde VE", "score_sde VP", "VDM", "distillation v", "FlaxDiff EDM", "flow DiT t"]


@pytest.mark.parametrize("name, net, path, options, wrong",
                         [c for c in CONVENTIONS if c[0] in SAMPLED],
                         ids=[n for n in IDS if n in SAMPLED])
def test_sampler_recovers_the_discrete_law(name, net, path, options, wrong):
    """The second-order ODE solver (it compiles 3x faster than the stochastic ones) on 8
    steps, 2000 images: the exact mean and variance of its discrete output law."""
    del wrong
    model = wrap("nnx", net, path=path, **options)
    solver, ts = ej.er_sde(2, "ode"), ej.timesteps.default(path, 8)
    x_T = ej.prior_sample(jax.random.key(1), path, (2000, *SHAPE), dtype=jnp.float32)
    x = ej.sample(jax.random.key(2), model, x_T, solver, timesteps=ts).x
    mean, var = ej.testing.gaussian_sampler_moments(solver, path, ts, MEAN, STD, 0.0,
                                                    path.prior_std())
    values = np.asarray(x, np.float64).ravel()
    n = values.size
    assert abs(values.mean() - mean) < 5 * np.sqrt(var / n), name
    assert abs(values.var(ddof=1) - var) < 5 * var * np.sqrt(2.0 / (n - 1)), name


def test_log_snr_inputs_refuse_a_pure_noise_start():
    for path in (ej.paths.flow(t_max=1.0),
                 ej.paths.vp_discrete(ej.paths.rescale_zero_terminal_snr(
                     np.linspace(1e-4, 0.02, 1000)))):
        for time_input in ("log_snr", "neg_log_snr"):
            with pytest.raises(ValueError, match="starts from pure noise"):
                wrap("linen", vdm, path=path, prediction="v", time_input=time_input)


def test_log_snr_inputs_on_every_path():
    """``log_snr = log(alpha^2 / sigma^2)`` and ``neg_log_snr`` its negative, on every family."""
    probe = lambda x, t: x * _bcast(t, x)  # linear in the time input: the output shows it
    x = jnp.ones((2, *SHAPE))
    for path, t in ((ej.paths.edm(), 1.7), (ej.paths.vp_linear(), 0.3),
                    (ej.paths.vp_discrete(), 250.0), (ej.paths.flow(), 0.25),
                    (ej.paths.ir_sde(), 37.0)):
        t = jnp.float32(t)
        want = float(2.0 * (jnp.log(path.alpha(t)) - jnp.log(path.sigma(t))))
        for time_input, sign in (("log_snr", 1.0), ("neg_log_snr", -1.0)):
            model = wrap("nnx", probe, path=path, prediction="eps", time_input=time_input)
            np.testing.assert_allclose(model.apply_fn(model.params, x, t, None), sign * want * x,
                                       rtol=1e-5)


# Saved parameters: a tiny NHWC network with a time embedding. Each sampler compilation costs a
# few seconds and _run compiles once per Model structure (the adapter's apply_fn is part of it),
# so the original and a differently initialised ("fresh") model of each kind are built once.

class LinenConvNet(nn.Module):
    @nn.compact
    def __call__(self, x, t):
        h = nn.Conv(8, (3, 3))(x) + nn.Dense(8)(t[:, None])[:, None, None, :]
        return nn.Conv(x.shape[-1], (3, 3))(nn.silu(h))


class NNXConvNet(nnx.Module):
    def __init__(self, channels, *, rngs):
        self.conv_in = nnx.Conv(channels, 8, (3, 3), rngs=rngs)
        self.embed = nnx.Linear(1, 8, rngs=rngs)
        self.conv_out = nnx.Conv(8, channels, (3, 3), rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)  # RNG state in the module's state

    def __call__(self, x, t):
        h = self.conv_in(x) + self.embed(t[:, None])[:, None, None, :]
        return self.conv_out(self.drop(nnx.silu(h)))


PATH = ej.paths.vp_linear()
OPTIONS = dict(path=PATH, prediction="eps", time_input="continuous")
X_T = ej.prior_sample(jax.random.key(5), PATH, (4, 8, 8, 3), dtype=jnp.float32)
_run = jax.jit(lambda model: ej.sample(None, model, X_T, ej.er_sde(2, "ode"), steps=4).x)
LINEN_NET = LinenConvNet()


def _linen_variables(seed):
    return LINEN_NET.init(jax.random.key(seed), X_T, jnp.ones(X_T.shape[0]))


def _nnx_net(seed):
    net = NNXConvNet(X_T.shape[-1], rngs=nnx.Rngs(seed))
    net.eval()
    return net


@functools.cache
def _models(kind):
    """``(original, fresh)`` models, ``fresh`` from another initialisation."""
    if kind == "linen":
        return tuple(ejf.from_linen(LINEN_NET, _linen_variables(seed), **OPTIONS)
                     for seed in (0, 1))
    return tuple(ejf.from_nnx(_nnx_net(seed), **OPTIONS) for seed in (0, 1))


def _assert_same_sample(restored, kind):
    """The restored model samples bit for bit like the original, whose weights differ from
    those of the fresh model (the restore target)."""
    original, fresh = _models(kind)
    np.testing.assert_array_equal(_run(restored), _run(original))
    assert np.all(np.isfinite(_run(original)))
    pairs = zip(jax.tree.leaves(original.params), jax.tree.leaves(fresh.params), strict=True)
    assert not all(np.array_equal(a, b) for a, b in pairs if jnp.issubdtype(a.dtype, jnp.floating))


def test_msgpack_round_trip_linen():
    original, _ = _models("linen")
    blob = serialization.to_bytes(original.params)  # the Linen variables
    restored = serialization.from_bytes(_linen_variables(1), blob)
    _assert_same_sample(ejf.from_linen(LINEN_NET, restored, **OPTIONS), "linen")


def test_msgpack_round_trip_nnx():
    net = _nnx_net(0)
    blob = serialization.to_bytes(nnx.to_pure_dict(nnx.state(net, nnx.Param)))
    target = _nnx_net(1)
    params = nnx.state(target, nnx.Param)
    nnx.replace_by_pure_dict(params, serialization.from_bytes(nnx.to_pure_dict(params), blob))
    nnx.update(target, params)
    _assert_same_sample(ejf.from_nnx(target, **OPTIONS), "nnx")


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_orbax_round_trip_into_model_params(kind, tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    original, fresh = _models(kind)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / kind, original.params)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh.params)
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(tmp_path / kind, abstract)
    # Into the original Model's structure: the same compiled sampler runs both.
    _assert_same_sample(dataclasses.replace(original, params=params), kind)
