"""Synthetic sweep records with a known exponent (for tests and for checking the analysis itself).

Records are built with :func:`ftcjax.sweep.record.make_record`, the one definition the runner uses. Each instance has a true
minimal width ``w* = round(c N^alpha exp(sigma eps))``; probes are written at EVERY candidate width
(grid strategy) so that other criteria can be recomputed, with a loss model that makes the paper
criterion (mse <= 0.04) trivially satisfied at small N/K, as in the paper's Fig. 9.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ftcjax.sweep.plan import instance_id  # the store checks ids against it
from ftcjax.sweep.record import make_record

__all__ = ["synthetic_records", "step_p", "logistic_p", "dip_p", "window_p", "true_w50", "bernoulli_trainer", "search_records"]


def synthetic_records(*, Ns: Sequence[int], depth: int = 3, alpha: float = 0.5, c: float = 3.0,
                      sigma: float = 0.15, replicates: int = 5, K: int = 1000, d: int = 10,
                      criterion: str = "strict", widths: Sequence[int] = tuple(range(1, 49)),
                      restarts: int = 2, seed: int = 0, non_monotone_rate: float = 0.0,
                      extra_cell: dict | None = None) -> list:
    """Records for every (N, replicate) with a known exponent ``alpha``.

    Args:
      Ns: N values (cells). depth, K, d, criterion: cell axes written into each record.
      alpha, c, sigma: true width model ``c N^alpha`` with log-normal noise of scale sigma.
      widths: candidate widths (sorted); the largest is the ceiling: w* above it is censored.
      non_monotone_rate: probability that the probe just above w* fails (non-monotone trainability).
      extra_cell: extra grid axes to add to every cell (e.g. {"lr": 0.01}).
    Returns a list of dicts (one per instance).
    """
    rng = np.random.default_rng(seed)
    widths = sorted(int(w) for w in widths)
    out = []
    for n in Ns:
        for r in range(replicates):
            w_true = int(max(1, round(c * n ** alpha * np.exp(sigma * rng.standard_normal()))))
            # loss of g = 0: mean of z^2 over K with z ~ U[-1,1]-U[-1,1] on N points ~ (N/K)(2/3)
            mse_zero = float((n / K) * (2.0 / 3.0) * np.exp(0.1 * rng.standard_normal()))
            skip = int(w_true) if rng.random() < non_monotone_rate else None
            probes = []
            for w in widths:
                # strict success iff w >= w* (except an optional failing probe just above w*)
                ok = (w >= w_true) and not (skip is not None and w == _next_width(widths, w_true))
                frac = min(1.0, w / w_true)
                mse = [float(mse_zero * (1.0 - frac) ** 2 * np.exp(0.2 * rng.standard_normal())
                             + (1e-9 if ok else 1e-5)) for _ in range(restarts)]
                strict = [bool(ok)] * restarts
                paper = [m <= 0.04 for m in mse]
                relative = [bool(ok) or m <= 1e-3 * mse_zero for m in mse]
                probes.append({"width": w, "success": bool(ok), "successes": int(ok) * restarts,
                               "restarts": restarts, "mse": mse, "max_err": [float(np.sqrt(m)) for m in mse],
                               "steps": [100] * restarts,
                               "passed": {"paper": paper, "strict": strict, "relative": relative}})
            decision = {p["width"]: any(p["passed"][criterion]) for p in probes}
            passing = [w for w in widths if decision[w]]
            trivial = criterion == "paper" and mse_zero <= 0.04
            mw = (0 if trivial else (min(passing) if passing else None))
            nonmono = bool(passing) and any(not decision[w] for w in widths if w > min(passing))
            cell = {"depth": depth, "N": int(n), "K": int(K), "d": int(d), "data": "gaussian",
                    "labels": "uniform", "frozen": "interpolant", "criterion": criterion}
            cell.update(extra_cell or {})
            result = {"min_width": mw, "censored": mw is None, "trivial": bool(trivial), "non_monotone": nonmono,
                      "trainings": len(widths) * restarts, "strategy": "grid",
                      "problem": {"N": int(n), "K": int(K), "z_max": 1.0, "mse_zero": mse_zero},
                      "probes": probes}
            out.append(make_record(
                result, spec_hash="synthetic", instance_id=instance_id(cell, r), cell=cell, replicate=r,
                protocol={"depth": depth, "optimizer": "adam", "steps": 100, "restarts": restarts,
                          "criterion": criterion, "tol": 1e-3, "paper_threshold": 0.04,
                          "dtype": "float64", "strategy": "grid", "widths": list(widths)},
                true_width=w_true))
    return out


def _next_width(widths, w):
    larger = [x for x in widths if x > w]
    return larger[0] if larger else None


# ----------------------------------------------------------------------------------------------
# Synthetic trainers with a known success probability p(w), for the width search itself.


def step_p(w_true: float, *, level: float = 1.0):
    """p(w) = level for w >= w_true, else 0 (a sharp transition; level < 1 is a plateau)."""
    return lambda w: np.where(np.asarray(w, float) >= w_true, level, 0.0)


def logistic_p(w50: float, *, scale: float = 0.15):
    """p(w) = 1 / (1 + exp(-(log w - log w50) / scale)): 1/2 at ``w50``, transition width ~ scale in log w."""
    return lambda w: 1.0 / (1.0 + np.exp(-(np.log(np.asarray(w, float)) - np.log(w50)) / scale))


def dip_p(w50: float, dip_at: Sequence[float], *, depth: float = 0.9, scale: float = 0.15):
    """A logistic p(w) lowered by the factor ``1 - depth`` at the widths ``dip_at`` (non-monotone)."""
    base = logistic_p(w50, scale=scale)
    dips = np.asarray(list(dip_at), float)
    return lambda w: base(w) * np.where(np.isin(np.asarray(w, float), dips), 1.0 - depth, 1.0)


def window_p(lower: float, upper: float, *, level: float = 1.0):
    """p(w) = level for lower <= w <= upper, else 0 (trainable only in a window of widths)."""
    return lambda w: np.where((np.asarray(w, float) >= lower) & (np.asarray(w, float) <= upper), level, 0.0)


def true_w50(p_fn, widths) -> Optional[int]:
    """Smallest candidate with p(w) >= 1/2 (the typical width the search should recover), or None."""
    w = np.asarray(widths)
    ok = np.flatnonzero(np.asarray(p_fn(w)) >= 0.5)
    return int(w[ok[0]]) if ok.size else None


def bernoulli_trainer(p_fns: Sequence, *, restarts: int, seed: int = 0, min_successes: int = 1,
                      calls: Optional[list] = None):
    """A probe function for :func:`ftcjax.search_widths` whose instance i succeeds with p_fns[i](w).

    The restarts of a probe of instance i at width w succeed iff ``u < p(w)`` with ``u`` drawn from
    ``numpy.random.default_rng([seed, i, w, first_restart])``: independent, reproducible draws, and a
    repeated probe (larger ``first_restart``) draws fresh ones, as with the kernel's lane keys. ``calls``: optional list that receives the number of probes of every call (one per round).
    """
    from ftcjax import Probe

    def probe(ids, widths, first_restart):
        if calls is not None:
            calls.append(len(ids))
        out = []
        for i, w, f in zip(ids, widths, first_restart):
            p = float(p_fns[int(i)](np.asarray([w]))[0])
            u = np.random.default_rng([seed, int(i), int(w), int(f)]).random(restarts)
            ok = (u < p).tolist()
            k = int(sum(ok))
            out.append(Probe(width=int(w), success=k >= min_successes, successes=k, restarts=restarts,
                             mse=[0.0 if o else 1.0 for o in ok], max_err=[0.0 if o else 1.0 for o in ok],
                             steps=[1] * restarts, passed={"strict": ok}, first_restart=int(f)))
        return out

    return probe


def search_records(p_fns: Sequence, *, Ns: Sequence[int], widths: Sequence[int], restarts: int = 2,
                   seed: int = 0, strategy: str = "adaptive", steps: int = 100, depth: int = 3,
                   K: int = 100) -> list:
    """Sweep-like records of the real search run on :func:`bernoulli_trainer` instances.

    ``p_fns[i]`` is the success model of instance i, placed in cell ``N = Ns[i]`` with replicate i (so
    two calls with the same ``Ns`` pair their instances). ``seed`` plays the training seed: another
    seed is a reseeded run of the same instances. ``steps`` is only written into the protocol.
    """
    from ftcjax import search_widths
    from ftcjax._src.search import result_from_search

    widths = sorted(int(w) for w in widths)
    found = search_widths(bernoulli_trainer(p_fns, restarts=restarts, seed=seed), len(p_fns), widths, strategy)
    out = []
    for i, n in enumerate(Ns):
        rec = result_from_search(found, i, strategy=strategy, problem={"N": int(n), "K": int(K)}).to_dict()
        cell = {"depth": depth, "N": int(n), "K": int(K), "d": 2, "criterion": "strict", "steps": steps,
                "restarts": restarts, "train_seed": seed}
        rec.update(spec_hash="synthetic", instance_id=f"N{n}-r{i}-s{seed}-st{steps}-R{restarts}", cell=cell,
                   replicate=i, protocol={"depth": depth, "steps": steps, "restarts": restarts, "train_seed": seed})
        out.append(rec)
    return out
