"""The paper's Fig. 9 as drawn, beside ours: heat map of the final loss and the per-N comparison.

Sohn et al. (UAI 2024), Sec. 7: 3-layer g, d = 10, K = 1000, a heat map of l_FT (mean squared error
over all K samples) over (N, m) on N = 1:10:491, m = 6:6:48, with a linear viridis colour bar and the
step line "smallest m with l_FT <= 0.04". :data:`PAPER_STEPS` is that step line as read from the
figure's vector graphics (``../shared/paper-fig9.md``; approximate). Our side reads the loss at the end
of the full budget (``mse_end`` of a run with ``stop_on_success = false``; a run that stopped at its
first success is flagged, its loss is the loss at stop). Plain numpy; the figure is
:func:`ftcjax.analysis.figures.fig_paper9`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import records as _rec

__all__ = ["PAPER_STEPS", "PAPER_GRID_M", "PAPER_THRESHOLD", "paper_min_m", "paper_setting_records", "instance_min_m", "comparison_table",
           "format_comparison"]

PAPER_THRESHOLD = 0.04
PAPER_GRID_M = (6, 12, 18, 24, 30, 36, 42, 48)
# (first N, last N, smallest m with l_FT <= 0.04), N on the paper's grid 1:10:491
PAPER_STEPS = ((1, 61, 6), (71, 71, 12), (81, 81, 6), (91, 101, 18), (111, 111, 24), (121, 121, 30),
               (131, 141, 24), (151, 201, 36), (211, 331, 42), (341, 491, 48))


def paper_min_m(N: int) -> Optional[int]:
    """The paper's step line at N (None off its range 1..491). Between its grid points (N = 1 mod 10)
    the value of the grid point at or below N is used, as the steps-mid drawing shows."""
    if not 1 <= N <= 491:
        return None
    g = 1 + 10 * ((int(N) - 1) // 10)
    for lo, hi, m in PAPER_STEPS:
        if lo <= g <= hi:
            return m
    return None


def _loss_by_width(rec: dict, member_loss: str = "mse_end") -> dict:
    """width -> best restart's final loss (mean over all K samples) for one record."""
    out = {}
    for p in rec.get("probes", []):
        vals = p.get(member_loss) or p.get("mse")
        out[int(p["width"])] = float(min(vals))
    return out


def instance_min_m(rec: dict, threshold: float = PAPER_THRESHOLD) -> float:
    """Smallest probed width whose final loss is <= threshold (inf when none): the paper's reading."""
    losses = _loss_by_width(rec)
    ok = [w for w, v in sorted(losses.items()) if v <= threshold]
    return float(ok[0]) if ok else math.inf


def _grid_step(widths: Sequence[int]) -> int:
    w = sorted(set(widths))
    return int(np.min(np.diff(w))) if len(w) > 1 else 1


def paper_setting_records(records: Sequence[dict]) -> list:
    """The records of the paper's Fig. 9 setting that probed every width (3-layer g, d = 10, K = 1000,
    grid rule): the ones the per-N comparison is about; empty when there are none."""
    return [r for r in records if int(r["cell"].get("depth", 0)) == 3 and int(r["cell"].get("K", 0)) == 1000
            and int(r["cell"].get("d", 0)) == 10 and _rec.search_rule_of(r).startswith("grid")]


def comparison_table(records: Sequence[dict]) -> list:
    """Per (member, N): our min-m (median over instances; inf = none <= 0.04 up to the top width), the
    paper's, their difference in grid steps, and whether g = 0 already passes (trivial).

    Rows ``{"member", "N", "n", "ours", "paper", "diff_steps", "trivial", "stopped_early"}`` sorted by
    member then N; ``diff_steps`` is None when either side is missing or ours is above the grid.
    """
    recs = [r for r in records if int(r["cell"].get("depth", 0)) == 3]
    if not recs:
        raise FTCInputError("records: no 3-layer records for the Fig. 9 comparison")
    step = _grid_step([p["width"] for r in recs for p in r.get("probes", [])])
    rows = []
    members = list(dict.fromkeys(r["cell"].get("member", "-") for r in recs))
    for mem in members:
        mine = [r for r in recs if r["cell"].get("member", "-") == mem]
        for N in sorted({int(r["cell"]["N"]) for r in mine}):
            rs = [r for r in mine if int(r["cell"]["N"]) == N]
            vals = [instance_min_m(r) for r in rs]
            ours = float(np.median(vals))
            paper = paper_min_m(N)
            diff = None if paper is None or not math.isfinite(ours) else (ours - paper) / step
            mz = np.median([float((r.get("problem") or {}).get("mse_zero", math.nan)) for r in rs])
            rows.append(dict(member=mem, N=N, n=len(rs), ours=ours, paper=paper, diff_steps=diff,
                             trivial=bool(mz <= PAPER_THRESHOLD),
                             stopped_early=any(r["cell"].get("stop_on_success", True) for r in rs)))
    return rows


def format_comparison(rows: Sequence[dict]) -> str:
    """Markdown: the per-N table and, per member, the fraction of N within one grid step of the paper."""
    lines = ["## Fig. 9: our smallest m with l_FT <= 0.04 against the paper's (ftcjax fig9)", "",
             "ours = median over instances of the smallest probed m whose loss at the end of the full budget "
             "is <= 0.04 ('>48' = none up to the top width); paper = its step line as drawn "
             "(../shared/paper-fig9.md, approximate); diff in grid steps of 6.", "",
             "| member | N | n | ours | paper | diff (steps) | g = 0 passes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ours = "%g" % r["ours"] if math.isfinite(r["ours"]) else ">48"
        diff = "-" if r["diff_steps"] is None else f"{r['diff_steps']:+g}"
        lines.append(f"| {r['member']} | {r['N']} | {r['n']} | {ours} | {r['paper'] or '-'} | {diff} | "
                     f"{'yes' if r['trivial'] else ''} |")
    lines += ["", "| member | N compared | within one step | exactly equal | ours above | ours below |",
              "|---|---|---|---|---|---|"]
    for mem in dict.fromkeys(r["member"] for r in rows):
        rs = [r for r in rows if r["member"] == mem and r["paper"] is not None]
        d = [r["diff_steps"] for r in rs]
        within = sum(1 for v in d if v is not None and abs(v) <= 1)
        lines.append(f"| {mem} | {len(rs)} | {within}/{len(rs)} ({within / max(len(rs), 1):.0%}) | "
                     f"{sum(1 for v in d if v == 0)} | {sum(1 for v in d if v is None or v > 0)} | "
                     f"{sum(1 for v in d if v is not None and v < 0)} |")
    if any(r["stopped_early"] for r in rows):
        lines += ["", "Note: some runs stopped at their first success (stop_on_success = true): their "
                  "losses are losses at stop, not after the full budget."]
    return "\n".join(lines) + "\n"
