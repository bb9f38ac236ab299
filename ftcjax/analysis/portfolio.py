"""The best trained width over a portfolio's members, per instance.

An instance of a portfolio sweep is trained by every member (same problem, same keys). Its **best
trained width** is the minimum of the members' minimal widths over the members that trained it (a
censored member says only "more than the grid"), reported with the member(s) that achieved it. When
every member is censored, the instance is censored for the portfolio too.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

__all__ = ["best_over_members", "member_fields", "best_member_records", "BEST"]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def member_fields(records: Iterable[dict[str, Any]]) -> set[str]:
    """Cell fields that distinguish members: ``member`` and every field whose values differ by member."""
    by_member: dict[str, dict[str, set]] = {}
    for rec in records:
        cell = rec["cell"]
        seen = by_member.setdefault(cell["member"], {})
        for k, v in cell.items():
            seen.setdefault(k, set()).add(_key(v))
    from ftcjax.sweep.spec import GRID_AXES

    fields = {"member"}
    keys = set().union(*(set(s) for s in by_member.values())) if by_member else set()
    # a member only overrides [train] fields: a grid axis (depth, N, ...) is never one of its fields,
    # even when a partial run has not yet reached some of its values for every member
    for k in keys - set(GRID_AXES) - {"form"}:
        if len({frozenset(s.get(k, ())) for s in by_member.values()}) > 1:
            fields.add(k)
    return fields


def best_over_members(records: Iterable[dict[str, Any]], members: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per instance of a portfolio sweep.

    Args:
      records: stored records (each with ``cell`` holding a ``member`` axis, ``replicate``,
        ``min_width`` (None when censored) and ``censored``).
      members: member names in portfolio order (ties go to the earliest); default: order of appearance.
    Returns:
      rows ``{"cell": cell without the member fields, "replicate", "best_width" (None if every member
      is censored), "best_members" (members achieving it, portfolio order), "censored",
      "widths": {member: min_width or None}, "missing": members without a record}``, in first-seen order.
    """
    records = [r for r in records if "member" in r.get("cell", {})]
    if not records:
        return []
    order = list(members) if members else list(dict.fromkeys(r["cell"]["member"] for r in records))
    drop = member_fields(records)
    groups: dict[str, dict[str, Any]] = {}
    for rec in records:
        shared = {k: v for k, v in rec["cell"].items() if k not in drop}
        gkey = _key([shared, rec["replicate"]])
        row = groups.setdefault(gkey, {"cell": shared, "replicate": rec["replicate"], "widths": {}})
        row["widths"][rec["cell"]["member"]] = None if rec.get("censored") else rec.get("min_width")
    rows = []
    for row in groups.values():
        trained = {m: w for m, w in row["widths"].items() if w is not None}
        best = min(trained.values()) if trained else None
        rows.append(dict(row, best_width=best, censored=best is None,
                         best_members=[m for m in order if trained.get(m) == best] if trained else [],
                         missing=[m for m in order if m not in row["widths"]]))
    return rows


BEST = "portfolio-best"


def best_member_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per instance of a portfolio sweep for the portfolio's best member, as a member named
    :data:`BEST`: the record of the member with the smallest typical width (ties: portfolio order), or
    of the first member when every member is censored. Its cell keeps the problem axes and the fields
    shared by all members, so reports and figures group it like any member; the probes, brackets and
    flags are that member's own (its width interval is the one the fits use)."""
    records = [r for r in records if "member" in r.get("cell", {})]
    if not records:
        return []
    drop = member_fields(records)
    order = list(dict.fromkeys(r["cell"]["member"] for r in records))
    by: dict[str, list] = {}
    for rec in records:
        shared = {k: v for k, v in rec["cell"].items() if k not in drop}
        by.setdefault(_key([shared, rec["replicate"]]), []).append(rec)
    out = []
    for recs in by.values():
        def rank(r):
            w = None if r.get("censored") else r.get("min_width")
            return (w is None, w if w is not None else 0, order.index(r["cell"]["member"]))
        best = min(recs, key=rank)
        cell = {k: v for k, v in best["cell"].items() if k not in drop}
        cell["member"] = BEST
        out.append(dict(best, cell=cell, instance_id=str(best.get("instance_id", "")) + "#best",
                        best_of=[r["cell"]["member"] for r in recs]))
    return out
