"""Batched full-batch training of ``g`` on fine-tuning problems.

One *lane* is one training run: (problem, width, key). The lanes of a batch are split evenly over the
local devices; on each device ONE jitted program walks with ``lax.map`` over fixed-size chunks of
lanes, each chunk a ``vmap`` of the single-lane program. The chunk size is fixed by the protocol, so
every lane runs the same per-chunk program whatever the number of devices, and results are bit-for-bit
independent of the device count, one device included.

Why one single-device program per device (dispatched from a small thread pool, placed with
``jax.device_put``) rather than ``shard_map`` over a mesh: lanes never communicate, and XLA compiles an
SPMD-partitioned module differently from a single-device one, which changed the last bits of the
losses between 1 and 2 devices (measured: about 1e-15 relative). Lanes do not communicate, so nothing
is lost, and the speed is the same (W1 on 2 CPU devices: 11.2 ms against 10.8 ms per training).

Training runs ``lax.scan`` segments of fixed length. A lane that meets the decision criterion freezes
(``where``, not control flow, so vmap stays cheap); between segments a device stops as soon as every
one of its lanes has succeeded (frozen lanes would not change). Widths, learning rates, step budgets, tolerances and the criterion are
per-lane arrays: changing them never recompiles.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftcjax._src import criteria, networks, schedules
from ftcjax._src.errors import FTCInputError
from ftcjax._src.problems import Problem
from ftcjax._src.protocol import Protocol, StaticConfig, static_config

class FitResult(NamedTuple):
    """Outcome of training runs (leading axis ``(B,)`` for a batch, scalars for :func:`fit`).

    Attributes:
      mse: mean squared error over all K samples at the returned parameters.
      max_err: ``max_i |g(x_i) - z_i|`` at the returned parameters.
      steps: optimizer steps taken (the step of first success, else the budget).
      passed: ``(..., 3)`` flags for the criteria ``("paper", "strict", "relative")``.
      success: the decision criterion's flag.
      params: the trained parameters, padded to the bucket (``to_layers`` trims them).
    """

    mse: jax.Array
    max_err: jax.Array
    steps: jax.Array
    passed: jax.Array
    success: jax.Array
    params: tuple


class _Lanes(NamedTuple):
    """Per-lane inputs of the kernel (each with a leading lane axis)."""

    x_t: jax.Array          # (d, K) feature-major inputs
    z: jax.Array            # (K,) residual targets
    width: jax.Array        # () int32 total hidden neurons
    key: jax.Array          # () PRNG key for the initialisation
    z_scale: jax.Array      # () max(1, max|z|)
    mse_zero: jax.Array     # () mean(z^2), the error of g = 0
    learning_rate: jax.Array
    steps: jax.Array        # () int32 step budget
    paper_threshold: jax.Array
    tol: jax.Array
    rel_eps: jax.Array
    criterion: jax.Array    # () int32 index into criteria.CRITERIA
    live: jax.Array         # () bool, False on padding lanes


class _State(NamedTuple):
    params: tuple
    opt_state: tuple
    done: jax.Array         # () bool: met the decision criterion (parameters frozen since)
    stop_step: jax.Array    # () int32: step of first success


def _tree_where(cond, a, b):
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def _optimizer(cfg: StaticConfig):
    if cfg.optimizer == "adam":
        # The learning rate and its schedule are applied by hand so that both stay per-lane arrays.
        return optax.scale_by_adam()
    return optax.lbfgs(memory_size=cfg.lbfgs_memory)


def _masks(cfg: StaticConfig, width):
    return networks.neuron_masks(width, cfg.bucket, cfg.depth, cfg.split)


def _loss_fn(cfg: StaticConfig, lane: _Lanes):
    masks = _masks(cfg, lane.width)

    def loss(params):
        r = networks.forward(params, lane.x_t, masks) - lane.z
        return jnp.mean(r * r), jnp.max(jnp.abs(r))

    return loss


def _init_lane(cfg: StaticConfig, lane: _Lanes) -> _State:
    dtype = jnp.dtype(cfg.dtype)
    params = networks.init_mlp(lane.key, lane.width, in_dim=cfg.in_dim, depth=cfg.depth,
                               bucket=cfg.bucket, split=cfg.split, dtype=dtype)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = _optimizer(cfg).init(params)
    return _State(params, opt_state, jnp.zeros((), bool), jnp.zeros((), jnp.int32))


def _decide(lane: _Lanes, mse, max_err):
    flags = criteria.passed(mse, max_err, lane.z_scale, lane.mse_zero, lane.paper_threshold,
                            lane.tol, lane.rel_eps)
    return flags, flags[lane.criterion]


def _segment_lane(cfg: StaticConfig, state: _State, lane: _Lanes, offset) -> _State:
    loss = _loss_fn(cfg, lane)
    tx = _optimizer(cfg)
    dtype = jnp.dtype(cfg.dtype)

    def body(st: _State, i):
        t = offset + i
        (mse, max_err), grads = jax.value_and_grad(loss, has_aux=True)(st.params)
        _, ok = _decide(lane, mse, max_err)
        running = lane.live & ~st.done & (t < lane.steps)
        newly = running & ok
        move = running & ~ok & jnp.isfinite(mse)  # a diverged run stays put (and fails)
        # optax mixes its int32 step count with floats; keep our own code under the caller's
        # (possibly strict) promotion rules and give optax the standard ones.
        with jax.numpy_dtype_promotion("standard"):
            if cfg.optimizer == "adam":
                updates, opt_state = tx.update(grads, st.opt_state, st.params)
            else:
                updates, opt_state = tx.update(grads, st.opt_state, st.params, value=mse, grad=grads,
                                               value_fn=lambda p: loss(p)[0])
        if cfg.optimizer == "adam":
            lr = lane.learning_rate * schedules.lr_multiplier(cfg.schedule, t, lane.steps, dtype)
            params = jax.tree.map(lambda p, u: p - lr * u, st.params, updates)
        else:
            params = jax.tree.map(lambda p, u: p + u.astype(p.dtype), st.params, updates)
        return _State(_tree_where(move, params, st.params), _tree_where(move, opt_state, st.opt_state),
                      st.done | newly, jnp.where(newly, t, st.stop_step)), None

    state, _ = jax.lax.scan(body, state, jnp.arange(cfg.segment, dtype=jnp.int32), unroll=cfg.unroll)
    return state


def _evaluate_lane(cfg: StaticConfig, state: _State, lane: _Lanes):
    mse, max_err = _loss_fn(cfg, lane)(state.params)
    flags, ok = _decide(lane, mse, max_err)
    steps = jnp.where(state.done, state.stop_step, lane.steps)
    return mse, max_err, steps, flags, ok


def _chunked(cfg: StaticConfig, per_lane, lane_args, *shared):
    """``per_lane`` over the leading lane axis, ``cfg.lanes_per_step`` lanes vmapped at a time (cache-sized)."""
    return jax.lax.map(lambda xs: per_lane(*xs, *shared), lane_args, batch_size=cfg.lanes_per_step)


@functools.partial(jax.jit, static_argnums=(0,))
def _init_kernel(cfg, lanes):
    return _chunked(cfg, lambda lane: _init_lane(cfg, lane), (lanes,))


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
def _segment_kernel(cfg, state, lanes, offset):
    return _chunked(cfg, lambda st, lane, off: _segment_lane(cfg, st, lane, off), (state, lanes), offset)


@functools.partial(jax.jit, static_argnums=(0,))
def _evaluate_kernel(cfg, state, lanes):
    return _chunked(cfg, lambda st, lane: _evaluate_lane(cfg, st, lane), (state, lanes))


def validate_widths(widths, protocol: Protocol, bucket: int | None = None) -> None:
    """Raise :class:`FTCInputError` if a width is too small for the depth or above the bucket."""
    w = np.asarray(widths)
    if w.size == 0:
        raise FTCInputError("widths: empty")
    if w.dtype.kind not in "iu":
        raise FTCInputError(f"widths: {w.tolist()!r} must be integers")
    lo = networks.smallest_valid_width(protocol.depth, protocol.split)
    if w.min() < lo:
        raise FTCInputError(f"widths: {int(w.min())} is below {lo}, the smallest width giving every "
                            f"hidden layer of a depth-{protocol.depth} net a neuron")
    if bucket is not None and w.max() > bucket:
        raise FTCInputError(f"widths: {int(w.max())} exceeds bucket = {bucket}")


def fit_batch(problems: Problem, widths, *, keys, protocol: Protocol, bucket: int | None = None,
              devices=None, pad_to: int | None = None, on_segment=None) -> FitResult:
    """Train one ``g`` per lane and judge it by every criterion.

    Args:
      problems: a batch of problems with leading axis ``(B,)`` (``x (B, K, d)``, ``z (B, K)``, ...);
        lane ``i`` trains on problem ``i`` (repeat a problem for restarts or several widths).
      widths: ``(B,)`` total hidden widths ``m``.
      keys: ``(B,)`` PRNG keys for the initialisations.
      protocol: the training protocol.
      bucket: padded width (default ``max(widths)``); lanes of one bucket share one compiled kernel.
      devices: devices to split the lanes over (default all local devices).
      pad_to: pad the lane count up to at least this (fewer distinct shapes: fewer compilations).
      on_segment: optional ``on_segment(kernel, args)``, called before every segment on every device
        with the jitted per-segment program and its arguments (``kernel.lower(*args)`` works): for
        profiling and memory analysis without reaching into private names.
    Returns:
      :class:`FitResult` with leading axis ``(B,)``.
    """
    widths = np.asarray(widths)
    if widths.ndim != 1:
        raise FTCInputError(f"widths: must be a 1-D array of lane widths, got shape {widths.shape}")
    bucket = int(widths.max()) if bucket is None else int(bucket)
    validate_widths(widths, protocol, bucket)
    B = widths.shape[0]
    if problems.x.ndim != 3 or problems.x.shape[0] != B:
        raise FTCInputError(f"problems: need a batch with leading axis {B} (one per lane), got x of shape {problems.x.shape}")
    if jnp.shape(keys)[0] != B:
        raise FTCInputError(f"keys: need {B} keys (one per lane), got {jnp.shape(keys)[0]}")
    devices = list(jax.local_devices() if devices is None else devices)
    n_dev = len(devices)
    _, K, d = problems.x.shape
    cfg = static_config(protocol, bucket=bucket, in_dim=d, num_samples=K)
    per = n_dev * cfg.lanes_per_step
    Bp = int(math.ceil(max(B, pad_to or 0) / per) * per)
    local = Bp // n_dev
    n_seg = int(math.ceil(protocol.steps / cfg.segment))

    def contexts():
        # jax's dtype and precision settings are thread-local: enter them in every worker thread.
        stack = contextlib.ExitStack()
        stack.enter_context(jax.enable_x64(protocol.dtype == "float64"))
        stack.enter_context(jax.default_matmul_precision(protocol.matmul_precision))
        return stack

    with contexts():
        lanes = _build_lanes(problems, jnp.asarray(widths), keys, _hyper(protocol), protocol.dtype, Bp)

    def run_on(k):
        with contexts():
            mine = jax.device_put(jax.tree.map(lambda a: a[k * local:(k + 1) * local], lanes), devices[k])
            state = _init_kernel(cfg, mine)
            for s in range(n_seg):
                args = (cfg, state, mine, jnp.int32(s * cfg.segment))
                if on_segment is not None:
                    on_segment(_segment_kernel, args)
                state = _segment_kernel(*args)
                if s + 1 < n_seg and bool(jnp.all(state.done | ~mine.live)):
                    break  # every lane here has succeeded: the rest of the budget changes nothing
            return jax.device_get((_evaluate_kernel(cfg, state, mine), state.params))

    if n_dev == 1:
        parts = [run_on(0)]
    else:
        with concurrent.futures.ThreadPoolExecutor(n_dev) as pool:  # jax releases the GIL while running
            parts = list(pool.map(run_on, range(n_dev)))
    (mse, max_err, steps, flags, ok), params = jax.tree.map(lambda *a: np.concatenate(a)[:B], *parts)
    return FitResult(mse, max_err, steps, flags, ok, params)


def _hyper(protocol: Protocol) -> dict:
    """The protocol's dynamic part as scalar arrays (new values never recompile)."""
    dtype = jnp.dtype(protocol.dtype)
    return dict(learning_rate=jnp.asarray(protocol.learning_rate, dtype),
                steps=jnp.asarray(protocol.steps, jnp.int32),
                paper_threshold=jnp.asarray(protocol.paper_threshold, dtype),
                tol=jnp.asarray(protocol.tol, dtype),
                rel_eps=jnp.asarray(protocol.rel_eps, dtype),
                criterion=jnp.asarray(criteria.criterion_index(protocol.criterion), jnp.int32))


@functools.partial(jax.jit, static_argnums=(4, 5))
def _build_lanes(problems: Problem, widths, keys, hyper: dict, dtype: str, Bp: int) -> _Lanes:
    # One jitted function rather than a dozen eager ops, each of which would compile on its own.
    B = widths.shape[0]
    dtype = jnp.dtype(dtype)
    idx = jnp.concatenate([jnp.arange(B), jnp.zeros(Bp - B, int)])  # padding lanes copy lane 0, never run
    z = problems.z[idx].astype(dtype)
    z_scale, mse_zero = criteria.residual_stats(z)
    per_lane = {k: jnp.broadcast_to(v, (Bp,)) for k, v in hyper.items()}
    return _Lanes(x_t=jnp.swapaxes(problems.x[idx].astype(dtype), 1, 2), z=z,
                  width=widths[idx].astype(jnp.int32), key=keys[idx], z_scale=z_scale,
                  mse_zero=mse_zero, live=jnp.arange(Bp) < B, **per_lane)


def fit(problem: Problem, width: int, *, key, protocol: Protocol, bucket: int | None = None) -> FitResult:
    """Train one ``g`` of total width ``width`` on one problem (see :func:`fit_batch`); scalar results."""
    batch = jax.tree.map(lambda a: jnp.asarray(a)[None], problem)
    res = fit_batch(batch, np.array([int(width)]), keys=jnp.asarray(key)[None], protocol=protocol,
                    bucket=bucket)
    return jax.tree.map(lambda a: a[0], res)
