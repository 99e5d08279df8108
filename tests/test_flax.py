"""Flax adapters (ersde_jax.flax): Linen and NNX networks wrapped into ej.Model.

Every check compares the adapter to a hand computation that calls the module directly with the
network input, time and output conversion written out from the documented conventions.
"""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ersde_jax as ej

pytest.importorskip("flax")
import flax.linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

import ersde_jax.flax as ejf  # noqa: E402

B, C = 2, 3
X = jax.random.normal(jax.random.key(42), (B, 4, 4, C))
COND = jnp.array(0.7)
TIME_SHAPES = []  # shapes of the time argument the probes were traced with


def _probe(x, t, w, b, y, label):
    """``x @ w + b t`` (+ y) (* (1 + label)): linear in the time, so the time passed is visible."""
    TIME_SHAPES.append(jnp.shape(t))
    t = jnp.reshape(t, jnp.shape(t) + (1,) * (x.ndim - jnp.ndim(t)))
    out = x @ w + b * t
    if y is not None:
        out = out + y
    if label is not None:
        out = out * (1.0 + label)
    return out


class LinenProbe(nn.Module):
    out_factor: int = 1

    @nn.compact
    def __call__(self, x, t, y=None, *, label=None):
        c_out = self.out_factor * x.shape[-1]
        w = self.param("w", nn.initializers.normal(0.5), (x.shape[-1], c_out))
        b = self.param("b", nn.initializers.normal(1.0), (c_out,))
        return _probe(x, t, w, b, y, label)


class NNXProbe(nnx.Module):
    def __init__(self, channels, out_factor=1, *, rngs):
        c_out = out_factor * channels
        self.w = nnx.Param(0.5 * jax.random.normal(rngs.params(), (channels, c_out)))
        self.b = nnx.Param(jax.random.normal(rngs.params(), (c_out,)))
        self.drop = nnx.Dropout(0.5, rngs=rngs)  # RNG state in the split state; off in eval()

    def __call__(self, x, t, y=None, *, label=None):
        return self.drop(_probe(x, t, self.w[...], self.b[...], y, label))


def _net(kind, out_factor=1):
    """``(wrap, direct)``: ``wrap(**options) -> ej.Model`` and the module called directly."""
    if kind == "linen":
        net = LinenProbe(out_factor)
        variables = net.init(jax.random.key(0), X, jnp.zeros(B))
        return (lambda **kw: ejf.from_linen(net, variables, **kw),
                lambda *a, **k: net.apply(variables, *a, **k))
    net = NNXProbe(C, out_factor, rngs=nnx.Rngs(0))
    net.eval()
    return (lambda **kw: ejf.from_nnx(net, **kw)), net


def _call(model, x=X, t=0.3, cond=None):
    return model.apply_fn(model.params, x, jnp.asarray(t, jnp.float32), cond)


def _times(value, batch=B):
    return jnp.full((batch,), value, jnp.float32)


KINDS = ("linen", "nnx")


@pytest.mark.parametrize("kind", KINDS)
def test_matches_network_under_jit_vmap_scan(kind):
    wrap, direct = _net(kind)
    model = wrap(path=ej.paths.vp_linear(), prediction="eps")
    assert isinstance(model, ej.Model) and model.prediction == "eps"
    np.testing.assert_array_equal(_call(model), direct(X, _times(0.3)))

    f = lambda m, x, t: m.apply_fn(m.params, x, t, None)
    t = jnp.float32(0.3)
    np.testing.assert_allclose(jax.jit(f)(model, X, t), direct(X, _times(0.3)), rtol=1e-6,
                               atol=1e-6)

    xs = jax.random.normal(jax.random.key(1), (5, *X.shape))
    got = jax.vmap(f, in_axes=(None, 0, None))(model, xs, t)
    want = jnp.stack([direct(x, _times(0.3)) for x in xs])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    ts = jnp.array([0.9, 0.5, 0.1], jnp.float32)
    scan = lambda m, x: jax.lax.scan(lambda c, t: (c, f(m, x, t)), None, ts)[1]
    want = jnp.stack([direct(X, _times(t)) for t in ts])
    np.testing.assert_allclose(scan(model, X), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.jit(scan)(model, X), want, rtol=1e-6, atol=1e-6)


def test_nnx_state_is_the_traced_params():
    wrap, net = _net("nnx")
    model = wrap(path=ej.paths.vp_linear(), prediction="eps")
    assert isinstance(model.params, nnx.State)
    leaves = jax.tree_util.tree_leaves(model)
    assert any(leaf is net.w[...] for leaf in leaves)
    assert all(isinstance(leaf, jax.Array) for leaf in leaves)


@pytest.mark.parametrize("kind", KINDS)
def test_cond_positional_keyword_and_call_kwargs(kind):
    wrap, direct = _net(kind)
    path = ej.paths.vp_linear()
    tt = _times(0.3)
    positional = _call(wrap(path=path, prediction="eps"), cond=COND)
    keyword = _call(wrap(path=path, prediction="eps", cond_arg="label"), cond=COND)
    fixed = _call(wrap(path=path, prediction="eps", call_kwargs={"label": COND}))
    np.testing.assert_array_equal(positional, direct(X, tt, COND))
    np.testing.assert_array_equal(keyword, direct(X, tt, label=COND))
    np.testing.assert_array_equal(fixed, direct(X, tt, label=COND))
    none = _call(wrap(path=path, prediction="eps"))
    assert not np.allclose(positional, keyword) and not np.allclose(positional, none)
    jitted = jax.jit(lambda m, c: m.apply_fn(m.params, X, jnp.float32(0.3), c))
    np.testing.assert_allclose(jitted(wrap(path=path, prediction="eps", cond_arg="label"), COND),
                               keyword, rtol=1e-6, atol=1e-6)


def _vp_sigma_over_alpha(log_abar):
    return math.sqrt(math.expm1(-log_abar))


def _cosine_log_abar(t, s=0.008):
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return math.log(f(t) / f(0.0))


DDPM_BETAS = np.linspace(1e-4, 0.02, 1000)

# (path, time_input, model time t, hand-computed network time, extra options)
TIME_CASES = [
    ("edm", "model", 1.7, 1.7, {}),
    ("edm", "sigma", 1.7, 1.7, {}),
    ("vp_linear", "model", 0.3, 0.3, {}),
    ("vp_discrete", "model", 250.0, 250.0, {}),
    ("ir_sde", "model", 37.0, 37.0, {}),
    ("vp_linear", "sigma", 0.3, _vp_sigma_over_alpha(-(0.1 * 0.3 + 0.5 * 19.9 * 0.3**2)), {}),
    ("vp_cosine", "sigma", 0.5, _vp_sigma_over_alpha(_cosine_log_abar(0.5)), {}),
    ("vp_discrete", "sigma", 250.0,
     _vp_sigma_over_alpha(float(np.sum(np.log1p(-DDPM_BETAS[:251])))), {}),
    ("flow", "sigma", 0.25, 0.25 / 0.75, {}),
    ("vp_linear", "continuous", 0.3, 0.3, {}),
    ("vp_cosine", "continuous", 0.5, 0.5, {}),
    ("flow", "continuous", 0.25, 0.25, {}),
    ("vp_discrete", "discrete", 250.0, 250.0, {}),
    ("vp_discrete", "discrete", 250.5, 250.5, dict(num_train_steps=1000)),
    ("ir_sde", "discrete", 37.0, 37.0, {}),
    ("vp_linear", "discrete", 0.3, 0.3 * 999, {}),
    ("vp_linear", "discrete", 1.0, 999.0, {}),
    ("vp_cosine", "discrete", 0.5, 0.5 * 999, {}),
    ("vp_linear", "discrete", 0.3, 0.3 * 99, dict(num_train_steps=100)),
    ("flow", "discrete", 0.25, 0.25 * 999, {}),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path_name, time_input, t, t_in, options", TIME_CASES)
def test_time_input_conventions(kind, path_name, time_input, t, t_in, options):
    wrap, direct = _net(kind)
    path = getattr(ej.paths, path_name)()
    model = wrap(path=path, prediction="eps", time_input=time_input, **options)
    np.testing.assert_allclose(_call(model, t=t), direct(X, _times(t_in)), rtol=1e-5, atol=1e-5)


def _edm_by_hand(direct, x, sigma, sigma_data, batch_time=True):
    s, sd = float(sigma), float(sigma_data)
    c_in = 1.0 / math.sqrt(s**2 + sd**2)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / math.sqrt(s**2 + sd**2)
    c_noise = math.log(s) / 4
    time = _times(c_noise, x.shape[0]) if batch_time else jnp.float32(c_noise)
    return c_skip * x + c_out * direct(c_in * x, time)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
@pytest.mark.parametrize("batch_time", [True, False])
def test_edm_preconditioning(kind, sigma_data, batch_time):
    wrap, direct = _net(kind)
    options = dict(path=ej.paths.edm(), prediction="x0", time_input="edm", batch_time=batch_time)
    if sigma_data != 0.5:
        options["sigma_data"] = sigma_data
    model = wrap(**options)
    for sigma in (0.02, 1.7, 80.0):
        np.testing.assert_allclose(_call(model, t=sigma),
                                   _edm_by_hand(direct, X, sigma, sigma_data, batch_time),
                                   rtol=1e-5, atol=1e-5)
    # vmap over the noise level: one sigma per mapped call.
    sigmas = jnp.array([0.1, 3.0], jnp.float32)
    got = jax.vmap(lambda s: model.apply_fn(model.params, X, s, None))(sigmas)
    want = jnp.stack([_edm_by_hand(direct, X, s, sigma_data, batch_time) for s in sigmas])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("time_input", ["model", "edm"])
def test_batch_time_shapes(kind, time_input):
    wrap, direct = _net(kind)
    prediction = "x0" if time_input == "edm" else "eps"
    for batch_time, shape in ((True, (B,)), (False, ())):
        model = wrap(path=ej.paths.edm(), prediction=prediction, time_input=time_input,
                     batch_time=batch_time)
        TIME_SHAPES.clear()
        out = _call(model, t=1.7)
        assert TIME_SHAPES == [shape]
        assert out.shape == X.shape
        if time_input == "model":
            np.testing.assert_array_equal(out, direct(X, jnp.float32(1.7)))
        else:
            np.testing.assert_allclose(out, _edm_by_hand(direct, X, 1.7, 0.5), rtol=1e-5,
                                       atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_learned_variance_keeps_the_first_channels(kind):
    wrap, direct = _net(kind, out_factor=2)
    model = wrap(path=ej.paths.vp_linear(), prediction="eps", learned_variance=True)
    full = direct(X, _times(0.3))
    assert full.shape == (*X.shape[:-1], 2 * C)
    np.testing.assert_array_equal(_call(model), full[..., :C])

    model = wrap(path=ej.paths.edm(), prediction="x0", time_input="edm", learned_variance=True)
    first = lambda x, t: direct(x, t)[..., :C]
    np.testing.assert_allclose(_call(model, t=1.7), _edm_by_hand(first, X, 1.7, 0.5), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_output_channels(kind):
    for out_factor, learned_variance, message in (
        (1, True, r"learned_variance=True needs 2 \* 3 channels"),
        (3, True, r"learned_variance=True needs 2 \* 3 channels"),
        (2, False, r"learned_variance=True keeps the first half"),
    ):
        wrap, _ = _net(kind, out_factor=out_factor)
        model = wrap(path=ej.paths.vp_linear(), prediction="eps",
                     learned_variance=learned_variance)
        with pytest.raises(ValueError, match=message):
            _call(model)
        with pytest.raises(ValueError, match=message):
            jax.jit(lambda m: m.apply_fn(m.params, X, jnp.float32(0.3), None))(model)


# One sampler run per adapter (each compiles the library's scan twice, a few seconds): Linen with
# EDM preconditioning and a learned variance, NNX with index time and keyword conditioning.
SAMPLER_CASES = [
    ("linen", 2, "edm", dict(prediction="x0", time_input="edm", learned_variance=True), None),
    ("nnx", 1, "vp_linear", dict(prediction="eps", time_input="discrete", cond_arg="label"),
     COND),
]


@pytest.mark.parametrize("kind, out_factor, path_name, options, cond", SAMPLER_CASES)
def test_full_sampler_jit_matches_eager(kind, out_factor, path_name, options, cond):
    wrap, _ = _net(kind, out_factor)
    path = getattr(ej.paths, path_name)()
    model = wrap(path=path, **options)
    key = jax.random.key(3)
    x_T = ej.prior_sample(jax.random.key(4), path, X.shape)
    eager = ej.ersde_sample(key, model, x_T, steps=5, cond=cond)
    jitted = jax.jit(lambda k, m, x, c: ej.ersde_sample(k, m, x, steps=5, cond=c))(
        key, model, x_T, cond)
    assert eager.shape == x_T.shape and eager.dtype == x_T.dtype
    assert np.all(np.isfinite(eager))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input(kind):
    wrap, _ = _net(kind)
    edm, vp = ej.paths.edm(), ej.paths.vp_linear()
    with pytest.raises(ValueError, match="Unknown time_input 'noise'"):
        wrap(path=vp, prediction="eps", time_input="noise")
    with pytest.raises(ValueError, match="needs the variance-exploding path"):
        wrap(path=vp, prediction="x0", time_input="edm")
    with pytest.raises(ValueError, match="use prediction='x0', got 'eps'"):
        wrap(path=edm, prediction="eps", time_input="edm")
    with pytest.raises(ValueError, match="does not apply to the edm path"):
        wrap(path=edm, prediction="x0", time_input="continuous")
    with pytest.raises(ValueError, match="does not apply to the edm path"):
        wrap(path=edm, prediction="x0", time_input="discrete")
    with pytest.raises(ValueError, match="VPDiscrete is discrete"):
        wrap(path=ej.paths.vp_discrete(), prediction="eps", time_input="continuous")
    with pytest.raises(ValueError, match=r"needs model times in \[0, 1\]"):
        wrap(path=ej.paths.VPLinear(0.0, 2.0), prediction="eps", time_input="continuous")
    with pytest.raises(ValueError, match="differs from the 1000 steps"):
        wrap(path=ej.paths.vp_discrete(), prediction="eps", time_input="discrete",
             num_train_steps=500)
    with pytest.raises(ValueError, match="applies to time_input='discrete' only"):
        wrap(path=vp, prediction="eps", num_train_steps=500)
    with pytest.raises(ValueError, match="num_train_steps must be an int >= 2"):
        wrap(path=vp, prediction="eps", time_input="discrete", num_train_steps=1.5)
    for bad in (0.0, -1.0, float("nan"), "big"):
        with pytest.raises(ValueError, match="sigma_data must be a finite number > 0"):
            wrap(path=edm, prediction="x0", time_input="edm", sigma_data=bad)
    with pytest.raises(TypeError, match="batch_time must be a bool"):
        wrap(path=vp, prediction="eps", batch_time="yes")
    with pytest.raises(TypeError, match="cond_arg must be None or a keyword"):
        wrap(path=vp, prediction="eps", cond_arg=2)
    with pytest.raises(ValueError, match="already holds the conditioning keyword 'label'"):
        wrap(path=vp, prediction="eps", cond_arg="label", call_kwargs={"label": COND})
    with pytest.raises(ValueError, match="Unknown prediction 'velocity'"):
        wrap(path=vp, prediction="velocity")
    with pytest.raises(TypeError, match="path must be an ersde_jax path"):
        wrap(path="edm", prediction="x0")


def test_wrong_module_kind():
    linen = LinenProbe()
    with pytest.raises(TypeError, match="from_nnx needs a flax.nnx.Module"):
        ejf.from_nnx(linen, path=ej.paths.edm(), prediction="x0")
    with pytest.raises(TypeError, match="from_linen needs a flax.linen.Module"):
        ejf.from_linen(NNXProbe(C, rngs=nnx.Rngs(0)), {}, path=ej.paths.edm(), prediction="x0")


def test_flax_is_an_optional_import():
    assert "flax" not in ej.__all__
    assert set(ejf.__all__) == {"TIME_INPUTS", "from_linen", "from_nnx"}
    code = "import sys, ersde_jax; assert 'flax' not in sys.modules, 'flax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
