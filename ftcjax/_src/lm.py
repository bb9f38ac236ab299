"""Levenberg-Marquardt (damped Gauss-Newton) for the full-batch least-squares fit of ONE lane.

The fit ``min_theta sum_i (g(x_i; theta) - z_i)^2`` has K residuals and P parameters (the padded
bucket's; only the live ones may move). One iteration at ``theta``:

1. residuals ``r (K,)`` and Jacobian ``J (K, P)``. When the residuals are evaluated sample by sample
   (a network: ``r_i`` depends on sample ``i`` only) and the caller says so (``sample_fn``), the rows
   of ``J`` are per-sample gradients, all K in one vmapped backward pass
   (:func:`jacobian_per_sample`): a few forward passes' work plus ``K P`` products, where forward
   mode costs P forward passes and reverse mode K backward passes over all K samples (W1,
   P = 115, K = 1000: 35x faster). Otherwise forward mode when ``P <= K``, reverse otherwise (the
   cheaper of P JVPs and K VJPs), a few columns or rows at a time (:func:`jacobian_fwd`,
   :func:`jacobian_rev`) so the tangents of every activation are never all alive at once;
2. normal matrix ``A = J^T J (P, P)`` and gradient ``g = J^T r (P,)``; rows and columns of masked
   parameters are replaced by the identity (their Jacobian columns are exactly 0 anyway), so their
   step is exactly 0 and they stay exactly 0;
3. solve ``(A + mu D) delta = -g`` by a blocked Cholesky (:func:`cho_factor`, in jax ops), or, when
   there are more parameters than residuals (``P > K``: a wide bucket on few samples, the regime of
   fine-tuning capacity), the same step from the ``K x K`` system ``(J D^-1 J^T + mu I) u = r``,
   ``delta = -D^-1 J^T u`` (push-through identity; T64, P = 193, K = 64: 5x faster per training);
   evaluate the trial ``theta + delta`` and accept it only
   if the loss drops (gain ratio ``rho > 0``); update ``mu`` (Nielsen: ``D = I``,
   ``mu *= max(1/3, 1 - (2 rho - 1)^3)`` on success, ``mu *= nu, nu *= 2`` on failure; Marquardt:
   ``D = diag(A)`` floored, ``mu /= 10`` or ``mu *= 10``).

Why Cholesky on ``J^T J`` and not QR of the augmented ``[J; sqrt(mu D)]``: forming ``A`` is one
``(P, K) x (K, P)`` matmul (the cost that runs near matmul peak on every backend) and the solve is
``P^3 / 3`` on a ``P x P`` matrix, while a batched Householder QR of ``(K + P) x P`` is a sequence of
rank-1 updates that runs far from peak under vmap. Cholesky squares the condition number, but the
damping ``mu > 0`` keeps ``A + mu D`` positive definite, float64 (the default) leaves ~8 digits after
squaring a condition number of 1e4, and a step that comes out wrong is simply rejected by the loss
test. Memory per lane: ``K x P`` for ``J`` plus the system, ``P x P`` or ``K x K``, the smaller
(float64: 8 (K P + min(K, P)^2) bytes; a 3-layer 12 + 12 net at d = 10 has P = 301, at K = 1000:
3.1 MB), so keep ``Protocol.lanes_per_step`` small on CPU to stay in cache.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


# Cholesky in jax ops, not LAPACK's: jaxlib 0.10.2's CPU potrf splits a vmapped batch over XLA's
# intra-op thread pool and blocks a pool thread waiting for its parts; two devices running LM at once
# on a 2-core machine then hold both pool threads and wait forever (seen as sweeps and the trainer
# benchmark hanging in BlockUntilReady; gdb: both tf_XLAEigen threads in lapack_dpotrf_ffi ->
# ParallelBatchMap -> BlockingCounter::Wait); every batched LAPACK kernel of that jaxlib (LU, triangular
# solve and QR included: objdump of _lapack.so) does the same, so none is used.
#
# Blocked, right-looking: each diagonal block is factored by a short loop that also inverts it, the
# panel below it is one matmul with that inverse and the trailing matrix one matmul update, so about
# P^3 / 3 flops, most of them in matmuls, where one column loop over the whole matrix took 2 P^3 in
# matrix-vector products. Few blocks: each adds a loop to compile (~0.15 s) and a step to the solve.
# Measured (benchmarks/README, "Blocked Cholesky for LM"; 4 lanes vmapped, factor and solve, idle):
# P = 65 0.15 ms, 115 0.40-0.43, 193 1.1, 301 3.1-3.2 (the column loop before: 0.17, 0.71, -, 12.7,
# beside a running sweep); 6 or 8 blocks: within 10%, slower compiles. Small P gets one block.
CHOLESKY_MAX_BLOCKS = 4
CHOLESKY_MIN_BLOCK = 24


class CholeskyFactor(NamedTuple):
    """``M = L L^T`` by blocks: ``diag[k] (b_k, b_k)`` the diagonal blocks of ``L``, ``inv_t[k]`` the
    transposed inverse of ``diag[k]``, ``panel[k] (P - end_k, b_k)`` the block column below ``diag[k]``
    (``(0, b_k)`` for the last block)."""

    diag: tuple
    inv_t: tuple
    panel: tuple

    def lower(self):
        """The full lower factor ``L (P, P)`` (for tests and inspection; the solve never forms it)."""
        P = sum(d.shape[0] for d in self.diag)
        L = jnp.zeros((P, P), self.diag[0].dtype)
        k0 = 0
        for d, pan in zip(self.diag, self.panel):
            b = d.shape[0]
            L = L.at[k0:k0 + b, k0:k0 + b].set(d).at[k0 + b:, k0:k0 + b].set(pan)
            k0 += b
        return L


def _diagonal_block(T):
    """Lower Cholesky factor ``L (b, b)`` of a small SPD ``T`` and ``inv(L)^T``, in one loop: column
    ``j`` of ``L`` (Crout: columns >= j still 0), then column ``j`` of ``inv(L)^T`` (row ``j`` of ``L``
    is complete then)."""
    b = T.shape[0]
    rows = jnp.arange(b)
    eye = jnp.eye(b, dtype=T.dtype)

    def column(j, c):
        L, Xt = c
        v = T[:, j] - L @ L[j, :]
        L = L.at[:, j].set(jnp.where(rows >= j, v / jnp.sqrt(v[j]), 0.0))
        return L, Xt.at[:, j].set((eye[:, j] - Xt @ L[j, :]) / L[j, j])

    zero = jnp.zeros_like(T)
    return jax.lax.fori_loop(0, b, column, (zero, zero))


def cho_factor(M, *, max_blocks: int = CHOLESKY_MAX_BLOCKS, min_block: int = CHOLESKY_MIN_BLOCK) -> CholeskyFactor:
    """Blocked Cholesky factor of a symmetric positive definite ``M (P, P)``.

    ``ceil(P / min_block)`` blocks, at most ``max_blocks``, of equal size (the last smaller). NaN where
    ``M`` is not positive definite (as LAPACK's through jax), so such a step is rejected.
    """
    P = M.shape[0]
    nb = max(1, min(max_blocks, -(-P // min_block)))
    b = -(-P // nb)
    diag, inv_t, panel = [], [], []
    T = M
    for k0 in range(0, P, b):
        n = min(b, P - k0)
        L11, X = _diagonal_block(T[:n, :n])
        L21 = T[n:, :n] @ X            # A21 L11^{-T}
        T = T[n:, n:] - L21 @ L21.T    # the trailing matrix, still SPD
        diag.append(L11)
        inv_t.append(X)
        panel.append(L21)
    return CholeskyFactor(tuple(diag), tuple(inv_t), tuple(panel))


def cho_solve(factor: CholeskyFactor, b):
    """``x (P,)`` with ``L L^T x = b`` (block substitutions: one matrix-vector product per block)."""
    r, ys = b, []
    for X, L21 in zip(factor.inv_t, factor.panel):
        n = X.shape[0]
        y = X.T @ r[:n]
        ys.append(y)
        r = r[n:] - L21 @ y
    x = None
    for X, L21, y in zip(factor.inv_t[::-1], factor.panel[::-1], ys[::-1]):
        xk = X @ (y if x is None else y - L21.T @ x)
        x = xk if x is None else jnp.concatenate([xk, x])
    return x


# Jacobian blocks, for residuals LM cannot split by sample (no ``sample_fn``; fit_batch always gives
# one): tangents pushed forward (columns) or cotangents pulled back (rows) at once. Each
# holds a copy of every activation (K x m per layer), so small blocks keep the working set in cache.
# The values do not depend on the block (each column or row is the same JVP or VJP, bit for bit);
# the sizes are the fastest measured by benchmarks/trainers.py (2026-12-03, with lax.map over the
# blocks: W1, forward, 1 column 115 ms per training against 260 ms for all 115 at once; W2, reverse,
# 16 rows 6.9 ms against 8.8; not re-measured for the loop that fills one buffer, which kept them).
JACOBIAN_COLUMNS = 1
JACOBIAN_ROWS = 16


def _fill_blocks(make_block, n: int, c: int, width: int, dtype):
    """``(n c, width)`` from ``make_block(i) -> (c, width)``, each block written into one buffer.

    Not ``lax.map``: under LM's ``vmap`` over lanes, ``lax.map`` stacks blocks as ``(n, lanes, c,
    width)`` and XLA copies that into lane-major order for the normal-matrix dot, a second Jacobian
    per lane (W1: 17.4 -> 13.0 MiB for 8 lanes). A loop carrying the buffer is lane-major already.
    """
    def body(i, out):
        return jax.lax.dynamic_update_slice_in_dim(out, make_block(i), i * c, axis=0)

    return jax.lax.fori_loop(0, n, body, jnp.zeros((n * c, width), dtype))


def jacobian_fwd(fn, v, columns: int = JACOBIAN_COLUMNS, *, scale=None, transposed: bool = False):
    """``J (K, P)`` of ``fn: (P,) -> (K,)`` at ``v``, forward mode, ``columns`` columns at a time.

    ``scale (P,)``: ``J * scale[None, :]`` instead (each column scaled as it is made: LM's mask,
    without a masked copy). ``transposed``: ``J^T (P, K)``, the layout the columns are made in.

    ``jax.jacfwd`` pushes all P basis tangents at once, so every activation is held P times
    (W1: 173 MiB for 8 lanes against a 8.6 MiB model). A loop over blocks of columns keeps
    only one block's tangents alive; each column is the same JVP either way (bit for bit).
    """
    P = v.shape[0]
    c = max(1, min(columns, P))
    n = -(-P // c)
    basis = jnp.eye(n * c, P, dtype=v.dtype).reshape(n, c, P)   # padded rows are zero tangents
    s = jnp.ones((P,), v.dtype) if scale is None else scale
    s = jnp.concatenate([s, jnp.zeros((n * c - P,), v.dtype)]).reshape(n, c)

    r, push = jax.linearize(fn, v)       # the primal pass once, not once per block
    cols = _fill_blocks(lambda i: jax.vmap(push)(basis[i]) * s[i][:, None], n, c, r.shape[0], v.dtype)[:P]
    return cols if transposed else cols.T


def jacobian_rev(fn, v, rows: int = JACOBIAN_ROWS, *, scale=None):
    """``J (K, P)`` of ``fn: (P,) -> (K,)`` at ``v``, reverse mode, ``rows`` rows at a time
    (one forward pass, then blocks of pullbacks: ``jax.jacrev`` pulls all K rows back at once);
    ``scale (P,)``: ``J * scale[None, :]``, each row block scaled as it is made."""
    r, pull = jax.vjp(fn, v)
    K = r.shape[0]
    c = max(1, min(rows, K))
    n = -(-K // c)
    basis = jnp.eye(n * c, K, dtype=r.dtype).reshape(n, c, K)
    s = jnp.ones(v.shape, v.dtype) if scale is None else scale

    def block(i):
        return jax.vmap(lambda e: pull(e)[0])(basis[i]) * s[None, :]   # (c, P)

    return _fill_blocks(block, n, c, v.shape[0], v.dtype)[:K]


def jacobian_per_sample(sample_fn, v, samples, *, scale=None):
    """``J (K, P)`` of ``r_i = sample_fn(v, samples_i)``: row ``i`` is the gradient of sample ``i``'s residual.

    ``sample_fn(v (P,), sample) -> ()``; ``samples``: a pytree whose leaves have leading axis ``K``.
    One ``vmap`` over the samples of ``grad``: the forward and backward passes batch the samples
    into the same matmuls as a full-batch pass, and each row is formed as outer products of the
    sample's backward signals and activations (``K P`` products in all). ``scale (P,)``:
    ``J * scale[None, :]``.
    """
    J = jax.vmap(jax.grad(sample_fn), in_axes=(None, 0))(v, samples)
    return J if scale is None else J * scale[None, :]


class LMState(NamedTuple):
    """Damping state of one lane: ``mu ()`` (negative until the first iteration sets it), ``nu ()``."""

    mu: jax.Array
    nu: jax.Array


def init_state(dtype) -> LMState:
    return LMState(mu=-jnp.ones((), dtype), nu=jnp.full((), 2.0, dtype))


def param_mask(params, masks) -> tuple:
    """Pytree like ``params`` with 1 on live parameters and 0 on padded ones.

    ``masks`` are the hidden-layer neuron masks of :func:`ftcjax._src.networks.neuron_masks`: a weight
    is live when its output neuron and its input neuron are live (inputs and the output are always).
    """
    out, prev = [], None
    n = len(params)
    for l, (w, b) in enumerate(params):
        rows = masks[l].astype(w.dtype) if l < n - 1 else jnp.ones(w.shape[0], w.dtype)
        cols = prev if prev is not None else jnp.ones(w.shape[1], w.dtype)
        out.append((rows[:, None] * cols[None, :], rows))
        prev = rows
    return tuple(out)


def step(residual_fn, params, state: LMState, *, live, tau, damping: str, sample_fn=None, samples=None,
         system: str = "auto"):
    """One LM iteration on one lane.

    Args:
      residual_fn: ``params -> r (K,)``.
      params: current parameters (pytree).
      state: :class:`LMState`.
      live: pytree like ``params`` of 0/1 (:func:`param_mask`).
      tau: initial damping relative to ``max diag(A)`` (used on the first iteration).
      damping: ``"nielsen"`` or ``"marquardt"`` (static).
      sample_fn, samples: optional ``sample_fn(params, sample) -> ()``, residual ``i`` up to a
        constant as a function of ``samples_i`` alone (``samples``: leading axis K). Given, the
        Jacobian is made row by row from per-sample gradients (:func:`jacobian_per_sample`).
      system: ``"parameters"`` solves the ``P x P`` normal equations, ``"samples"`` the equivalent
        ``K x K`` system ``(J D^-1 J^T + mu I) u = r``, ``delta = -D^-1 J^T u`` (static; the same step
        up to rounding). ``"auto"`` (default): the smaller, samples when ``P > K``.
    Returns:
      ``(mse, max_err, new_params, new_state)``: the metrics at ``params`` (before the step) and the
      accepted (or unchanged) parameters.
    """
    v, unravel = ravel_pytree(params)
    pm, _ = ravel_pytree(live)
    dtype = v.dtype

    def res(u):
        return residual_fn(unravel(u))

    r = res(v)
    P, K = v.shape[0], r.shape[0]
    # The blocks are a CPU cache measure (measured there); on an accelerator, where memory is ample
    # and a loop of P small kernels would serialise the device, all columns (rows) go at once, as
    # jax.jacfwd / jacrev do. Either way the Jacobian is the same, bit for bit.
    cpu = jax.default_backend() == "cpu"
    # Masked columns are zeroed as the blocks are made; the forward Jacobian stays in the (P, K)
    # layout it is made in (A and g are the same dots either way, bit for bit: tested).
    if system not in ("auto", "parameters", "samples"):
        raise ValueError(f"system: {system!r} must be 'auto', 'parameters' or 'samples'")
    dual = system == "samples" or (system == "auto" and P > K)  # solve in the K-dimensional sample space
    if sample_fn is not None:
        J = jacobian_per_sample(lambda u, s: sample_fn(unravel(u), s), v, samples, scale=pm)  # (K, P)
        A = None if dual else J.T @ J
        g = J.T @ r
    elif not dual and P <= K:
        Jt = jacobian_fwd(res, v, JACOBIAN_COLUMNS if cpu else P, scale=pm, transposed=True)  # (P, K)
        A = Jt @ Jt.T
        g = Jt @ r
    else:
        J = jacobian_rev(res, v, JACOBIAN_ROWS if cpu else K, scale=pm)  # (K, P)
        A = None if dual else J.T @ J
        g = J.T @ r
    if dual:
        diag = jnp.sum(J * J, axis=0) * pm + (1.0 - pm)  # diag(A), with the same identity on masked ones
    else:
        A = A * (pm[:, None] * pm[None, :]) + jnp.diag(1.0 - pm)  # masked block: identity, decoupled
        diag = jnp.diagonal(A)
    mu = jnp.where(state.mu < 0, tau * jnp.max(diag * pm), state.mu)
    mu = jnp.maximum(mu, jnp.finfo(dtype).tiny)
    if damping == "nielsen":
        d = jnp.ones_like(diag)
    else:
        d = jnp.maximum(diag, 1e-12 * jnp.maximum(jnp.max(diag), 1.0))
    if not dual:
        D = jnp.eye(P, dtype=dtype) if damping == "nielsen" else jnp.diag(d)
        delta = -cho_solve(cho_factor(A + mu * D), g) * pm
        d_delta = D @ delta
    else:
        # (J^T J + mu D) delta = -J^T r  <=>  delta = -D^-1 J^T u with (J D^-1 J^T + mu I) u = r: the same
        # step from a K x K system (2 K^2 P + K^3 / 3 flops against 2 K P^2 + P^3 / 3). Masked columns of
        # J are 0, so their step is exactly 0 here too.
        Jd = J / d[None, :]
        u = cho_solve(cho_factor(Jd @ J.T + mu * jnp.eye(K, dtype=dtype)), r)
        delta = -(Jd.T @ u) * pm
        d_delta = d * delta
    v_new = v + delta
    r_new = res(v_new)
    loss, loss_new = 0.5 * jnp.sum(r * r), 0.5 * jnp.sum(r_new * r_new)
    predicted = 0.5 * jnp.dot(delta, mu * d_delta - g)
    rho = (loss - loss_new) / predicted
    accept = jnp.isfinite(loss_new) & jnp.isfinite(rho) & (loss_new < loss) & (predicted > 0)
    if damping == "nielsen":
        mu_ok = mu * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        new_state = LMState(mu=jnp.where(accept, mu_ok, mu * state.nu),
                            nu=jnp.where(accept, jnp.full((), 2.0, dtype), 2.0 * state.nu))
    else:
        new_state = LMState(mu=jnp.where(accept, mu / 10.0, mu * 10.0), nu=state.nu)
    # A damping that overflows means no step can lower the loss from here: keep it finite (the
    # lane is then reported as stalled, not as diverged).
    new_state = new_state._replace(mu=jnp.minimum(new_state.mu, jnp.finfo(dtype).max / 1e4),
                                   nu=jnp.minimum(new_state.nu, 2.0 ** 60))
    new_params = unravel(jnp.where(accept, v_new, v))
    return jnp.mean(r * r), jnp.max(jnp.abs(r)), new_params, new_state
