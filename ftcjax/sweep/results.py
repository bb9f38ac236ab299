"""Read a run directory while a sweep may be writing it: status counts and CSV export.

Both only read: every shard is read whole, a torn last line (a write in progress) is skipped, records
are deduplicated by instance id, so they can run at any time beside the writers.
"""
from __future__ import annotations

import csv
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, TextIO

from ftcjax.sweep.plan import make_plan
from ftcjax.sweep.progress import format_duration
from ftcjax.sweep.store import RunDir

__all__ = ["status", "format_status", "export_rows", "instance_rows", "load_run", "write_csv", "varying_axes",
           "CSV_COLUMNS", "status_json", "writer_states", "summary_rows", "format_table"]


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
        chunk_key = (r.get("chunk"), t.get("finished_at"))  # one chunk may be computed in parts (growth)
        if "chunk" in r and chunk_key not in w["chunks"]:
            w["chunks"].add(chunk_key)
            w["compute_s"] += float(t.get("chunk_seconds", 0.0))
        if "finished_at" in t:
            times.append(float(t["finished_at"]))
    compute_s = sum(w["compute_s"] for w in per_writer.values())
    writers_live = writer_states(rd)
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
        "unresolved": sum(1 for r in recs.values() if _unresolved(r)),
        "trivial": sum(1 for r in recs.values() if r.get("trivial")),
        "non_monotone": sum(1 for r in recs.values() if r.get("non_monotone")),
        "torn_lines": loaded.torn,
        "corrupt_lines": loaded.corrupt,
        "rejected_lines": [str(r) for r in loaded.rejected],  # file:line: reason, none used
        "duplicate_records": loaded.duplicates,
        "writers": {k: {"instances": v["instances"], "chunks": len(v["chunks"]),
                        "instances_per_compute_s": (v["instances"] / v["compute_s"]) if v["compute_s"] else None}
                    for k, v in sorted(per_writer.items())},
        "writer_states": writers_live,
        "compute_seconds": compute_s,
        "instances_per_s_wall": wall_rate,
        "last_finished_at": max(times) if times else None,
        "environment": manifest.get("environment", {}),
        "numerics": manifest.get("numerics", {}),
        "summary": summary_rows(recs.values(), varying_axes(spec)),
        "summary_columns": varying_axes(spec) + ["n", "censored", "unresolved", "trivial", "median", "min", "max"],
    }


def writer_states(rd: RunDir) -> dict[str, dict[str, Any]]:
    """Per writer (``DIR/env/*.json``): ``state`` running / finished / dead / unknown, pid, host, heartbeat.

    A writer whose record says "running" but whose process is gone (``kill -9``, a crash, a node lost)
    is "dead"; on another host liveness cannot be checked and the heartbeat age is all there is.
    """
    from ftcjax._src.errors import FTCEnvironmentError
    from ftcjax.sweep import files
    from ftcjax.sweep.environment import writer_alive

    out = {}
    env_dir = rd.root / "env"
    for path in sorted(env_dir.glob("*.json")) if env_dir.is_dir() and not env_dir.is_symlink() else []:
        try:  # regular files only, size-limited: a planted link or FIFO is skipped, never followed
            env = json.loads(files.read_regular(path, limit=1 << 20, what="writer record"))
        except (OSError, FTCEnvironmentError, ValueError):
            continue
        if not isinstance(env, dict):
            continue
        state = env.get("state", "unknown")
        if state == "running":
            alive = writer_alive(env)
            state = "dead" if alive is False else "running" if alive else "running?"
        out[path.stem] = {"state": state, "pid": env.get("pid"), "hostname": env.get("hostname"),
                          "heartbeat": env.get("heartbeat")}
    return out


def format_status(st: dict[str, Any]) -> str:
    env = st["environment"]
    lines = [
        f"run        {st['run_dir']}  (sweep {st['name']!r}, spec {st['spec_hash']})",
        f"instances  {st['instances_done']}/{st['instances_total']} done, {st['instances_pending']} pending;"
        f" censored {st['censored']}, unresolved {st.get('unresolved', 0)}, trivial {st['trivial']},"
        f" non-monotone {st['non_monotone']}",
        f"chunks     {st['chunks_done']}/{st['chunks_total']} done",
    ]
    rate = st["instances_per_s_wall"]
    tp = f"{rate:.3g} instances/s over the writing span" if rate else "n/a"
    if st["compute_seconds"]:
        tp += f"; {st['instances_done'] / st['compute_seconds']:.3g} instances per compute-second"
        tp += f" ({format_duration(st['compute_seconds'])} of chunk time)"
    lines.append(f"throughput {tp}")
    states = st.get("writer_states", {})
    live = not states or any(v["state"] not in ("dead", "finished") for v in states.values())
    if st["instances_pending"] and rate and live:
        lines.append(f"ETA        {format_duration(st['instances_pending'] / rate)} at the current rate")
    elif st["instances_pending"]:
        lines.append("ETA        none: no writer is running; rerun the same `ftcjax run` command to resume")
    for w in sorted(set(st["writers"]) | set(states)):
        v = st["writers"].get(w, {"instances": 0, "chunks": 0})
        ws = states.get(w)
        state = ""
        if ws is not None:
            age = f", last heartbeat {format_duration(time.time() - ws['heartbeat'])} ago" if ws.get("heartbeat") else ""
            state = {"dead": f"; DEAD (pid {ws['pid']} on {ws['hostname']} is gone{age})",
                     "running": f"; running (pid {ws['pid']}{age})",
                     "running?": f"; running on {ws['hostname']}? (cannot check from here{age})",
                     "finished": "; finished"}.get(ws["state"], "")
        lines.append(f"writer     {w}: {v['instances']} instances, {v['chunks']} chunks{state}")
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
    lines.append("minimal widths per cell (censored and unresolved instances are counted, not averaged):")
    lines.append(format_table(st["summary"], st["summary_columns"]))
    return "\n".join(lines)


CSV_COLUMNS = [
    "instance_id", "spec_hash", "replicate", "plan_chunk",
    # cell axes are inserted here (every axis of the spec, in spec order)
    "min_width", "censored", "trivial", "non_monotone", "trainings", "strategy",
    "problem_N", "problem_K", "z_max", "mse_zero", "f_fit_mse",
    "n_probes", "probe_widths", "probe_success", "probe_successes", "probe_restarts",
    "probe_best_mse", "probe_best_max_err", "probe_mean_steps",
    # one probe_passed_<criterion> column per criterion of the kernels is inserted here
    "writer", "chunk_seconds",
]


def _criteria() -> tuple[str, ...]:
    from ftcjax import CRITERIA  # the kernels' list: the columns follow it, never a copy

    return tuple(CRITERIA)


def _join(values) -> str:
    return ";".join(_fmt(v) for v in values)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list):
        return _join(v)
    return str(v)


def instance_rows(run_dir: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Column names and one row per stored instance (plan order), with typed values.

    Scalars stay Python numbers / bools / None; probe columns are lists in the order the probes ran
    (per probe: width, success, successes, restarts, best MSE and best max error over restarts, mean
    steps, restarts passing each criterion). :func:`export_rows` formats the same rows as CSV text,
    :func:`load_run` as a table, so the two always agree.
    """
    rd = RunDir(run_dir)
    spec = rd.spec()
    recs = rd.load().records
    axes = [a for a, _ in spec.axes]
    crit = _criteria()
    base = CSV_COLUMNS[:4] + axes + CSV_COLUMNS[4:]
    at = base.index("writer")
    header = base[:at] + [f"probe_passed_{c}" for c in crit] + base[at:]
    rows = []
    for chunk in make_plan(spec):
        for inst in chunk.instances:
            r = recs.get(inst.id)
            if r is None:
                continue
            p = r.get("problem", {})
            probes = r.get("probes", [])
            t = r.get("timing", {})
            row: dict[str, Any] = {"instance_id": r["instance_id"], "spec_hash": r.get("spec_hash"),
                                   "replicate": r.get("replicate"), "plan_chunk": r.get("chunk")}
            row.update({a: r["cell"].get(a) for a in axes})
            row.update({
                "min_width": r.get("min_width"), "censored": r.get("censored"), "trivial": r.get("trivial"),
                "non_monotone": r.get("non_monotone"), "trainings": r.get("trainings"),
                "strategy": r.get("strategy"),
                "problem_N": p.get("N"), "problem_K": p.get("K"), "z_max": p.get("z_max"),
                "mse_zero": p.get("mse_zero"), "f_fit_mse": p.get("f_fit_mse"),
                "n_probes": len(probes),
                "probe_widths": [q["width"] for q in probes],
                "probe_success": [q["success"] for q in probes],
                "probe_successes": [q["successes"] for q in probes],
                "probe_restarts": [q["restarts"] for q in probes],
                "probe_best_mse": [min(q["mse"]) if q["mse"] else None for q in probes],
                "probe_best_max_err": [min(q["max_err"]) if q["max_err"] else None for q in probes],
                "probe_mean_steps": [statistics.fmean(q["steps"]) if q["steps"] else None for q in probes],
                "writer": t.get("writer"), "chunk_seconds": t.get("chunk_seconds"),
            })
            for c in crit:
                row[f"probe_passed_{c}"] = [sum(q.get("passed", {}).get(c, [])) for q in probes]
            rows.append({k: row[k] for k in header})
    return header, rows


def export_rows(run_dir: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """CSV header and rows (text): :func:`instance_rows` with lists ``;``-joined, None empty, bools 0/1."""
    header, rows = instance_rows(run_dir)
    return header, [{k: _fmt(v) for k, v in row.items()} for row in rows]


def load_run(run_dir: str | Path | list, *, frame: bool | None = None):
    """One row per stored instance of one run directory (or several, concatenated), for analysis.

    Returns a pandas DataFrame when pandas is installed (``frame=None``; ``frame=True`` requires it),
    else a dict column -> list. Columns are those of ``ftcjax export`` (:data:`CSV_COLUMNS` with the
    spec's axes inserted); probe columns hold lists, not ``;`` strings; a missing value is None.

    >>> runs = load_run("runs/default")                      # doctest: +SKIP
    >>> runs.groupby(["depth", "N"]).min_width.median()      # doctest: +SKIP
    """
    from ftcjax._src.errors import FTCInputError

    dirs = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
    if not dirs or not all(isinstance(d, (str, Path)) for d in dirs):
        raise FTCInputError(f"run_dir: {run_dir!r} must be a run directory path or a list of them")
    columns: list[str] = []
    rows: list[dict[str, Any]] = []
    for d in dirs:
        header, part = instance_rows(d)
        columns += [c for c in header if c not in columns]
        rows += part
    table = {c: [row.get(c) for row in rows] for c in columns}
    if frame is False:
        return table
    try:
        import pandas as pd
    except ImportError:
        if frame:
            raise FTCInputError("frame: pandas is not installed (pip install pandas), or pass frame=False")
        return table
    return pd.DataFrame(table, columns=columns)


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


def _unresolved(r: dict[str, Any]) -> bool:
    """No width, yet neither censored nor trivial: the adaptive search spent its budget undecided."""
    return r.get("min_width") is None and not r.get("censored") and not r.get("trivial")


def _median(recs: list[dict[str, Any]]):
    """The one definition of a cell's median width (ftcjax.analysis.stats.median_width)."""
    from ftcjax.analysis.stats import median_width

    return median_width([r.get("min_width") for r in recs], censored=[bool(r.get("censored")) for r in recs],
                        trivial=[bool(r.get("trivial")) for r in recs])


def summary_rows(records: Iterable[dict[str, Any]], varying: list[str]) -> list[dict[str, Any]]:
    """One row per cell (over the ``varying`` axes): counts and min-width statistics.

    Censored instances are counted, never averaged in (their width is only a lower bound); so are
    unresolved ones (no width and not censored: the median counts them above every measured width).
    """
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        key = tuple(r["cell"].get(a) for a in varying)
        cells.setdefault(key, []).append(r)
    rows = []
    for key in sorted(cells, key=lambda k: tuple((str(type(v)), v) for v in k)):
        recs = cells[key]
        widths = [r["min_width"] for r in recs if not r.get("censored") and r.get("min_width") is not None]
        row = dict(zip(varying, key))
        row.update(
            n=len(recs),
            censored=sum(1 for r in recs if r.get("censored")),
            unresolved=sum(1 for r in recs if _unresolved(r)),
            trivial=sum(1 for r in recs if r.get("trivial")),
            median=_median(recs),
            min=min(widths) if widths else None,
            max=max(widths) if widths else None,
        )
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain fixed-width text table."""
    if not rows:
        return "(no results yet)"
    columns = columns or list(rows[0])

    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)
