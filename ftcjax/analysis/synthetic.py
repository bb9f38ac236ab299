"""Synthetic sweep records with a known exponent (for tests and for checking the analysis itself).

Records follow the sweep record schema (common notes): ``WidthResult.to_dict()`` plus
``spec_hash``, ``instance_id``, ``cell``, ``replicate``, ``protocol``. Each instance has a true
minimal width ``w* = round(c N^alpha exp(sigma eps))``; probes are written at EVERY candidate width
(grid strategy) so that other criteria can be recomputed, with a loss model that makes the paper
criterion (mse <= 0.04) trivially satisfied at small N/K, as in the paper's Fig. 9.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["synthetic_records"]


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
            out.append({
                "min_width": mw, "censored": mw is None, "trivial": bool(trivial), "non_monotone": nonmono,
                "trainings": len(widths) * restarts,
                "problem": {"N": int(n), "K": int(K), "z_max": 1.0, "mse_zero": mse_zero},
                "probes": probes, "spec_hash": "synthetic", "instance_id": f"N{n}-r{r}-{_cellkey(cell)}",
                "cell": cell, "replicate": r,
                "protocol": {"depth": depth, "optimizer": "adam", "steps": 100, "restarts": restarts,
                             "criterion": criterion, "tol": 1e-3, "paper_threshold": 0.04,
                             "dtype": "float64", "strategy": "grid", "widths": list(widths)},
                "true_width": w_true,
            })
    return out


def _next_width(widths, w):
    larger = [x for x in widths if x > w]
    return larger[0] if larger else None


def _cellkey(cell):
    return "-".join(f"{k}{v}" for k, v in sorted(cell.items()) if k != "N")
