"""The smallest trainable width per instance, searched in lockstep across a batch.

Rule (trainability need not be monotone in the width, so the rule is stated, not assumed away):

* A *probe* trains ``restarts`` runs of one instance at one width; the width *succeeds* when at least
  ``protocol.min_successes`` runs meet the decision criterion.
* ``strategy="bisect"``: first probe the largest candidate. If it fails the instance is **censored**
  (``min_width = None``; never reported as the bound). Under monotone trainability its width exceeds
  the range; without it, a smaller width may still train (measured on W1-like instances with the
  relative criterion: 6 of 16 failed at the top although a smaller width trained, see
  benchmarks/README.md); ``strategy="grid"`` tells the two apart. Otherwise bisect over the sorted candidates keeping the invariant "``hi`` succeeded, every
  candidate below ``lo`` failed"; the result is a candidate that succeeded while the next smaller
  candidate failed (or the smallest candidate). Under monotone trainability it is the minimal width;
  without it, it is a success/failure transition and bisection cannot see more.
* ``strategy="grid"``: probe every candidate; ``min_width`` is the smallest success and
  ``non_monotone`` flags a failure above it.
* ``trivial`` flags instances where ``g = 0`` already meets the decision criterion (e.g. the paper's
  loss threshold for small N/K): any width "succeeds" and the width says nothing about capacity.

All instances advance one round at a time, and every round is ONE kernel call over
(active instances x restarts) lanes, each lane at its own width through the mask. Lane keys are
``fold_in(fold_in(key, width), restart)``, so a probe's result does not depend on the round or the
batch it ran in.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ftcjax._src import criteria
from ftcjax._src.errors import FTCInputError
from ftcjax._src.fit import fit_batch, validate_widths
from ftcjax._src.problems import Problem
from ftcjax._src.protocol import Protocol

STRATEGIES = ("bisect", "grid")


@dataclasses.dataclass
class Probe:
    """Training ``restarts`` runs of one instance at one width (per-run lists have length ``restarts``)."""

    width: int
    success: bool
    successes: int
    restarts: int
    mse: list
    max_err: list
    steps: list
    passed: dict  # criterion name -> list of bools

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class WidthResult:
    """Outcome of the min-width search on one instance (see the module docstring for the rule)."""

    min_width: int | None
    censored: bool
    trivial: bool
    non_monotone: bool
    trainings: int
    strategy: str
    problem: dict
    probes: list  # of Probe, in the order they ran

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["probes"] = [p.to_dict() for p in self.probes]
        return d


def width_grid(lower: int, upper: int, step: int = 1) -> list:
    """Candidate widths ``lower, lower + step, ..., <= upper``, validated."""
    for name, v in (("lower", lower), ("upper", upper), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise FTCInputError(f"widths.{name}: {v!r} must be an integer >= 1")
    if lower > upper:
        raise FTCInputError(f"widths.lower: {lower} exceeds widths.upper = {upper}")
    return list(range(int(lower), int(upper) + 1, int(step)))


def _candidates(widths: Sequence[int], protocol: Protocol) -> np.ndarray:
    w = np.asarray(list(widths))
    if w.ndim != 1 or w.size == 0:
        raise FTCInputError(f"widths: {list(widths)!r} must be a non-empty list of integers")
    validate_widths(w, protocol)
    return np.unique(w.astype(np.int64))


def search_widths(probe: Callable, num: int, widths: Sequence[int], strategy: str = "bisect"):
    """Run the lockstep search with any ``probe`` function (the kernel, or a synthetic trainer).

    Args:
      probe: ``probe(instances (n,) int, widths (n,) int) -> list of n`` :class:`Probe`.
      num: number of instances.
      widths: sorted distinct candidate widths.
      strategy: ``"bisect"`` or ``"grid"``.
    Returns:
      ``(min_width, censored, non_monotone, probes)``: lists of length ``num``; ``probes[i]`` in run order.
    """
    if strategy not in STRATEGIES:
        raise FTCInputError(f"strategy: unknown value {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    widths = np.asarray(widths)
    probes = [[] for _ in range(num)]

    def run(ids, idx):
        for i, p in zip(ids, probe(np.asarray(ids), widths[np.asarray(idx)])):
            probes[i].append(p)
        return [p.success for p in (probes[i][-1] for i in ids)]

    if strategy == "grid":
        ids = np.repeat(np.arange(num), len(widths))
        idx = np.tile(np.arange(len(widths)), num)
        run(ids, idx)
        result, censored, nonmono = [], [], []
        for i in range(num):
            ok = np.array([p.success for p in probes[i]])
            first = int(np.argmax(ok)) if ok.any() else None
            result.append(None if first is None else int(widths[first]))
            censored.append(first is None)
            nonmono.append(first is not None and not ok[first:].all())
        return result, censored, nonmono, probes

    top = len(widths) - 1
    ok_top = run(list(range(num)), [top] * num)
    lo = np.zeros(num, int)
    hi = np.full(num, top)
    active = [i for i in range(num) if ok_top[i]]
    while True:
        active = [i for i in active if lo[i] < hi[i]]
        if not active:
            break
        mids = [(lo[i] + hi[i]) // 2 for i in active]
        for i, mid, ok in zip(active, mids, run(active, mids)):
            if ok:
                hi[i] = mid
            else:
                lo[i] = mid + 1
    result = [int(widths[hi[i]]) if ok_top[i] else None for i in range(num)]
    return result, [not ok for ok in ok_top], [False] * num, probes


def _kernel_probe(problems: Problem, keys, protocol: Protocol, bucket: int, devices):
    R = protocol.restarts
    # Every round is padded to the first round's lane count (all instances x restarts): later rounds
    # reuse the compiled kernels instead of compiling new lane counts. Bisection keeps almost every
    # instance active in every round, so the padding costs little (measured on the default sweep:
    # cold 42 s -> 22 s with identical answers; warm 5.0 s -> 5.3 s).
    full = problems.x.shape[0] * R

    def probe(ids, ws):
        lane_ids = np.repeat(ids, R)
        lane_w = np.repeat(ws, R).astype(np.int64)
        restart = np.tile(np.arange(R), len(ids))
        lane_keys = jax.vmap(lambda k, w, r: jax.random.fold_in(jax.random.fold_in(k, w), r))(
            keys[lane_ids], jnp.asarray(lane_w, jnp.uint32), jnp.asarray(restart, jnp.uint32))
        batch = jax.tree.map(lambda a: a[lane_ids], problems)
        res = fit_batch(batch, lane_w, keys=lane_keys, protocol=protocol, bucket=bucket,
                        devices=devices, pad_to=full)
        out = []
        for j, w in enumerate(ws):
            s = slice(j * R, (j + 1) * R)
            n_ok = int(np.sum(res.success[s]))
            out.append(Probe(
                width=int(w), success=n_ok >= protocol.min_successes, successes=n_ok, restarts=R,
                mse=[float(v) for v in res.mse[s]], max_err=[float(v) for v in res.max_err[s]],
                steps=[int(v) for v in res.steps[s]],
                passed={name: [bool(v) for v in res.passed[s, c]] for c, name in enumerate(criteria.CRITERIA)}))
        return out

    return probe


def _problem_summary(problems: Problem, protocol: Protocol) -> tuple:
    """Per-instance facts stored beside the search, and whether ``g = 0`` already decides success."""
    z = np.asarray(problems.z, dtype=np.float64)
    with jax.enable_x64(True):  # judge g = 0 in float64 whatever the training dtype
        flags = np.asarray(criteria.trivially_satisfied(
            jnp.asarray(z), protocol.paper_threshold, protocol.tol, protocol.rel_eps))
    n_changed = np.asarray(problems.changed).sum(axis=1)
    fit = np.asarray(problems.f_fit_mse, dtype=np.float64)
    summaries = [dict(N=int(n_changed[i]), K=int(z.shape[1]), z_max=float(np.abs(z[i]).max()),
                      mse_zero=float(np.mean(z[i] ** 2)),
                      f_fit_mse=None if np.isnan(fit[i]) else float(fit[i]),
                      trivial_by=dict(zip(criteria.CRITERIA, (bool(v) for v in flags[i]))))
                 for i in range(z.shape[0])]
    return summaries, flags[:, criteria.criterion_index(protocol.criterion)]


def min_width_batch(problems: Problem, *, keys, protocol: Protocol, widths: Sequence[int],
                    strategy: str = "bisect", devices=None) -> list:
    """Smallest trainable width of each problem in a batch.

    Args:
      problems: batch with leading axis ``(n,)``.
      keys: ``(n,)`` PRNG keys, one per instance (lane keys fold in width and restart).
      protocol: training protocol (restarts, criterion, ...).
      widths: candidate total widths (sorted and deduplicated here), e.g. :func:`width_grid`.
      strategy: ``"bisect"`` (about ``1 + log2(len(widths))`` probes) or ``"grid"`` (every width).
      devices: devices to shard lanes over (default all local devices).
    Returns:
      list of ``n`` :class:`WidthResult`.
    """
    cand = _candidates(widths, protocol)
    n = problems.x.shape[0]
    keys = jnp.asarray(keys)
    if keys.shape[0] != n:
        raise FTCInputError(f"keys: need {n} keys (one per instance), got {keys.shape[0]}")
    probe = _kernel_probe(problems, keys, protocol, int(cand.max()), devices)
    mins, censored, nonmono, probes = search_widths(probe, n, cand, strategy)
    summaries, trivial = _problem_summary(problems, protocol)
    out = []
    for i in range(n):
        out.append(WidthResult(min_width=mins[i], censored=censored[i], trivial=bool(trivial[i]),
                               non_monotone=nonmono[i], trainings=len(probes[i]) * protocol.restarts,
                               strategy=strategy, problem=summaries[i], probes=probes[i]))
    return out


def min_width(problem: Problem, *, key, protocol: Protocol, widths: Sequence[int],
              strategy: str = "bisect") -> WidthResult:
    """Smallest trainable width of one problem (see :func:`min_width_batch`)."""
    batch = jax.tree.map(lambda a: jnp.asarray(a)[None], problem)
    return min_width_batch(batch, keys=jnp.asarray(key)[None], protocol=protocol, widths=widths,
                           strategy=strategy)[0]
