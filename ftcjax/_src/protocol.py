"""The training protocol: every choice behind a reported width, in one record.

A :class:`Protocol` is split in two for the kernels: a hashable *static* part (shapes, optimizer kind,
segment length; changing it compiles a new kernel) and *dynamic* per-lane arrays (learning rate, step
budget, tolerances, criterion; changing them never recompiles).

What recompiles: ``depth``, ``split``, ``optimizer`` (the name, or the identity of a custom optax
transformation), ``schedule``, ``segment``, ``dtype``, ``lbfgs_memory``, ``nesterov``, ``lm_damping``,
``history_every``, ``check_every`` (and with ``check_every > 1`` whether ``clip_norm`` is 0), ``lanes_per_step``,
``unroll`` and the shapes (bucket, K, d, lane count). Everything else (learning rate and its width scaling, betas, eps, weight decay, momentum, clipping, the LM damping
start, step budgets, tolerances, criterion, ``stop_on_success``) is a per-lane array.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
import optax

from ftcjax._src.criteria import CRITERIA
from ftcjax._src.errors import FTCInputError
from ftcjax._src.schedules import SCHEDULES

OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs", "lm")
FIRST_ORDER = ("adam", "adamw", "sgd")  # and custom optax transformations: scaled by the learning rate
LM_DAMPINGS = ("nielsen", "marquardt")
PRECISIONS = ("highest", "high", "default")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How ``g`` is trained and judged.

    Attributes:
      depth: layers of ``g`` (2, 3, or more); ``m`` counts the neurons of all hidden layers.
      split: integer weights distributing ``m`` over hidden layers (default equal: ``d2 = ceil(m/2)``).
      optimizer: ``"adam"``, ``"adamw"`` (decoupled ``weight_decay``), ``"sgd"`` (``momentum``,
        ``nesterov``), ``"lbfgs"`` (optax's, zoom line search), ``"lm"`` (batched Levenberg-Marquardt,
        :mod:`ftcjax._src.lm`; ``steps`` counts its iterations), or, from Python, any
        ``optax.GradientTransformation`` producing a *direction*: ftcjax applies
        ``params -= lr(t) * direction`` with the per-lane ``learning_rate`` and ``schedule`` (so pass
        e.g. ``optax.scale_by_lion()``, not ``optax.lion(1e-3)``, which would scale twice). Kernels are
        cached by the transformation object: reuse one object to avoid recompiling.
      learning_rate: peak learning rate of first-order optimizers (unused by L-BFGS and LM).
      lr_width_ref, lr_width_power: if ``lr_width_ref > 0`` a lane of width ``m`` uses
        ``learning_rate * (lr_width_ref / m) ** lr_width_power`` (wide nets at a shared rate die).
      b1, b2, eps: Adam's moment decays and denominator offset (adam, adamw).
      weight_decay: decoupled weight decay of adamw.
      momentum, nesterov: SGD's heavy-ball momentum (0: plain gradient descent) and Nesterov variant.
      clip_norm: if > 0, clip the gradient to this global norm before a first-order optimizer.
      lm_damping: LM damping rule: ``"nielsen"`` (identity damping, Nielsen's smooth update) or
        ``"marquardt"`` (damping scaled by diag(J^T J), x10 / x0.1 updates).
      lm_tau: LM's initial damping relative to ``max diag(J^T J)``.
      polish_steps: LM iterations after a first-order run (0: off); float64 whatever ``dtype``.
      stop_on_success: freeze a run at its first success (False: train to the end of the budget and
        record the loss both at the first success and at the end).
      history_every: record loss and max error every that many steps per run (0: off, free; a
        multiple of ``check_every``).
      check_every: judge a run (criterion, divergence, stall) every that many steps, not every step
        (1, the default: every step, the bits of every run before the field existed). The steps
        between checks are bare optimizer steps (no max-error reduction, no criteria, no freezing),
        so a run can stop only at steps ``0, k, 2k, ...`` and may pass up to ``k - 1`` steps later
        than with checks every step; a run that goes non-finite between checks is frozen at the
        non-finite point, as with ``k = 1``. ``steps`` and ``segment`` must be multiples of it.
        Changes the bits.
      schedule: ``"constant"``, ``"cosine"`` (decay to 0 over ``steps``) or ``"warmup_cosine"`` (5% warmup).
      steps: optimizer steps per training (a budget: by default a run stops at its first success).
      segment: steps per kernel call; between calls the whole batch stops if every run has finished.
      restarts: independent initialisations per (instance, width); they are just more lanes.
      success_fraction: a width succeeds when at least ``max(1, ceil(fraction * restarts))`` restarts do
        (0: any restart).
      criterion: the deciding criterion, one of ``paper``, ``strict``, ``relative``.
      tol, paper_threshold, rel_eps: the criteria's tolerances (see :mod:`ftcjax._src.criteria`).
      dtype: ``"float64"`` (reference) or ``"float32"``.
      matmul_precision: XLA matmul precision (``"highest"`` avoids TF32 on GPUs).
      lbfgs_memory: L-BFGS history size.
      lanes_per_step: runs vmapped together inside a device per lax.map step (keeps the working set in cache on
        CPU). 0 (default): chosen from the problem size (:func:`auto_lanes_per_step`) capped by the lanes
        of the call (:func:`round_lanes_per_step`: ``fit_batch`` its B, ``min_width_batch`` n x restarts,
        a sweep its chunk_size x restarts), never from the device count, so the bits of a run do not
        depend on how many devices share it. The value changes the bits (XLA batches the matmuls
        differently): name one to make a lane's bits independent of the batch it is in.
      unroll: ``lax.scan`` unroll of the training loop (changes the bits). 2 (default since 2026-12-04;
        4 before): as fast as 4 once compiled on the benchmark shapes and the default sweep's, and a
        shorter compile (the default sweep's first run, empty cache: 18.4-18.7 -> 15.0 s; 1 is
        slower to run at depth 3). The committed sweeps pin 4.
      train_seed: folded into every training key when nonzero: the same instances trained from new
        initialisations (the noise floor of a convergence check); 0 keeps the original keys.
    """

    depth: int = 2
    split: tuple | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-2
    lr_width_ref: int = 0
    lr_width_power: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    clip_norm: float = 0.0
    lm_damping: str = "nielsen"
    lm_tau: float = 1e-3
    polish_steps: int = 0
    stop_on_success: bool = True
    history_every: int = 0
    check_every: int = 1
    schedule: str = "cosine"
    steps: int = 2000
    segment: int = 250
    restarts: int = 4
    success_fraction: float = 0.0
    criterion: str = "strict"
    tol: float = 1e-2
    paper_threshold: float = 0.04
    rel_eps: float = 1e-3
    dtype: str = "float64"
    matmul_precision: str = "highest"
    lbfgs_memory: int = 10
    lanes_per_step: int = 0
    unroll: int = 2
    train_seed: int = 0

    def __post_init__(self):
        if self.split is not None:
            object.__setattr__(self, "split", tuple(int(s) for s in self.split))
        validate_protocol(self)

    def replace(self, **changes) -> "Protocol":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field as JSON-able values, plus the rules that are not fields."""
        d = dataclasses.asdict(self)
        d["split"] = list(self.split) if self.split is not None else None
        if not isinstance(self.optimizer, str):
            d["optimizer"] = f"custom:{self.optimizer!r}"[:200]
        d["init"] = "pytorch-default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), neuron j from fold_in(key, j)"
        d["loss"] = "mean over all K samples of (g(x) - z)^2, full batch"
        d["stop"] = ("a run stops (parameters frozen) at its first step meeting the decision criterion"
                     if self.stop_on_success else "every run trains to the end of its budget")
        if self.dtype != "float64" or self.polish_steps:
            d["decision"] = "success is re-evaluated in float64 at the returned parameters"
        return d

    @property
    def min_successes(self) -> int:
        return max(1, math.ceil(self.success_fraction * self.restarts))


class StaticConfig(NamedTuple):
    """The compile-time part of a protocol plus the shapes of one kernel."""

    depth: int
    split: tuple | None
    optimizer: object  # a name of OPTIMIZERS or an optax.GradientTransformation
    schedule: str
    segment: int
    dtype: str
    lbfgs_memory: int
    nesterov: bool
    lm_damping: str
    history_every: int
    check_every: int
    clips: bool     # the bare steps between checks clip (check_every > 1 and clip_norm > 0)
    lanes_per_step: int
    unroll: int
    bucket: int
    in_dim: int
    num_samples: int
    form: Any = None  # the fine-tuning form (ftcjax._src.forms), hashable; static_config defaults it to additive


def _finite_positive(name, value, *, allow_zero=False):
    # float("0.01") and float(True) would pass below and store a string or a bool in the protocol.
    if isinstance(value, (bool, np.bool_, str, bytes)) or not isinstance(value, (int, float, np.number)):
        raise FTCInputError(f"{name}: {value!r} is a {type(value).__name__}, expected a number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FTCInputError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise FTCInputError(f"{name}: {value!r} must be a finite {'non-negative' if allow_zero else 'positive'} number")


def _positive_int(name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise FTCInputError(f"{name}: {value!r} must be an integer >= {lo}")


def validate_protocol(p: Protocol) -> None:
    """Raise :class:`FTCInputError` naming the first bad field."""
    _positive_int("depth", p.depth, 2)
    if isinstance(p.optimizer, optax.GradientTransformation):
        pass
    elif not isinstance(p.optimizer, str) or p.optimizer not in OPTIMIZERS:
        raise FTCInputError(f"optimizer: unknown value {p.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if p.schedule not in SCHEDULES:
        raise FTCInputError(f"schedule: unknown value {p.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if p.criterion not in CRITERIA:
        raise FTCInputError(f"criterion: unknown value {p.criterion!r}; choose one of {', '.join(CRITERIA)}")
    if p.dtype not in ("float32", "float64"):
        raise FTCInputError(f"dtype: unknown value {p.dtype!r}; choose float32 or float64")
    if p.matmul_precision not in PRECISIONS:
        raise FTCInputError(f"matmul_precision: unknown value {p.matmul_precision!r}; choose one of {', '.join(PRECISIONS)}")
    for name in ("steps", "segment", "restarts", "lbfgs_memory", "unroll", "check_every"):
        _positive_int(name, getattr(p, name))
    for name in ("steps", "segment"):
        if getattr(p, name) % p.check_every:
            raise FTCInputError(f"{name}: {getattr(p, name)!r} must be a multiple of check_every = {p.check_every}")
    _positive_int("lanes_per_step", p.lanes_per_step, 0)
    if isinstance(p.train_seed, bool) or not isinstance(p.train_seed, (int, np.integer)) or not 0 <= p.train_seed < 2**32:
        raise FTCInputError(f"train_seed: {p.train_seed!r} must be an integer in [0, 2**32)")
    for name in ("lr_width_ref", "polish_steps", "history_every"):
        _positive_int(name, getattr(p, name), 0)
    if p.history_every % p.check_every:
        raise FTCInputError(f"history_every: {p.history_every!r} must be a multiple of check_every = {p.check_every}")
    for name in ("nesterov", "stop_on_success"):
        if not isinstance(getattr(p, name), (bool, np.bool_)):
            raise FTCInputError(f"{name}: {getattr(p, name)!r} must be true or false")
    if p.lm_damping not in LM_DAMPINGS:
        raise FTCInputError(f"lm_damping: unknown value {p.lm_damping!r}; choose one of {', '.join(LM_DAMPINGS)}")
    _finite_positive("lm_tau", p.lm_tau)
    _finite_positive("eps", p.eps)
    _finite_positive("lr_width_power", p.lr_width_power, allow_zero=True)
    for name in ("weight_decay", "momentum", "clip_norm"):
        _finite_positive(name, getattr(p, name), allow_zero=True)
    for name in ("b1", "b2", "momentum"):
        if not 0 <= float(getattr(p, name)) < 1:
            raise FTCInputError(f"{name}: {getattr(p, name)!r} must be in [0, 1)")
    if p.clip_norm > 0 and p.optimizer in ("lbfgs", "lm"):
        raise FTCInputError(f"clip_norm: gradient clipping applies to first-order optimizers, not {p.optimizer!r}")
    if p.polish_steps and p.optimizer == "lm":
        raise FTCInputError("polish_steps: an LM run needs no LM polish (use more steps)")
    _finite_positive("learning_rate", p.learning_rate)
    _finite_positive("tol", p.tol)
    _finite_positive("paper_threshold", p.paper_threshold)
    _finite_positive("rel_eps", p.rel_eps)
    _finite_positive("success_fraction", p.success_fraction, allow_zero=True)
    if p.success_fraction > 1:
        raise FTCInputError(f"success_fraction: {p.success_fraction!r} must be in [0, 1]")
    if p.split is not None and (len(p.split) != p.depth - 1 or min(p.split) < 1):
        raise FTCInputError(f"split: {p.split!r} must be {p.depth - 1} positive integer weights")


def static_config(p: Protocol, *, bucket: int, in_dim: int, num_samples: int, form=None) -> StaticConfig:
    """The kernel's compile-time configuration; ``lanes_per_step = 0`` resolves as for one lane (4:
    :func:`fit_batch` resolves it for its batch before calling this)."""
    from ftcjax._src.forms import Additive  # forms imports this module

    form = Additive() if form is None else form
    return StaticConfig(depth=p.depth, split=p.split, optimizer=p.optimizer, schedule=p.schedule,
                        segment=min(p.segment, p.steps), dtype=p.dtype, lbfgs_memory=p.lbfgs_memory,
                        nesterov=bool(p.nesterov), lm_damping=p.lm_damping,
                        history_every=int(p.history_every), check_every=int(p.check_every),
                        clips=bool(p.check_every > 1 and p.clip_norm > 0), unroll=p.unroll, bucket=int(bucket), in_dim=int(in_dim),
                        lanes_per_step=int(p.lanes_per_step) or round_lanes_per_step(
                            p, num_samples=num_samples, in_dim=in_dim, bucket=bucket, lanes_per_round=1,
                            sized=isinstance(form, Additive)),
                        num_samples=int(num_samples), form=form)


# Working set of the vmapped lanes of one lax.map step that stays in a core's L2 cache (512 KiB on the
# benchmark machine's EPYC) with room for the weights: measured on W2 (K = 64, m = 16) at B = 1024,
# 4 -> 64 lanes per step is 0.58 -> 0.32 ms per training, while W1 (K = 1000) is flat from 2 to 16.
AUTO_LANES_BYTES = 1 << 20
AUTO_LANES_RANGE = (4, 64)


def auto_lanes_per_step(*, num_samples: int, in_dim: int, bucket: int, depth: int, dtype: str) -> int:
    """Lanes vmapped per ``lax.map`` step for ``Protocol.lanes_per_step = 0``: a pure function of the shapes.

    The largest power of two in ``AUTO_LANES_RANGE`` whose pre- and post-activations (``2 K (m + 1)``
    numbers per lane, ``m`` the bucket) fit ``AUTO_LANES_BYTES``. Small problems are bound by per-op
    overhead, so they batch many lanes per op; large ones keep 4 (the earlier fixed default, so their
    bits are unchanged).

    >>> auto_lanes_per_step(num_samples=64, in_dim=2, bucket=16, depth=2, dtype="float32")
    64
    >>> auto_lanes_per_step(num_samples=1000, in_dim=10, bucket=24, depth=3, dtype="float32")
    4
    """
    del in_dim, depth  # the activations count every hidden neuron once, whatever the depth
    item = 8 if dtype == "float64" else 4
    act = 2 * item * int(num_samples) * (int(bucket) + 1)
    lo, hi = AUTO_LANES_RANGE
    lanes = lo
    while lanes * 2 <= hi and lanes * 2 * act <= AUTO_LANES_BYTES:
        lanes *= 2
    return lanes


ROUND_DEVICES = 2  # a round's lanes are sized for this many devices, whatever the run has


def round_lanes_per_step(p: Protocol, *, num_samples: int, in_dim: int, bucket: int, lanes_per_round: int,
                         sized: bool = True) -> int:
    """``lanes_per_step`` for calls of about ``lanes_per_round`` lanes (a search round, a sweep chunk).

    Explicit values are kept. ``0`` becomes :func:`auto_lanes_per_step` capped at the lanes one of
    ``ROUND_DEVICES`` devices gets (rounded down to a power of two, at least ``AUTO_LANES_RANGE[0]``):
    a round padded to far more lanes than it holds would spend the saving on padding (the default
    sweep, 20 lanes a round: 28 s warm at 4 lanes per step, 55 s at the uncapped 32, 21 s at 8). The
    choice depends on the caller's batch size and the shapes only, never on the devices present, so the
    bits of a run do not depend on them. ``sized=False`` (a form whose bucket is not a width), LM and an LM polish: 4.

    >>> round_lanes_per_step(Protocol(restarts=2), num_samples=24, in_dim=2, bucket=48, lanes_per_round=20)
    8
    """
    if p.lanes_per_step:
        return int(p.lanes_per_step)
    lo = AUTO_LANES_RANGE[0]
    if not sized or p.optimizer == "lm" or p.polish_steps:
        # LM holds a K x P Jacobian per lane: more lanes in flight spill the cache
        # (benchmarks/trainers.py, W2 with the whole-Jacobian jacrev of 2026-12-02: 9.5 ms at 4,
        # 16.8 ms at 32). With per-sample Jacobians (2026-12-03) more lanes gained nothing: W2
        # 3.84 / 3.82 / 3.83 / 3.98 ms per training at 4 / 8 / 16 / 32, W1 68.7 / 73.6 ms at 4 / 8.
        # With the blocked and sample-space solves (2026-12-04) they gain a little: W2 2.35 / 2.10 /
        # 1.93 ms at 4 / 16 / 32, T64 flat, W1 51 / 54 ms at 2 / 4. The lane grouping is part of the
        # bits of every LM run that does not name it, so it stays 4
        return lo
    size = auto_lanes_per_step(num_samples=num_samples, in_dim=in_dim, bucket=bucket, depth=p.depth, dtype=p.dtype)
    per_device = max(1, int(lanes_per_round) // ROUND_DEVICES)
    return max(lo, min(size, 1 << (per_device.bit_length() - 1)))
