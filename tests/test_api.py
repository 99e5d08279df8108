"""The public contract: jit, vmap, grad, tracing, dtypes, keys, hooks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_allclose, assert_tree_all_finite, two_component_mixture, x64

import ersde_jax as ej


def _setup(path=None, batch=16, dtype=jnp.float32):
    path = path or ej.paths.edm()
    model = ej.testing.mixture_model(two_component_mixture(dtype), path)
    x_T = ej.prior_sample(jax.random.key(0), path, (batch, 2), dtype=dtype)
    return model, x_T


def test_jit_as_written_and_defaults():
    model, x_T = _setup()
    x = jax.jit(ej.ersde_sample)(jax.random.key(1), model, x_T)
    assert x.shape == x_T.shape and x.dtype == x_T.dtype
    assert_tree_all_finite(x)
    eager = ej.ersde_sample(jax.random.key(1), model, x_T)
    assert_allclose(x, eager, rtol=1e-5, atol=1e-5)


def test_jit_equals_no_jit_x64():
    with x64():
        model, x_T = _setup(ej.paths.vp_linear(), dtype=jnp.float64)
        f = lambda k, m, x: ej.ersde_sample(k, m, x, steps=12, order=3)
        assert_allclose(jax.jit(f)(jax.random.key(3), model, x_T), f(jax.random.key(3), model, x_T),
                        rtol=1e-12)


def test_vmap_over_keys_gives_distinct_samples_and_equals_loop():
    model, x_T = _setup(batch=4)
    keys = jax.random.split(jax.random.key(5), 3)
    f = lambda k: ej.ersde_sample(k, model, x_T, steps=10)
    batched = jax.vmap(f)(keys)
    looped = jnp.stack([f(k) for k in keys])
    assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)
    assert float(jnp.min(jnp.abs(batched[0] - batched[1]))) > 1e-4


def test_vmap_over_x_T_equals_batch():
    model, x_T = _setup(batch=6)
    f = lambda x: ej.ersde_sample(None, model, x[None], steps=10, noise_scale="ode")[0]
    assert_allclose(jax.vmap(f)(x_T), ej.ersde_sample(None, model, x_T, steps=10,
                                                      noise_scale="ode"), rtol=1e-5, atol=1e-6)


def test_gradients_are_finite():
    model, x_T = _setup(batch=4)

    def loss(params, x):
        m = ej.Model(model.apply_fn, params, path=model.path, prediction="x0")
        return jnp.sum(ej.ersde_sample(jax.random.key(2), m, x, steps=8) ** 2)

    g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(model.params, x_T)
    assert_tree_all_finite((g_params, g_x))
    assert float(jnp.abs(g_x).sum()) > 0 and float(jnp.abs(g_params.means).sum()) > 0


@pytest.mark.parametrize("path", [ej.paths.edm(), ej.paths.vp_linear()], ids=["edm", "vp_linear"])
def test_gradient_with_respect_to_eta_and_traced_grid_is_finite(path):
    """Every grid point, the clean end included (``d sigma / dt = inf`` there on VP paths)."""
    model, x_T = _setup(path, batch=4)
    ts = jnp.asarray(ej.timesteps.karras(model.path, 8), jnp.float32)

    def loss(eta, ts):
        x = ej.ersde_sample(jax.random.key(2), model, x_T, steps=8, eta=eta, timesteps=ts)
        return jnp.sum(x**2)

    g_eta, g_ts = jax.grad(loss, argnums=(0, 1))(0.7, ts)
    assert np.isfinite(g_eta) and np.all(np.isfinite(np.asarray(g_ts)))


def test_apply_fn_traced_once_and_grid_values_do_not_recompile():
    count = {"n": 0}
    base, x_T = _setup()

    def apply_fn(params, x, t, cond):
        count["n"] += 1
        return base.apply_fn(params, x, t, cond)

    model = ej.Model(apply_fn, base.params, path=base.path, prediction="x0")

    @jax.jit
    @chex.assert_max_traces(n=1)  # a second trace (a recompile) raises
    def f(key, ts):
        return ej.ersde_sample(key, model, x_T, steps=10, timesteps=ts)

    grid = ej.timesteps.karras(model.path, 10)
    f(jax.random.key(0), jnp.asarray(grid, jnp.float32)).block_until_ready()
    assert count["n"] <= 2
    traced = count["n"]
    other = ej.timesteps.karras(model.path, 10, rho=3.0)
    f(jax.random.key(1), jnp.asarray(other, jnp.float32)).block_until_ready()
    assert count["n"] == traced  # no retrace, no recompile


def test_traced_invalid_grid_returns_nan_not_a_sample():
    model, x_T = _setup(batch=2)
    f = jax.jit(lambda ts: ej.ersde_sample(jax.random.key(0), model, x_T, steps=3, timesteps=ts))
    assert np.all(np.isfinite(f(jnp.array([80.0, 5.0, 1.0, 0.0]))))
    assert np.all(np.isnan(f(jnp.array([80.0, 1.0, 5.0, 0.0]))))


def test_bf16_model_keeps_float32_state():
    base, x_T = _setup()
    seen = []

    def apply_fn(params, x, t, cond):
        seen.append(x.dtype)
        out = base.apply_fn(params, x.astype(jnp.bfloat16).astype(jnp.float32), t, cond)
        return out.astype(jnp.bfloat16)

    model = ej.Model(apply_fn, base.params, path=base.path, prediction="x0")
    x = ej.ersde_sample(jax.random.key(0), model, x_T.astype(jnp.bfloat16), steps=10)
    assert x.dtype == jnp.bfloat16 and all(d == jnp.float32 for d in seen)
    assert_tree_all_finite(x.astype(jnp.float32))


def test_save_fn_stacks_trajectory_and_nfe_equals_steps():
    model, x_T = _setup(batch=3)
    res = ej.sample(jax.random.key(0), model, x_T, ej.er_sde(2), steps=7,
                    save_fn=lambda info: (info.t, info.x, info.denoised))
    ts, xs, x0s = res.saved
    assert ts.shape == (7,) and xs.shape == (7, 3, 2) and x0s.shape == (7, 3, 2)
    assert_allclose(ts, ej.timesteps.karras(model.path, 7)[:-1], rtol=1e-6)
    assert_allclose(xs[0], x_T, rtol=1e-6)
    assert bool(res.finite)


def test_per_sample_keys_are_batch_invariant():
    model, x_T = _setup(batch=8)
    keys = jax.random.split(jax.random.key(9), 8)
    full = ej.ersde_sample(keys, model, x_T, steps=6)
    part = ej.ersde_sample(keys[:3], model, x_T[:3], steps=6)
    assert_allclose(part, full[:3], rtol=1e-6, atol=1e-6)


def test_s_noise_zero_equals_deterministic_part():
    with x64():
        model, x_T = _setup(dtype=jnp.float64)
        a = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9, s_noise=0.0)
        b = ej.ersde_sample(jax.random.key(1), model, x_T, steps=9, s_noise=0.0)
        c = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9)
        assert_allclose(a, b, rtol=1e-14)
        assert float(jnp.max(jnp.abs(a - c))) > 1e-3


def test_eta_zero_is_the_ode():
    with x64():
        model, x_T = _setup(dtype=jnp.float64)
        a = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9, eta=0.0)
        b = ej.ersde_sample(None, model, x_T, steps=9, noise_scale="ode")
    assert_allclose(a, b, rtol=1e-12)


def test_callable_noise_scale_equals_named():
    with x64():
        model, x_T = _setup(dtype=jnp.float64)
        named = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9, noise_scale="er_sde_5")
        phi = lambda x: x * (jnp.exp(x**0.3) + 10.0)
        custom = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9, noise_scale=phi)
        param = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9,
                                noise_scale=lambda x, p: x * (jnp.exp(x**p) + 10.0),
                                noise_scale_params=0.3)
    assert_allclose(custom, named, rtol=1e-10)
    assert_allclose(param, named, rtol=1e-10)


def test_sde_closed_form_equals_quadrature():
    """eta traced forces quadrature for phi = x^2; it must equal the closed form."""
    with x64():
        model, x_T = _setup(dtype=jnp.float64)
        closed = ej.ersde_sample(jax.random.key(0), model, x_T, steps=9, noise_scale="sde")
        quad = jax.jit(lambda eta: ej.ersde_sample(jax.random.key(0), model, x_T, steps=9,
                                                   noise_scale="sde", eta=eta))(1.0)
    assert_allclose(quad, closed, rtol=1e-10)


@pytest.mark.parametrize("path", [ej.paths.vp_linear(), ej.paths.vp_cosine(),
                                  ej.paths.vp_discrete(), ej.paths.flow()])
def test_every_path_samples_the_mixture(path):
    model, x_T = _setup(path, batch=2000)
    x = jax.jit(ej.ersde_sample)(jax.random.key(4), model, x_T)
    frac = float(jnp.mean(x[:, 0] > 0.5))
    assert abs(frac - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 2000) + 0.01


def test_nan_from_the_network_is_reported():
    base, x_T = _setup(batch=3)

    def apply_fn(params, x, t, cond):
        out = base.apply_fn(params, x, t, cond)
        return jnp.where(t < 1.0, jnp.nan, out)  # fails late in sampling

    model = ej.Model(apply_fn, base.params, path=base.path, prediction="x0")
    res = ej.sample(jax.random.key(0), model, x_T, ej.er_sde(3), steps=10)
    assert not bool(res.finite) and bool(jnp.all(jnp.isnan(res.x)))


def _public_methods(cls):
    """Own public methods and properties of ``cls`` (not NamedTuple fields)."""
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if callable(value) or isinstance(value, property):
            yield attr, value


def test_every_public_name_is_documented():
    """Every public name, and every public method of a public class (path methods included)."""
    import inspect

    def check(obj, label):
        assert (obj.__doc__ or "").strip(), f"{label} has no docstring"
        if inspect.isclass(obj):
            for attr, member in _public_methods(obj):
                assert (member.__doc__ or "").strip(), f"{label}.{attr} has no docstring"

    for name in ej.__all__:
        obj = getattr(ej, name)
        if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj):
            check(obj, f"ej.{name}")
            if inspect.ismodule(obj):
                for sub in getattr(obj, "__all__", ()):
                    member = getattr(obj, sub)
                    if inspect.isclass(member) or inspect.isfunction(member):
                        check(member, f"ej.{name}.{sub}")


def test_progress_bar_from_inside_jit(capsys, monkeypatch):
    import ersde_jax._progress as progress

    seen = []
    tick = progress._tick
    monkeypatch.setattr(progress, "_tick", lambda s, n: (seen.append(int(s)), tick(s, n)))
    model, x_T = _setup(batch=2)
    f = jax.jit(lambda k: ej.ersde_sample(k, model, x_T, steps=6, progress=True))
    x = f(jax.random.key(0))
    jax.effects_barrier()
    assert_allclose(x, ej.ersde_sample(jax.random.key(0), model, x_T, steps=6), rtol=1e-6)
    assert sorted(seen) == list(range(6)) and "sampling" in capsys.readouterr().err
