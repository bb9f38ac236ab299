"""Report and figures of a ``[form]`` sweep: LoRA rank beside additive width, on one parameter axis.

Reads the records of a sweep whose spec has a ``[form]`` table (see :mod:`ftcjax.sweep.form_axes`):
every record carries its ``form`` and ``trainable_params`` at the found size. For every frozen net
(``frozen_width`` x ``frozen_depth``) and every (K, N) cell it summarises the smallest trainable LoRA
rank and the smallest additive width (depth 2 and 3 ``g``), each also in trainable parameters, with
the censored median rule of :func:`ftcjax.analysis.stats.cell_summaries` (a censored instance is above
every measured one; a median that touches it is only a lower bound, printed ``>``).

    ftcjax figures RUN_DIR --out OUT_DIR      # writes report.md and the figures of a [form] sweep
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import records as _rec
from ftcjax.analysis import stats as _stats

__all__ = ["form_groups", "summaries", "report", "write_all", "main"]


def _series(rec: dict) -> tuple:
    """The curve a record belongs to: (frozen_width, frozen_depth, form label)."""
    c = rec["cell"]
    label = "LoRA" if c["form"] == "lora" else f"additive, {c['depth']}-layer g"
    return c["frozen_width"], c["frozen_depth"], label


def form_groups(records: Sequence[dict]) -> dict:
    """``{(frozen_width, frozen_depth, label): [records]}`` for the form sweep's records."""
    if not records:
        raise FTCInputError("records: none")
    out: dict = {}
    for rec in records:
        if "form" not in rec or "form" not in rec.get("cell", {}):
            raise FTCInputError(f"record {rec.get('instance_id')!r}: not from a [form] sweep (no form axis)")
        out.setdefault(_series(rec), []).append(rec)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "LoRA", kv[0][2])))


def _arrays(recs: Sequence[dict], axis: str, value: str):
    xs = np.array([r["cell"][axis] for r in recs], dtype=np.float64)
    vals = [r["min_width"] if value == "size" else r["trainable_params"] for r in recs]
    # no size without a censoring flag (an unresolved adaptive search) counts as censored: never a value
    cens = np.array([r["censored"] or r["min_width"] is None for r in recs], dtype=bool)
    triv = np.array([r["trivial"] for r in recs], dtype=bool)
    return xs, np.array([np.nan if v is None else v for v in vals], dtype=np.float64), cens, triv


def summaries(recs: Sequence[dict], *, over: str, fixed: dict, value: str = "size") -> tuple:
    """Censored-aware per-``over`` summaries (``CellSummary``; its ``N`` field holds the ``over`` value)
    of the records matching ``fixed`` (e.g. ``{"K": 64}``); ``value`` is ``"size"`` or ``"params"``."""
    sel = [r for r in recs if all(r["cell"][k] == v for k, v in fixed.items())]
    if not sel:
        return ()
    xs, vals, cens, triv = _arrays(sel, over, value)
    # the top probed size bounds a censored size from below (parameters: no bound is stated)
    ceiling = (np.array([max(p["width"] for p in r["probes"]) for r in sel], dtype=np.float64)
               if value == "size" else None)
    return _stats.cell_summaries(xs, vals, censored=cens, trivial=triv, ceiling=ceiling)


def _fmt(s) -> str:
    if s is None:
        return "-"
    if s.median is None:
        return f">{s.median_lower:g}" if s.median_lower is not None else "cens"
    q = (f" [{s.q25:g}, {s.q75:g}]" if s.q25 is not None and s.q75 is not None and s.n > 2 else "")
    return f"{s.median:g}{q}"


def _status(s) -> str:
    return f"{s.n - s.n_censored}/{s.n}" if s is not None else "-"


def _protocol_line(records: Sequence[dict]) -> str:
    p = records[0]["protocol"]
    c = records[0]["cell"]
    crit = c["criterion"]
    tol = f"rel_eps = {p['rel_eps']}" if crit == "relative" else (f"tol = {c['tol']}" if crit == "strict"
                                                                  else f"threshold = {p['paper_threshold']}")
    lora = next((r["form"] for r in records if r["cell"]["form"] == "lora"), None)
    lora_txt = (f"; LoRA layers {lora['layers'] or 'all'}, scale {lora['scale']}, {lora['init']}"
                if lora else "")
    return (f"criterion {crit} ({tol}); {p['optimizer']} lr {p['learning_rate']} {p['schedule']}, "
            f"{p['steps']} steps, {p['restarts']} restarts (a size succeeds if any restart does), "
            f"{p['dtype']}; frozen f = {c['frozen']}, d = {c['d']}, data {c['data']}, labels "
            f"{c['labels']}{lora_txt}; search {records[0]['strategy']}")


def report(records: Sequence[dict]) -> str:
    """Markdown tables: per frozen net and (K, N), median size [IQR] and trainable parameters per form."""
    groups = form_groups(records)
    nets = sorted({k[:2] for k in groups})
    labels = sorted({k[2] for k in groups}, key=lambda s: (s != "LoRA", s))
    Ks = sorted({r["cell"]["K"] for r in records})
    Ns = sorted({r["cell"]["N"] for r in records})
    n_rep = max(r["replicate"] for r in records) + 1
    lines = ["# Fine-tuning forms: smallest trainable LoRA rank and additive width on the same instances", "",
             f"Protocol: {_protocol_line(records)}.", "",
             f"Every cell: {n_rep} random instances (the same instances for every form); entries are "
             "median [quartiles] over instances, 'ok' counts uncensored instances; '>x' marks a median "
             "that touches a censored instance (only a lower bound); sizes are LoRA ranks r or additive "
             "widths m, params the trainable parameters at that size (LoRA: r * sum_l (in_l + out_l); "
             "additive: all weights and biases of g). Instances where the form at the search's top size "
             "failed every restart are censored, never counted as a value.", ""]
    trivial = sum(r["trivial"] for r in records)
    if trivial:
        lines += [f"{trivial} instance(s) were trivial (the zero update already met the criterion).", ""]
    for net in nets:
        w, dep = net
        cap = _rank_caps(w, dep, records[0]["cell"]["d"])
        lines += [f"## Frozen net: width {w}, depth {dep}", "",
                  f"Useful rank cap: max_l min(out_l, in_l) = {cap}. Every update B A of a larger rank is "
                  f"already reachable at rank {cap}, so a smallest trainable rank above {cap} says the "
                  "optimiser needed the over-parametrised factorisation, not that the smaller rank cannot "
                  "fit.", ""]
        head = ["K", "N"]
        for lab in labels:
            head += [f"{lab}: size", "params", "ok"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for K in Ks:
            for N in Ns:
                if N > K:
                    continue
                row = [str(K), str(N)]
                for lab in labels:
                    recs = groups.get((w, dep, lab), [])
                    s = summaries(recs, over="N", fixed={"K": K, "N": N})
                    p = summaries(recs, over="N", fixed={"K": K, "N": N}, value="params")
                    row += [_fmt(s[0] if s else None), _fmt(p[0] if p else None), _status(s[0] if s else None)]
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API, no pyplot state).

_COLORS = ("C0", "C1", "C2", "C3", "C4", "C5")


def _instances(ax, recs, over, value, color, marker, shift):
    """Every instance as a small point (censored: an open triangle at its search ceiling)."""
    for r in recs:
        x = r["cell"][over] * shift
        v = r["min_width"] if value == "size" else r["trainable_params"]
        if v is not None:
            ax.plot([x], [v], linestyle="none", marker=marker, markersize=3, color=color, alpha=0.6)
        elif value == "size":
            ax.plot([x], [max(p["width"] for p in r["probes"])], linestyle="none", marker="^", markersize=4,
                    color=color, markerfacecolor="none", alpha=0.8)


def _band(ax, cells, color, label, marker="o"):
    xs = [c.N for c in cells if c.median is not None]
    ys = [c.median for c in cells if c.median is not None]
    lo = [c.q25 if c.q25 is not None else c.median for c in cells if c.median is not None]
    hi = [c.q75 if c.q75 is not None else c.median for c in cells if c.median is not None]
    if xs:
        ax.plot(xs, ys, marker=marker, color=color, label=label)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    lb = [(c.N, c.median_lower) for c in cells if c.median is None and c.median_lower is not None]
    if lb:
        ax.plot([x for x, _ in lb], [y for _, y in lb], linestyle="none", marker="^", color=color,
                markerfacecolor="none", label=f"{label}: median censored (> shown)")


def _rank_caps(frozen_width: int, frozen_depth: int, d: int) -> int:
    """The largest rank any adapted layer can use: max_l min(out_l, in_l)."""
    dims = [d] + [frozen_width] * (frozen_depth - 1) + [1]
    return max(min(a, b) for a, b in zip(dims[:-1], dims[1:]))


def fig_rank(records: Sequence[dict], *, over: str):
    """Smallest LoRA rank against ``over`` ("N" or "K"), a panel per frozen net, a line per other axis."""
    from matplotlib.figure import Figure

    groups = {k: v for k, v in form_groups(records).items() if k[2] == "LoRA"}
    if not groups:
        return None
    other = "K" if over == "N" else "N"
    d = records[0]["cell"]["d"]
    fig = Figure(figsize=(5.2 * len(groups), 4.2))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, ((w, dep, _), recs) in zip(axes, groups.items()):
        others = sorted({r["cell"][other] for r in recs})
        for i, v in enumerate(others):
            sel = [r for r in recs if r["cell"][other] == v]
            _instances(ax, sel, over, "size", _COLORS[i % 6], "o", 1.0 + 0.06 * (i - len(others) / 2))
            _band(ax, summaries(recs, over=over, fixed={other: v}), _COLORS[i % 6], f"{other} = {v} (median)")
        xs = sorted({r["cell"][over] for r in recs})
        grid = np.geomspace(min(xs), max(xs), 50)
        if over == "K":  # Jang, Lee & Ryu: rank ~ sqrt(#fitted points); here every one of the K points is fitted
            ax.plot(grid, np.sqrt(2 * grid), "k:", label="sqrt(2 K) (Jang et al., NTK regime)")
        cap = _rank_caps(w, dep, d)
        ax.axhline(cap, color="grey", linestyle="--", label=f"rank cap max_l min(out, in) = {cap}")
        ax.axhline(w, color="grey", linestyle="-.", linewidth=0.8,
                   label=f"Zeng & Lee: rank {w} (= width x depth / depth) represents any same-depth target")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("N (changed labels)" if over == "N" else "K (samples)")
        ax.set_ylabel("smallest trainable LoRA rank r (points: instances; open: censored at the top)")
        ax.set_ylim(0.7, 2.5 * max(w, cap, 16))
        ax.set_title(f"frozen ReLU net: width {w}, depth {dep}, d = {d}", fontsize=9)
        ax.legend(fontsize=6, loc="upper left", ncol=2)
    fig.suptitle(f"LoRA rank vs {over}. {_protocol_line(records)}", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return fig


def fig_params(records: Sequence[dict], *, over: str = "N"):
    """Trainable parameters at the smallest trainable size, every form, against ``over``: a panel per
    value of the other axis; LoRA per frozen net, additive g of depth 2 and 3."""
    from matplotlib.figure import Figure

    groups = form_groups(records)
    other = "K" if over == "N" else "N"
    values = sorted({r["cell"][other] for r in records})
    fig = Figure(figsize=(4.6 * len(values), 4.2))
    axes = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, v in zip(axes, values):
        for i, ((w, dep, lab), recs) in enumerate(groups.items()):
            sel = [r for r in recs if r["cell"][other] == v]
            _instances(ax, sel, over, "params", _COLORS[i % 6], "o" if lab == "LoRA" else "s",
                       1.0 + 0.04 * (i - len(groups) / 2))
            cells = summaries(recs, over=over, fixed={other: v}, value="params")
            _band(ax, cells, _COLORS[i % 6], f"{lab} (frozen {w}x{dep})",
                  marker="o" if lab == "LoRA" else "s")
        if over == "N":
            ax.axhline(v, color="k", linestyle=":", linewidth=0.8, label=f"K = {v} constraints")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (changed labels)" if over == "N" else "K (samples)")
        ax.set_ylabel("trainable parameters at the smallest trainable size")
        ax.set_title(f"{other} = {v}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"LoRA vs additive on one axis (trainable parameters). {_protocol_line(records)}",
                 fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


FIGURES = (("lora_rank_vs_N", lambda r: fig_rank(r, over="N")),
           ("lora_rank_vs_K", lambda r: fig_rank(r, over="K")),
           ("params_vs_N", lambda r: fig_params(r, over="N")),
           ("params_vs_K", lambda r: fig_params(r, over="K")))


def write_all(run_dir: str, out: Optional[str] = None, *, records: Optional[Sequence[dict]] = None) -> list:
    """Write ``report.md`` and every figure (PNG and PDF) to ``out`` (default ``<run_dir>/figures``);
    ``ftcjax figures DIR`` calls it for a [form] sweep."""
    if records is None:
        records = _rec.load_records(run_dir)
    if not records:
        raise FTCInputError(f"run_dir: no finished instances in {os.fspath(run_dir)!r}")
    out = os.fspath(out or os.path.join(os.fspath(run_dir), "figures"))
    os.makedirs(out, exist_ok=True)
    written = []
    path = os.path.join(out, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(report(records))
    written.append(path)
    for name, make in FIGURES:
        fig = make(records)
        if fig is None:
            continue
        for ext in ("png", "pdf"):
            p = os.path.join(out, f"{name}.{ext}")
            fig.savefig(p, dpi=130)
            written.append(p)
    return written
