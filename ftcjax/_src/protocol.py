"""The training protocol: every choice behind a reported width, in one record.

A :class:`Protocol` is split in two for the kernels: a hashable *static* part (shapes, optimizer kind,
segment length; changing it compiles a new kernel) and *dynamic* per-lane arrays (learning rate, step
budget, tolerances, criterion; changing them never recompiles).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from ftcjax._src.criteria import CRITERIA
from ftcjax._src.errors import FTCInputError
from ftcjax._src.schedules import SCHEDULES

OPTIMIZERS = ("adam", "lbfgs")
PRECISIONS = ("highest", "high", "default")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How ``g`` is trained and judged.

    Attributes:
      depth: layers of ``g`` (2, 3, or more); ``m`` counts the neurons of all hidden layers.
      split: integer weights distributing ``m`` over hidden layers (default equal: ``d2 = ceil(m/2)``).
      optimizer: ``"adam"`` (with ``schedule``) or ``"lbfgs"`` (optax's, zoom line search).
      learning_rate: Adam's peak learning rate (unused by L-BFGS, which line-searches).
      schedule: ``"constant"``, ``"cosine"`` (decay to 0 over ``steps``) or ``"warmup_cosine"`` (5% warmup).
      steps: optimizer steps per training (a budget: a run stops at its first success).
      segment: steps per kernel call; between calls the whole batch stops if every run has finished.
      restarts: independent initialisations per (instance, width); they are just more lanes.
      success_fraction: a width succeeds when at least ``max(1, ceil(fraction * restarts))`` restarts do
        (0: any restart).
      criterion: the deciding criterion, one of ``paper``, ``strict``, ``relative``.
      tol, paper_threshold, rel_eps: the criteria's tolerances (see :mod:`ftcjax._src.criteria`).
      dtype: ``"float64"`` (reference) or ``"float32"``.
      matmul_precision: XLA matmul precision (``"highest"`` avoids TF32 on GPUs).
      lbfgs_memory: L-BFGS history size.
      lanes_per_step: runs vmapped together inside a device per lax.map step (keeps the working set in cache on CPU).
      unroll: ``lax.scan`` unroll of the training loop.
      train_seed: folded into every training key when nonzero: the same instances trained from new
        initialisations (the noise floor of a convergence check); 0 keeps the original keys.
    """

    depth: int = 2
    split: tuple | None = None
    optimizer: str = "adam"
    learning_rate: float = 1e-2
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
    lanes_per_step: int = 4
    unroll: int = 4
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
        d["init"] = "pytorch-default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), neuron j from fold_in(key, j)"
        d["loss"] = "mean over all K samples of (g(x) - z)^2, full batch"
        d["stop"] = "a run stops (parameters frozen) at its first step meeting the decision criterion"
        return d

    @property
    def min_successes(self) -> int:
        return max(1, math.ceil(self.success_fraction * self.restarts))


class StaticConfig(NamedTuple):
    """The compile-time part of a protocol plus the shapes of one kernel."""

    depth: int
    split: tuple | None
    optimizer: str
    schedule: str
    segment: int
    dtype: str
    lbfgs_memory: int
    lanes_per_step: int
    unroll: int
    bucket: int
    in_dim: int
    num_samples: int


def _finite_positive(name, value, *, allow_zero=False):
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
    if p.optimizer not in OPTIMIZERS:
        raise FTCInputError(f"optimizer: unknown value {p.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if p.schedule not in SCHEDULES:
        raise FTCInputError(f"schedule: unknown value {p.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if p.criterion not in CRITERIA:
        raise FTCInputError(f"criterion: unknown value {p.criterion!r}; choose one of {', '.join(CRITERIA)}")
    if p.dtype not in ("float32", "float64"):
        raise FTCInputError(f"dtype: unknown value {p.dtype!r}; choose float32 or float64")
    if p.matmul_precision not in PRECISIONS:
        raise FTCInputError(f"matmul_precision: unknown value {p.matmul_precision!r}; choose one of {', '.join(PRECISIONS)}")
    for name in ("steps", "segment", "restarts", "lbfgs_memory", "lanes_per_step", "unroll"):
        _positive_int(name, getattr(p, name))
    if isinstance(p.train_seed, bool) or not isinstance(p.train_seed, (int, np.integer)) or not 0 <= p.train_seed < 2**32:
        raise FTCInputError(f"train_seed: {p.train_seed!r} must be an integer in [0, 2**32)")
    _finite_positive("learning_rate", p.learning_rate)
    _finite_positive("tol", p.tol)
    _finite_positive("paper_threshold", p.paper_threshold)
    _finite_positive("rel_eps", p.rel_eps)
    _finite_positive("success_fraction", p.success_fraction, allow_zero=True)
    if p.success_fraction > 1:
        raise FTCInputError(f"success_fraction: {p.success_fraction!r} must be in [0, 1]")
    if p.split is not None and (len(p.split) != p.depth - 1 or min(p.split) < 1):
        raise FTCInputError(f"split: {p.split!r} must be {p.depth - 1} positive integer weights")


def static_config(p: Protocol, *, bucket: int, in_dim: int, num_samples: int) -> StaticConfig:
    return StaticConfig(depth=p.depth, split=p.split, optimizer=p.optimizer, schedule=p.schedule,
                        segment=min(p.segment, p.steps), dtype=p.dtype, lbfgs_memory=p.lbfgs_memory,
                        lanes_per_step=p.lanes_per_step, unroll=p.unroll, bucket=int(bucket), in_dim=int(in_dim),
                        num_samples=int(num_samples))
