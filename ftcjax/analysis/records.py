"""Reading sweep records and turning them into per-group instance arrays (plain Python + numpy).

A record is one instance (schema in the sweep store): ``WidthResult.to_dict()`` plus
``spec_hash``, ``instance_id``, ``cell`` (every grid axis, including ``depth``, ``N``, ``K``,
``d``, ``criterion``), ``replicate`` and ``protocol``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Iterable, Optional, Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError

__all__ = ["load_records", "group_records", "search_rule_of", "InstanceArrays", "instance_arrays", "group_label", "varying_axes",
           "protocol_summary", "width_from_probes", "width_interval"]


def load_records(run_dir) -> list:
    """All instance records of a run directory, or of several merged (read with the store's loader).

    Several directories: records of the same sweep (spec hash) and instance are counted once, so a
    directory and a copy of part of it merge to the directory itself.
    Raises FTCInputError when a run_dir does not exist.
    """
    if not isinstance(run_dir, (str, os.PathLike)):
        merged: dict = {}
        for one in run_dir:
            for rec in load_records(one):
                merged.setdefault((rec.get("spec_hash"), rec.get("instance_id")), rec)
        return list(merged.values())
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FTCInputError(f"run_dir: {run_dir!r} is not a directory")
    from ftcjax.sweep.store import RunDir  # orchestration layer; imported lazily

    # the store's loader tolerates a torn last line (a sweep may be running) and dedupes by instance id
    return RunDir(run_dir).load().values()


# Keys that identify an instance inside a group rather than a group (the fit axis is excluded too).
_INSTANCE_KEYS = ("replicate", "seed_index", "instance")


_LEGACY_RULES = {"bisect": "bisect-v1", "grid": "grid-v1"}


def search_rule_of(rec: dict) -> str:
    """The versioned search rule behind a record (records written before versioning: from ``strategy``)."""
    rule = rec.get("search_rule")
    if rule:
        return str(rule)
    strategy = rec.get("strategy") or (rec.get("protocol") or {}).get("strategy") or "bisect"
    return _LEGACY_RULES.get(strategy, str(strategy))


def group_records(records: Iterable[dict], *, over: str = "N") -> dict:
    """Group records by every cell axis except ``over`` (default: N, the fit axis), and by search rule.

    Returns an ordered dict {group key: [records]}; the key is a tuple of sorted (axis, value)
    pairs (values made hashable) so that any grid axis (lr, steps, dtype, ...) separates groups.
    Widths found by different search rules (``search_rule``) measure different things (a bisection
    transition, a typical width w50), so they always land in different groups, never in one fit.
    """
    groups: dict = {}
    for rec in records:
        cell = rec.get("cell")
        if not isinstance(cell, dict):
            raise FTCInputError(f"record {rec.get('instance_id')!r}: field 'cell' missing or not a dict")
        key = tuple(sorted([(k, _hashable(v)) for k, v in cell.items()
                            if k != over and k not in _INSTANCE_KEYS] + [("search_rule", search_rule_of(rec))]))
        groups.setdefault(key, []).append(rec)
    return dict(sorted(groups.items(), key=lambda kv: _sort_key(kv[0])))


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def _sort_key(key):
    return tuple((k, (0, v) if isinstance(v, (int, float)) else (1, str(v))) for k, v in key)


_ALWAYS = ("depth", "K", "N", "d", "criterion")


def varying_axes(keys: Iterable[tuple]) -> set:
    """Axes whose value differs between the given group keys (the ones a label must show)."""
    vals: dict = {}
    for key in keys:
        for k, v in key:
            vals.setdefault(k, set()).add(v)
    return {k for k, v in vals.items() if len(v) > 1}


def group_label(key: tuple, *, skip: Sequence[str] = (), show: Optional[Iterable[str]] = None) -> str:
    """Short human label for a group key, e.g. 'depth=3 K=1000 d=10 criterion=strict'.

    The cell of a real sweep holds every protocol field (chunk, unroll, ...); with ``show`` given only
    the core axes (depth, K, N, d, criterion) and the axes in ``show`` (typically those that vary
    between groups, :func:`varying_axes`) are printed.
    """
    items = dict(key)
    extra = [k for k, _ in key if k not in _ALWAYS and (show is None or k in set(show))]
    parts = [f"{k}={items[k]}" for k in _ALWAYS + tuple(extra) if k in items and k not in skip]
    return " ".join(parts)


def width_from_probes(rec: dict, criterion: str) -> tuple:
    """Minimal width of one record under ``criterion`` from its probes.

    Returns (width or None, censored, trivial). Exact only when the probes cover every candidate
    width (grid strategy); for a bisection the probes of another criterion are a subset, and the
    smallest passing probe is only an upper bound, so callers use this only for grid records.
    A probe passes by the search's own rule: at least ``min_successes`` restarts meet the criterion
    (:func:`ftcjax.sweep.record.probe_passes`; the record's protocol says how many).
    """
    from ftcjax.sweep.record import probe_passes

    probes = sorted(rec.get("probes", []), key=lambda p: p["width"])
    passing = [p["width"] for p in probes if probe_passes(rec, p, criterion)]
    if not passing:
        return None, True, False
    w = min(passing)
    trivial = w == 0
    return w, False, trivial


@dataclasses.dataclass(frozen=True)
class InstanceArrays:
    """Per-instance arrays of one group, all shape (n,).

    widths: float, NaN where censored. lower/upper: the interval the searched width is known to lie
    in (:func:`width_interval`; upper = inf when censored, NaN for trivial instances). ceiling: largest probed width (NaN if no probe).
    censored: True for EVERY instance without a width (the statistics place all of them above every
    measured width). unresolved: the subset of those that the search did NOT censor (``min_width``
    None while ``censored`` is False: an adaptive search that spent its budget without deciding
    p(top) against 1/2); a count of censored instances is ``censored & ~unresolved``.
    mse_zero: loss of g = 0 (fraction of the paper's threshold tells how trivial a cell is).
    """

    N: np.ndarray
    K: np.ndarray
    widths: np.ndarray
    censored: np.ndarray
    trivial: np.ndarray
    non_monotone: np.ndarray
    ceiling: np.ndarray
    mse_zero: np.ndarray
    trainings: np.ndarray
    instance_id: tuple
    lower: np.ndarray = None  # (n,) the width lies in (lower, upper]: see width_interval
    upper: np.ndarray = None
    unresolved: np.ndarray = None  # (n,) no width and not censored by the search (see above)


def width_interval(rec: dict, width: Optional[float], censored: bool) -> tuple:
    """``(lower, upper)``: the reported width lies in ``(lower, upper]`` as far as the probes tell.

    A measured width ``w`` is bracketed by the widest probed width below it (bisection and the grid
    probed the previous candidate and it failed; the adaptive rule stores its bracket); ``lower = 0``
    when nothing below was probed. A censored instance lies above its largest probed width
    (``upper = inf``); an adaptive instance left ``unresolved`` lies above the probed width below the top.
    """
    probed = sorted({float(p["width"]) for p in rec.get("probes", [])})
    if censored or width is None:
        top = probed[-1] if probed else math.nan
        if rec.get("status") == "unresolved" and len(probed) > 1:
            top = probed[-2]
        return top, math.inf
    bracket = rec.get("existence_bracket" if rec.get("min_width_is") == "existence" else "w50_bracket")
    if bracket and rec.get("search_rule", "").startswith("adaptive") and bracket[1] == width:
        return float(bracket[0]), float(width)
    below = [w for w in probed if w < width]
    return (below[-1] if below else 0.0), float(width)


def instance_arrays(records: Sequence[dict], *, criterion: Optional[str] = None) -> InstanceArrays:
    """Stack records into arrays. ``criterion`` given: recompute widths from the probes (grid records)."""
    n = len(records)
    N = np.zeros(n)
    K = np.zeros(n)
    widths = np.full(n, np.nan)
    censored = np.zeros(n, bool)
    trivial = np.zeros(n, bool)
    nonmono = np.zeros(n, bool)
    ceiling = np.full(n, np.nan)
    mse_zero = np.full(n, np.nan)
    trainings = np.zeros(n)
    lower = np.full(n, np.nan)
    upper = np.full(n, np.nan)
    unresolved = np.zeros(n, bool)
    for i, rec in enumerate(records):
        cell = rec["cell"]
        prob = rec.get("problem", {})
        N[i] = float(cell.get("N", prob.get("N", np.nan)))
        K[i] = float(cell.get("K", prob.get("K", np.nan)))
        if criterion is None:
            w = rec.get("min_width")
            censored[i] = bool(rec.get("censored", w is None))
            trivial[i] = bool(rec.get("trivial", False))
            # no width, yet not censored: the search left it undecided (status "unresolved")
            unresolved[i] = w is None and not censored[i] and not trivial[i]
            if trivial[i] and not censored[i]:
                # g = 0 passes: no neuron is needed. The search still reports the smallest candidate
                # that "succeeded", which measures the candidate list, not the problem.
                w = 0
        else:
            w, censored[i], trivial[i] = width_from_probes(rec, criterion)
        if not censored[i] and w is not None:
            widths[i] = float(w)
        if censored[i] or w is None:
            censored[i] = True
        if not trivial[i]:
            lower[i], upper[i] = width_interval(rec, None if censored[i] else float(w), bool(censored[i]))
        nonmono[i] = bool(rec.get("non_monotone", False))
        pw = [p["width"] for p in rec.get("probes", [])]
        if pw:
            ceiling[i] = float(max(pw))
        if "mse_zero" in prob:
            mse_zero[i] = float(prob["mse_zero"])
        trainings[i] = float(rec.get("trainings", 0))
    return InstanceArrays(N=N, K=K, widths=widths, censored=censored, trivial=trivial,
                          non_monotone=nonmono, ceiling=ceiling, mse_zero=mse_zero,
                          trainings=trainings,
                          instance_id=tuple(str(r.get("instance_id")) for r in records), lower=lower, upper=upper,
                          unresolved=unresolved)


def protocol_summary(records: Iterable[dict]) -> tuple:
    """(shared, varying): protocol fields equal across records, and those that differ (sorted values)."""
    vals: dict = {}
    n = 0
    for rec in records:
        n += 1
        for k, v in (rec.get("protocol") or {}).items():
            vals.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    shared = {k: json.loads(next(iter(v))) for k, v in vals.items() if len(v) == 1}
    varying = {k: [json.loads(x) for x in sorted(v)] for k, v in vals.items() if len(v) > 1}
    return shared, varying
