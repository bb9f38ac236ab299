"""The exponent report: per-group fits with theory beside them, flags, protocol (table/markdown/csv).

A *group* is every cell axis except N (depth, K, d, criterion, data, labels, frozen and any other
grid axis such as a learning rate); within a group the instances are fitted against N
(:mod:`ftcjax.analysis.stats`). Plain Python; no matplotlib.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from typing import Optional, Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import records as _rec
from ftcjax.analysis import stats as _stats

__all__ = ["GroupReport", "Report", "build_report", "choose_axis", "format_report", "FORMATS"]

FORMATS = ("table", "markdown", "csv", "json")


@dataclasses.dataclass(frozen=True)
class GroupReport:
    """Analysis of one group. ``fit``/``sqrt_fit`` are None when not computable (``fit_error`` says why).

    ``trivial_cells``: N values where EVERY instance is trivially satisfied by g = 0;
    ``partly_trivial_cells``: N values where some but not all are.
    ``n_censored`` counts the instances the search censored; ``n_unresolved`` (at ``unresolved_cells``)
    those it left without a width and without censoring (an adaptive search whose budget ran out
    before p(top) was decided against 1/2). Neither has a width; they are counted apart, never merged.
    """

    key: tuple
    label: str
    depth: Optional[int]
    theory: Optional[float]
    fit: Optional[_stats.ExponentFit]
    sqrt_fit: Optional[_stats.SqrtFit]
    fit_error: Optional[str]
    cells: tuple
    n_instances: int
    n_censored: int
    n_trivial: int
    n_non_monotone: int
    trivial_cells: tuple
    partly_trivial_cells: tuple
    censored_cells: tuple
    mse_zero_median: tuple  # per cell (x, median loss of g = 0)
    over: str = "N"  # the fit axis: N (exponent in N) or K (dependence on K at fixed N)
    saturated_cells: tuple = ()  # x values with some K < 3N + 2 (the worst-case bounds depend on K there)
    mle: Optional[_stats.CensoredFit] = None  # interval-censored MLE over every non-trivial instance
    mle_error: Optional[str] = None
    outliers: tuple = ()  # (x, instance id, width, cell median) for widths > 3x their cell median
    near_trivial_cells: tuple = ()  # x values where passing needs < 50% loss reduction from g = 0
    n_unresolved: int = 0
    unresolved_cells: tuple = ()

    @property
    def covers_theory(self) -> Optional[bool]:
        """Whether the censored MLE's profile interval holds the theory exponent (OLS bootstrap if no MLE)."""
        if self.mle is not None:
            return self.mle.covers(self.theory)
        return None if self.fit is None else self.fit.covers(self.theory)

    @property
    def unreliable(self) -> bool:
        """More than a quarter of the group without a width (censored or unresolved): the surviving
        instances are a biased sample."""
        return self.fit is not None and self.n_censored + self.n_unresolved > 0.25 * self.n_instances

    @property
    def flags(self) -> list:
        """Plain-language warnings a reader must see next to the estimate."""
        out = []
        x = self.over
        if self.unreliable:
            what = f"{self.n_censored}/{self.n_instances} instances censored"
            if self.n_unresolved:
                what += f" and {self.n_unresolved} unresolved"
            out.append(f"UNRELIABLE fit: {what} "
                       f"(a fit over the measured ones describes the easy instances only)")
        if self.trivial_cells:
            out.append(f"trivial (g=0 passes) at {x}=" + _nlist(self.trivial_cells) + ": excluded from fit")
        if self.partly_trivial_cells:
            out.append(f"partly trivial at {x}=" + _nlist(self.partly_trivial_cells))
        if self.near_trivial_cells:
            out.append(f"near-trivial at {x}=" + _nlist(self.near_trivial_cells) + ": the loss threshold is more "
                       "than half the loss of g = 0 (passing needs < 50% loss reduction); the width there "
                       "measures the threshold more than the capacity")
        for xo, iid, w, med in self.outliers:
            out.append(f"outlier at {x}={_nlist([xo])}: instance {iid} needs width {w:g} > 3x the cell median {med:g}")
        if self.censored_cells:
            out.append(f"censored at {x}={_nlist(self.censored_cells)} ({self.n_censored} instances): "
                       "excluded, so the slope is biased LOW there")
        if self.unresolved_cells:
            out.append(f"unresolved at {x}={_nlist(self.unresolved_cells)} ({self.n_unresolved} instances): "
                       "the search spent its budget without a confident answer (no width with p >= 1/2, "
                       "p(top) < 1/2 not decided); no width is claimed: excluded from OLS, above every "
                       "measured width in the medians, right-censored below the top in the MLE")
        if self.saturated_cells:
            out.append(f"K < 3N+2 at {x}={_nlist(self.saturated_cells)}: the worst-case bounds depend on K "
                       "there (min{3N, K-2}), so the theory exponent does not apply")
        if self.n_non_monotone:
            rule = dict(self.key).get("search_rule", "")
            why = ("a wider width succeeded significantly less often than a narrower one (Fisher test)"
                   if str(rule).startswith("adaptive") else "a wider net failed after a narrower passed")
            out.append(f"{self.n_non_monotone} non-monotone instances ({why})")
        if self.mle is not None and not self.mle.exponent_identified:
            m = self.mle.models
            aics = ", ".join(f"{k} {m[k].aic:.1f}" for k in m)
            out.append(f"exponent NOT identified: the likelihood prefers {self.mle.preferred} (AIC {aics}); "
                       "a power-law slope over this range is a local description, not an exponent")
        if self.mle_error:
            out.append(f"censored MLE not computed: {self.mle_error}")
        if self.fit is not None and self.fit.n_cells < 3:
            out.append(f"only 2 {x} values: no check of curvature")
        if self.fit is not None and self.fit.local:
            ls = [s for _, _, s in self.fit.local]
            if max(ls) - min(ls) > 0.3:
                out.append(f"local slopes vary {min(ls):.2f}..{max(ls):.2f}: window-dependent exponent")
        return out


@dataclasses.dataclass(frozen=True)
class Report:
    groups: tuple
    n_records: int
    protocol_shared: dict
    protocol_varying: dict
    level: float
    n_boot: int
    seed: int
    convergence: Optional[object] = None  # a convergence.Comparison when one was given
    over: str = "N"


def _nlist(ns) -> str:
    return ",".join(f"{int(n)}" if float(n).is_integer() else f"{n:g}" for n in ns)


def choose_axis(records: Sequence[dict]) -> str:
    """The fit axis: the one of N and K with more distinct values among the records (N on a tie).

    >>> choose_axis([{"cell": {"N": n, "K": k}} for n in (4, 16) for k in (16, 64, 256)])
    'K'
    >>> choose_axis([{"cell": {"N": n, "K": 100}} for n in (1, 2)])
    'N'
    """
    ns = {r["cell"].get("N") for r in records}
    ks = {r["cell"].get("K") for r in records}
    return "K" if len(ks) > len(ns) else "N"


def _theory(depth, over: str, recs: Sequence[dict]) -> Optional[float]:
    if depth is None:
        return None
    if over == "N":
        return _stats.theory_exponent(depth)
    # at fixed N the worst-case bounds are K-independent once K >= 3N + 2 (Thm 4.1 / 5.1; 3-layer via U3)
    ok = all(int(r["cell"]["K"]) >= 3 * int(r["cell"]["N"]) + 2 for r in recs)
    return 0.0 if ok and int(depth) in (2, 3) else None


def _near_trivial(cellmap: dict, recs: Sequence[dict], xs: np.ndarray, arr, trivial_cells: tuple) -> tuple:
    """x values (not wholly trivial) whose median loss of g = 0 is below twice the paper threshold.

    Only the paper's absolute loss threshold can be nearly met by g = 0; the relative and strict
    criteria scale with the problem and always demand a large reduction.
    """
    if cellmap.get("criterion") != "paper":
        return ()
    thr = float(np.median([float((r.get("protocol") or {}).get("paper_threshold", 0.04)) for r in recs]))
    out = []
    for x in np.unique(xs):
        v = arr.mse_zero[(xs == x) & np.isfinite(arr.mse_zero)]
        if v.size and float(x) not in trivial_cells and float(np.median(v)) < 2 * thr:
            out.append(float(x))
    return tuple(out)


def build_report(records: Sequence[dict], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 convergence=None, over: Optional[str] = None) -> Report:
    """Fit every group of ``records`` (see module doc); never raises on a group that cannot be fitted.

    Args:
      records: sweep records (schema in the sweep store).
      over: the fit axis, "N" (exponent in N; theory 1 or 1/2) or "K" (log-log slope in K at fixed
        N; theory 0 once K >= 3N + 2). Default: :func:`choose_axis`.
      n_boot, seed, level: bootstrap settings (recorded in the report).
      convergence: optional :class:`ftcjax.analysis.convergence.Comparison` to print.
    """
    records = list(records)
    if not records:
        raise FTCInputError("records: no records to report on (is the run directory empty?)")
    over = over or choose_axis(records)
    if over not in ("N", "K"):
        raise FTCInputError(f"over: {over!r} must be 'N' or 'K'")
    groups = []
    grouped = _rec.group_records(records, over=over)
    show = _rec.varying_axes(grouped)
    for key, recs in grouped.items():
        arr = _rec.instance_arrays(recs)
        xs = arr.N if over == "N" else arr.K
        cellmap = dict(key)
        depth = cellmap.get("depth")
        theory = _theory(depth, over, recs)
        fit = sqrt_fit = None
        err = None
        try:
            fit = _stats.fit_exponent(xs, arr.widths, censored=arr.censored, trivial=arr.trivial,
                                      n_boot=n_boot, seed=seed, level=level, ceiling=arr.ceiling)
            if over == "N" and depth is not None and int(depth) >= 3:
                sqrt_fit = _stats.fit_sqrt(xs, arr.widths, censored=arr.censored, trivial=arr.trivial,
                                           n_boot=n_boot, seed=seed, level=level)
        except FTCInputError as e:
            err = str(e).replace("distinct N", f"distinct {over}")
        mle = mle_err = None
        use = ~arr.trivial & np.isfinite(arr.lower) & (arr.upper > arr.lower)
        try:
            mle = _stats.fit_censored(xs[use], arr.lower[use], arr.upper[use], level=level)
        except FTCInputError as e:
            mle_err = str(e)
        cells = _stats.cell_summaries(xs, arr.widths, censored=arr.censored, trivial=arr.trivial,
                                      ceiling=arr.ceiling, unresolved=arr.unresolved)
        triv = tuple(c.N for c in cells if c.n_trivial == c.n and c.n > 0)
        outl = _stats.outliers(xs, arr.widths, censored=arr.censored, trivial=arr.trivial, ids=arr.instance_id)
        near = _near_trivial(cellmap, recs, xs, arr, triv)
        part = tuple(c.N for c in cells if 0 < c.n_trivial < c.n)
        mz = []
        for c in cells:
            v = arr.mse_zero[xs == c.N]
            v = v[np.isfinite(v)]
            mz.append((c.N, float(np.median(v)) if v.size else math.nan))
        groups.append(GroupReport(
            key=key, label=_rec.group_label(key, show=show), depth=None if depth is None else int(depth), theory=theory,
            fit=fit, sqrt_fit=sqrt_fit, fit_error=err, cells=cells, n_instances=len(recs),
            n_censored=int((arr.censored & ~arr.unresolved).sum()), n_trivial=int(arr.trivial.sum()),
            n_non_monotone=int(arr.non_monotone.sum()), trivial_cells=triv, partly_trivial_cells=part,
            censored_cells=tuple(c.N for c in cells if c.n_censored > 0), mse_zero_median=tuple(mz),
            over=over, saturated_cells=tuple(sorted({float(x) for x, r in zip(xs, recs)
                                                     if int(r["cell"]["K"]) < 3 * int(r["cell"]["N"]) + 2})),
            mle=mle, mle_error=mle_err, outliers=outl, near_trivial_cells=near,
            n_unresolved=int(arr.unresolved.sum()),
            unresolved_cells=tuple(c.N for c in cells if c.n_unresolved > 0)))
    shared, varying = _rec.protocol_summary(records)
    return Report(groups=tuple(groups), n_records=len(records), protocol_shared=shared,
                  protocol_varying=varying, level=level, n_boot=n_boot, seed=seed, convergence=convergence,
                  over=over)


# ----------------------------------------------------------------------------------------------
# formatting


def _f(x, nd=3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}"


def _covers(g: GroupReport) -> str:
    c = g.covers_theory
    return "-" if c is None else ("yes" if c else "NO")


def _group_rows(rep: Report) -> list:
    """One dict per group (the CSV rows; the table and markdown print a subset)."""
    rows = []
    for g in rep.groups:
        f = g.fit
        row = {"group": g.label}
        row.update({k: v for k, v in g.key})
        row.update({
            f"{rep.over}_range": "-" if f is None else f"{_nlist([f.N_range[0]])}..{_nlist([f.N_range[1]])}",
            "instances": g.n_instances, "used": 0 if f is None else f.n_used,
            "censored": g.n_censored, "unresolved": g.n_unresolved, "trivial": g.n_trivial,
            "non_monotone": g.n_non_monotone,
            "slope": None if f is None else f.slope,
            "ci_low": None if f is None or f.ci is None else f.ci[0],
            "ci_high": None if f is None or f.ci is None else f.ci[1],
            "theil_sen": None if f is None else f.theil_sen,
            "mle_slope": None if g.mle is None else g.mle.slope,
            "mle_ci_low": None if g.mle is None or g.mle.ci is None else g.mle.ci[0],
            "mle_ci_high": None if g.mle is None or g.mle.ci is None else g.mle.ci[1],
            "mle_sigma": None if g.mle is None else g.mle.sigma,
            "preferred_model": None if g.mle is None else g.mle.preferred,
            "exponent_identified": None if g.mle is None else g.mle.exponent_identified,
            "theory": g.theory, "covers_theory": g.covers_theory,
            "local_slopes": "" if f is None else " ".join(f"{s:.2f}" for _, _, s in f.local),
            "sqrt_a": None if g.sqrt_fit is None else g.sqrt_fit.a,
            "sqrt_b": None if g.sqrt_fit is None else g.sqrt_fit.b,
            "sqrt_a_ci_low": None if g.sqrt_fit is None or g.sqrt_fit.ci_a is None else g.sqrt_fit.ci_a[0],
            "sqrt_a_ci_high": None if g.sqrt_fit is None or g.sqrt_fit.ci_a is None else g.sqrt_fit.ci_a[1],
            "flags": "; ".join(g.flags + ([g.fit_error] if g.fit_error else [])),
        })
        rows.append(row)
    return rows


def _cell_rows(g: GroupReport) -> list:
    mz = dict(g.mse_zero_median)
    rows = []
    for c in g.cells:
        med = _f(c.median, 1) if c.median is not None else (
            f">={c.median_lower:g}" if c.median_lower is not None else ">ceiling")
        # a quartile on a censored instance is only known to exceed the ceiling
        hi = _f(c.q75, 1) if c.q75 is not None else "cens"
        iqr = "-" if c.q25 is None else f"{_f(c.q25, 1)}-{hi}"
        flag = []
        if c.n_trivial == c.n:
            flag.append("TRIVIAL")
        elif c.n_trivial:
            flag.append(f"{c.n_trivial} trivial")
        if c.n_censored:
            flag.append(f"{c.n_censored} censored")
        if c.n_unresolved:
            flag.append(f"{c.n_unresolved} unresolved")
        rows.append([_nlist([c.N]), str(c.n), med, iqr, _f(mz.get(c.N), 4), ", ".join(flag)])
    return rows


def _short(v) -> str:
    """JSON for a protocol value, long lists abbreviated (a width list of 48 values is noise)."""
    if isinstance(v, list) and len(v) > 8:
        return f"[{json.dumps(v[0])}, {json.dumps(v[1])}, ..., {json.dumps(v[-1])}] ({len(v)} values)"
    return json.dumps(v)


def _protocol_lines(rep: Report) -> list:
    sh = ", ".join(f"{k}={_short(v)}" for k, v in sorted(rep.protocol_shared.items()))
    out = [f"protocol (shared by all {rep.n_records} records): {sh or '-'}"]
    if rep.protocol_varying:
        out.append("protocol (varies): " + ", ".join(f"{k} in {v}" for k, v in sorted(rep.protocol_varying.items())))
    x = rep.over
    theory = ("theory: 1 (2-layer, Thm 4.1), 1/2 (3-layer, Thm 5.1), worst case over instances."
              if x == "N" else "theory: 0 (the worst-case bounds do not depend on K once K >= 3N + 2, "
                               "Thm 4.1 and Thm 5.1 via U3).")
    out.append("instances: independent within a group ('inst' = number of independent random problems); "
               "the same problems recur across depth, criterion and training axes (paired comparisons), "
               "so different groups are not independent of each other.")
    out.append(f"MLE: log(width) = log a + b log {x} + sigma eps, eps ~ N(0, 1), fitted by maximum likelihood with "
               f"each width as the interval it is known in ((widest probed width below, width]; censored: (top, inf)), "
               f"every non-trivial instance used; {int(rep.level * 100)}% profile-likelihood interval (t-calibrated cut); "
               f"model: the mean model with the lowest AIC among a {x}^b, a + b {x}, a {x}^b + c ('(!)': the exponent "
               "is identified only when the power law wins).")
    out.append(f"cross-check: OLS of log(min width) on log {x} over uncensored, non-trivial instances; "
               f"{int(rep.level * 100)}% percentile bootstrap CI resampling instances within each {x} cell "
               f"(n_boot={rep.n_boot}, seed={rep.seed}); Theil-Sen as robustness check; {theory}")
    return out


def _convergence_lines(rep: Report) -> list:
    if rep.convergence is None:
        return ["convergence: NOT CHECKED for this run. Re-search the same instances with twice the steps "
                "and restarts (ftcjax convergence double SPEC DIR-x2.toml [--only AXIS=V]; "
                "ftcjax run DIR-x2.toml --out DIR-x2); the report then finds DIR-x2 and counts the widths "
                "that moved. Until then the widths measure this protocol, not yet capacity."]
    return rep.convergence.summary_lines()


def _table(headers: list, rows: list) -> str:
    cols = list(zip(*([headers] + rows))) if rows else [[h] for h in headers]
    wid = [max(len(str(x)) for x in col) for col in cols]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, wid)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in wid])] + [line(r) for r in rows])


def _md(headers: list, rows: list) -> str:
    esc = lambda x: str(x).replace("|", "\\|")
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]
    return "\n".join(out)


_SUMMARY_HEAD = ["group", "{x}", "inst", "used", "cens", "unres", "triv", "MLE slope", "MLE CI", "model", "OLS slope",
                 "OLS CI", "Theil-Sen", "theory", "covers", "local slopes", "a sqrt(N)+b"]


def _summary_row(g: GroupReport, r: dict) -> list:
    ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    sq = "-" if g.sqrt_fit is None else f"{g.sqrt_fit.a:.2f} sqrt(N) {g.sqrt_fit.b:+.1f}"
    slope = _f(r["slope"]) + (" (!)" if g.unreliable else "")
    m = g.mle
    mci = "-" if m is None or m.ci is None else "[" + ", ".join("open" if v is None else f"{v:.3f}" for v in m.ci) + "]"
    model = "-" if m is None else (m.preferred + ("" if m.exponent_identified else " (!)"))
    return [g.label, r[f"{g.over}_range"], r["instances"], r["used"], r["censored"], r["unresolved"], r["trivial"],
            "-" if m is None else _f(m.slope), mci, model, slope,
            ci, _f(r["theil_sen"]), "-" if g.theory is None else f"{g.theory:g}", _covers(g),
            r["local_slopes"] or "-", sq]


def format_report(rep: Report, fmt: str = "table") -> str:
    """Render a :class:`Report` as 'table' (terminal), 'markdown', 'csv' (one row per group) or 'json'
    (the csv's fields per group plus its flags and per-cell rows, and the report's notes)."""
    if fmt not in FORMATS:
        raise FTCInputError(f"fmt: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    rows = _group_rows(rep)
    if fmt == "json":
        import json

        cell_head = [rep.over, "n", "median", "iqr", "mse_zero", "flags"]
        groups = [dict(r, flags=g.flags, fit_error=g.fit_error, unreliable=g.unreliable,
                       cells=[dict(zip(cell_head, c)) for c in _cell_rows(g)])
                  for g, r in zip(rep.groups, rows)]
        return json.dumps({"over": rep.over, "groups": groups,
                           "notes": _protocol_lines(rep) + _convergence_lines(rep)},
                          indent=2, default=str, allow_nan=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        fields = []
        for r in rows:
            fields += [k for k in r if k not in fields]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
        return buf.getvalue()
    render = _table if fmt == "table" else _md
    out = []
    title = ("Minimal-width exponents in N (ftcjax report)" if rep.over == "N"
             else "Minimal width against K at fixed N (ftcjax report)")
    out += ([title, "=" * len(title)] if fmt == "table" else [f"## {title}"]) + [""]
    head = [h.format(x=rep.over) for h in _SUMMARY_HEAD]
    out.append(render(head, [_summary_row(g, r) for g, r in zip(rep.groups, rows)]))
    out.append("")
    for g in rep.groups:
        out.append(f"{'###' if fmt == 'markdown' else '--'} {g.label}")
        out.append("")
        out.append(render([rep.over, "n", "median m", "IQR", "mse(g=0)", "flags"], _cell_rows(g)))
        for fl in g.flags + ([f"not fitted: {g.fit_error}"] if g.fit_error else []):
            out.append(f"{'- ' if fmt == 'markdown' else '  ! '}{fl}")
        out.append("")
    bullet = "- " if fmt == "markdown" else ""
    for line in _protocol_lines(rep) + _convergence_lines(rep):
        out.append(bullet + line)
    return "\n".join(out) + "\n"
