"""Batch generation across devices: sharded == unsharded, output left sharded (8 CPU devices)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    import ersde_jax as ej

    assert jax.device_count() == 8
    path = ej.paths.edm()
    mixture = ej.testing.GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[2.0, 0.0],
                                         [-1.0, 1.0]]), jnp.array([0.3, 0.5]))
    model = ej.testing.mixture_model(mixture, path)
    x_T = ej.prior_sample(jax.random.key(0), path, (32, 2), dtype=jnp.float64)
    keys = jax.random.split(jax.random.key(1), 32)
    mesh = jax.make_mesh((8,), ("batch",))
    batch = NamedSharding(mesh, P("batch"))
    sample = jax.jit(lambda k, x: ej.ersde_sample(k, model, x, steps=12))
    single = sample(keys, x_T)
    sharded = sample(jax.device_put(keys, batch), jax.device_put(x_T, batch))
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), rtol=1e-12, atol=1e-12)
    assert len(sharded.sharding.device_set) == 8
    assert sharded.sharding.is_equivalent_to(batch, sharded.ndim)
    assert np.array_equal(np.asarray(sample(keys[:8], x_T[:8])), np.asarray(single[:8]))
    print("ok")
""")


def test_sharded_equals_unsharded_and_stays_sharded():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
