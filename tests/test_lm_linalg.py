"""The LM solve in jax ops: exact against numpy, and no LAPACK call in the LM kernel.

jaxlib 0.10.2's CPU Cholesky (potrf) splits a vmapped batch over XLA's intra-op thread pool and waits
inside a pool thread; two devices running LM at once on 2 cores deadlocked. ftcjax's own Cholesky
keeps LAPACK out of the kernel.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax
from ftcjax._src import lm


@pytest.mark.parametrize("P, blocks", [(1, {}), (2, {}), (7, {}), (40, {}), (115, {}),
                                       (7, dict(min_block=2)), (40, dict(min_block=3, max_blocks=9)),
                                       (40, dict(max_blocks=1))])
def test_cholesky_and_solve_match_numpy_in_float64(P, blocks):
    # blocks of every kind: one (the column loop), several equal ones, a smaller last one (7 = 2+2+2+1)
    rng = np.random.default_rng(P)
    B = rng.standard_normal((P, P + 3))
    M = B @ B.T + 1e-3 * np.eye(P)
    b = rng.standard_normal(P)
    with jax.enable_x64(True):
        factor = lm.cho_factor(jnp.asarray(M), **blocks)
        L = np.asarray(factor.lower())
        x = np.asarray(lm.cho_solve(factor, jnp.asarray(b)))
    np.testing.assert_allclose(L, np.linalg.cholesky(M), rtol=1e-10, atol=1e-12)
    assert np.all(np.triu(L, 1) == 0)
    for d, xt in zip(factor.diag, factor.inv_t):
        np.testing.assert_allclose(np.asarray(xt).T @ np.asarray(d), np.eye(d.shape[0]), atol=1e-9)
    np.testing.assert_allclose(x, np.linalg.solve(M, b), rtol=1e-8, atol=1e-10)


def test_the_block_count_follows_the_size_rule():
    for P, nb in ((1, 1), (24, 1), (25, 2), (65, 3), (115, 4), (301, 4)):
        with jax.enable_x64(True):
            f = lm.cho_factor(jnp.eye(P))
        assert len(f.diag) == nb and sum(d.shape[0] for d in f.diag) == P, (P, [d.shape for d in f.diag])


def test_not_positive_definite_gives_nan_so_the_step_is_rejected():
    with jax.enable_x64(True):
        L = lm.cho_factor(jnp.asarray([[1.0, 2.0], [2.0, 1.0]])).lower()
        x = lm.cho_solve(lm.cho_factor(jnp.asarray([[1.0, 2.0], [2.0, 1.0]])), jnp.ones(2))
        # a block after an indefinite one is NaN too: the whole step is
        M = np.eye(50)
        M[3, 3] = -1.0
        y = lm.cho_solve(lm.cho_factor(jnp.asarray(M)), jnp.ones(50))
    assert np.isnan(np.asarray(L)[1, 1]) and np.isnan(np.asarray(x)).all() and np.isnan(np.asarray(y)).all()


def test_lm_kernel_calls_no_lapack():
    protocol = ftcjax.Protocol(depth=2, optimizer="lm", steps=4, segment=4, restarts=1, unroll=1)
    probs = ftcjax.make_problems(jax.random.key(0), num=4, K=12, d=2, N=2)
    texts = []

    def spy(kernel, args):
        with jax.enable_x64(True):
            texts.append(kernel.lower(*args).as_text())

    ftcjax.fit_batch(probs, np.array([2, 3, 4, 5]), keys=jax.random.split(jax.random.key(1), 4),
                     protocol=protocol, on_segment=spy)
    assert texts and all("lapack" not in t and "potrf" not in t for t in texts)


def _mlp(d, m):
    """A 3-layer ReLU net ``net(theta, x (n, d)) -> (n,)`` of a flat parameter vector, and its size P."""
    shapes = [(m, d), (m,), (m, m), (m,), (1, m), (1,)]
    sizes = [int(np.prod(s)) for s in shapes]

    def net(theta, x):
        parts, i = [], 0
        for s, n in zip(shapes, sizes):
            parts.append(theta[i:i + n].reshape(s))
            i += n
        W1, b1, W2, b2, W3, b3 = parts
        h = jax.nn.relu(x @ W1.T + b1[None, :])
        h = jax.nn.relu(h @ W2.T + b2[None, :])
        return (h @ W3.T)[:, 0] + b3[0]

    return net, sum(sizes)


def _mlp_residual(K, d, m, seed):
    """A 3-layer ReLU residual r(theta) (K,) of a flat parameter vector, and a point theta."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((K, d)))
    z = jnp.asarray(rng.standard_normal(K))
    net, P = _mlp(d, m)
    return (lambda theta: net(theta, x) - z), jnp.asarray(rng.standard_normal(P))


@pytest.mark.parametrize("block", [1, 3, 16, 10_000])
def test_blocked_jacobians_are_jax_jacobians_bit_for_bit(block):
    # the block size is a speed and memory knob only: every column (row) is the same JVP (VJP),
    # so LM's steps, and every committed LM result, do not depend on it; 3 does not divide P or K
    with jax.enable_x64(True):
        res, theta = _mlp_residual(K=37, d=3, m=5, seed=block)     # P = 56 > K = 37
        want = np.asarray(jax.jacrev(res)(theta))
        assert np.array_equal(np.asarray(jax.jit(lambda t: lm.jacobian_rev(res, t, rows=block))(theta)), want)
        res, theta = _mlp_residual(K=200, d=3, m=5, seed=block)    # P = 56 < K = 200
        want = np.asarray(jax.jacfwd(res)(theta))
        got = np.asarray(jax.jit(lambda t: lm.jacobian_fwd(res, t, columns=block))(theta))
        assert got.shape == want.shape == (200, 56)
        assert np.array_equal(got, want)
        # LM's masked Jacobian, scaled as the blocks are made (no masked copy): J * scale, bit for
        # bit, forward (also in the (P, K) layout LM keeps) and reverse
        scale = jnp.asarray(np.random.default_rng(block).integers(0, 2, 56), jnp.float64)
        fwd = jax.jit(lambda t: lm.jacobian_fwd(res, t, columns=block, scale=scale, transposed=True))
        assert np.array_equal(np.asarray(fwd(theta)), (want * np.asarray(scale)[None, :]).T)
        res, theta = _mlp_residual(K=37, d=3, m=5, seed=block)
        want = np.asarray(jax.jacrev(res)(theta))
        rev = jax.jit(lambda t: lm.jacobian_rev(res, t, rows=block, scale=scale))
        assert np.array_equal(np.asarray(rev(theta)), want * np.asarray(scale)[None, :])



@pytest.mark.parametrize("K", [37, 200])    # P = 56 > K, and P < K
def test_per_sample_jacobian_is_the_jacobian(K):
    # LM's Jacobian when residuals are evaluated sample by sample: row i is the gradient of r_i
    # alone. The same sums as jacrev's in another order: float64-close, not bit-equal.
    d, m = 3, 5
    rng = np.random.default_rng(K)
    net, P = _mlp(d, m)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((K, d)))
        z = jnp.asarray(rng.standard_normal(K))
        theta = jnp.asarray(rng.standard_normal(P))
        scale = jnp.asarray(rng.integers(0, 2, theta.shape[0]), jnp.float64)
        one = lambda t, xi: net(t, xi[None, :])[0]  # noqa: E731
        got = np.asarray(jax.jit(lambda t: lm.jacobian_per_sample(one, t, x, scale=scale))(theta))
        want = np.asarray(jax.jacrev(lambda t: net(t, x) - z)(theta)) * np.asarray(scale)[None, :]
    assert got.shape == want.shape == (K, P)
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * np.abs(want).max())
    assert not got[:, np.asarray(scale) == 0].any()      # masked columns exactly zero


MUS = (-1.0, 1e-6, 1e-2, 1.0, 10.0, 100.0, 1e3)  # the first iteration (mu from tau), then small to large dampings


@pytest.mark.parametrize("K", [37, 200])    # P = 56 > K (where "auto" solves in the samples), and P < K
@pytest.mark.parametrize("damping", ["nielsen", "marquardt"])
@pytest.mark.parametrize("jacobian", ["per-sample", "blocks"])
def test_the_sample_space_system_gives_the_parameter_space_step(K, damping, jacobian):
    # (J^T J + mu D) delta = -J^T r and delta = -D^-1 J^T (J D^-1 J^T + mu I)^-1 r are the same step
    # (push-through identity), so LM may solve whichever system is smaller; masked parameters stay
    # exactly 0 either way, and "auto" is the smaller one, bit for bit.
    d, m = 3, 5
    net, P = _mlp(d, m)
    rng = np.random.default_rng(K)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((K, d)))
        z = jnp.asarray(rng.standard_normal(K))
        live = jnp.asarray(rng.integers(0, 2, P), jnp.float64).at[-1].set(1.0)
        theta = jnp.asarray(rng.standard_normal(P)) * live
        kw = dict(live=live, tau=1e-3, damping=damping)
        if jacobian == "per-sample":
            kw.update(sample_fn=lambda t, s: net(t, s[0][None, :])[0] - s[1], samples=(x, z))
        res = lambda t: net(t, x) - z  # noqa: E731
        out = {}
        for system in ("auto", "parameters", "samples"):
            f = jax.jit(lambda t, s, system=system: lm.step(res, t, s, system=system, **kw))  # one compile per system
            for mu in MUS:
                mse, _, new, new_state = f(theta, lm.LMState(mu=jnp.asarray(mu), nu=jnp.asarray(2.0)))
                out[system, mu] = np.asarray(new), float(new_state.mu)
        moved = 0
        for mu in MUS:
            a, b = out["parameters", mu][0], out["samples", mu][0]
            np.testing.assert_allclose(b - np.asarray(theta), a - np.asarray(theta), rtol=1e-7, atol=1e-10)
            assert not a[np.asarray(live) == 0].any() and not b[np.asarray(live) == 0].any()
            moved += not np.array_equal(a, np.asarray(theta))
            want = out["samples" if P > K else "parameters", mu]
            assert np.array_equal(out["auto", mu][0], want[0]) and out["auto", mu][1] == want[1]
        assert moved >= 3  # the comparison is between steps taken, not between rejected ones


def test_an_unknown_system_is_refused():
    with jax.enable_x64(True), pytest.raises(ValueError, match="system"):
        lm.step(lambda t: t - 1.0, jnp.zeros(3), lm.init_state(jnp.float64), live=jnp.ones(3), tau=1e-3,
                damping="nielsen", system="dual")
