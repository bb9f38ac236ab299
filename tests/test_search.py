import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax
from ftcjax import Probe, search_widths
from ftcjax._src import criteria


def synthetic_trainer(threshold, *, fail_above=None, calls=None):
    """A trainer whose instance i succeeds exactly at widths >= threshold[i] (minus a failure set)."""

    def probe(ids, widths):
        if calls is not None:
            calls.append(len(ids))
        out = []
        for i, w in zip(ids, widths):
            ok = threshold[i] is not None and w >= threshold[i]
            if fail_above is not None and int(w) in fail_above.get(int(i), ()):
                ok = False
            out.append(Probe(width=int(w), success=bool(ok), successes=int(ok), restarts=1, mse=[0.0],
                             max_err=[0.0], steps=[1], passed={}))
        return out

    return probe


def test_bisection_finds_the_known_threshold_and_flags_censoring():
    widths = list(range(1, 33))
    threshold = [1, 2, 5, 17, 32, 33, None, 16]
    mins, censored, nonmono, probes = search_widths(synthetic_trainer(threshold), len(threshold), widths)
    assert mins == [1, 2, 5, 17, 32, None, None, 16]
    assert censored == [False] * 5 + [True, True, False]
    assert nonmono == [False] * 8
    # About log2(32) + 1 probes each; a censored instance costs exactly one probe.
    assert all(len(p) <= 7 for p in probes) and len(probes[5]) == 1
    assert all(p.width == 32 for p in (probes[5][0], probes[6][0]))


def test_bisection_over_a_stepped_grid_returns_a_grid_point():
    widths = list(range(6, 49, 6))
    mins, censored, _, _ = search_widths(synthetic_trainer([7, 6, 48, 13]), 4, widths)
    assert mins == [12, 6, 48, 18] and not any(censored)


def test_every_round_is_one_call_over_all_active_instances():
    calls = []
    search_widths(synthetic_trainer([3, 9, None, 20], calls=calls), 4, list(range(1, 17)))
    assert calls[0] == 4          # the censoring round covers everyone
    assert max(calls[1:]) <= 3    # the censored instance drops out
    assert len(calls) <= 1 + 4    # log2(16) bisection rounds


def test_grid_strategy_reports_smallest_success_and_flags_non_monotone():
    widths = list(range(1, 11))
    probe = synthetic_trainer([4, 4, None], fail_above={1: (7,)})
    mins, censored, nonmono, probes = search_widths(probe, 3, widths, strategy="grid")
    assert mins == [4, 4, None]
    assert censored == [False, False, True]
    assert nonmono == [False, True, False]
    assert [len(p) for p in probes] == [10, 10, 10]


def test_bad_search_arguments():
    with pytest.raises(ftcjax.FTCInputError, match="strategy: unknown value 'ternary'"):
        search_widths(synthetic_trainer([1]), 1, [1, 2], strategy="ternary")
    with pytest.raises(ftcjax.FTCInputError, match="widths.lower: 9 exceeds widths.upper = 4"):
        ftcjax.width_grid(9, 4)
    with pytest.raises(ftcjax.FTCInputError, match="widths.lower: 0"):
        ftcjax.width_grid(0, 4)
    problem = ftcjax.make_problem(jax.random.key(0), K=8, d=2, N=1)
    protocol = ftcjax.Protocol(depth=3, steps=10, restarts=1, unroll=1)
    with pytest.raises(ftcjax.FTCInputError, match="widths: 1 is below 2"):
        ftcjax.min_width(problem, key=jax.random.key(1), protocol=protocol, widths=[1, 2])
    with pytest.raises(ftcjax.FTCInputError, match="widths"):
        ftcjax.min_width(problem, key=jax.random.key(1), protocol=protocol, widths=[])


def test_criteria_on_hand_built_cases():
    # mse, max_err, z_scale, mse_zero for three hand-computed situations.
    flags = np.asarray(criteria.passed(
        jnp.array([0.04, 0.05, 1e-4]), jnp.array([0.5, 0.01, 0.02]), jnp.array([1.0, 1.0, 2.0]),
        jnp.array([0.5, 0.5, 0.1]), 0.04, 1e-2, 1e-3))
    np.testing.assert_array_equal(flags, [[True, False, False],   # paper boundary is inclusive
                                          [False, True, False],   # strict: 0.01 <= 1e-2 * 1
                                          [True, True, True]])    # strict scales with max|z| = 2
    # g = 0 passes the paper criterion when N/K is small, and never strict or relative.
    z = jnp.zeros(1000).at[:10].set(0.9)  # N = 10 of K = 1000: mse_zero = 0.0081
    np.testing.assert_array_equal(np.asarray(criteria.trivially_satisfied(z, 0.04, 1e-2, 1e-3)),
                                  [True, False, False])
    z = jnp.zeros(1000).at[:100].set(0.9)  # N = 100: mse_zero = 0.081 > 0.04
    assert not bool(criteria.trivially_satisfied(z, 0.04, 1e-2, 1e-3)[0])


def test_kernel_search_flags_trivial_instances_and_records_every_probe():
    # Small N/K: g = 0 already meets the paper criterion (trivial); a large N does not.
    probs = ftcjax.make_problems(jax.random.key(0), num=2, K=64, d=2, N=np.array([1, 64]))
    protocol = ftcjax.Protocol(depth=2, steps=100, segment=50, restarts=2, criterion="paper",
                               learning_rate=2e-2, unroll=1)
    res = ftcjax.min_width_batch(probs, keys=jax.random.split(jax.random.key(1), 2), protocol=protocol,
                                 widths=[2, 4, 8])
    assert res[0].trivial and not res[1].trivial
    assert res[0].problem["trivial_by"] == {"paper": True, "strict": False, "relative": False}
    for r in res:
        d = r.to_dict()
        assert d["trainings"] == 2 * len(d["probes"])
        assert d["probes"][0]["width"] == 8  # the censoring probe comes first
        for p in d["probes"]:
            assert len(p["mse"]) == 2 and set(p["passed"]) == set(ftcjax.CRITERIA)
            assert p["success"] == (p["successes"] >= 1)
            assert p["successes"] == sum(p["passed"]["paper"])
        if not d["censored"]:
            assert any(p["width"] == d["min_width"] and p["success"] for p in d["probes"])


def test_lane_keys_make_probes_independent_of_batch_composition():
    probs = ftcjax.make_problems(jax.random.key(3), num=3, K=16, d=2, N=np.array([2, 4, 8]))
    keys = jax.random.split(jax.random.key(4), 3)
    protocol = ftcjax.Protocol(depth=2, steps=40, segment=20, restarts=2, criterion="relative",
                               rel_eps=0.5, unroll=1)
    together = ftcjax.min_width_batch(probs, keys=keys, protocol=protocol, widths=[2, 3, 4, 5])
    alone = ftcjax.min_width(jax.tree.map(lambda a: a[1], probs), key=keys[1], protocol=protocol,
                             widths=[2, 3, 4, 5])
    assert together[1].to_dict() == alone.to_dict()
