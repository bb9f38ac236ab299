"""Bad input through the Python API gets the CLI's clear one-line errors, each naming the argument."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax
from ftcjax import FTCInputError

PROTO = ftcjax.Protocol(depth=2, steps=20, restarts=1, criterion="paper")


@pytest.fixture(scope="module")
def batch():
    return ftcjax.make_problems(jax.random.key(0), num=3, K=8, d=2, N=2)


def test_frozen_callable_nan_or_wrong_shape():
    with pytest.raises(FTCInputError, match=r"frozen: the callable returned a non-finite value nan"):
        ftcjax.make_problem(jax.random.key(0), K=8, d=2, N=2, frozen=lambda x: jnp.full(x.shape[0], jnp.nan))
    with pytest.raises(FTCInputError, match=r"frozen: the callable returned shape \(8, 2\)"):
        ftcjax.make_problem(jax.random.key(0), K=8, d=2, N=2, frozen=lambda x: x)
    with pytest.raises(FTCInputError, match="frozen: the callable returned a non-finite"):
        ftcjax.make_problems(jax.random.key(0), num=2, K=8, d=2, N=2, frozen=lambda x: jnp.log(x[:, 0] - 100))
    ok = ftcjax.make_problem(jax.random.key(0), K=8, d=2, N=2, frozen=lambda x: x[:, :1])  # (K, 1) is fine
    assert ok.f_x.shape == (8,)


def test_one_key_where_a_batch_is_expected(batch):
    with pytest.raises(FTCInputError, match=r"keys: got one key; .*jax.random.split\(key, 3\)"):
        ftcjax.min_width_batch(batch, keys=jax.random.key(1), protocol=PROTO, widths=[2])
    with pytest.raises(FTCInputError, match="keys: got one key"):
        ftcjax.min_width_batch(batch, keys=jax.random.PRNGKey(1), protocol=PROTO, widths=[2])


def test_batch_to_min_width_and_single_to_min_width_batch(batch):
    with pytest.raises(FTCInputError, match=r"problem: x has shape \(3, 8, 2\), a batch"):
        ftcjax.min_width(batch, key=jax.random.key(1), protocol=PROTO, widths=[2])
    one = ftcjax.make_problem(jax.random.key(0), K=8, d=2, N=2)
    with pytest.raises(FTCInputError, match=r"problems: x has shape \(8, 2\), one problem"):
        ftcjax.min_width_batch(one, keys=jax.random.split(jax.random.key(1), 8), protocol=PROTO, widths=[2])
    with pytest.raises(FTCInputError, match="key: shape"):
        ftcjax.min_width(one, key=jax.random.split(jax.random.key(1), 2), protocol=PROTO, widths=[2])


def test_protocol_as_a_dict(batch):
    with pytest.raises(FTCInputError, match=r"protocol: expected an ftcjax.Protocol, got dict \(build one"):
        ftcjax.min_width_batch(batch, keys=jax.random.split(jax.random.key(1), 3), protocol={"steps": 5},
                               widths=[2])


def test_make_problems_n_length_and_stack_mismatch():
    with pytest.raises(FTCInputError, match=r"N: shape \(2,\) must be a scalar or \(num,\) = \(3,\)"):
        ftcjax.make_problems(jax.random.key(0), num=3, K=8, d=2, N=np.array([1, 2]))
    a = ftcjax.make_problem(jax.random.key(0), K=8, d=2, N=2)
    b = ftcjax.make_problem(jax.random.key(1), K=9, d=2, N=2)
    with pytest.raises(FTCInputError, match=r"problems\[1\]: K = 9, d = 2 differ from problems\[0\] \(K = 8"):
        ftcjax.stack_problems([a, b])
    with pytest.raises(FTCInputError, match="at least one"):
        ftcjax.stack_problems([])


def test_load_results_of_a_directory_string(tmp_path):
    from ftcjax.sweep import load_results

    with pytest.raises(FTCInputError, match="paths: .* is neither a run directory nor a shard file"):
        load_results(str(tmp_path / "missing"))
    (tmp_path / "results").mkdir()
    assert len(load_results(str(tmp_path))) == 0  # a directory is read, never iterated as characters


def test_progress_callback_reports_every_round(batch):
    seen = []
    res = ftcjax.min_width_batch(batch, keys=jax.random.split(jax.random.key(1), 3), protocol=PROTO,
                                 widths=[1, 2, 4, 8], progress=seen.append)
    assert seen and [s["round"] for s in seen] == list(range(1, len(seen) + 1))
    assert seen[0]["instances"] == 3 and seen[0]["probes"] >= 3  # the first round probes every instance
    assert seen[-1]["trainings_done"] == sum(r.trainings for r in res)
