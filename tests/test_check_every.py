"""``Protocol.check_every``: runs judged every k steps train the same trajectory, stop only at judged
steps, and are refused where the budget does not tile into checks."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax

BASE = dict(depth=2, steps=60, segment=20, restarts=1, learning_rate=5e-2, unroll=1, lanes_per_step=4)


def _problems(num=4, K=24, d=2, N=3, seed=0):
    return ftcjax.make_problems(jax.random.key(seed), num=num, K=K, d=d, N=N)


def _keys(n, seed=1):
    return jax.random.split(jax.random.key(seed), n)


def test_bare_steps_between_checks_follow_the_judged_trajectory():
    # No success possible (tol 1e-12): both runs take all 60 steps; the bare steps must be the same
    # updates (to rounding) as the judged ones, so the end points agree and the history rows
    # (every 10 steps, a multiple of k) match row for row.
    protocol = ftcjax.Protocol(**BASE, criterion="strict", tol=1e-12, history_every=10)
    probs, widths = _problems(), np.array([2, 4, 6, 8])
    one = ftcjax.fit_batch(probs, widths, keys=_keys(4), protocol=protocol)
    five = ftcjax.fit_batch(probs, widths, keys=_keys(4), protocol=protocol.replace(check_every=5))
    assert not one.success.any() and not five.success.any()
    np.testing.assert_array_equal(five.steps, 60)
    np.testing.assert_allclose(five.mse_end, one.mse_end, rtol=1e-9)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(five.params)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-8, atol=1e-12)
    assert five.history.shape == one.history.shape == (4, 6, 2)
    np.testing.assert_allclose(five.history, one.history, rtol=1e-9)


@pytest.mark.parametrize("optimizer,tol", [("adam", 0.1), ("lm", 0.01)])
def test_a_run_stops_at_the_first_judged_step_at_which_it_passes(optimizer, tol):
    # Judged every k steps, a run follows the trajectory of the run judged every step and stops at the
    # first multiple of k at which that trajectory passes (read off its full history), not at ceil(s/k)k
    # for its first success s: a trajectory can pass at step 3 and fail at step 4.
    k = 4
    protocol = ftcjax.Protocol(**{**BASE, "steps": 80}, optimizer=optimizer, criterion="strict", tol=tol)
    probs, widths = _problems(num=4, K=8, d=4, N=2), np.array([4, 6, 8, 8])
    every = ftcjax.fit_batch(probs, widths, keys=_keys(4),
                             protocol=protocol.replace(stop_on_success=False, history_every=1))
    kth = ftcjax.fit_batch(probs, widths, keys=_keys(4), protocol=protocol.replace(check_every=k))
    z_scale = np.maximum(1.0, np.abs(np.asarray(probs.z)).max(1))
    passing = every.history[:, :, 1] <= tol * z_scale[:, None]  # (B, steps): strict at every step
    assert passing.any(1).sum() >= 2 and (np.argmax(passing, 1)[passing.any(1)] > k).any()  # late successes
    judged = passing[:, ::k]
    np.testing.assert_array_equal(kth.success, judged.any(1))
    expected = np.where(judged.any(1), k * np.argmax(judged, 1), protocol.steps)
    np.testing.assert_array_equal(kth.steps, expected)
    # the returned parameters are the judged ones: a plain forward pass passes the criterion
    with jax.enable_x64(True):
        for i in np.flatnonzero(kth.success):
            layers = ftcjax.to_layers(jax.tree.map(lambda a: a[i], kth.params), int(widths[i]), depth=2)
            r = np.asarray(ftcjax.forward(ftcjax.from_layers(layers), jnp.asarray(probs.x[i]).T)) - np.asarray(probs.z[i])
            assert float(np.mean(r ** 2)) == pytest.approx(float(kth.mse[i]), rel=1e-10)
            assert float(np.abs(r).max()) <= tol * max(1.0, float(np.abs(np.asarray(probs.z[i])).max()))


def test_a_run_that_blows_up_between_checks_is_diverged():
    protocol = ftcjax.Protocol(**{**BASE, "learning_rate": 10.0}, optimizer="sgd", momentum=0.0,
                               schedule="constant", criterion="strict", tol=1e-12, check_every=10)
    res = ftcjax.fit_batch(_problems(num=2), np.array([8, 8]), keys=_keys(2), protocol=protocol)
    assert [ftcjax.END_REASONS[r] for r in res.end_reason] == ["diverged", "diverged"]
    assert not np.isfinite(res.mse_end).any()


@pytest.mark.parametrize("change,message", [
    (dict(check_every=0), "check_every: 0 must be an integer >= 1"),
    (dict(check_every=1.5), "check_every: 1.5"),
    (dict(check_every=3), "steps: 2000 must be a multiple of check_every = 3"),
    (dict(check_every=8, steps=800), "segment: 250 must be a multiple of check_every = 8"),
    (dict(check_every=10, history_every=25), "history_every: 25 must be a multiple of check_every = 10"),
])
def test_a_budget_that_does_not_tile_into_checks_names_the_field(change, message):
    with pytest.raises(ftcjax.FTCInputError, match=message):
        ftcjax.Protocol(**change)


def test_a_polished_run_judged_every_k_steps_polishes_every_step():
    # the LM polish is its own phase, judged every iteration whatever the first-order phase's k
    protocol = ftcjax.Protocol(**BASE, criterion="strict", tol=1e-6, check_every=10, polish_steps=7)
    res = ftcjax.fit_batch(_problems(num=2, K=8, d=4, N=2), np.array([8, 8]), keys=_keys(2), protocol=protocol)
    assert res.success.all()
    assert np.all((res.steps > 60) & (res.steps <= 67))
