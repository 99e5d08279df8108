"""Solvers, models and noise scales as pytrees: tree structures that tell the classes apart.

``jax.jit`` looks a compiled program up by the hash of its arguments' tree structure, then by
equality. ``jax.tree_util.register_dataclass`` nodes (jax 0.10) compare equal across classes and
field names when the static values agree, so ``ej.sample`` compiled for ``ddim(0.5)`` could run
for ``euler_maruyama()`` (both one leaf and ``(True,)``) whenever the two hashes met in one
bucket: wrong samples, no error (5 of 21 runs of ``test_baselines.py`` here).
"""

import dataclasses
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import pytest
from helpers import gaussian_model

import ersde_jax as ej
from ersde_jax._numerics import pytree_dataclass


def _instances():
    """One or two instances of every public pytree class, including equal-layout pairs."""
    path = ej.paths.vp_linear()
    return [
        ej.ddim(0.5), ej.ddim(0.0), ej.euler_maruyama(), ej.euler_ode(),
        ej.er_sde(3), ej.er_sde(1, "ode"), ej.mr_ode(2), ej.mr_sde(2),
        ej.edm_heun(), ej.edm_stochastic(s_churn=10.0),
        ej.noise_scale("er_sde_5"), gaussian_model(path, dtype=jnp.float32),
    ]


def test_equal_layout_solvers_have_distinct_tree_structures():
    """DDIM and Euler(-Maruyama) have the same layout (one leaf, one static bool) and must still
    be different programs to ``jax.jit``."""
    for a, b in [(ej.ddim(0.5), ej.euler_maruyama()), (ej.ddim(0.0), ej.euler_ode())]:
        (leaves_a, tree_a), (leaves_b, tree_b) = (jax.tree_util.tree_flatten(s) for s in (a, b))
        assert len(leaves_a) == len(leaves_b) == 1
        assert tree_a != tree_b


def test_tree_structures_equal_only_within_a_class():
    objects = _instances()
    for a, b in itertools.combinations(objects, 2):
        same = jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        assert not same or type(a) is type(b), (a, b)


def test_round_trip_and_key_paths():
    for obj in _instances():
        leaves, tree = jax.tree_util.tree_flatten(obj)
        assert jax.tree_util.tree_unflatten(tree, leaves) == obj
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        ej.edm_stochastic(s_churn=10.0))[0]]
    assert paths == [".s_churn", ".s_min", ".s_max", ".s_noise"]


def test_one_jitted_function_runs_each_solver_with_its_own_program():
    """A jitted function called with DDIM then Euler-Maruyama compiles twice and matches each
    solver's eager coefficients."""
    path = ej.paths.vp_linear()
    ts = ej.timesteps.uniform_t(path, 16)
    alpha, sigma = path.alpha(ts), path.sigma(ts)
    traces = []

    @jax.jit
    def coefficients(solver, a, s):
        traces.append(type(solver))
        return solver.coefficients(ej.Grid.from_values(a, s))

    for solver in (ej.ddim(0.5), ej.euler_maruyama(), ej.ddim(0.7)):
        got, want = coefficients(solver, alpha, sigma), solver.coefficients(
            ej.Grid.from_values(alpha, sigma))
        for g, w in zip(got, want, strict=True):
            assert jnp.allclose(g, w, rtol=1e-6, atol=1e-7)
    assert traces == [ej.DDIM, ej.Euler]


def test_pytree_dataclass_rejects_what_it_cannot_rebuild():
    class Plain:
        pass

    @dataclasses.dataclass
    class Mutable:
        x: Any

    @dataclasses.dataclass(frozen=True)
    class Derived:
        x: Any
        y: Any = dataclasses.field(default=0.0, init=False)

    for cls in (Plain, Mutable, Derived):
        with pytest.raises(TypeError):
            pytree_dataclass(cls)
