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
Only the training segments run on every device; the once-per-phase kernels (init, evaluate, resume)
run on the first device for all of them, so they compile once, not once per device. The segment
kernel is compiled on the first device that needs it and loaded onto the others
(:mod:`ftcjax._src.executables`; CPU), so it too compiles once per shape, and a later process loads
it from the store beside the persistent compilation cache instead of compiling it again.

Training runs ``lax.scan`` segments of fixed length. A lane that meets the decision criterion freezes
(``where``, not control flow, so vmap stays cheap) unless ``stop_on_success`` is off; between segments
a device stops as soon as every one of its lanes has finished (frozen lanes would not change). With
``check_every = k > 1`` a segment is a scan over blocks of k steps: the first step of a block is judged
(criteria, divergence, stall, freeze), the other k - 1 are bare updates, discarded when the judged step
freezes the lane. Widths,
learning rates, step budgets, tolerances and the criterion are per-lane arrays: changing them never
recompiles (see :mod:`ftcjax._src.protocol` for what does).

The trainer is a swappable part: every optimizer is a pair ``init(params) -> opt_state`` and
``step(params, opt_state, t) -> (mse, max_err, params', opt_state')`` (metrics at ``params``), built
per lane from the lane's hyperparameters (:func:`_trainer`). First-order optimizers (adam, adamw, sgd,
any optax transformation) give a direction scaled by the per-lane learning rate; L-BFGS line-searches;
Levenberg-Marquardt (:mod:`ftcjax._src.lm`) solves a damped Gauss-Newton system.

Every run records why it ended (:data:`END_REASONS`): ``success``; ``diverged`` (a non-finite loss);
``dead`` (some hidden layer has no live unit active on any sample, so ``g`` is constant, or the final
loss is within 1% of that of ``g = 0``); ``stalled`` (the best loss improved by less than a relative
1e-4 over the last quarter of the budget); otherwise ``budget``.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import math
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ftcjax._src import criteria, executables, forms, lm, networks, schedules
from ftcjax._src.errors import FTCInputError
from ftcjax._src.problems import Problem
from ftcjax._src.protocol import Protocol, StaticConfig, round_lanes_per_step, static_config


END_REASONS = ("success", "budget", "diverged", "dead", "stalled")
_STALL_REL = 1e-4        # an improvement of the best loss smaller than this (relative) does not count
_STALL_FRACTION = 0.25   # ... and none for this fraction of the budget at the end: stalled
_DEAD_TOL = 0.01         # a final loss within 1% of the loss of g = 0: dead


class FitResult(NamedTuple):
    """Outcome of training runs (leading axis ``(B,)`` for a batch, scalars for :func:`fit`).

    Attributes:
      mse: mean squared error over all K samples at the stop: the first success when
        ``stop_on_success`` is off, else the returned parameters.
      max_err: ``max_i |g(x_i) - z_i|`` at the same point.
      steps: optimizer steps (LM: iterations) taken: the step of first success, else the budget
        (with ``polish_steps``: first-order budget plus polish iterations).
      passed: ``(..., 3)`` flags for the criteria ``("paper", "strict", "relative")`` at the stop.
      success: the decision criterion's flag (float64 re-evaluation for float32 or polished runs).
      params: the trained parameters at the end, padded to the bucket (``to_layers`` trims them).
      mse_end, max_err_end: the same metrics at the end of training (the end of the budget when
        ``stop_on_success`` is off; equal to ``mse``, ``max_err`` otherwise).
      end_reason: int index into :data:`END_REASONS`.
      weight_max: ``(..., depth)`` max |W| per layer at the end (biases excluded).
      history: ``(..., H, 2)`` loss and max error every ``history_every`` steps (step
        ``j * history_every`` in row ``j``; NaN where nothing ran), or None when off.
    """

    mse: jax.Array
    max_err: jax.Array
    steps: jax.Array
    passed: jax.Array
    success: jax.Array
    params: tuple
    mse_end: jax.Array = None
    max_err_end: jax.Array = None
    end_reason: jax.Array = None
    weight_max: jax.Array = None
    history: jax.Array | None = None


class _Lanes(NamedTuple):
    """Per-lane inputs of the kernel (each with a leading lane axis)."""

    x_t: jax.Array          # (d, K) feature-major inputs
    z: jax.Array            # (K,) residual y - f(x): the criteria's scale (g = 0 <-> r = 0)
    target: jax.Array       # (K,) what the form's prediction is fitted to (z: additive, y: lora)
    frozen: tuple           # the frozen net's layers (lora) or () (additive never evaluates f)
    width: jax.Array        # () int32 the form's size (hidden width of g, or LoRA rank)
    key: jax.Array          # () PRNG key for the initialisation
    z_scale: jax.Array      # () max(1, max|z|)
    mse_zero: jax.Array     # () mean(z^2), the error of g = 0
    learning_rate: jax.Array  # () peak rate, already scaled by the width when asked
    steps: jax.Array        # () int32 step budget
    paper_threshold: jax.Array
    tol: jax.Array
    rel_eps: jax.Array
    criterion: jax.Array    # () int32 index into criteria.CRITERIA
    b1: jax.Array
    b2: jax.Array
    eps: jax.Array
    weight_decay: jax.Array
    momentum: jax.Array
    clip_norm: jax.Array    # () 0: no clipping
    lm_tau: jax.Array
    stop_on_success: jax.Array  # () bool
    live: jax.Array         # () bool, False on padding lanes


class _State(NamedTuple):
    params: tuple
    opt_state: tuple
    done: jax.Array         # () bool: met the decision criterion at some step
    stop_step: jax.Array    # () int32: step of first success
    stop_mse: jax.Array     # () metrics at the first success
    stop_max_err: jax.Array
    diverged: jax.Array     # () bool: saw a non-finite loss (parameters frozen since)
    best: jax.Array         # () best loss seen
    best_step: jax.Array    # () int32 step of the last relative improvement of ``best``


def _tree_where(cond, a, b):
    return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def _direction(cfg: StaticConfig, lane: _Lanes) -> optax.GradientTransformation:
    """The first-order transformation (a direction; the learning rate is applied per lane by hand)."""
    if isinstance(cfg.optimizer, optax.GradientTransformation):
        return cfg.optimizer
    if cfg.optimizer == "adam":
        return optax.scale_by_adam(b1=lane.b1, b2=lane.b2, eps=lane.eps)
    if cfg.optimizer == "adamw":
        return optax.chain(optax.scale_by_adam(b1=lane.b1, b2=lane.b2, eps=lane.eps),
                           optax.add_decayed_weights(lane.weight_decay))
    if cfg.optimizer == "sgd":
        return optax.trace(decay=lane.momentum, nesterov=cfg.nesterov)
    raise AssertionError(cfg.optimizer)


def _clip(grads, clip_norm):
    """Scale ``grads`` to global norm ``<= clip_norm`` (``clip_norm = 0``: unchanged)."""
    norm = optax.tree.norm(grads)
    scale = jnp.where((clip_norm > 0) & (norm > clip_norm), clip_norm / jnp.maximum(norm, 1e-30), 1.0)
    return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)


def _residual_fn(cfg: StaticConfig, lane: _Lanes):
    # The form (static) says what is trained and what it is fitted to (forms.py).
    return lambda params: cfg.form.predict(params, lane.frozen, lane.x_t, lane.width, cfg) - lane.target


def _loss_fn(cfg: StaticConfig, lane: _Lanes):
    residual = _residual_fn(cfg, lane)

    def loss(params):
        r = residual(params)
        return jnp.mean(r * r), jnp.max(jnp.abs(r))

    return loss


def _trainer(cfg: StaticConfig, lane: _Lanes):
    """``(init, step, quiet)`` of the lane's optimizer (see the module docstring); ``quiet(params,
    opt_state, t) -> (params', opt_state')`` is the same update without its metrics (the steps between
    checks of ``check_every > 1``)."""
    dtype = jnp.dtype(cfg.dtype)
    loss = _loss_fn(cfg, lane)
    if cfg.optimizer == "lm":
        residual = _residual_fn(cfg, lane)

        def one_sample(params, x):
            # a form's prediction on sample i reads column i of x_t only: J's rows are per-sample gradients
            return cfg.form.predict(params, lane.frozen, x[:, None], lane.width, cfg)[0]

        def step(params, opt_state, t):
            return lm.step(residual, params, opt_state, live=cfg.form.live_mask(params, lane.width, cfg),
                           tau=lane.lm_tau, damping=cfg.lm_damping, sample_fn=one_sample, samples=lane.x_t.T)

        return (lambda params: lm.init_state(dtype)), step, _without_metrics(step)

    # optax mixes its int32 step count with floats; keep our own code under the caller's (possibly
    # strict) promotion rules and give optax the standard ones.
    if cfg.optimizer == "lbfgs":
        tx = optax.lbfgs(memory_size=cfg.lbfgs_memory)

        def step(params, opt_state, t):
            (mse, max_err), grads = jax.value_and_grad(loss, has_aux=True)(params)
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = tx.update(grads, opt_state, params, value=mse, grad=grads,
                                               value_fn=lambda p: loss(p)[0])
            return mse, max_err, jax.tree.map(lambda p, u: p + u.astype(p.dtype), params, updates), opt_state

        quiet = _without_metrics(step)
    else:
        tx = _direction(cfg, lane)

        def step(params, opt_state, t):
            (mse, max_err), grads = jax.value_and_grad(loss, has_aux=True)(params)
            grads = _clip(grads, lane.clip_norm)
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = tx.update(grads, opt_state, params)
            lr = lane.learning_rate * schedules.lr_multiplier(cfg.schedule, t, lane.steps, dtype)
            return mse, max_err, jax.tree.map(lambda p, u: p - lr * u.astype(p.dtype), params, updates), opt_state

        residual = _residual_fn(cfg, lane)

        def quiet(params, opt_state, t):
            # the same update without the max-error reduction (a step between checks reports nothing)
            grads = jax.grad(lambda p: jnp.mean(jnp.square(residual(p))))(params)
            if cfg.clips:  # static: without clipping the global norm is not computed at all
                grads = _clip(grads, lane.clip_norm)
            with jax.numpy_dtype_promotion("standard"):
                updates, opt_state = tx.update(grads, opt_state, params)
            lr = lane.learning_rate * schedules.lr_multiplier(cfg.schedule, t, lane.steps, dtype)
            return jax.tree.map(lambda p, u: p - lr * u.astype(p.dtype), params, updates), opt_state

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    return init, step, quiet


def _without_metrics(step):
    return lambda params, opt_state, t: step(params, opt_state, t)[2:]


def _fresh_state(cfg: StaticConfig, lane: _Lanes, params, done) -> _State:
    dtype = jnp.dtype(cfg.dtype)
    init = _trainer(cfg, lane)[0]
    zero = jnp.zeros((), dtype)
    return _State(params, init(params), done, jnp.zeros((), jnp.int32), zero, zero,
                  jnp.zeros((), bool), jnp.full((), jnp.inf, dtype), jnp.zeros((), jnp.int32))


def _init_lane(cfg: StaticConfig, lane: _Lanes) -> _State:
    params = cfg.form.init(lane.key, lane.width, cfg, lane.frozen)
    return _fresh_state(cfg, lane, params, jnp.zeros((), bool))


def _decide(lane: _Lanes, mse, max_err):
    flags = criteria.passed(mse, max_err, lane.z_scale, lane.mse_zero, lane.paper_threshold,
                            lane.tol, lane.rel_eps)
    return flags, flags[lane.criterion]


def _segment_lane(cfg: StaticConfig, state: _State, lane: _Lanes, offset):
    """``cfg.segment`` steps from step ``offset``: a scan over blocks of ``cfg.check_every`` steps, the
    first of each judged (criteria, divergence, stall; the history's row), the others bare updates.
    Ys: ``(segment // check_every, 2)`` metrics at the judged steps, or None."""
    _, step, quiet = _trainer(cfg, lane)
    k = cfg.check_every

    def body(st: _State, i):
        t = offset + i * k
        mse, max_err, params, opt_state = step(st.params, st.opt_state, t)
        if k > 1:
            # k = 1 keeps the loop of every run before check_every existed, so its bits are unchanged.
            # Whatever these steps do is discarded below when the judged step says stop or freeze.
            def bare(carry, j):
                return quiet(*carry, t + j), None

            (params, opt_state), _ = jax.lax.scan(bare, (params, opt_state), jnp.arange(1, k, dtype=jnp.int32),
                                                  unroll=min(cfg.unroll, k - 1))
        _, ok = _decide(lane, mse, max_err)
        finite = jnp.isfinite(mse)
        active = lane.live & (t < lane.steps) & ~st.diverged & ~(st.done & lane.stop_on_success)
        newly = active & ok & ~st.done
        move = active & finite & ~(ok & lane.stop_on_success)
        improved = active & finite & (mse < st.best * (1.0 - _STALL_REL))
        new = _State(_tree_where(move, params, st.params), _tree_where(move, opt_state, st.opt_state),
                     st.done | newly, jnp.where(newly, t, st.stop_step),
                     jnp.where(newly, mse, st.stop_mse), jnp.where(newly, max_err, st.stop_max_err),
                     st.diverged | (active & ~finite), jnp.where(improved, mse, st.best),
                     jnp.where(improved, t, st.best_step))
        return new, (jnp.stack([mse, max_err]) if cfg.history_every else None)

    return jax.lax.scan(body, state, jnp.arange(cfg.segment // k, dtype=jnp.int32),
                        unroll=cfg.unroll if k == 1 else 1)


def _dead(cfg: StaticConfig, params, lane: _Lanes):
    """True when some hidden layer has no live unit active on any sample (the model is constant)."""
    return cfg.form.dead(params, lane.frozen, lane.x_t, lane.width, cfg)


def _evaluate_lane(cfg: StaticConfig, state: _State, lane: _Lanes):
    """Metrics at the end and at the stop, and the facts the end reason needs (all per lane)."""
    mse_end, max_err_end = _loss_fn(cfg, lane)(state.params)
    keep_stop = state.done & ~lane.stop_on_success  # frozen lanes: the end IS the stop
    mse = jnp.where(keep_stop, state.stop_mse, mse_end)
    max_err = jnp.where(keep_stop, state.stop_max_err, max_err_end)
    flags, _ = _decide(lane, mse, max_err)
    passed_end, _ = _decide(lane, mse_end, max_err_end)
    near_zero = jnp.abs(mse_end - lane.mse_zero) <= _DEAD_TOL * lane.mse_zero  # stuck at g = 0's loss
    dead = _dead(cfg, state.params, lane) | ((lane.mse_zero > 0) & near_zero)
    weight_max = cfg.form.weight_max(state.params, lane.frozen, lane.width, cfg)
    return dict(mse=mse, max_err=max_err, passed=flags, mse_end=mse_end, max_err_end=max_err_end,
                passed_end=passed_end, dead=dead, weight_max=weight_max, done=state.done,
                stop_step=state.stop_step, diverged=state.diverged, best_step=state.best_step)


def _chunked(cfg: StaticConfig, per_lane, lane_args, *shared):
    """``per_lane`` over the leading lane axis, ``cfg.lanes_per_step`` lanes vmapped at a time (cache-sized)."""
    return jax.lax.map(lambda xs: per_lane(*xs, *shared), lane_args, batch_size=cfg.lanes_per_step)


@functools.partial(jax.jit, static_argnums=(0,))
def _init_kernel(cfg, lanes):
    return _chunked(cfg, lambda lane: _init_lane(cfg, lane), (lanes,))


@functools.partial(jax.jit, static_argnums=(0,))
def _resume_kernel(cfg, params, lanes, done):
    """A fresh optimizer state at given parameters (the LM polish after a first-order run)."""
    return _chunked(cfg, lambda p, lane, dn: _fresh_state(cfg, lane, p, dn), (params, lanes, done))


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
def _segment_kernel(cfg, state, lanes, offset):
    return _chunked(cfg, lambda st, lane, off: _segment_lane(cfg, st, lane, off), (state, lanes), offset)


# The segment kernel is compiled once per shape and loaded onto every other device (executables.py):
# jit alone would compile one copy per device, one after another.
_segment_per_device = executables.PerDevice(_segment_kernel, num_static=1)


@functools.partial(jax.jit, static_argnums=(0,))
def _evaluate_kernel(cfg, state, lanes):
    return _chunked(cfg, lambda st, lane: _evaluate_lane(cfg, st, lane), (state, lanes))


def _all_finished(lanes: _Lanes, state: _State) -> bool:
    """Whether every lane is padding, diverged or stopped at a success (host-side: numpy on the few
    flags, rather than four eager jax ops that would each compile for every new lane count)."""
    live, diverged, done, stop = jax.device_get((lanes.live, state.diverged, state.done, lanes.stop_on_success))
    return bool(np.all(~live | diverged | (done & stop)))


@functools.partial(jax.jit, static_argnums=(2,))
def _lane_slice(tree, start, size: int):
    """Lanes ``start:start + size`` of every leaf: one program per tree, not one per leaf shape."""
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), tree)


MAX_WIDTH = 10_000_000  # far beyond any fine-tuning width; a typo like 1e9 must not allocate


def _check_batch_args(problems, widths, keys, devices) -> None:
    """Argument checks of :func:`fit_batch` that numpy/jax would otherwise report as raw errors."""
    if np.ndim(widths) != 1 or np.size(widths) == 0:
        raise FTCInputError(f"widths: must be a non-empty 1-D array of lane widths, got shape {np.shape(widths)}")
    if devices is not None and len(list(devices)) == 0:
        raise FTCInputError("devices: empty; give at least one device (or None for all local devices)")
    kd = getattr(keys, "dtype", None)
    typed = kd is not None and jax.dtypes.issubdtype(kd, jax.dtypes.prng_key)
    raw = kd is not None and kd == np.uint32 and np.ndim(keys) == 2 and np.shape(keys)[1] == 2
    if not (typed or raw):
        raise FTCInputError(f"keys: {getattr(kd, 'name', type(keys).__name__)} values are not PRNG keys; "
                            "give jax.random.split(jax.random.key(seed), B)")
    x, z = getattr(problems, "x", None), getattr(problems, "z", None)
    if x is not None and z is not None and np.ndim(x) == 3 and np.shape(z) != np.shape(x)[:2]:
        raise FTCInputError(f"problems: z of shape {np.shape(z)} does not match x of shape {np.shape(x)} "
                            "(one residual per sample: z (B, K) for x (B, K, d))")


def validate_widths(widths, protocol: Protocol, bucket: int | None = None, form=None) -> None:
    """Raise :class:`FTCInputError` if a size is too small for the form (and depth) or above the bucket.

    ``form`` (default additive): for the additive form a size is the total hidden width of ``g``;
    for LoRA it is the rank, and rank 0 (the frozen network itself) is allowed.
    """
    form = forms.Additive() if form is None else form
    w = np.asarray(widths)
    what = "ranks" if isinstance(form, forms.LoRA) else "widths"
    if w.size == 0:
        raise FTCInputError(f"{what}: empty")
    if w.dtype.kind not in "iu":
        raise FTCInputError(f"{what}: {w.tolist()!r} must be integers")
    if w.max() > MAX_WIDTH:
        raise FTCInputError(f"{what}: {int(w.max())} exceeds the limit of {MAX_WIDTH}")
    if isinstance(form, forms.LoRA):
        if w.min() < 0:
            raise FTCInputError(f"ranks: {int(w.min())} is negative")
    else:
        lo = networks.smallest_valid_width(protocol.depth, protocol.split)
        if w.min() < lo:
            raise FTCInputError(f"widths: {int(w.min())} is below {lo}, the smallest width giving every "
                                f"hidden layer of a depth-{protocol.depth} net a neuron")
    if bucket is not None and w.max() > bucket:
        raise FTCInputError(f"{what}: {int(w.max())} exceeds bucket = {bucket}")


def fit_batch(problems: Problem, widths, *, keys, protocol: Protocol, form=None, bucket: int | None = None,
              devices=None, pad_to: int | None = None, on_segment=None) -> FitResult:
    """Train one fine-tuning update per lane and judge it by every criterion.

    Args:
      problems: a batch of problems with leading axis ``(B,)`` (``x (B, K, d)``, ``z (B, K)``, ...);
        lane ``i`` trains on problem ``i`` (repeat a problem for restarts or several widths). The
        LoRA form needs problems carrying their frozen nets (:func:`make_lora_problems`).
      widths: ``(B,)`` sizes of the form: total hidden widths ``m`` of ``g`` (additive) or ranks (LoRA).
      keys: ``(B,)`` PRNG keys for the initialisations.
      protocol: the training protocol.
      form: the fine-tuning form (:class:`Additive`, the default, or :class:`LoRA`), or a per-lane
        sequence holding one form (a batch mixing forms is refused: one kernel trains one form).
      bucket: padded size (default ``max(widths)``); lanes of one bucket share one compiled kernel.
      devices: devices to split the lanes over (default all local devices).
      pad_to: pad the lane count up to at least this (fewer distinct shapes: fewer compilations).
      on_segment: optional ``on_segment(kernel, args)``, called before every segment on every device
        with the jitted per-segment program and its arguments (``kernel.lower(*args)`` works): for
        profiling and memory analysis without reaching into private names.
    Returns:
      :class:`FitResult` with leading axis ``(B,)``.
    """
    _check_batch_args(problems, widths, keys, devices)
    widths = np.asarray(widths)
    form = forms.single_form(form, default=forms.Additive())
    forms.check_problems(form, problems)
    bucket = int(widths.max()) if bucket is None else int(bucket)
    validate_widths(widths, protocol, bucket, form)
    B = widths.shape[0]
    if problems.x.ndim != 3 or problems.x.shape[0] != B:
        raise FTCInputError(f"problems: need a batch with leading axis {B} (one per lane), got x of shape {problems.x.shape}")
    if jnp.shape(keys)[0] != B:
        raise FTCInputError(f"keys: need {B} keys (one per lane), got {jnp.shape(keys)[0]}")
    devices = list(jax.local_devices() if devices is None else devices)
    n_dev = len(devices)
    _, K, d = problems.x.shape
    # lanes_per_step = 0: the size rule capped by this call's lane count (one lane is not padded to 64);
    # name a value to make a lane's bits independent of the batch it shares.
    protocol = protocol.replace(lanes_per_step=round_lanes_per_step(
        protocol, num_samples=K, in_dim=d, bucket=bucket, lanes_per_round=max(B, pad_to or 0),
        sized=isinstance(form, forms.Additive)))
    cfg = static_config(protocol, bucket=bucket, in_dim=d, num_samples=K, form=form)
    crit = criteria.criterion_index(protocol.criterion)
    # float32 runs are judged in float64 at their returned parameters; a polish is an LM phase in
    # float64 from there (first order finds the basin, LM lands in it).
    recheck = protocol.dtype != "float64" or protocol.polish_steps > 0
    polish = (protocol.replace(optimizer="lm", dtype="float64", steps=protocol.polish_steps, polish_steps=0,
                               clip_norm=0.0, segment=min(protocol.segment, protocol.polish_steps), check_every=1)
              if protocol.polish_steps else None)
    check = polish or protocol.replace(dtype="float64")
    cfg64 = static_config(check, bucket=bucket, in_dim=d, num_samples=K, form=form)
    # Both phases' lax.map steps must tile a device's lanes exactly (powers of two: the larger suffices).
    per = n_dev * max(cfg.lanes_per_step, cfg64.lanes_per_step if recheck else 1)
    Bp = int(math.ceil(max(B, pad_to or 0) / per) * per)
    local = Bp // n_dev

    def contexts(dtype):
        # jax's dtype and precision settings are thread-local: enter them in every worker thread.
        stack = contextlib.ExitStack()
        stack.enter_context(jax.enable_x64(dtype == "float64"))
        stack.enter_context(jax.default_matmul_precision(protocol.matmul_precision))
        return stack

    with contexts(protocol.dtype):
        lanes = _build_lanes(problems, jnp.asarray(widths), keys, _hyper(protocol), protocol.dtype, Bp,
                             form.target(problems), form.frozen_of(problems))
    if recheck:
        with contexts("float64"):
            lanes64 = _build_lanes(problems, jnp.asarray(widths), keys, _hyper(check), "float64", Bp,
                                   form.target(problems), form.frozen_of(problems))

    def run_phase(c, state, mine, budget, device):
        hist = []
        n_seg = int(math.ceil(budget / c.segment))
        for s in range(n_seg):
            args = (c, state, mine, jnp.int32(s * c.segment))
            if on_segment is not None:
                on_segment(_segment_kernel, args)
            state, ys = _segment_per_device(*args, device=device)
            if ys is not None:
                hist.append(ys)
            if s + 1 < n_seg and _all_finished(mine, state):
                break  # every lane here has finished: the rest of the budget changes nothing
        if not hist:
            return state, None
        k = c.check_every
        rows = budget // k  # one row per judged step
        h = np.concatenate(jax.device_get(hist), axis=1)[:, :rows]
        # Segments skipped because every lane had finished: those lanes were frozen, so their
        # metrics stay what they last were.
        h = np.concatenate([h, np.repeat(h[:, -1:], rows - h.shape[1], axis=1)], axis=1)
        if k == 1:
            return state, h
        per_step = np.full((h.shape[0], budget) + h.shape[2:], np.nan, h.dtype)  # NaN: not measured
        per_step[:, ::k] = h
        return state, per_step

    # The once-per-phase kernels (init, evaluate, resume) run on the first device for every
    # device's lanes: they are cheap to run and costly to compile, and jit compiles a separate copy
    # per device (jax 0.10.2 keys its compilation cache on the device assignment except on GPU), so
    # on 2 devices each was compiled twice. One program on one device kind gives the same bits
    # whichever device runs it (tests/test_devices.py); only the segment kernel, the real work,
    # runs on every device.
    home = devices[0]
    home_lock = threading.Lock()

    def on_home(kernel, *args):
        # One thread at a time dispatches a phase kernel, so a missing one is compiled once and the
        # other threads find it in jit's cache (two threads missing together would both compile).
        # Dispatch is asynchronous: the lock is held for the compile, not for the run.
        with home_lock:
            return kernel(*args)

    def run_on(k):
        take = lambda tree: _lane_slice(tree, k * local, local)  # noqa: E731
        here = lambda tree: jax.device_put(tree, devices[k])  # noqa: E731
        at_home = lambda tree: jax.device_put(tree, home)  # noqa: E731
        with contexts(protocol.dtype):
            mine_home = at_home(take(lanes))
            mine = here(mine_home)
            state, hist = run_phase(cfg, here(on_home(_init_kernel, cfg, mine_home)), mine, protocol.steps,
                                    devices[k])
            out = dict(first=jax.device_get(on_home(_evaluate_kernel, cfg, at_home(state), mine_home)), hist=[hist],
                       params=jax.device_get(state.params))
            if not recheck:
                return out
        with contexts("float64"):
            mine_home = at_home(take(lanes64))
            state = jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                                 at_home(state))
            check_ev = on_home(_evaluate_kernel, cfg64, state, mine_home)
            out["check"] = jax.device_get(check_ev)
            if polish is None:
                return out  # the trained (float32) parameters, judged in float64
            done = check_ev["passed_end"][:, crit] & mine_home.stop_on_success
            mine = here(mine_home)
            state = here(on_home(_resume_kernel, cfg64, state.params, mine_home, done))
            state, hist = run_phase(cfg64, state, mine, polish.steps, devices[k])
            out["polish"] = jax.device_get(on_home(_evaluate_kernel, cfg64, at_home(state), mine_home))
            out["hist"].append(hist)
            return out | dict(params=jax.device_get(state.params))

    if n_dev == 1:
        parts = [run_on(0)]
    else:
        with concurrent.futures.ThreadPoolExecutor(n_dev) as pool:  # jax releases the GIL while running
            parts = list(pool.map(run_on, range(n_dev)))
    cat = lambda *a: None if a[0] is None else np.concatenate(a)[:B]  # noqa: E731
    out = jax.tree.map(cat, *parts, is_leaf=lambda x: x is None)
    return _combine(out, protocol, crit)


def _combine(out: dict, protocol: Protocol, crit: int) -> FitResult:
    """Host-side: the decision, total steps and end reason from the phases' evaluations."""
    first = out["first"]
    steps = np.where(first["done"], first["stop_step"], protocol.steps)
    budget, final, every = protocol.steps, first, protocol.check_every
    if "check" in out and "polish" not in out:
        # float32 run: the float64 metrics at the returned parameters decide.
        ch = out["check"]
        final = dict(ch, mse=ch["mse_end"], max_err=ch["max_err_end"], passed=ch["passed_end"],
                     diverged=first["diverged"], best_step=first["best_step"])
    elif "polish" in out:
        pol = out["polish"]
        polished = ~(out["check"]["passed_end"][:, crit] & protocol.stop_on_success)
        taken = np.where(first["done"] & protocol.stop_on_success, first["stop_step"], protocol.steps)
        steps = np.where(polished, taken + np.where(pol["done"], pol["stop_step"], protocol.polish_steps), steps)
        final = dict(pol, diverged=pol["diverged"] | first["diverged"])
        budget, every = protocol.polish_steps, 1  # the polish judges every iteration
    passed = final["passed"]
    success = passed[:, crit]
    # counted from the step after the last judged one (budget - every), so runs judged every k steps
    # stall by the same rule as runs judged every step (k = 1: budget - best_step)
    stalled = (budget - every + 1 - final["best_step"]) > _STALL_FRACTION * budget
    reason = np.select([success, final["diverged"], final["dead"], stalled], [0, 2, 3, 4], default=1)
    hist = [h for h in out["hist"] if h is not None]
    history = None
    if hist:
        every = protocol.history_every
        history = np.concatenate(hist, axis=1)[:, ::every].astype(np.float64)
    return FitResult(mse=final["mse"], max_err=final["max_err"], steps=steps.astype(np.int32), passed=passed,
                     success=success, params=out["params"], mse_end=final["mse_end"],
                     max_err_end=final["max_err_end"], end_reason=reason.astype(np.int32),
                     weight_max=final["weight_max"], history=history)


def _hyper(protocol: Protocol) -> dict:
    """The protocol's dynamic part as scalar arrays (new values never recompile)."""
    dtype = jnp.dtype(protocol.dtype)
    real = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return dict(learning_rate=real(protocol.learning_rate),
                lr_width_ref=real(protocol.lr_width_ref), lr_width_power=real(protocol.lr_width_power),
                steps=jnp.asarray(protocol.steps, jnp.int32),
                paper_threshold=real(protocol.paper_threshold), tol=real(protocol.tol),
                rel_eps=real(protocol.rel_eps),
                criterion=jnp.asarray(criteria.criterion_index(protocol.criterion), jnp.int32),
                b1=real(protocol.b1), b2=real(protocol.b2), eps=real(protocol.eps),
                weight_decay=real(protocol.weight_decay), momentum=real(protocol.momentum),
                clip_norm=real(protocol.clip_norm), lm_tau=real(protocol.lm_tau),
                stop_on_success=jnp.asarray(bool(protocol.stop_on_success)))


@functools.partial(jax.jit, static_argnums=(4, 5))
def _build_lanes(problems: Problem, widths, keys, hyper: dict, dtype: str, Bp: int, target=None,
                 frozen=()) -> _Lanes:
    # target: what the form fits (default z, the additive form's); frozen: the frozen net if the form
    # reads it (see forms.py).
    # One jitted function rather than a dozen eager ops, each of which would compile on its own.
    B = widths.shape[0]
    dtype = jnp.dtype(dtype)
    idx = jnp.concatenate([jnp.arange(B), jnp.zeros(Bp - B, int)])  # padding lanes copy lane 0, never run
    z = problems.z[idx].astype(dtype)
    z_scale, mse_zero = criteria.residual_stats(z)
    hyper = dict(hyper)
    ref, power = hyper.pop("lr_width_ref"), hyper.pop("lr_width_power")
    width = widths[idx].astype(jnp.int32)
    per_lane = {k: jnp.broadcast_to(v, (Bp,)) for k, v in hyper.items()}
    scale = jnp.where(ref > 0, (ref / width.astype(dtype)) ** power, jnp.ones((), dtype))
    per_lane["learning_rate"] = per_lane["learning_rate"] * scale
    return _Lanes(x_t=jnp.swapaxes(problems.x[idx].astype(dtype), 1, 2), z=z,
                  target=(problems.z if target is None else target)[idx].astype(dtype),
                  frozen=jax.tree.map(lambda a: a[idx].astype(dtype), frozen),
                  width=width, key=keys[idx],
                  z_scale=z_scale, mse_zero=mse_zero, live=jnp.arange(Bp) < B, **per_lane)


def fit(problem: Problem, width: int, *, key, protocol: Protocol, form=None,
        bucket: int | None = None) -> FitResult:
    """Train one update of size ``width`` (width of ``g``, or LoRA rank) on one problem (see
    :func:`fit_batch`); scalar results."""
    batch = jax.tree.map(lambda a: jnp.asarray(a)[None], problem)
    res = fit_batch(batch, np.array([int(width)]), keys=jnp.asarray(key)[None], protocol=protocol,
                    form=form, bucket=bucket)
    return jax.tree.map(lambda a: a[0], res)
