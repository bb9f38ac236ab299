"""Portfolios: several training protocols run on the SAME instances, one ``member`` axis.

A spec may add::

    [[portfolio.member]]
    name = "adam-0.03"
    learning_rate = 0.03

    [[portfolio.member]]
    name = "lm"
    optimizer = "lm"
    steps = 300

Each member is a name plus overrides of ``[train]`` fields (scalars). The sweep gets a ``member`` axis
whose values are the names; a cell of member ``name`` carries that member's train values, so every
other part (plan, store, resume, shards, reports by axis) treats members like any other axis. The
``member`` axis is not a problem axis: replicate r of a problem cell is the same instance (same problem
key, same training key) under every member, so members are compared on paired instances.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["parse_portfolio", "member_cell"]

_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")


def parse_portfolio(raw: Any, train_axes: dict[str, tuple[str, Any]], axes: dict[str, list | None],
                    errs: list[str]) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    """Validate a ``[portfolio]`` table into ``((name, ((field, value), ...)), ...)`` in spec order.

    Args:
      raw: the parsed ``portfolio`` table (``{"member": [ {...}, ... ]}``).
      train_axes: name -> (kind, default) of the train fields a member may set.
      axes: the spec's parsed axes (a member may not override a field that already has several values).
      errs: error messages are appended here, each naming the field path.
    """
    if not isinstance(raw, dict) or set(raw) - {"member"}:
        extra = sorted(set(raw) - {"member"}) if isinstance(raw, dict) else None
        errs.append(f"portfolio: unknown key(s) {', '.join(map(repr, extra))}; only [[portfolio.member]] tables"
                    if extra else "portfolio: must be a table of [[portfolio.member]] entries")
        return ()
    members = raw.get("member", [])
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        errs.append("portfolio.member: give at least one [[portfolio.member]] table")
        return ()
    out, seen = [], set()
    for i, m in enumerate(members):
        path = f"portfolio.member[{i}]"
        name = m.get("name")
        if not isinstance(name, str) or not name or not set(name) <= _NAME_OK:
            errs.append(f"{path}.name: {name!r} must be a non-empty name of letters, digits and -_.+")
            continue
        if name in seen:
            errs.append(f"{path}.name: duplicate member name {name!r}")
            continue
        seen.add(name)
        fields = []
        for key, value in m.items():
            if key == "name":
                continue
            where = f"{path}.{key}"
            if key not in train_axes:
                errs.append(f"{where}: unknown train field {key!r}")
                continue
            if len(axes.get(key) or ()) > 1:
                errs.append(f"{where}: [train] already sweeps {key!r} over several values; a member may only "
                            "override a single-valued field")
                continue
            kind, _ = train_axes[key]
            if isinstance(value, list):
                errs.append(f"{where}: a member sets one value, got a list")
                continue
            if kind == "bool" and not isinstance(value, bool):
                errs.append(f"{where}: {value!r} is a {type(value).__name__}, expected true or false")
                continue
            if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
                errs.append(f"{where}: {value!r} is a {type(value).__name__}, expected an integer")
                continue
            if kind == "float":
                if isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
                if not isinstance(value, float) or not math.isfinite(value):
                    errs.append(f"{where}: {value!r} is not a finite number")
                    continue
            if kind == "str" and not isinstance(value, str):
                errs.append(f"{where}: {value!r} is a {type(value).__name__}, expected a string")
                continue
            fields.append((key, value))
        out.append((name, tuple(sorted(fields))))
    return tuple(out)


def member_cell(cell: dict[str, Any], portfolio) -> dict[str, Any]:
    """The cell with its member's overrides applied (unchanged without a ``member`` axis)."""
    if "member" not in cell:
        return cell
    overrides = dict(dict(portfolio)[cell["member"]])
    return {**cell, **overrides}
