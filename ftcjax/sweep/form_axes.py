"""The optional ``[form]`` table of a sweep spec: fine-tuning forms as axes.

    [form]
    kind = ["additive", "lora"]   # an axis: the form of each cell
    frozen_width = [8, 16]        # an axis: neurons per hidden layer of the explicit frozen net
    frozen_depth = [2, 3]         # an axis: its layers
    layers = "all"                # LoRA: "all", "last", or a list of layer indices (negative from the end)
    alpha = 8.0                   # LoRA scale alpha / r (omit: scale 1)
    ranks = "1:16"                # LoRA candidate ranks (a list or a "start:stop:step" range)

Without the table a spec means what it always meant (the paper's additive form on the ``frozen``
axis's ``f``), and its hash and instance ids are unchanged. With it, every cell carries ``form``,
``frozen_width`` and ``frozen_depth``; every problem is a LoRA problem with an explicit frozen net
(``grid.frozen`` = ``random_relu`` or ``pretrained``), and the additive cells train ``g`` on the SAME
instances (the problem key ignores the form), so both forms are compared on paired instances. The
``depth`` axis is the depth of ``g`` and means nothing to LoRA: LoRA cells exist at the first depth
only. ``[width]`` holds the additive candidates, ``form.ranks`` the LoRA ones.
"""
from __future__ import annotations

from typing import Any

FORM_AXES = ("form", "frozen_width", "frozen_depth")  # cell axes (problem axes: frozen_width, frozen_depth)
FROZEN_NET_AXES = ("frozen_width", "frozen_depth")
FORM_KEYS = {"kind", "frozen_width", "frozen_depth", "layers", "alpha", "ranks"}


def parse_form(table: Any, parse_axis, errs: list[str]) -> tuple[dict, dict] | None:
    """``(axes, options)`` from the ``[form]`` table, or None when absent; problems go to ``errs``.

    ``parse_axis(path, kind, raw, errs)`` is the spec's own axis parser (lists, ranges, types).
    """
    from ftcjax._src.forms import FORMS

    if table is None:
        return None
    if not isinstance(table, dict):
        errs.append(f"form: expected a table [form], got {table!r}")
        return None
    for k in table:
        if k not in FORM_KEYS:
            errs.append(f"form.{k}: unknown key; allowed keys here: {', '.join(sorted(FORM_KEYS))}")
    axes: dict[str, list] = {}
    kinds = parse_axis("form.kind", "str", table.get("kind", "lora"), errs)
    if kinds is not None:
        for v in kinds:
            if v not in FORMS:
                errs.append(f"form.kind: unknown value {v!r}; choose one of {', '.join(FORMS)}")
    axes["form"] = kinds
    for name, default, lo in (("frozen_width", 16, 1), ("frozen_depth", 2, 2)):
        vals = parse_axis(f"form.{name}", "int", table.get(name, default), errs)
        if vals is not None:
            for v in vals:
                if v < lo:
                    errs.append(f"form.{name}: {v} must be an integer >= {lo}")
        axes[name] = vals
    layers = table.get("layers", "all")
    if isinstance(layers, str):
        if layers not in ("all", "last"):
            errs.append(f"form.layers: {layers!r} must be \"all\", \"last\" or a list of layer indices")
    elif not (isinstance(layers, list) and layers and all(isinstance(i, int) and not isinstance(i, bool)
                                                          for i in layers)):
        errs.append(f"form.layers: {layers!r} must be \"all\", \"last\" or a non-empty list of integers")
    elif len(set(layers)) != len(layers):
        errs.append(f"form.layers: {layers!r} repeats a layer")
    alpha = table.get("alpha")
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or alpha == float("inf"):
            errs.append(f"form.alpha: {alpha!r} must be a finite positive number (omit it for scale 1)")
        else:
            alpha = float(alpha)
    ranks = parse_axis("form.ranks", "int", table.get("ranks", "1:16"), errs)
    if ranks is not None:
        for r in ranks:
            if r < 0:
                errs.append(f"form.ranks: {r} must be a non-negative integer")
        ranks = sorted(ranks)
    if kinds and "lora" in kinds and ranks is None and "ranks" not in table:
        errs.append("form.ranks: missing")
    options = {"layers": layers, "alpha": alpha, "ranks": ranks}
    return axes, options


def form_table(axes: dict, options: dict) -> dict:
    """The canonical ``[form]`` table: a valid table itself (a manifest's spec is re-parsed from it)."""
    table = {"kind": list(axes["form"]), "frozen_width": list(axes["frozen_width"]),
             "frozen_depth": list(axes["frozen_depth"]), "layers": options["layers"],
             "ranks": list(options["ranks"] or [])}
    if options["alpha"] is not None:
        table["alpha"] = options["alpha"]
    return table


def check_cells(axes: dict, errs: list[str]) -> None:
    """Cross-table checks: a form sweep needs explicit frozen nets and random data."""
    from ftcjax._src.lora import FROZEN_NETS

    for v in axes.get("frozen") or ():
        if v not in FROZEN_NETS:
            errs.append(f"grid.frozen: {v!r} has no explicit network; with a [form] table choose one of "
                        f"{', '.join(FROZEN_NETS)}")
    for v in axes.get("data") or ():
        if v in ("worst_case", "alternating"):
            errs.append(f"grid.data: {v!r} fixes z without a frozen net; a [form] sweep needs random data")


def keep_cell(cell: dict, first_depth) -> bool:
    """LoRA ignores the depth of ``g``: keep its cells at the first depth only (no duplicate work)."""
    return cell.get("form") != "lora" or cell["depth"] == first_depth


def layers_option(layers):
    """The spec's ``layers`` value as :class:`ftcjax.LoRA`'s ``layers`` argument."""
    if layers == "all":
        return None
    if layers == "last":
        return (-1,)
    return tuple(layers)


def form_for_cell(cell: dict, options: dict):
    """The fine-tuning form of a cell (additive when the spec has no ``[form]`` table)."""
    from ftcjax._src.forms import make_form

    if "form" not in cell or cell["form"] == "additive":
        return make_form("additive")
    return make_form("lora", layers=layers_option(options["layers"]), alpha=options["alpha"])


def check_cell(cell: dict, options: dict) -> list[str]:
    """Let the core validate a form cell (the LoRA layers must exist in its frozen net)."""
    from ftcjax._src.errors import FTCInputError

    if cell.get("form") != "lora":
        return []
    try:
        form_for_cell(cell, options).adapted(cell["frozen_depth"])
    except FTCInputError as e:
        return [f"form: {e} (cell frozen_depth={cell['frozen_depth']})"]
    return []
