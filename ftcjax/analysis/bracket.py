"""Capacity brackets per instance: proven lower bound <= best network known <= trained widths.

The smallest trainable width is a property of the protocol as much as of the instance (paper-notes
section 7), so one number says little. For every stored instance this module puts three numbers side
by side, each labelled with what it rests on:

* **lower**: the best proven lower bound on the width that fits the instance within the sweep's strict
  tolerance ``eps = tol * max(1, max|z|)`` (``eps = 0``, exact fits, when the sweep has no strict
  criterion). On a line (``d = 1``) it is the breakpoint oracle of
  :func:`ftcjax.constructions.min_breakpoints_within` (2-layer: exact up to one neuron, see
  :func:`oracle_two_layer_width`; 3-layer: the line-piece count, Yun et al. Thm 3.3). For ``d > 1`` it
  is the generic parameter count (``m (d + 1) + 1 >= N``), which holds for exact fits of almost every
  ``z`` and is labelled so: at ``eps > 0`` it is not a theorem.
* **best known**: the fewest neurons of any network known to fit the instance: every construction built
  on the regenerated instance (verified by its builder; Thm 4.4, slab, the 1-D oracle interpolant,
  tooth, and a 2-layer construction lifted to 3 layers with one extra neuron) and every trained width
  that passed the strict criterion in float64, with the name of whichever achieved it.
* **trained**: each protocol's typical width ``w50`` and existence width (criterion and member named).

The **trainability gap** is a protocol's typical width over the best known width; it is fitted against
N (or K) with the interval-censored regression of :mod:`ftcjax.analysis.stats`. Plain numpy; the
instances are regenerated from the run's seed exactly as the runner drew them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import records as _rec
from ftcjax.analysis import stats as _stats

__all__ = ["Bound", "lower_bound", "constructions_on", "instance_brackets", "gap_fits", "format_brackets",
           "fig_brackets", "write_brackets", "PROBLEM_FIELDS"]

# the cell fields that define a problem instance; every other field (criterion, member, optimizer, ...)
# belongs to a protocol, and protocols of the same problem are compared on the same instance
PROBLEM_FIELDS = ("depth", "N", "K", "d", "data", "labels", "frozen")


@dataclasses.dataclass(frozen=True)
class Bound:
    """A width bound with its provenance: ``value`` neurons, ``name`` of the argument, ``assumes``."""

    value: int
    name: str
    assumes: str


def _three_layer_for_breakpoints(b: int) -> int:
    """Smallest m = d1 + d2 whose line-piece count 2 d1 d2 + d2 reaches b breakpoints."""
    m = 0
    while max(2 * d1 * (m - d1) + (m - d1) for d1 in range(m + 1)) < b:
        m += 1
    return m


def lower_bound(x: np.ndarray, z: np.ndarray, *, depth: int, eps: float) -> Bound:
    """Best proven lower bound on the hidden width of a ``depth``-layer g with ``max|g - z| <= eps``.

    Args:
      x: (K, d) inputs; z: (K,) residuals; depth: 2 or 3; eps: absolute tolerance (>= 0).
    """
    from ftcjax._src import bounds as B
    from ftcjax._src.worst_case import min_breakpoints_within

    x = np.asarray(x, np.float64)
    z = np.asarray(z, np.float64)
    K, d = x.shape
    if np.max(np.abs(z), initial=0.0) <= eps:
        return Bound(0, "g = 0 fits", "none")
    if d == 1:
        order = np.argsort(x[:, 0], kind="stable")
        xs = x[order, 0]
        if np.all(np.diff(xs) > 0):
            b = min_breakpoints_within(z[order], xs, eps)
            what = f"every fit within eps = {eps:.3g}" if eps > 0 else "exact fits"
            if depth == 2:
                return Bound(max(b, 1), "1-D breakpoint oracle", what)
            return Bound(max(_three_layer_for_breakpoints(b), 1), "1-D line-piece count (Yun et al. 3.3)", what)
    N = int(np.sum(z != 0))
    if depth == 2:
        v = math.ceil(B.generic_two_layer_lower(N, d))
    else:
        v = B.generic_three_layer_lower(N, d)
    return Bound(max(v, 1), "parameter count", "exact fits of almost every z (not a theorem at eps > 0)")


def constructions_on(x: np.ndarray, z: np.ndarray, changed: np.ndarray, *, depth: int,
                     seed: int = 0) -> dict:
    """Hidden neurons of every construction buildable on the instance: ``{name: neurons}``.

    2-layer: ``thm44``, ``slab`` (general position), ``oracle`` (d = 1: the optimal breakpoint
    interpolant). 3-layer: ``tooth`` and ``lifted`` (the best 2-layer one plus one neuron: a second
    layer of one ReLU with a bias that keeps it active on every sample passes the sum through exactly).
    A construction that cannot be built on the instance is left out.
    """
    from ftcjax import constructions as C
    from ftcjax._src.worst_case import oracle_two_layer_width

    x = np.asarray(x, np.float64)
    z = np.asarray(z, np.float64)
    changed = np.asarray(changed, bool)
    two: dict = {}
    for name, build in (("thm44", C.two_layer_thm44), ("slab", C.two_layer_slab)):
        try:
            two[name] = int(build(x, z, changed, rng=seed).neurons)
        except ValueError:  # FTCInputError is a ValueError: e.g. ties in every projection drawn
            pass
    if x.shape[1] == 1:
        order = np.argsort(x[:, 0], kind="stable")
        if np.all(np.diff(x[order, 0]) > 0):
            two["oracle"] = oracle_two_layer_width(z[order], x[order, 0])
    if depth == 2:
        return two
    out = {}
    try:
        out["tooth"] = int(C.tooth(x, z, changed, rng=seed, rescale=True).neurons)
    except ValueError:
        pass
    if two:
        out["lifted"] = min(two.values()) + 1
    return out


def _eps_of(rec: dict, z: np.ndarray) -> float:
    return float(rec["cell"].get("tol", 0.0)) * max(1.0, float(np.max(np.abs(z), initial=0.0)))


def _protocol_label(cell: dict, varying: Sequence[str]) -> str:
    """A portfolio member's name plus any other protocol axis that varies (the criterion is shown apart)."""
    extra = [f"{k}={cell[k]}" for k in varying if k in cell and k not in PROBLEM_FIELDS and k != "criterion"]
    return ", ".join(([str(cell["member"])] if "member" in cell else []) + extra) or str(cell.get("optimizer", "-"))


def _typical(rec: dict) -> tuple:
    """(typical width or None, censored, (lower, upper] interval) of one record."""
    w = rec.get("w50") if _rec.search_rule_of(rec).startswith("adaptive") else rec.get("min_width")
    cens = bool(rec.get("censored")) or w is None
    lo, hi = _rec.width_interval(dict(rec, min_width_is="w50"), None if cens else w, cens)
    return (None if cens else int(w)), cens, (lo, hi)


def _other_criteria(rec: dict, label: str) -> list:
    """Widths under the criteria that did not decide, read from a grid record's probes when every run
    trained for its full budget (``stop_on_success = false``): then each probe's pass flags are the
    final ones for every criterion, and the smallest passing probed width is that criterion's width."""
    cell = rec["cell"]
    if cell.get("stop_on_success", True) or not _rec.search_rule_of(rec).startswith("grid"):
        return []
    out = []
    probed = sorted(int(p["width"]) for p in rec.get("probes", []))
    for crit in ("paper", "strict", "relative"):
        if crit == cell.get("criterion"):
            continue
        w, cens, _ = _rec.width_from_probes(rec, crit)
        below = [v for v in probed if w is not None and v < w]
        interval = (float(probed[-1]), math.inf) if cens else (float(below[-1]) if below else 0.0, float(w))
        out.append(dict(protocol=label + " (from probes)", criterion=crit, dtype=cell.get("dtype"),
                        typical=None if cens else int(w), censored=bool(cens), interval=interval,
                        existence=None if cens else int(w)))
    return out


def instance_brackets(records: Sequence[dict], instances: Sequence[tuple], *, seed: int = 0) -> list:
    """One bracket row per problem instance.

    Args:
      records: stored records (any rule, criterion, portfolio member).
      instances: ``(record, x (K, d), z (K,), changed (K,))`` per record, the regenerated data
        (:func:`ftcjax.analysis.instances.regenerated`).
      seed: the projection seed of the constructions.
    Returns:
      rows ``{"problem": {field: value}, "replicate", "instance_id", "lower": Bound, "eps",
      "constructions": {name: neurons}, "best_known", "best_by": [names], "trained": [{"protocol",
      "criterion", "dtype", "typical", "existence", "censored", "interval"}]}``.
    """
    from ftcjax.analysis.portfolio import member_fields

    by_member = member_fields(records) if any("member" in r["cell"] for r in records) else set()
    varying = sorted(k for k in {k for r in records for k in r["cell"]}
                     if k not in by_member
                     and len({json.dumps(r["cell"].get(k), sort_keys=True) for r in records}) > 1)
    groups: dict = {}
    for rec, x, z, changed in instances:
        cell = rec["cell"]
        pkey = json.dumps([{k: cell.get(k) for k in PROBLEM_FIELDS}, int(rec.get("replicate", 0))], sort_keys=True)
        g = groups.setdefault(pkey, {"recs": [], "data": (x, z, changed)})
        g["recs"].append(rec)
    rows = []
    for g in groups.values():
        recs = g["recs"]
        x, z, changed = g["data"]
        cell0 = recs[0]["cell"]
        depth = int(cell0["depth"])
        strict = [r for r in recs if r["cell"].get("criterion") == "strict"]
        eps = min((_eps_of(r, z) for r in strict), default=0.0)
        low = lower_bound(x, z, depth=depth, eps=eps)
        cons = constructions_on(x, z, changed, depth=depth, seed=seed)
        trained = []
        for r in recs:
            typ, cens, interval = _typical(r)
            ex = r.get("existence_width")
            label = _protocol_label(r["cell"], varying)
            trained.append(dict(protocol=label, criterion=r["cell"].get("criterion"),
                                dtype=r["cell"].get("dtype"), typical=typ, censored=cens, interval=interval,
                                existence=None if ex is None else int(ex)))
            trained += _other_criteria(r, label)
        known = dict(cons)
        for t in trained:
            w = t["existence"] if t["existence"] is not None else t["typical"]
            if t["criterion"] == "strict" and t["dtype"] == "float64" and w is not None:
                name = f"trained: {t['protocol']}"
                known[name] = min(w, known.get(name, w))
        best = min(known.values()) if known else None
        rows.append(dict(problem={k: cell0.get(k) for k in PROBLEM_FIELDS}, replicate=int(recs[0].get("replicate", 0)),
                         instance_id=recs[0].get("instance_id"), lower=low, eps=eps, constructions=cons,
                         best_known=best, best_by=sorted(k for k, v in known.items() if v == best),
                         trained=trained))
    return rows


def gap_fits(rows: Sequence[dict], *, over: str = "N", level: float = 0.95) -> list:
    """Fit each protocol's trainability gap (typical / best known) against ``over`` (N or K).

    Returns ``[{"group": problem fields except ``over``, "protocol", "criterion", "n", "n_censored",
    "median_gap", "fit": CensoredFit or None, "error"}]``: the interval-censored power law of
    :func:`ftcjax.analysis.stats.fit_censored` on ``(lower/best, upper/best]``.
    """
    buckets: dict = {}
    for row in rows:
        if not row["best_known"]:
            continue
        gkey = json.dumps({k: v for k, v in row["problem"].items() if k != over}, sort_keys=True)
        for t in row["trained"]:
            b = buckets.setdefault((gkey, t["protocol"], t["criterion"]), [])
            b.append((float(row["problem"][over]), t, float(row["best_known"])))
    out = []
    for (gkey, proto, crit), items in buckets.items():
        xs = np.array([i[0] for i in items])
        lo = np.array([i[1]["interval"][0] / i[2] for i in items])
        hi = np.array([i[1]["interval"][1] / i[2] for i in items])
        gaps = [i[1]["typical"] / i[2] for i in items if i[1]["typical"] is not None]
        n_c = sum(1 for i in items if i[1]["censored"])
        fit, err = None, None
        ok = np.isfinite(lo) & (hi > lo)
        try:
            fit = _stats.fit_censored(xs[ok], lo[ok], hi[ok], level=level)
        except FTCInputError as e:
            err = str(e)
        out.append(dict(group=json.loads(gkey), protocol=proto, criterion=crit, n=len(items), n_censored=n_c,
                        median_gap=float(np.median(gaps)) if gaps and n_c <= len(items) / 2 else None,
                        fit=fit, error=err))
    return out


def _cell_key(row: dict) -> tuple:
    p = row["problem"]
    return tuple((k, p[k]) for k in PROBLEM_FIELDS)


def _med(vals: list) -> str:
    vals = [v for v in vals if v is not None]
    return "-" if not vals else f"{float(np.median(vals)):g}"


def format_brackets(rows: Sequence[dict], *, over: str = "N") -> str:
    """Markdown: per problem cell the medians of lower / best known / each protocol's widths, then the
    gap fits. A protocol's typical width is shown as ``>top`` in a cell where over half are censored."""
    if not rows:
        raise FTCInputError("records: no instances to bracket")
    cells: dict = {}
    for r in rows:
        cells.setdefault(_cell_key(r), []).append(r)
    protos = list(dict.fromkeys((t["protocol"], t["criterion"]) for r in rows for t in r["trained"]))
    show = [k for k in PROBLEM_FIELDS if len({r["problem"][k] for r in rows}) > 1] or ["N"]
    head = show + ["n", "lower (median)", "lower rests on", "best known (median)", "achieved by"]
    head += [f"{p} [{c}] w50 / exist." for p, c in protos]
    lines = ["## Capacity brackets per instance (ftcjax bracket)", "",
             "lower <= capacity <= best known; trained = typical width w50 / existence width per protocol "
             "(median over instances; '>W' = censored at the top width W in over half of them).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, rs in cells.items():
        p = dict(key)
        by = {}
        for r in rs:
            for n in r["best_by"]:
                by[n] = by.get(n, 0) + 1
        names = {r["lower"].name + " (" + r["lower"].assumes + ")" for r in rs}
        row = [str(p[k]) for k in show] + [str(len(rs)), _med([r["lower"].value for r in rs]), "; ".join(sorted(names)),
                                           _med([r["best_known"] for r in rs]),
                                           ", ".join(f"{n} {c}/{len(rs)}" for n, c in sorted(by.items(), key=lambda a: -a[1]))]
        for proto, crit in protos:
            ts = [t for r in rs for t in r["trained"] if (t["protocol"], t["criterion"]) == (proto, crit)]
            if not ts:
                row.append("")
                continue
            cens = sum(t["censored"] for t in ts)
            top = max((t["interval"][0] for t in ts if t["censored"]), default=math.nan)
            typ = f">{top:g}" if cens > len(ts) / 2 else _med([t["typical"] for t in ts])
            row.append(f"{typ} / {_med([t['existence'] for t in ts])}" + (f" ({cens} cens.)" if cens else ""))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"### Trainability gap (typical width / best known) against {over}", "",
              "| group | protocol [criterion] | n | censored | median gap | exponent of gap (95% CI) | model |",
              "|---|---|---|---|---|---|---|"]
    for f in gap_fits(rows, over=over):
        grp = ", ".join(f"{k}={v}" for k, v in f["group"].items() if k in show or k == "depth")
        if f["fit"] is not None:
            ci = f["fit"].ci
            ci_s = "-" if ci is None or None in ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"
            fit_s, model = f"{f['fit'].slope:.2f} {ci_s}", f["fit"].preferred
        else:
            fit_s, model = "not fitted", (f["error"] or "")[:60]
        med = "-" if f["median_gap"] is None else f"{f['median_gap']:.2f}"
        lines.append(f"| {grp or '-'} | {f['protocol']} [{f['criterion']}] | {f['n']} | {f['n_censored']} | {med} "
                     f"| {fit_s} | {model} |")
    viol = [r for r in rows if r["best_known"] is not None and r["lower"].name != "parameter count"
            and r["lower"].value > r["best_known"]]
    lines += ["", f"Consistency: proven lower <= best known on {len(rows) - len(viol)} of {len(rows)} instances"
              + ("" if not viol else f" (VIOLATED on {', '.join(str(r['instance_id']) for r in viol[:5])})") + "."]
    return "\n".join(lines) + "\n"


def fig_brackets(rows: Sequence[dict], *, over: str = "N"):
    """One panel per depth: median lower bound, best known and each protocol's typical width against
    ``over`` (log-log), the three parts of the bracket named in the legend, axes and caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    if not rows:
        return None
    depths = sorted({int(r["problem"]["depth"]) for r in rows})
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.2), squeeze=False)
    protos = list(dict.fromkeys((t["protocol"], t["criterion"]) for r in rows for t in r["trained"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, depth in zip(axes[0], depths):
        rs = [r for r in rows if int(r["problem"]["depth"]) == depth]
        xs = sorted({r["problem"][over] for r in rs})

        def med(fn):
            return [np.median([v for v in (fn(r) for r in rs if r["problem"][over] == x) if v is not None] or [np.nan])
                    for x in xs]
        ax.plot(xs, med(lambda r: r["lower"].value), "k--", marker="v", label="lower bound (proven)")
        ax.plot(xs, med(lambda r: r["best_known"]), "k-", marker="s", label="best known (constructed or trained)")
        for i, (proto, crit) in enumerate(protos):
            color = colors[i % len(colors)]
            ys, cens_x, cens_y = [], [], []
            for x in xs:
                ts = [t for r in rs if r["problem"][over] == x for t in r["trained"]
                      if (t["protocol"], t["criterion"]) == (proto, crit)]
                n_c = sum(t["censored"] for t in ts)
                if ts and n_c > len(ts) / 2:  # typical width above the grid: show where the grid stopped
                    ys.append(np.nan)
                    cens_x.append(x)
                    cens_y.append(max(t["interval"][0] for t in ts if t["censored"]))
                else:
                    ys.append(np.median([t["typical"] for t in ts if t["typical"] is not None] or [np.nan]))
            if not np.all(np.isnan(ys)):
                ax.plot(xs, ys, marker="o", color=color, alpha=0.85, label=f"trained w50: {proto} [{crit}]")
            if cens_x:
                ax.plot(cens_x, cens_y, ls="none", marker="^", mfc="none", color=color,
                        label=f"trained: {proto} [{crit}] censored above")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=2))
        ax.set_xticks(xs if len(xs) <= 12 else xs[::max(1, len(xs) // 8)])
        for axis in (ax.xaxis, ax.yaxis):  # plain integers: widths and N are counts
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(over)
        ax.set_ylabel("hidden neurons m")
        ax.set_title(f"{depth}-layer g: lower <= best known <= trained")
        ax.legend(fontsize=7)
    fig.text(0.01, 0.01, "Capacity bracket per instance (medians): proven lower bound, best known network "
             "(construction or float64 strict fit), trained typical width w50 per protocol; "
             "open triangles: over half of the instances failed at the top probed width (censored).", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def write_brackets(run_dir: str, *, out: Optional[str] = None, over: Optional[str] = None) -> list:
    """Write ``bracket.md`` and ``bracket.png``/``.pdf`` for a run directory; returns the paths."""
    from ftcjax.analysis.instances import regenerated
    from ftcjax.analysis.report import choose_axis

    records = _rec.load_records(run_dir)
    if not records:
        raise FTCInputError(f"run_dir: no finished instances in {run_dir!r}")
    inst = regenerated(records, run_dir)
    if inst is None:
        raise FTCInputError(f"run_dir: {run_dir!r} has no manifest to regenerate its instances from")
    over = over or choose_axis(records)
    rows = instance_brackets(records, inst)
    out = out or os.path.join(os.fspath(run_dir), "figures")
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, "bracket.md")]
    with open(paths[0], "w") as fh:
        fh.write(format_brackets(rows, over=over))
    fig = fig_brackets(rows, over=over)
    for ext in ("png", "pdf"):
        paths.append(os.path.join(out, f"bracket.{ext}"))
        fig.savefig(paths[-1], dpi=130)
    return paths
