"""Figures from stored sweep results (matplotlib is imported here and only here).

Every figure is built from stored records alone (no retraining) with matplotlib's object API
(``matplotlib.figure.Figure``, no pyplot state, no GUI backend), carries a caption line stating its
protocol, and is written as PNG and PDF by :func:`write_all`:

1. ``fig9_paper``: the paper's Fig. 9 (3-layer, d = 10, K = 1000): heat map of the fine-tuning loss over
   (N, m) with the "smallest m with loss <= 0.04" step curve and a fitted c sqrt(N); beside it the same
   instances under the strict and relative criteria (pass fraction, median minimal width).
2. ``width_vs_N``: minimal width against N (log-log), 2- and 3-layer: trained median and IQR band,
   construction neuron counts, lower bounds, fitted slopes in the legend.
3. ``width_vs_K``: minimal width against K at fixed N.
4. ``distribution``: per-instance minimal widths per cell (censored, trivial, non-monotone marked).

On request (``ftcjax figures DIR --curves``, runs with ``history_every > 0``), :func:`write_curves`
writes ``curves``: loss and max error against step for every probe and restart of chosen instances.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import records as _rec
from ftcjax.analysis import stats as _stats

__all__ = ["fig_paper9", "fig_width_vs_N", "fig_width_vs_K", "fig_distribution", "write_all", "select_records",
           "fig_curves", "write_curves", "curve_instances", "has_history",
           "readable_label", "FORMATS",
           "reference_curves", "FIGURES", "LABEL_N", "LABEL_M", "LABEL_K", "LABEL_M_INST"]

LABEL_N = "N (changed samples)"
LABEL_K = "K (samples)"
LABEL_M = "minimal width m (hidden neurons)"
LABEL_M_INST = "minimal width m per instance"
LABEL_HEAT_M = "m (hidden neurons of g, d1 + d2)"
PAPER_THRESHOLD = 0.04
CRITERIA = ("paper", "strict", "relative")


# ----------------------------------------------------------------------------------------------
# shared helpers


def _caption(records: Sequence[dict], extra: str = "") -> str:
    """One protocol line: what was trained how, judged by what, over how many instances."""
    shared, varying = _rec.protocol_summary(records)
    keys = ["optimizer", "learning_rate", "schedule", "steps", "restarts", "success_fraction", "tol",
            "paper_threshold", "rel_eps", "dtype"]
    parts = [f"{k}={shared[k]}" for k in keys if k in shared]
    parts += [f"{k} varies" for k in keys if k in varying]
    reps = {}
    for r in records:
        reps.setdefault(json_key(r["cell"]), set()).add(r.get("replicate"))
    per_cell = sorted({len(v) for v in reps.values()})
    n_txt = f"{per_cell[0]}" if len(per_cell) == 1 else f"{per_cell[0]}-{per_cell[-1]}"
    s = f"protocol: {', '.join(parts)}; {n_txt} instances/cell, {len(records)} instances"
    return s + (f"; {extra}" if extra else "")


def json_key(cell: dict) -> str:
    return repr(sorted(cell.items()))


_CAPTION_PT = 6.5


def _add_caption(fig: Figure, text: str) -> None:
    """The protocol line under the figure, wrapped to the figure's width, with room kept for it."""
    t = fig.text(0.005, 0.005, text, fontsize=_CAPTION_PT, ha="left", va="bottom", color="0.25", gid="caption")
    t.raw_caption = text
    _fit_caption(fig)


def _fit_caption(fig: Figure) -> None:
    """(Re)wrap the caption for the current figure size and reserve its height below the axes."""
    import textwrap

    for t in fig.texts:
        if t.get_gid() != "caption":
            continue
        chars = max(40, int(fig.get_figwidth() * 72 / (_CAPTION_PT * 0.52)))
        lines = textwrap.wrap(t.raw_caption, chars)
        t.set_text("\n".join(lines))
        # + 16 pt: tick labels at the very end of a colour bar reach below what the layout reserves
        bottom = (len(lines) * _CAPTION_PT * 1.25 + 16) / 72 / fig.get_figheight()
        engine = fig.get_layout_engine()
        _, _, w, h = engine.get()["rect"]
        top = min(1.0, h + engine.get()["rect"][1])
        engine.set(rect=(0, bottom, w, top - bottom))


_AXIS_NAMES = {"learning_rate": "lr", "rel_eps": "rel_eps", "restarts": "restarts", "steps": "steps"}


def readable_label(key, *, skip: Sequence[str] = (), show: Optional[Sequence[str]] = None) -> str:
    """A group key as a reader would write it: '3-layer, d = 2, relative criterion, lr 0.005'.

    Only the axes in ``show`` (those that tell the groups of one figure apart; default all) appear,
    ``skip`` ones (what a panel already says) never.
    """
    items = dict(key)
    names = [k for k in items if k not in skip and (show is None or k in show)]
    order = ["depth", "criterion", "N", "K", "d"]
    names.sort(key=lambda k: order.index(k) if k in order else len(order))
    parts = []
    for k in names:
        v = items[k]
        if k == "depth":
            parts.append(f"{v}-layer")
        elif k == "criterion":
            parts.append(f"{v} criterion")
        elif k in ("N", "K", "d"):
            parts.append(f"{k} = {v}")
        else:
            parts.append(f"{_AXIS_NAMES.get(k, k)} {v}")
    return ", ".join(parts) if parts else "all instances"


def _thin(values, most: int = 10) -> list:
    """At most ``most`` of the sorted values, evenly spread, first and last kept."""
    v = sorted({float(x) for x in values})
    if len(v) <= most:
        return v
    return [v[i] for i in np.unique(np.round(np.linspace(0, len(v) - 1, most)).astype(int))]


def _log_ticks_at(axis, values) -> None:
    """Ticks of a log axis exactly at the data's values (thinned to at most 10), plain numbers."""
    axis.set_major_locator(FixedLocator(_thin([x for x in values if np.isfinite(x) and x > 0])))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_locator(NullLocator())


def _integer_log_ticks(ax) -> None:
    """Width ticks of a log y axis at integers only (1, 2, 5, 10, 20, 50, ...), plain numbers."""
    lo, hi = ax.get_ylim()
    lo = max(lo, 1.0)
    ax.set_ylim(bottom=lo)
    cands = sorted({m * 10 ** e for e in range(0, 7) for m in (1, 2, 5)})
    ticks = [t for t in cands if lo <= t <= hi]
    if len(ticks) < 3:
        ticks = sorted({int(round(t)) for t in np.geomspace(lo, hi, 4) if t >= 1})
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def _probe_table(recs: Sequence[dict]):
    """Widths covered by every record (grid records) -> (widths (W,), per-record dict width->probe)."""
    maps = [{int(p["width"]): p for p in r.get("probes", [])} for r in recs]
    if not maps:
        return np.zeros(0, int), maps
    common = set(maps[0])
    for m in maps[1:]:
        common &= set(m)
    return np.array(sorted(common), dtype=int), maps


def _is_grid(recs: Sequence[dict]) -> bool:
    """True when every record probed every candidate width (strategy 'grid')."""
    strat = {r.get("strategy", (r.get("protocol") or {}).get("strategy")) for r in recs}
    if strat == {"grid"}:
        return True
    allw = set()
    for r in recs:
        allw |= {int(p["width"]) for p in r.get("probes", [])}
    return bool(recs) and all(len(r.get("probes", [])) == len(allw) for r in recs) and len(allw) > 2


def reference_curves(depth: int, N: np.ndarray, *, K: int, d: int) -> list:
    """(label, values (len(N),), style) of construction counts and lower bounds for a log-log plot.

    All formulas come from :mod:`ftcjax.bounds` (paper-notes sections 2-3); values where N > K are NaN.
    """
    from ftcjax import bounds as b

    Ni = [int(n) for n in np.asarray(N)]
    ok = [n <= K for n in Ni]
    curve = lambda f: np.array([f(n) if o else np.nan for n, o in zip(Ni, ok)], dtype=float)  # noqa: E731
    out = []
    if depth == 2:
        out += [("Thm 4.4 construction min(3N+1, K-1)", curve(lambda n: b.thm41_two_layer(n, K)[1]),
                 dict(ls="--", color="0.2")),
                (f"slab construction 4 ceil(N/d), d = {d}", curve(lambda n: b.slab_two_layer(n, d)),
                 dict(ls="-.", color="tab:green")),
                ("worst-case lower bound min(3N, K-2)", curve(lambda n: b.thm41_two_layer(n, K)[0]),
                 dict(ls=":", color="0.2")),
                # a log axis cannot show the bound's values below one neuron
                (f"generic-data lower bound (N-1)/(d+1), d = {d}",
                 np.maximum(curve(lambda n: b.generic_two_layer_lower(n, d)), 1.0), dict(ls=":", color="tab:red"))]
    elif depth == 3:
        out += [("U3 = 6 sqrt(3N+2) (Thm 5.1)", curve(b.thm51_u3), dict(ls="--", color="0.2")),
                ("tooth construction (2p+1)+4q, pq >= N", curve(b.tooth_neurons), dict(ls="-.", color="tab:green")),
                ("worst-case lower bound (Thm 5.1)", curve(lambda n: b.thm51_lower(n, K)), dict(ls=":", color="0.2")),
                (f"generic-data lower bound, d = {d}",
                 np.maximum(curve(lambda n: b.generic_three_layer_lower(n, d)), 1.0), dict(ls=":", color="tab:red"))]
    return out


def _median_iqr(ws: np.ndarray, cens: np.ndarray):
    """Median and IQR over ALL instances, censored ones above every value (None if not identified)."""
    meas = np.sort(ws[~cens])
    n = ws.shape[0]
    q = [_stats._quantile_censored(meas, n, p) for p in (0.25, 0.5, 0.75)]
    q[1] = _stats.median_width(ws, censored=cens)  # the one definition of the median everywhere
    return q


# ----------------------------------------------------------------------------------------------
# Figure 1: the paper's Fig. 9 and its strict/relative twins


def _select_fig9(records: Sequence[dict]):
    """Depth-3 grid records, preferring the paper's d = 10, K = 1000; returns (records, K, d) or None."""
    r3 = [r for r in records if int(r["cell"].get("depth", 0)) == 3]
    if not r3:
        return None
    by_kd: dict = {}
    for r in r3:
        by_kd.setdefault((int(r["cell"]["K"]), int(r["cell"]["d"])), []).append(r)
    cands = [(kd, rs) for kd, rs in by_kd.items() if _is_grid(rs)
             and len({r["cell"]["N"] for r in rs}) >= 2]
    if not cands:
        return None
    cands.sort(key=lambda kv: (kv[0] != (1000, 10), -len({r["cell"]["N"] for r in kv[1]})))
    (K, d), rs = cands[0]
    return rs, K, d


def _criterion_records(recs: Sequence[dict], crit: str):
    """Records decided by ``crit`` if the sweep has them, else all records (probes carry every criterion)."""
    own = [r for r in recs if r["cell"].get("criterion") == crit]
    return (own, True) if own else (list(recs), False)


def _first_member(recs: Sequence[dict]) -> tuple:
    """(records of the portfolio's first member, its name) -- all records and None without members."""
    names = list(dict.fromkeys(r["cell"]["member"] for r in recs if "member" in r["cell"]))
    if not names:
        return list(recs), None
    return [r for r in recs if r["cell"].get("member") == names[0]], names[0]


def _any_member_passes(rs: Sequence[dict], crit: str) -> list:
    """Per problem instance (members merged): {width: any member's any restart passes ``crit``}, N."""
    inst: dict = {}
    for r in rs:
        key = json_key({k: v for k, v in r["cell"].items() if k not in _member_fields(rs)}) + f"#{r['replicate']}"
        cur = inst.setdefault(key, ({}, int(r["cell"]["N"])))[0]
        for p in r.get("probes", []):
            cur[int(p["width"])] = cur.get(int(p["width"]), False) or bool(any(p["passed"][crit]))
    return list(inst.values())


def _member_fields(rs: Sequence[dict]) -> set:
    from ftcjax.analysis.portfolio import member_fields

    return member_fields(rs) if any("member" in r["cell"] for r in rs) else set()


def fig_paper9(records: Sequence[dict]) -> Optional[Figure]:
    """Fig. 9 as the paper drew it, beside its strict/relative twins; None without depth-3 grid records.

    Left: the fine-tuning loss l_FT (median over instances, best restart) on a LINEAR colour scale from 0
    as in the paper, read at the end of the full budget when the runs trained it whole
    (``stop_on_success = false``; otherwise at stop, and the caption says so), for the portfolio's first
    member; our "smallest m with l_FT <= 0.04" (white), the paper's step line as drawn (orange, the
    paper's setting only) and the paper's 2.40 sqrt(N) (red). Middle, right: fraction of instances that
    pass the strict / relative criterion at each (N, m), any member of the portfolio.
    """
    from ftcjax.analysis import fig9 as _f9

    sel = _select_fig9(records)
    if sel is None:
        return None
    recs, K, d = sel
    heat_recs, member = _first_member(recs)
    full_budget = all(r["cell"].get("stop_on_success") is False for r in recs)
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, 3)
    notes = []
    for ax, crit in zip(axes, CRITERIA):
        rs, own = _criterion_records(heat_recs if crit == "paper" else recs, crit)
        widths, maps = _probe_table(rs)
        Ns = np.array(sorted({int(r["cell"]["N"]) for r in rs}))
        if widths.size == 0:
            ax.set_axis_off()
            continue
        loss = np.full((Ns.size, widths.size), np.nan)
        passf = np.full((Ns.size, widths.size), np.nan)
        minw = {n: [] for n in Ns}
        if crit == "paper":  # per instance: the best restart's loss (final when the budget ran whole)
            for i, n in enumerate(Ns):
                idx = [j for j, r in enumerate(rs) if int(r["cell"]["N"]) == n]
                L = np.array([[min(maps[j][w].get("mse_end") or maps[j][w]["mse"]) for w in widths] for j in idx])
                loss[i] = np.median(L, axis=0)
        else:  # per problem instance: any member, any restart passes
            table = _any_member_passes(rs, crit)
            for i, n in enumerate(Ns):
                P = np.array([[ok.get(int(w), False) for w in widths] for ok, nn in table if nn == n])
                passf[i] = P.mean(axis=0)
                for row in P:
                    hit = np.flatnonzero(row)
                    minw[n].append(widths[hit[0]] if hit.size else np.inf)
        xe = _edges(Ns)
        ye = _edges(widths)
        if crit == "paper":
            mesh = ax.pcolormesh(xe, ye, loss.T, cmap="viridis", vmin=0.0, vmax=float(np.nanmax(loss)),
                                 shading="flat")
            fig.colorbar(mesh, ax=ax, label="l_FT" + (" at the end of the budget" if full_budget else " at stop")
                         + " (median over instances)")
            curve = np.array([widths[np.flatnonzero(row <= PAPER_THRESHOLD)[0]]
                              if np.any(row <= PAPER_THRESHOLD) else np.nan for row in loss])
            ax.step(Ns, curve, where="mid", color="white", lw=2, label="smallest m with l_FT <= 0.04")
            if (K, d) == (1000, 10):  # the paper's own step line, as drawn
                pN = np.arange(1, 492, 10)
                pN = pN[(pN >= Ns.min()) & (pN <= Ns.max())]
                ax.step(pN, [_f9.paper_min_m(int(n)) for n in pN], where="mid", color="orange", lw=1.5,
                        label="the paper's step line (as drawn)")
            title = f"paper criterion (l_FT <= {PAPER_THRESHOLD})" + (f", {member}" if member else "")
        else:
            mesh = ax.pcolormesh(xe, ye, passf.T, cmap="viridis", vmin=0, vmax=1, shading="flat")
            fig.colorbar(mesh, ax=ax, label=f"fraction of instances passing ({crit})")
            curve = np.array([_median_inf(minw[n]) for n in Ns])
            ax.step(Ns, curve, where="mid", color="white", lw=2, label="median minimal width")
            title = f"{crit} criterion" + (", any member" if member else "")
            if not own and not full_budget:
                notes.append(f"{crit} panel derived from probes of runs decided by another criterion "
                             f"(runs stop at their own criterion's first success: a lower bound on passing)")
        mz = np.array([np.median([r["problem"].get("mse_zero", np.nan) for r in rs if int(r["cell"]["N"]) == n])
                       for n in Ns])
        triv = Ns[mz <= PAPER_THRESHOLD]
        if crit == "paper" and triv.size:
            # hatched, not filled: the heat map underneath stays readable
            right = xe[int(np.searchsorted(Ns, triv.max())) + 1]
            ax.axvspan(xe[0], right, facecolor="none", edgecolor="red", hatch="//", lw=1.5,
                       label="g = 0 already passes (trivial)")
        fit_mask = np.isfinite(curve) & ~np.isin(Ns, triv if crit == "paper" else [])
        if fit_mask.sum() >= 3:  # a one- or two-point "fit" would only extrapolate
            c = float(np.sum(curve[fit_mask] * np.sqrt(Ns[fit_mask])) / np.sum(Ns[fit_mask]))
            nn = np.linspace(Ns.min(), Ns.max(), 200)
            ax.plot(nn, c * np.sqrt(nn), color="red", lw=1.2, ls="--", label=f"fit {c:.2f} sqrt(N)")
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
        # ticks at the cells' centres (the probed N and widths), never on the edges of the map
        ax.xaxis.set_major_locator(FixedLocator(_thin(Ns)))
        ax.yaxis.set_major_locator(FixedLocator(_thin(widths)))
        ax.set_xlabel(LABEL_N)
        ax.set_ylabel(LABEL_HEAT_M)
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
    fig.suptitle(f"Paper Fig. 9 reproduction: 3-layer g, d = {d}, K = {K}"
                 + ("" if (K, d) == (1000, 10) else " (paper: d = 10, K = 1000)"), fontsize=11)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    notes.append("every run trained its full budget: losses and passes are final" if full_budget
                 else "run stops at its first success: passing losses are at stop")
    _add_caption(fig, _caption(recs, "; ".join(notes)))
    return fig


def _median_inf(vals) -> float:
    """Median treating inf (censored) as larger than everything; NaN when the median is censored."""
    v = np.sort(np.asarray(vals, dtype=float))
    if v.size == 0:
        return np.nan
    med = float(np.median(v))
    return med if np.isfinite(med) else np.nan


def _edges(vals: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (for pcolormesh with uneven spacing)."""
    v = np.asarray(vals, dtype=float)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


# ----------------------------------------------------------------------------------------------
# Figure 2: minimal width against N


def _group_line(ax, recs, label_prefix, color, *, over="N", fit=True, censored_label=True):
    arr = _rec.instance_arrays(recs)
    xs = arr.N if over == "N" else arr.K
    xv = np.unique(xs)
    med, q1, q3 = [], [], []
    for x in xv:
        s = xs == x
        ws = np.where(arr.trivial[s] & ~arr.censored[s], 0.0, arr.widths[s])
        a, b, c = _median_iqr(ws, arr.censored[s])
        q1.append(np.nan if a is None else a)
        med.append(np.nan if b is None else b)
        q3.append(np.nan if c is None else c)
    med, q1, q3 = map(np.asarray, (med, q1, q3))
    label = label_prefix
    if fit and over == "N":
        try:
            f = _stats.fit_exponent(arr.N, arr.widths, censored=arr.censored, trivial=arr.trivial,
                                    n_boot=1000, seed=0)
            label += f": slope {f.slope:.2f} [{f.ci[0]:.2f}, {f.ci[1]:.2f}]"
        except FTCInputError:
            label += ": no fit"
    ok = np.isfinite(med) & (med > 0)
    zero = np.isfinite(med) & (med == 0)
    if zero.any() and ax.get_yscale() == "linear":
        # g = 0 passes in most instances: no neuron needed (a log axis cannot show these)
        ax.plot(xv[zero], med[zero], "x", color=color, ms=8, ls="none", label="  median 0: g = 0 passes (trivial)")
    ax.plot(xv[ok], med[ok], "o-", color=color, label=label, ms=4)
    band = np.isfinite(q1) & np.isfinite(q3) & (q1 > 0)
    if band.any():
        ax.fill_between(xv[band], q1[band], q3[band], color=color, alpha=0.2, lw=0)
    unres = _unresolved(arr)
    cens = arr.censored & ~unres
    if cens.any():
        # censored instances need more than the ceiling: mark the ceiling with an up-triangle
        ax.plot(xs[cens], arr.ceiling[cens], "^", color=color, mfc="none", ms=7, ls="none",
                label="censored: needs more than the largest width" if censored_label else None)
    if unres.any():
        # the search spent its budget undecided: no width, and not censored either
        ax.plot(xs[unres], arr.ceiling[unres], "s", color=color, mfc="none", ms=6, ls="none",
                label="unresolved: search undecided above this width" if censored_label else None)
    return xv, bool(arr.censored.any())


def _unresolved(arr) -> np.ndarray:
    """(n,) instances with no width that the search did not censor (a subset of ``arr.censored``)."""
    u = getattr(arr, "unresolved", None)
    return np.zeros(arr.censored.shape, bool) if u is None else np.asarray(u, bool)


_CONSTRUCTION_NAMES = {"thm44": ("Thm 4.4", "s"), "slab": ("slab", "D"), "tooth": ("tooth", "s")}


def _construction_markers(ax, recs, constructions, cell, color, drawn: set) -> None:
    """Median (over the group's instances, per N) neuron count of each construction built on them."""
    per: dict = {}
    for r in recs:
        for name, n in (constructions.get(r["instance_id"]) or {}).items():
            if n is not None:
                per.setdefault(name, {}).setdefault(int(r["cell"]["N"]), []).append(n)
    for name, cn in per.items():
        title, marker = _CONSTRUCTION_NAMES.get(name, (name, "s"))
        where = (cell.get("K"), cell.get("d"))
        if (name, where) in drawn:  # paired instances (other criteria) give the same counts: draw once
            continue
        lab = f"{title} construction on these instances (median)"
        drawn.add((name, where))
        xs = sorted(cn)
        # one legend entry per construction: the marker colour says which group's instances
        ax.plot(xs, [float(np.median(cn[x])) for x in xs], marker, mfc="none", ms=6, ls="none",
                color=color, label=None if lab in drawn else lab)
        drawn.add(lab)


def fig_width_vs_N(records: Sequence[dict], *, constructions: Optional[dict] = None) -> Optional[Figure]:
    """Log-log minimal width against N, one panel per depth (2 and 3); None without >= 2 N values.

    ``constructions``: optional {instance_id: counts} from
    :func:`ftcjax.analysis.instances.construction_counts`; then the Thm 4.4 construction's count on
    the very same 2-layer instances is drawn (median per N) beside the trained widths.
    """
    groups = {k: v for k, v in _rec.group_records(records, over="N").items()
              if len({r["cell"]["N"] for r in v}) >= 2}
    depths = sorted({int(dict(k).get("depth", 0)) for k in groups} & {2, 3})
    if not depths:
        return None
    fig = Figure(figsize=(6.4 * len(depths), 8.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(depths)))
    colors = ["tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    used = []
    show = _rec.varying_axes(groups)
    for ax, depth in zip(axes, depths):
        gs = [(k, v) for k, v in groups.items() if int(dict(k).get("depth", 0)) == depth]
        allN = []
        drawn: set = set()
        any_cens = False
        for i, (k, v) in enumerate(gs):
            xv, cens = _group_line(ax, v, readable_label(k, skip=("depth",), show=show) if len(gs) > 1
                                   else "trained", colors[i % len(colors)], censored_label=not any_cens)
            allN += list(xv)
            any_cens |= cens
            used += v
            if constructions:
                _construction_markers(ax, v, constructions, dict(k), colors[i % len(colors)], drawn)
        kd = dict(gs[0][0])
        Ns = np.unique(np.asarray(allN, dtype=float))
        nn = np.unique(np.round(np.geomspace(Ns.min(), Ns.max(), 40)))
        for label, vals, style in reference_curves(depth, nn, K=int(kd["K"]), d=int(kd["d"])):
            ax.plot(nn, vals, lw=1.2, label=label + (f", K = {kd['K']}" if "K" in label else ""), **style)
        theory = _stats.theory_exponent(depth)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _log_ticks_at(ax.xaxis, Ns)  # the N values measured, as plain numbers
        _integer_log_ticks(ax)
        ax.set_xlabel(LABEL_N)
        ax.set_ylabel(LABEL_M)
        ax.set_title(f"{depth}-layer g: minimal width vs N (worst-case theory m* ~ N^{theory:g})", fontsize=10)
        # below the axes: inside it would hide the data (censored triangles sit at the top)
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0.0, -0.1), borderaxespad=0.0)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    _add_caption(fig, _caption(used, "median and IQR over instances; triangles: censored (need > ceiling); "
                                     "slope: OLS log-log, 95% within-N bootstrap CI"))
    return fig


# ----------------------------------------------------------------------------------------------
# Figure 3: minimal width against K


def fig_width_vs_K(records: Sequence[dict]) -> Optional[Figure]:
    """Minimal width against K at fixed N (one panel per depth, a line per (N, criterion, ...))."""
    groups = {k: v for k, v in _rec.group_records(records, over="K").items()
              if len({r["cell"]["K"] for r in v}) >= 2}
    depths = sorted({int(dict(k).get("depth", 0)) for k in groups})
    if not depths:
        return None
    fig = Figure(figsize=(6.4 * len(depths), 6.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(depths)))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
    used = []
    show = _rec.varying_axes(groups)
    for ax, depth in zip(axes, depths):
        gs = [(k, v) for k, v in groups.items() if int(dict(k).get("depth", 0)) == depth]
        ax.set_xscale("log")
        any_cens = False
        Ks = set()
        for i, (k, v) in enumerate(gs):
            xv, cens = _group_line(ax, v, readable_label(k, skip=("depth",), show=show | {"N"}),
                                   colors[i % len(colors)], over="K", fit=False, censored_label=not any_cens)
            any_cens |= cens
            Ks |= set(xv.tolist())
            used += v
        # what provably suffices for EVERY instance, whatever K (K-independent constructions)
        from ftcjax import bounds as b

        for n in sorted({int(dict(k)["N"]) for k, _ in gs}):
            if depth == 2:
                ax.axhline(3 * n + 1, ls="--", color="0.3", lw=1,
                           label=f"Thm 4.4 construction, any K: 3N+1 = {3 * n + 1} (N = {n})")
            elif depth == 3:
                ax.axhline(b.tooth_neurons(n), ls="--", color="0.3", lw=1,
                           label=f"tooth construction, any K: {b.tooth_neurons(n)} (N = {n})")
        _log_ticks_at(ax.xaxis, Ks)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(LABEL_K)
        ax.set_ylabel(LABEL_M)
        ax.set_title(f"{depth}-layer g: does the width depend on K at fixed N?", fontsize=10)
        ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(0.0, -0.12), borderaxespad=0.0)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    _add_caption(fig, _caption(used, "median and IQR over instances; theory: K-independent once K >= 3N+2"))
    return fig


# ----------------------------------------------------------------------------------------------
# Figure 4: distribution of per-instance minimal widths


def fig_distribution(records: Sequence[dict], *, max_groups: int = 8) -> Optional[Figure]:
    """Per-instance minimal widths per N cell, one panel per group (first ``max_groups``)."""
    all_groups = list(_rec.group_records(records, over="N").items())
    groups = all_groups[:max_groups]
    if not groups:
        return None
    ncol = min(2, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    fig = Figure(figsize=(6.5 * ncol, 3.6 * nrow + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
    rng = np.random.default_rng(0)  # jitter only; fixed so figures are reproducible
    used = []
    show = _rec.varying_axes(dict(groups))
    for ax, (k, v) in zip(axes, groups):
        arr = _rec.instance_arrays(v)
        Ns = np.unique(arr.N)
        pos = {n: i for i, n in enumerate(Ns)}
        x = np.array([pos[n] for n in arr.N], dtype=float) + rng.uniform(-0.2, 0.2, arr.N.size)
        ok = ~arr.censored & ~arr.trivial
        if (ok & ~arr.non_monotone).any():
            ax.plot(x[ok & ~arr.non_monotone], arr.widths[ok & ~arr.non_monotone], "o", ms=4, alpha=0.7,
                    color="tab:blue", label="measured")
        if (ok & arr.non_monotone).any():
            ax.plot(x[ok & arr.non_monotone], arr.widths[ok & arr.non_monotone], "D", ms=5, mfc="none",
                    color="tab:purple", label="non-monotone (wider net failed)")
        unres = _unresolved(arr)
        cens = arr.censored & ~unres
        if cens.any():
            ax.plot(x[cens], arr.ceiling[cens], "^", ms=6, color="tab:red", label="censored (> ceiling)")
        if unres.any():
            ax.plot(x[unres], arr.ceiling[unres], "s", ms=6, mfc="none", color="tab:orange",
                    label="unresolved (search undecided)")
        if arr.trivial.any():
            ax.plot(x[arr.trivial], np.zeros(int(arr.trivial.sum())), "x", ms=6, color="0.3",
                    label="trivial (g = 0 passes)")
        for n in Ns:
            s = arr.N == n
            med = _median_iqr(np.where(arr.trivial[s] & ~arr.censored[s], 0.0, arr.widths[s]), arr.censored[s])[1]
            if med is not None:
                ax.hlines(med, pos[n] - 0.3, pos[n] + 0.3, color="k", lw=1.5)
        ax.set_xticks(range(Ns.size))
        ax.set_xticklabels([f"{int(n)}" for n in Ns])
        ax.set_xlim(-0.5, Ns.size - 0.5)
        ax.set_ylim(bottom=-0.5)  # trivial instances sit at 0
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(LABEL_N)
        ax.set_ylabel(LABEL_M_INST)
        ax.set_title(readable_label(k, show=show | {"depth", "criterion"}), fontsize=9)
        ax.legend(fontsize=6.5)
        used += v
    for ax in axes[len(groups):]:
        ax.set_axis_off()
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96), h_pad=0.1)  # room between stacked panels' ticks
    shown = "" if len(all_groups) <= max_groups else f"; first {max_groups} of {len(all_groups)} groups shown"
    _add_caption(fig, _caption(used, "black bar: median over all instances (censored counted above the ceiling)"
                                     + shown))
    return fig


FIGURES = (("fig9_paper", fig_paper9), ("width_vs_N", fig_width_vs_N), ("width_vs_K", fig_width_vs_K),
           ("distribution", fig_distribution))


FORMATS = ("png", "pdf", "svg")


def select_records(records: Sequence[dict], groups: Optional[dict]) -> list:
    """The records whose cell has, for every axis in ``groups``, one of the listed values.

    ``groups``: {axis: [values]} (e.g. from ``--groups d=2,10 --groups criterion=relative``).
    Raises FTCInputError naming an axis no record has, or a selection that keeps nothing.
    """
    if not groups:
        return list(records)
    axes = set().union(*(r["cell"] for r in records)) if records else set()
    for axis in groups:
        if axis not in axes:
            raise FTCInputError(f"--groups: no record has the axis {axis!r}; axes: {', '.join(sorted(axes))}")
    kept = [r for r in records if all(_matches(r["cell"][a], vs) for a, vs in groups.items())]
    if not kept:
        raise FTCInputError(f"--groups: no record matches {groups}")
    return kept


def _matches(value, wanted) -> bool:
    return any(value == w or (isinstance(w, str) and str(value) == w) for w in wanted)


def _figure_inputs(run_dir, records, groups, formats, size) -> tuple:
    """Checked ``(dirs, records)`` of a figure command: formats and size validated, records loaded and selected."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise FTCInputError(f"--format: {', '.join(bad) or 'nothing'} given; choose from {', '.join(FORMATS)}")
    if size is not None and (len(size) != 2 or not all(np.isfinite(v) and 1 <= v <= 50 for v in size)):
        raise FTCInputError(f"--size: {size!r} must be WIDTH,HEIGHT in inches, each between 1 and 50")
    dirs = ([] if run_dir is None else [os.fspath(run_dir)] if isinstance(run_dir, (str, os.PathLike))
            else [os.fspath(d) for d in run_dir])
    if records is None:
        records = _rec.load_records(dirs if len(dirs) > 1 else dirs[0])
    if not records:
        raise FTCInputError(f"run_dir: no finished instances in {' '.join(dirs)!r}")
    return dirs, select_records(records, groups)


def _save(fig, out: str, name: str, *, caption: bool, formats, size, dpi) -> list:
    """Write ``fig`` as ``<out>/<name>.<format>`` for each format (caption removed or not, resized); the paths."""
    if not caption:
        for t in [t for t in fig.texts if t.get_gid() == "caption"]:
            t.remove()
        fig.get_layout_engine().set(rect=(0, 0, 1, 1))
    if size is not None:
        fig.set_size_inches(*size)
        _fit_caption(fig)
    os.makedirs(out, exist_ok=True)
    paths = []
    for ext in formats:
        paths.append(os.path.join(out, f"{name}.{ext}"))
        fig.savefig(paths[-1], dpi=dpi)
    return paths


def write_all(run_dir, *, out: Optional[str] = None, records: Optional[Sequence[dict]] = None,
              groups: Optional[dict] = None, caption: bool = True, formats: Sequence[str] = ("png", "pdf"),
              size: Optional[tuple] = None, dpi: int = 130) -> list:
    """Write every figure the records support as ``<out>/<name>.<format>``; returns the paths.

    ``run_dir``: one run directory or several (merged). ``out`` defaults to ``<run_dir>/figures`` (of
    the first); ``records`` (if given) replaces loading from run_dir. ``groups``: keep only these axis
    values (:func:`select_records`). ``caption``: the protocol line under each figure. ``formats``:
    any of :data:`FORMATS`. ``size``: (width, height) in inches for every figure (default each its own).
    """
    dirs, records = _figure_inputs(run_dir, records, groups, formats, size)
    out = out or os.path.join(dirs[0], "figures")
    if any("form" in r["cell"] for r in records):  # a [form] sweep: its own report and figures
        from ftcjax.analysis.forms import write_all as write_forms

        return write_forms(dirs[0] if dirs else None, out, records=records)
    from ftcjax.analysis.portfolio import best_member_records

    best = best_member_records(records)  # a portfolio's best member is drawn beside its members
    os.makedirs(out, exist_ok=True)
    written = []
    constructions = None
    if dirs and all(os.path.isdir(d) for d in dirs):
        from ftcjax.analysis.instances import construction_counts

        constructions = {}
        for d in dirs:  # each directory regenerates its own instances from its own seed
            mine = select_records(_rec.load_records(d), groups) if len(dirs) > 1 else records
            counts = construction_counts(mine, d) if mine else {}
            if counts is None:
                constructions = None
                break
            constructions.update(counts)
    for name, fn in FIGURES:
        recs = records if fn is fig_paper9 else list(records) + best
        fig = fn(recs, constructions=constructions) if fn is fig_width_vs_N else fn(recs)
        if fig is None:
            continue
        written += _save(fig, out, name, caption=caption, formats=formats, size=size, dpi=dpi)
    return written


# ----------------------------------------------------------------------------------------------
# Training curves (``history_every`` runs): ``ftcjax figures DIR --curves``

CURVES_NAME = "curves"
CURVES_MOST = 6  # instances drawn when none are named
_CURVE_AXES = ("depth", "criterion", "N", "K", "d", "member")


def has_history(rec: dict) -> bool:
    """Whether any probe of ``rec`` stored training curves (``history_every > 0``)."""
    return any(p.get("history") for p in rec.get("probes", []))


def curve_instances(records: Sequence[dict], *, most: int = CURVES_MOST) -> list:
    """Instance ids worth drawing, the ones a curve diagnoses first, at most ``most``.

    Only records with histories; order: censored or undecided (no width reported), then
    non-monotone, then outliers (width above 3x their cell's median, :func:`ftcjax.analysis.stats.outliers`),
    then the rest in stored order.
    """
    recs = [r for r in records if has_history(r)]
    outl = set()
    for v in _rec.group_records(recs, over="N").values():
        arr = _rec.instance_arrays(v)
        outl |= {o[1] for o in _stats.outliers(arr.N, arr.widths, censored=arr.censored, trivial=arr.trivial,
                                                ids=arr.instance_id)}

    def rank(r):  # censored or undecided (no width reported) first
        if bool(r.get("censored")) or (r.get("min_width") is None and not r.get("trivial")):
            return 0
        if r.get("non_monotone"):
            return 1
        return 2 if r["instance_id"] in outl else 3

    ordered = sorted(range(len(recs)), key=lambda i: (rank(recs[i]), i))
    return [recs[i]["instance_id"] for i in ordered[:max(0, int(most))]]


def _curve_thresholds(rec: dict) -> tuple:
    """(loss threshold or None, max-error threshold or None, label) of the record's deciding criterion."""
    proto = rec.get("protocol") or {}
    crit = rec["cell"].get("criterion", proto.get("criterion"))
    prob = rec.get("problem") or {}
    if crit == "paper" and proto.get("paper_threshold") is not None:
        t = float(proto["paper_threshold"])
        return t, None, f"paper criterion: loss <= {t:g}"
    if crit == "relative" and proto.get("rel_eps") is not None and prob.get("mse_zero") is not None:
        t = float(proto["rel_eps"]) * float(prob["mse_zero"])
        return t, None, f"relative criterion: loss <= {float(proto['rel_eps']):g} x loss of g = 0"
    if crit == "strict" and proto.get("tol") is not None and prob.get("z_max") is not None:
        t = float(proto["tol"]) * max(1.0, float(prob["z_max"]))
        return None, t, f"strict criterion: max error <= {float(proto['tol']):g} max(1, max|z|)"
    return None, None, None


def _reported(rec: dict) -> str:
    """What the record reports, in words: the width, or why there is none."""
    ceiling = max((int(p["width"]) for p in rec.get("probes", [])), default=None)
    w = rec.get("min_width")
    if bool(rec.get("censored", w is None)):
        txt = f"censored (> {ceiling})"
    elif rec.get("trivial"):
        txt = "trivial (g = 0 passes)"
    elif w is None:
        txt = f"no width reported ({rec.get('status', 'undecided')})"
        if rec.get("existence_width") is not None:
            txt += f", existence width {rec['existence_width']}"
    else:
        txt = f"reported m = {w}"
    return txt + (", non-monotone" if rec.get("non_monotone") else "")


def fig_curves(records: Sequence[dict], *, instances: Optional[Sequence[str]] = None,
               most: int = CURVES_MOST) -> Figure:
    """Loss (log) and max error against step for every probe and restart of chosen instances.

    One column per instance (at most three per row): loss on top, max error below, one line per run
    (probe, restart), coloured by width; the runs at the record's reported width are drawn thick, the
    deciding criterion's threshold dashed (on the loss panel for ``paper`` / ``relative``, on the
    max-error panel for ``strict``), the loss of g = 0 dotted. ``instances``: instance ids (default
    :func:`curve_instances`). Every run's line has gid ``curve|<instance_id>|<probe>|<restart>|mse``
    (or ``max_err``) and holds exactly the stored history (steps ``j * every``).

    Raises FTCInputError when no record has histories (``history_every`` was 0), or when a named
    instance is missing or has none.
    """
    by_id = {r["instance_id"]: r for r in records}
    if not any(has_history(r) for r in records):
        raise FTCInputError("--curves: the run stored no training curves; set history_every (e.g. "
                            "history_every = 10) in the spec's [train] table and rerun")
    if instances is None:
        ids = curve_instances(records, most=most)
    else:
        ids = list(dict.fromkeys(instances))
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise FTCInputError(f"--instances: no instance {unknown[0]!r} in the results "
                                f"(`ftcjax export DIR --csv -` lists the instance ids)")
        bare = [i for i in ids if not has_history(by_id[i])]
        if bare:
            raise FTCInputError(f"--instances: {bare[0]!r} stored no training curves (history_every was 0)")
    if not ids:
        raise FTCInputError("--instances: no instance named")
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    recs = [by_id[i] for i in ids]
    ncol = min(3, len(recs))
    nrow = math.ceil(len(recs) / ncol)
    fig = Figure(figsize=(5.2 * ncol, 5.6 * nrow + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(2 * nrow, ncol, squeeze=False))
    cmap = colormaps["viridis"]
    for n, rec in enumerate(recs):
        top, bottom = axes[2 * (n // ncol), n % ncol], axes[2 * (n // ncol) + 1, n % ncol]
        probes = rec.get("probes", [])
        widths = sorted({int(p["width"]) for p in probes if p.get("history")})
        color = {w: cmap(0.9 * i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}
        reported = None if rec.get("censored") or rec.get("trivial") else rec.get("min_width")
        for j, p in enumerate(probes):
            h = p.get("history")
            if not h:
                continue
            w = int(p["width"])
            thick = reported is not None and w == int(reported)
            for r, (mse, err) in enumerate(zip(h["mse"], h["max_err"])):
                steps = np.arange(len(mse)) * int(h["every"])
                style = dict(color=color[w], lw=2.0 if thick else 0.9, alpha=0.95 if thick else 0.6)
                top.plot(steps, np.asarray(mse, dtype=float), gid=f"curve|{rec['instance_id']}|{j}|{r}|mse", **style)
                bottom.plot(steps, np.asarray(err, dtype=float), gid=f"curve|{rec['instance_id']}|{j}|{r}|max_err",
                            **style)
        handles = [Line2D([], [], color=color[w], lw=2.0 if w == reported else 0.9,
                          label=f"m = {w}" + (" (reported)" if w == reported else "")) for w in widths]
        loss_t, err_t, crit_label = _curve_thresholds(rec)
        mse_zero = (rec.get("problem") or {}).get("mse_zero")
        if mse_zero is not None and mse_zero > 0:
            top.axhline(float(mse_zero), color="0.4", ls=":", lw=1, gid="loss_of_g0")
            handles.append(Line2D([], [], color="0.4", ls=":", lw=1, label="loss of g = 0"))
        for ax, t in ((top, loss_t), (bottom, err_t)):
            if t is not None and t > 0:
                ax.axhline(t, color="tab:red", ls="--", lw=1.2, gid="threshold")
                handles.append(Line2D([], [], color="tab:red", ls="--", lw=1.2, label=crit_label))
        for ax in (top, bottom):
            ax.set_yscale("log")
            ax.set_xlabel("step")
        top.set_ylabel("loss (mean squared error)")
        bottom.set_ylabel("max error max_i |g(x_i) - z_i|")
        top.set_title(f"{rec['instance_id']}: {readable_label(rec['cell'], show=_CURVE_AXES)}\n{_reported(rec)}",
                      fontsize=9)
        top.legend(handles=handles, fontsize=6.5, loc="best", framealpha=0.6)
    for k in range(len(recs), nrow * ncol):
        axes[2 * (k // ncol), k % ncol].set_axis_off()
        axes[2 * (k // ncol) + 1, k % ncol].set_axis_off()
    every = sorted({int(p["history"]["every"]) for r in recs for p in r.get("probes", []) if p.get("history")})
    _add_caption(fig, _caption(recs, f"one line per run (probe, restart), loss and max error every "
                                     f"{'/'.join(map(str, every))} steps; thick: the reported width"))
    return fig


def write_curves(run_dir, *, out: Optional[str] = None, records: Optional[Sequence[dict]] = None,
                 instances: Optional[Sequence[str]] = None, groups: Optional[dict] = None, most: int = CURVES_MOST,
                 caption: bool = True, formats: Sequence[str] = ("png", "pdf"), size: Optional[tuple] = None,
                 dpi: int = 130) -> list:
    """Write :func:`fig_curves` as ``<out>/curves.<format>`` (``ftcjax figures DIR --curves``); the paths.

    Arguments as :func:`write_all`; ``instances`` / ``most`` as :func:`fig_curves`. Raises FTCInputError
    when the run stored no histories (with the fix: set ``history_every``) or an instance is unknown.
    """
    dirs, records = _figure_inputs(run_dir, records, groups, formats, size)
    fig = fig_curves(records, instances=instances, most=most)
    return _save(fig, out or os.path.join(dirs[0], "figures"), CURVES_NAME, caption=caption, formats=formats,
                 size=size, dpi=dpi)
