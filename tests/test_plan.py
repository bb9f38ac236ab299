"""The plan: deterministic chunks, keys from coordinates only, shards that cover the grid once."""
import jax
import numpy as np
import pytest

from ftcjax._src.errors import FTCInputError
from sweep_helpers import TINY_SPEC
from ftcjax.sweep.plan import PROBLEM_AXES, instance_keys, make_plan, shard_chunks
from ftcjax.sweep.spec import parse_spec

SPEC = parse_spec(TINY_SPEC.replace("replicates = 2", "replicates = 3").replace("chunk_size = 2", "chunk_size = 4")
                  .replace("learning_rate = 0.05", "learning_rate = [0.05, 0.1]"))


def test_plan_is_deterministic_and_complete():
    a, b = make_plan(SPEC), make_plan(parse_spec(SPEC.text))
    assert [c.ids for c in a] == [c.ids for c in b]
    ids = [i for c in a for i in c.ids]
    assert len(ids) == len(set(ids)) == SPEC.num_instances == 3 * 2 * 2 * 3
    assert [c.index for c in a] == list(range(len(a)))
    assert all(1 <= len(c) <= SPEC.chunk_size for c in a)


def test_chunks_share_every_axis_but_n():
    for c in make_plan(SPEC):
        groups = {tuple(sorted((k, v) for k, v in i.cell.items() if k != "N")) for i in c.instances}
        assert len(groups) == 1


@pytest.mark.parametrize("n", [1, 2, 3, 5, 64])
def test_shards_partition_the_plan(n):
    plan = make_plan(SPEC)
    seen = [c.index for i in range(n) for c in shard_chunks(plan, i, n)]
    assert sorted(seen) == list(range(len(plan)))  # every chunk exactly once


def test_bad_shard_rejected():
    with pytest.raises(FTCInputError, match="shard"):
        shard_chunks(make_plan(SPEC), 3, 3)


def test_keys_depend_only_on_instance_coordinates():
    plan = make_plan(SPEC)
    insts = [i for c in plan for i in c.instances]
    pk, tk = instance_keys(SPEC.seed, insts)
    # the same instance keyed alone, or in a reversed batch, gets the same keys
    pk1, tk1 = instance_keys(SPEC.seed, [insts[5]])
    assert np.array_equal(jax.random.key_data(pk1[0]), jax.random.key_data(pk[5]))
    assert np.array_equal(jax.random.key_data(tk1[0]), jax.random.key_data(tk[5]))
    pkr, _ = instance_keys(SPEC.seed, insts[::-1])
    assert np.array_equal(jax.random.key_data(pkr[::-1]), jax.random.key_data(pk))
    data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in pk}
    # problem keys: one per (problem cell, replicate); the learning-rate axis shares its instances
    problem_coords = {(tuple(i.cell[a] for a in PROBLEM_AXES), i.replicate) for i in insts}
    assert len(data) == len(problem_coords) == len(insts) // 2
    # a different seed changes every key
    pk2, _ = instance_keys(SPEC.seed + 1, insts)
    assert not np.any(np.all(jax.random.key_data(pk2) == jax.random.key_data(pk), axis=-1))


def test_instance_ids_distinguish_protocol_axes():
    insts = [i for c in make_plan(SPEC) for i in c.instances]
    by_problem = {}
    for i in insts:
        by_problem.setdefault((tuple(i.cell[a] for a in PROBLEM_AXES), i.replicate), set()).add(i.id)
    assert all(len(v) == 2 for v in by_problem.values())  # two learning rates, two ids
