"""Batch generation across devices: sharded == unsharded, output left sharded (8 CPU devices);
the progress bar under sharding."""

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

    # The progress bar: one host callback per step under jit, same samples, still sharded.
    import ersde_jax._progress as progress
    seen, tick = [], progress._tick
    progress._tick = lambda s, n: (seen.append(int(np.max(s))), tick(s, n))
    with_bar = jax.jit(lambda k, x: ej.ersde_sample(k, model, x, steps=12, progress=True))
    shown = with_bar(jax.device_put(keys, batch), jax.device_put(x_T, batch))
    jax.effects_barrier()
    np.testing.assert_allclose(np.asarray(shown), np.asarray(single), rtol=1e-12, atol=1e-12)
    assert shown.sharding.is_equivalent_to(batch, shown.ndim)
    assert sorted(set(seen)) == list(range(12))
    print("ok")
""")

SHARD_MAP_PROGRESS = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import ersde_jax as ej

    path = ej.paths.edm()
    model = ej.testing.mixture_model(ej.testing.GaussianMixture(
        jnp.array([0.3, 0.7]), jnp.array([[2.0, 0.0], [-1.0, 1.0]]), jnp.array([0.3, 0.5])), path)
    x_T = ej.prior_sample(jax.random.key(0), path, (32, 2))
    keys = jax.random.split(jax.random.key(1), 32)
    mesh = jax.make_mesh((8,), ("batch",))
    batch = NamedSharding(mesh, P("batch"))
    run = lambda k, x: ej.ersde_sample(k, model, x, steps=6, progress=True)
    per_device = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(P("batch"), P("batch")),
                                       out_specs=P("batch")))
    for _ in range(2):  # a second run starts a fresh bar
        out = per_device(jax.device_put(keys, batch), jax.device_put(x_T, batch))
        jax.effects_barrier()
    np.testing.assert_allclose(np.asarray(out), np.asarray(run(keys, x_T)), atol=1e-5)
    print("ok")
""")


def test_sharded_equals_unsharded_and_stays_sharded():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_progress_bar_under_shard_map_runs_once_per_device_without_errors():
    """Under shard_map every device calls the progress callback, from several threads."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SHARD_MAP_PROGRESS], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "callback failed" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.strip().endswith("ok")
