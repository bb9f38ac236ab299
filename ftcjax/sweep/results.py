"""Read a run directory while a sweep may be writing it: status counts and CSV export.

Both only read: every shard is read whole, a torn last line (a write in progress) is skipped, records
are deduplicated by instance id, so they can run at any time beside the writers.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any, TextIO

from ftcjax.sweep.plan import make_plan
from ftcjax.sweep.progress import format_duration, format_table, summary_rows
from ftcjax.sweep.store import RunDir

__all__ = ["status", "format_status", "export_rows", "write_csv", "varying_axes", "CSV_COLUMNS", "status_json"]


def varying_axes(spec) -> list[str]:
    """Axes with more than one value (N always shown): the columns that tell cells apart."""
    return [a for a, v in spec.axes if len(v) > 1 or a == "N"]


def status(run_dir: str | Path) -> dict[str, Any]:
    """Counts and throughput of a run directory (see :func:`format_status`)."""
    rd = RunDir(run_dir)
    manifest = rd.read_manifest()
    spec = rd.spec()
    plan = make_plan(spec)
    loaded = rd.load()
    recs = loaded.records
    chunks_done = sum(1 for c in plan if all(i in recs for i in c.ids))
    planned_ids = {i for c in plan for i in c.ids}
    done = sum(1 for i in planned_ids if i in recs)
    per_writer: dict[str, dict[str, float]] = {}
    times = []
    for r in recs.values():
        t = r.get("timing") or {}
        w = per_writer.setdefault(t.get("writer", "?"), {"instances": 0, "compute_s": 0.0, "chunks": set()})
        w["instances"] += 1
        if "chunk" in r and r["chunk"] not in w["chunks"]:
            w["chunks"].add(r["chunk"])
            w["compute_s"] += float(t.get("chunk_seconds", 0.0))
        if "finished_at" in t:
            times.append(float(t["finished_at"]))
    compute_s = sum(w["compute_s"] for w in per_writer.values())
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    wall_rate = (done - 1) / span if span > 0 else None
    return {
        "run_dir": str(rd.root),
        "name": manifest.get("name"),
        "spec_hash": manifest.get("spec_hash"),
        "instances_total": len(planned_ids),
        "instances_done": done,
        "instances_pending": len(planned_ids) - done,
        "chunks_total": len(plan),
        "chunks_done": chunks_done,
        "censored": sum(1 for r in recs.values() if r.get("censored")),
        "trivial": sum(1 for r in recs.values() if r.get("trivial")),
        "non_monotone": sum(1 for r in recs.values() if r.get("non_monotone")),
        "torn_lines": loaded.torn,
        "corrupt_lines": loaded.corrupt,
        "rejected_lines": [str(r) for r in loaded.rejected],  # file:line: reason, none used
        "duplicate_records": loaded.duplicates,
        "writers": {k: {"instances": v["instances"], "chunks": len(v["chunks"]),
                        "instances_per_compute_s": (v["instances"] / v["compute_s"]) if v["compute_s"] else None}
                    for k, v in sorted(per_writer.items())},
        "compute_seconds": compute_s,
        "instances_per_s_wall": wall_rate,
        "last_finished_at": max(times) if times else None,
        "environment": manifest.get("environment", {}),
        "numerics": manifest.get("numerics", {}),
        "summary": summary_rows(recs.values(), varying_axes(spec)),
        "summary_columns": varying_axes(spec) + ["n", "censored", "trivial", "median", "min", "max"],
    }


def format_status(st: dict[str, Any]) -> str:
    env = st["environment"]
    lines = [
        f"run        {st['run_dir']}  (sweep {st['name']!r}, spec {st['spec_hash']})",
        f"instances  {st['instances_done']}/{st['instances_total']} done, {st['instances_pending']} pending;"
        f" censored {st['censored']}, trivial {st['trivial']}, non-monotone {st['non_monotone']}",
        f"chunks     {st['chunks_done']}/{st['chunks_total']} done",
    ]
    rate = st["instances_per_s_wall"]
    tp = f"{rate:.3g} instances/s over the writing span" if rate else "n/a"
    if st["compute_seconds"]:
        tp += f"; {st['instances_done'] / st['compute_seconds']:.3g} instances per compute-second"
        tp += f" ({format_duration(st['compute_seconds'])} of chunk time)"
    lines.append(f"throughput {tp}")
    if st["instances_pending"] and rate:
        lines.append(f"ETA        {format_duration(st['instances_pending'] / rate)} at the current rate")
    for w, v in st["writers"].items():
        lines.append(f"writer     {w}: {v['instances']} instances, {v['chunks']} chunks")
    if st["torn_lines"] or st["corrupt_lines"]:
        lines.append(f"note       {st['torn_lines']} torn last line(s) skipped (a write in progress or a "
                     f"crash), {st['corrupt_lines']} unusable line(s) set aside (not used; the next "
                     "`ftcjax run` quarantines them and recomputes their instances):")
        rejected = st.get("rejected_lines", [])
        for r in rejected[:10]:
            lines.append(f"           results/{r}"[:200])
        if len(rejected) > 10:
            lines.append(f"           ... and {len(rejected) - 10} more")
    if env:
        lines.append(f"env        jax {env.get('jax')}, backend {env.get('backend')} ({env.get('device_kind')}"
                     f" x{env.get('local_device_count')}), dtypes {st.get('numerics', {}).get('dtype')}")
    lines.append("")
    lines.append("minimal widths per cell (censored instances are counted, not averaged):")
    lines.append(format_table(st["summary"], st["summary_columns"]))
    return "\n".join(lines)


CSV_COLUMNS = [
    "instance_id", "spec_hash", "replicate", "plan_chunk",
    # cell axes are inserted here (every axis of the spec, in spec order)
    "min_width", "censored", "trivial", "non_monotone", "trainings", "strategy",
    "problem_N", "problem_K", "z_max", "mse_zero", "f_fit_mse",
    "n_probes", "probe_widths", "probe_success", "probe_successes", "probe_restarts",
    "probe_best_mse", "probe_best_max_err", "probe_mean_steps",
    "probe_passed_paper", "probe_passed_strict", "probe_passed_relative",
    "writer", "chunk_seconds",
]


def _join(values) -> str:
    return ";".join(_fmt(v) for v in values)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def export_rows(run_dir: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """CSV header and rows: one row per stored instance, in plan order; probes summarised.

    Probe columns are ``;``-joined lists in the order the probes ran (per probe: best MSE and best max
    error over restarts, mean steps, number of restarts passing each criterion).
    """
    rd = RunDir(run_dir)
    spec = rd.spec()
    recs = rd.load().records
    axes = [a for a, _ in spec.axes]
    header = CSV_COLUMNS[:4] + axes + CSV_COLUMNS[4:]
    rows = []
    for chunk in make_plan(spec):
        for inst in chunk.instances:
            r = recs.get(inst.id)
            if r is None:
                continue
            p = r.get("problem", {})
            probes = r.get("probes", [])
            t = r.get("timing", {})
            row = {"instance_id": r["instance_id"], "spec_hash": r.get("spec_hash"),
                   "replicate": r.get("replicate"), "plan_chunk": r.get("chunk")}
            row.update({a: r["cell"].get(a) for a in axes})
            row.update({
                "min_width": r.get("min_width"), "censored": r.get("censored"), "trivial": r.get("trivial"),
                "non_monotone": r.get("non_monotone"), "trainings": r.get("trainings"),
                "strategy": r.get("strategy"),
                "problem_N": p.get("N"), "problem_K": p.get("K"), "z_max": p.get("z_max"),
                "mse_zero": p.get("mse_zero"), "f_fit_mse": p.get("f_fit_mse"),
                "n_probes": len(probes),
                "probe_widths": _join(q["width"] for q in probes),
                "probe_success": _join(q["success"] for q in probes),
                "probe_successes": _join(q["successes"] for q in probes),
                "probe_restarts": _join(q["restarts"] for q in probes),
                "probe_best_mse": _join(min(q["mse"]) if q["mse"] else None for q in probes),
                "probe_best_max_err": _join(min(q["max_err"]) if q["max_err"] else None for q in probes),
                "probe_mean_steps": _join(statistics.fmean(q["steps"]) if q["steps"] else None
                                          for q in probes),
                "writer": t.get("writer"), "chunk_seconds": t.get("chunk_seconds"),
            })
            for c in ("paper", "strict", "relative"):
                row[f"probe_passed_{c}"] = _join(sum(q.get("passed", {}).get(c, [])) for q in probes)
            rows.append({k: _fmt(v) for k, v in row.items()})
    return header, rows


def write_csv(run_dir: str | Path, out: TextIO) -> int:
    """Write the export to ``out``; returns the number of rows."""
    header, rows = export_rows(run_dir)
    w = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return len(rows)


def status_json(run_dir: str | Path) -> str:
    st = status(run_dir)
    return json.dumps(st, indent=2, default=str)
