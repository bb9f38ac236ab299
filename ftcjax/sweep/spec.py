"""Sweep specs: a TOML file -> a validated, normalised, hashable :class:`SweepSpec`.

A spec describes a grid of cells (every combination of its axes, minus the cells that break a per-cell
constraint such as ``N <= K``), a number of random instances (replicates) per cell, the candidate widths
of the minimal-width search, a seed and the batching knobs::

    name = "demo"
    seed = 0
    replicates = 4              # random instances per cell

    [grid]                      # problem and criterion axes: a value, a list, or "start:stop:step"
    depth = [2, 3]
    N = "2:8:2"                 # ranges include both ends: 2, 4, 6, 8
    K = 32
    d = 2
    data = "gaussian"
    criterion = "strict"
    tol = 1e-3

    [train]                     # training protocol: every key may also be a list (an axis)
    optimizer = "adam"
    learning_rate = [1e-2, 3e-2]
    steps = 300
    restarts = 2
    dtype = "float64"

    [width]                     # candidate widths: lower/upper/step or an explicit list `values`
    lower = 1
    upper = 24
    strategy = "bisect"        # or "adaptive" (the default); rule = "adaptive-v1" would pin that older version

    [batch]
    chunk_size = 8              # instances per chunk (fixes the batch layout, hence the bits)

Validation happens before any work and reports every problem at once, each naming the field path and
the value (``grid.N: 1200 exceeds grid.K = 1000``): :class:`SpecError` carries the list.

The canonical form (:func:`canonical_dict`) expands ranges and fills every default, so two files that
mean the same sweep hash the same (:func:`spec_hash`), and a resumed run can name the fields that differ
(:func:`diff_specs`). ``name`` and ``description`` are labels, not part of the sweep's identity.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Sequence

from ftcjax._src.errors import FTCEnvironmentError, FTCInputError
from ftcjax.sweep import guards
from ftcjax.sweep.portfolio import member_cell

__all__ = [
    "SpecError",
    "SweepSpec",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "canonical_dict",
    "spec_hash",
    "identity_dict",
    "growth_problems",
    "diff_specs",
    "parse_override",
    "apply_overrides",
    "SWEEP_DEFAULTS",
    "GRID_AXES",
    "TRAIN_AXES",
]


class SpecError(FTCInputError):
    """A spec with one or more problems; ``problems`` lists one message per problem."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"invalid sweep spec{where} ({len(self.problems)} problem"
                 f"{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


# ----------------------------------------------------------------------------------------------------
# Schema. Each axis: (kind, default). kind "int" / "float" / "str"; default None means required.
# The legal values of each axis are the kernels' business (see `_kernel_message`), so the spec never
# accepts a value the kernels would reject later, hours into a sweep.

GRID_AXES: dict[str, tuple[str, Any]] = {
    "depth": ("int", 2),
    "N": ("int", None),
    "K": ("int", None),
    "d": ("int", 10),
    "data": ("str", "gaussian"),
    "labels": ("str", "uniform"),
    "frozen": ("str", "interpolant"),
    "criterion": ("str", None),  # None: filled from the Protocol's default below
    "tol": ("float", None),
}

# Training-protocol axes: every field of ftcjax's Protocol except those set by the grid (depth,
# criterion, tol) and `split` (a tuple per net, not a scalar axis), with its kind. Their defaults are the
# Protocol's own, filled into the canonical spec so its hash records the values actually used.
_GRID_PROTOCOL_FIELDS = ("depth", "criterion", "tol", "split")


def _protocol_fields() -> dict[str, tuple[str, Any]]:
    from ftcjax._src.protocol import Protocol

    out: dict[str, tuple[str, Any]] = {}
    for f in dataclasses.fields(Protocol):
        if f.name in _GRID_PROTOCOL_FIELDS or f.default is dataclasses.MISSING:
            continue
        d = f.default
        kind = ("bool" if isinstance(d, bool) else "int" if isinstance(d, int) else "float" if isinstance(d, float)
                else "str" if isinstance(d, str) else None)
        if kind is not None:
            out[f.name] = (kind, d)
    return out


TRAIN_AXES: dict[str, tuple[str, Any]] = _protocol_fields()  # name -> (kind, default)
# Training axes added after sweeps were stored: in the canonical spec (so in the hash, which covers the
# axis names) and in a cell (so in its instance id) only where a spec sets a value other than the
# default, so that every spec written before one existed keeps its hash and its stored records.
LATE_TRAIN_AXES = ("check_every",)


# The built-in defaults of a sweep are those of the shipped sweeps/default.toml (a test pins the two
# together), so deleting a line from a copy of it never changes what the copy means. Where they differ
# from the kernel's Protocol defaults (tuned for a single call), the sweep's win.
SWEEP_DEFAULTS: dict[str, Any] = {
    "replicates": 6, "grid.d": 2, "grid.criterion": "relative", "train.learning_rate": 0.02,
    "train.restarts": 2, "train.rel_eps": 0.01, "width.lower": 1, "width.upper": 48,
    "batch.chunk_size": 10,
}


def _fill_defaults() -> None:
    from ftcjax._src.protocol import Protocol

    for name in ("criterion", "tol"):
        kind, _ = GRID_AXES[name]
        GRID_AXES[name] = (kind, getattr(Protocol, name))
    for path, value in SWEEP_DEFAULTS.items():
        table, _, key = path.partition(".")
        axes = GRID_AXES if table == "grid" else TRAIN_AXES if table == "train" else None
        if axes is not None:
            axes[key] = (axes[key][0], value)


_fill_defaults()
_REQUIRED = ("N", "K")

TOP_KEYS = {"name", "description", "seed", "replicates", "grid", "train", "width", "batch", "form", "portfolio"}
WIDTH_KEYS = {"lower", "upper", "step", "values", "strategy", "rule", "report"}
BATCH_KEYS = {"chunk_size"}
_SEED_LIMIT = 2**32


# ----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec in canonical form.

    Attributes:
      name: label of the sweep (default output directory ``runs/<name>``); not part of the hash.
      description: free text; not part of the hash.
      seed: root seed, ``0 <= seed < 2**32``.
      replicates: random instances per cell.
      axes: ordered mapping axis -> tuple of values (grid axes then training axes); cells are the
        product of the axes in this order, minus the cells with ``N > K``.
      widths: sorted candidate widths of the minimal-width search.
      strategy: the search rule: "adaptive" (default), "bisect" or "grid".
      rule: a pinned version of the strategy's rule (e.g. "adaptive-v1", to reproduce records of an
        older rule), or "" for the newest (:attr:`search_rule` is the one in effect). Not part of the
        hash: every record carries its ``search_rule`` and a run directory holds one.
      report: which adaptive width the records' ``min_width`` (and so every report) holds:
        "typical" (w50, default) or "existence" (smallest width with any success).
      chunk_size: instances per chunk.
      text: the original TOML text (kept in the run directory for humans).
      form_options: the ``[form]`` table's non-axis options (see :mod:`ftcjax.sweep.form_axes`).
      portfolio: the ``[[portfolio.member]]`` overrides (see :mod:`ftcjax.sweep.portfolio`).
      overrides: the ``key=value`` overrides applied on top of ``text`` (command line), in order.
    """

    name: str
    description: str
    seed: int
    replicates: int
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    widths: tuple[int, ...]
    strategy: str
    chunk_size: int
    text: str = dataclasses.field(default="", compare=False)
    report: str = "typical"
    rule: str = ""
    # The optional [form] table's non-axis options (LoRA layers, alpha, ranks) as sorted pairs; empty
    # without the table (see ftcjax.sweep.form_axes).
    form_options: tuple = ()
    # ((member name, ((train field, value), ...)), ...): see ftcjax.sweep.portfolio
    portfolio: tuple = ()
    overrides: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @property
    def axis_dict(self) -> dict[str, tuple[Any, ...]]:
        return dict(self.axes)

    def cells(self) -> list[dict[str, Any]]:
        """Every cell (dict axis -> value) in deterministic order: product of axes, N <= K kept."""
        from ftcjax.sweep.form_axes import keep_cell

        names = [a for a, _ in self.axes]
        first_depth = self.axis_dict["depth"][0]
        out = []
        for combo in itertools.product(*(v for _, v in self.axes)):
            cell = dict(zip(names, combo))
            for axis in LATE_TRAIN_AXES:  # at its default a late axis is not in the cell: ids unchanged
                if cell.get(axis) == TRAIN_AXES[axis][1]:
                    del cell[axis]
            if cell["N"] <= cell["K"] and keep_cell(cell, first_depth):
                out.append(member_cell(cell, self.portfolio) if self.portfolio else cell)
        return out

    @property
    def search_rule(self) -> str:
        """The versioned search rule this spec searches with: the pinned ``rule`` or the strategy's newest."""
        from ftcjax._src.search import RULES

        return self.rule or RULES[self.strategy]

    @property
    def num_instances(self) -> int:
        return len(self.cells()) * self.replicates

    def to_dict(self) -> dict[str, Any]:
        return canonical_dict(self)

    @property
    def hash(self) -> str:
        return spec_hash(self)


def canonical_dict(spec: SweepSpec) -> dict[str, Any]:
    """The sweep as plain JSON data: every default filled, every range expanded."""
    from ftcjax.sweep.form_axes import form_table

    axes = spec.axis_dict
    out = {
        "seed": spec.seed,
        "replicates": spec.replicates,
        "grid": {k: list(axes[k]) for k in GRID_AXES},
        "train": {k: list(v) for k, v in spec.axes
                  if k in TRAIN_AXES and not (k in LATE_TRAIN_AXES and list(v) == [TRAIN_AXES[k][1]])},
        # "report" only when not the default, so specs written before it keep their hash; "rule" only
        # when pinned (it is outside the hash: see identity_dict)
        "width": {"values": list(spec.widths), "strategy": spec.strategy,
                  **({"report": spec.report} if spec.report != "typical" else {}),
                  **({"rule": spec.rule} if spec.rule else {})},
        "batch": {"chunk_size": spec.chunk_size},
    }
    if spec.form_options:  # only form sweeps carry the key
        out["form"] = form_table(axes, dict(spec.form_options))
    if spec.portfolio:  # a valid [portfolio] table itself: a manifest's spec is re-parsed from it
        out["portfolio"] = {"member": [{"name": name, **dict(fields)} for name, fields in spec.portfolio]}
    return out


def _canonical_json(obj: Any) -> str:
    # sort_keys + fixed separators + repr-exact floats (json uses repr) = one text per meaning.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def identity_dict(canon: dict[str, Any]) -> dict[str, Any]:
    """What every record of a sweep shares, whatever the grid's values: the part the hash covers.

    The axis *values* and the replicate count are not in it: a record names its own cell and
    replicate, so growing a sweep (more values on any axis, more replicates) keeps every stored record
    valid. The axis *names* are (a renamed axis changes every instance id), and so are the seed, the
    candidate widths, the search strategy and the chunk size, which decide the stored results. A
    ``[form]`` table and a portfolio are covered whole (their options and members decide every
    result of their cells; such sweeps grow along the grid, train axes and replicates only).
    The version of the search rule (``width.rule``) is not: every record carries its own
    ``search_rule``, a run refuses a directory whose records were searched with another, and so a spec
    written before rules had versions keeps its hash when it pins the version its records used.
    """
    out = {
        "seed": canon["seed"],
        "axes": {t: sorted(canon[t]) for t in ("grid", "train")},
        "width": {k: v for k, v in canon["width"].items() if k != "rule"},
        "batch": canon["batch"],
    }
    for key in ("form", "portfolio"):
        if key in canon:
            out[key] = canon[key]
    return out


def spec_hash(spec: SweepSpec | dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of :func:`identity_dict`.

    Accepts a :class:`SweepSpec` or its :func:`canonical_dict`. The only implementation of the hash:
    every record carries it, the store verifies it.
    """
    canon = canonical_dict(spec) if isinstance(spec, SweepSpec) else spec
    return hashlib.sha256(_canonical_json(identity_dict(canon)).encode()).hexdigest()[:16]


def growth_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why the canonical spec ``new`` cannot continue the run of ``old`` (empty: it can).

    ``new`` may add values to any axis and raise the replicate count (the stored instances stay
    valid and are not recomputed); it may not drop a value or lower the count (the run directory
    would hold instances of no spec), nor change anything :func:`spec_hash` covers.
    """
    out = diff_specs(identity_dict(old), identity_dict(new))
    for table in ("grid", "train"):
        for axis, values in old.get(table, {}).items():
            kept = new.get(table, {}).get(axis, [])
            gone = [v for v in values if v not in kept]
            if gone:
                out.append(f"{table}.{axis}: {_short(gone)} in the run directory but not in the new spec "
                           "(a spec may add values to a finished run, not remove them)")
    if new.get("replicates", 0) < old.get("replicates", 0):
        out.append(f"replicates: {old['replicates']} in the run directory, {new['replicates']} in the new "
                   "spec (a spec may add replicates, not remove them)")
    old_rule, new_rule = (s.get("width", {}).get("rule") for s in (old, new))
    if old_rule and new_rule and old_rule != new_rule:
        out.append(f"width.rule: {old_rule} in the run directory, {new_rule} in the new spec (a run directory "
                   "holds one search rule)")
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, path + "."))
        else:
            out[path] = v
    return out


def diff_specs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Field paths whose values differ between two canonical dicts, with both values, sorted."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(set(a) | set(b)):
        va, vb = a.get(path, "<absent>"), b.get(path, "<absent>")
        if va != vb:
            lines.append(f"{path}: {_short(va)} in the run directory, {_short(vb)} in the new spec")
    return lines


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ----------------------------------------------------------------------------------------------------
# Parsing with error collection: every helper appends to `errs` and returns a best-effort value (or
# None) so validation can continue and report every problem in one go.

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return json.dumps(v) if isinstance(v, (list, dict, bool)) else str(v)


def _parse_range(path: str, text: str, errs: list[str]) -> list[int] | None:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        errs.append(f"{path}: {text!r} is not a range; write \"start:stop\" or \"start:stop:step\" "
                    "(both ends included) or a list")
        return None
    try:
        nums = [int(p.strip()) for p in parts]
    except ValueError:
        errs.append(f"{path}: {text!r} is not a range of integers (\"start:stop:step\")")
        return None
    start, stop = nums[0], nums[1]
    step = nums[2] if len(nums) == 3 else 1
    if step <= 0:
        errs.append(f"{path}: range step {step} in {text!r} must be a positive integer")
        return None
    if stop < start:
        errs.append(f"{path}: range {text!r} is empty (stop {stop} < start {start})")
        return None
    n, limit = guards.range_length(start, stop, step), _list_limit(path)
    if n > limit:  # counted, never built: "1:100000000" must not allocate
        errs.append(f"{path}: range {text!r} has {n} values, more than the limit of {limit}")
        return None
    return list(range(start, stop + 1, step))


def _list_limit(path: str) -> int:
    return guards.MAX_WIDTHS if path.startswith("width") else guards.MAX_AXIS_VALUES


def _parse_axis(path: str, kind: str, raw: Any, errs: list[str]) -> list[Any] | None:
    """A scalar, a list, or (int axes) a "start:stop:step" string -> list of values, type-checked."""
    if kind == "int" and isinstance(raw, str):
        return _parse_range(path, raw, errs)
    values = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and not raw:
        errs.append(f"{path}: empty list; give at least one value")
        return None
    if len(values) > _list_limit(path):
        errs.append(f"{path}: {len(values)} values, more than the limit of {_list_limit(path)}")
        return None
    out: list[Any] = []
    ok = True
    for i, v in enumerate(values):
        where = f"{path}[{i}]" if isinstance(raw, list) else path
        if kind == "int":
            if not _is_int(v):
                errs.append(f"{where}: {_fmt(v)} is a {type(v).__name__}, expected an integer")
                ok = False
                continue
        elif kind == "float":
            if _is_int(v):
                v = float(v)
            if not isinstance(v, float):
                errs.append(f"{where}: {_fmt(v)} is a {type(v).__name__}, expected a number")
                ok = False
                continue
            if not math.isfinite(v):
                errs.append(f"{where}: {_fmt(v)} is not a finite number")
                ok = False
                continue
        elif kind == "bool":
            if not isinstance(v, bool):
                errs.append(f"{where}: {_fmt(v)} is a {type(v).__name__}, expected true or false")
                ok = False
                continue
        elif kind == "str":
            if not isinstance(v, str):
                errs.append(f"{where}: {_fmt(v)} is a {type(v).__name__}, expected a string")
                ok = False
                continue
        out.append(v)
    if not ok:
        return None
    dupes = sorted({_fmt(v) for v in out if out.count(v) > 1})
    if dupes:
        errs.append(f"{path}: duplicate values {', '.join(dupes)}")
        return None
    return out


_PROBLEM_AXES = ("N", "K", "d", "data", "labels", "frozen")


def _kernel_message(name: str, value: Any) -> str | None:
    """The kernels' own verdict on one axis value (None: accepted), without their leading field name.

    One rule, one place: the problem and protocol validators decide which values are legal; the spec
    only adds the field path. Values are checked one at a time with neutral companions; combinations
    (N <= K, split vs depth, ...) are checked per cell in :func:`_core_checks`.
    """
    from ftcjax._src import problems
    from ftcjax._src.problems import is_data_file, load_data_file, validate_problem_args
    from ftcjax._src.protocol import Protocol

    try:
        if name == "data" and is_data_file(value):
            load_data_file(value)  # the file's own checks; its K and d are checked per cell
        elif name in ("data", "labels", "frozen"):
            # a choice; what it asks of N and K (worst_case: K >= 3N + 2) is checked per cell
            problems._check_choice(name, value, {"data": problems.DATA, "labels": problems.LABELS,
                                                 "frozen": problems.FROZEN}[name])
        elif name in _PROBLEM_AXES:
            args: dict[str, Any] = {"K": 1, "d": 1, "N": 0}
            args.update({"K": value, "N": value} if name == "N" else {name: value})
            validate_problem_args(**args)
            if name == "N" and value < 1:
                return f"{value} must be an integer >= 1 (N = 0 changes no label: nothing to fine-tune)"
        else:
            Protocol(**{name: value})
    except (FTCInputError, TypeError) as e:
        msg = str(e)
        if msg.startswith(f"{name}: "):
            return msg[len(name) + 2:]
        if msg.partition(": ")[0] in TRAIN_AXES:
            return None  # this value against another field's default: the cells check the real pairs
        return msg
    return None


def _check_values(path: str, name: str, values: list[Any], errs: list[str]) -> bool:
    """The kernels' checks of every value of one axis; True when every value is acceptable.

    The resource ceilings (:mod:`ftcjax.sweep.guards`) come first: a value above one is never handed
    to a kernel validator.
    """
    ok = True
    hi = guards.VALUE_CEILINGS.get(name)
    for v in values:
        if hi is not None and _is_int(v) and v > hi:
            errs.append(f"{path}: {v} exceeds the limit of {hi}")
            ok = False
            continue
        msg = _kernel_message(name, v)
        if msg is not None:
            errs.append(f"{path}: {msg}")
            ok = False
    return ok


def _unknown(path: str, table: dict[str, Any], allowed: set[str] | dict, errs: list[str]) -> None:
    for k in table:
        if k not in allowed:
            where = f"{path}.{k}" if path else k
            errs.append(f"{where}: unknown key; allowed keys here: {', '.join(sorted(allowed))}")


def _table(data: dict[str, Any], key: str, errs: list[str]) -> dict[str, Any]:
    v = data.get(key, {})
    if not isinstance(v, dict):
        errs.append(f"{key}: expected a table [{key}], got {_fmt(v)}")
        return {}
    return v


def _parse_header(data: dict[str, Any], default_name: str, errs: list[str]) -> tuple[str, str, int, int]:
    """name, description, seed, replicates (each checked; a best-effort value when wrong)."""
    name = data.get("name", default_name)
    if (not isinstance(name, str) or not name or any(c in name for c in "/\\\0") or name in (".", "..")
            or not name.isprintable() or len(name.encode("utf-8", "replace")) > 200):
        errs.append(f"name: {_fmt(name)[:80]} must be a non-empty printable string of at most 200 "
                    "bytes, usable as a directory name")
        name = default_name
    description = data.get("description", "")
    if not isinstance(description, str):
        errs.append(f"description: {_fmt(description)} must be a string")
        description = ""
    seed = data.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed < _SEED_LIMIT:
        errs.append(f"seed: {_fmt(seed)} must be an integer in [0, 2**32)")
        seed = 0
    replicates = data.get("replicates", SWEEP_DEFAULTS["replicates"])
    if not _is_int(replicates) or replicates < 1:
        errs.append(f"replicates: {_fmt(replicates)} must be a positive integer")
        replicates = 1
    elif replicates > guards.VALUE_CEILINGS["replicates"]:
        errs.append(f"replicates: {replicates} exceeds the limit of {guards.VALUE_CEILINGS['replicates']}")
        replicates = 1
    return name, description, seed, replicates


def _parse_axes(grid: dict[str, Any], train: dict[str, Any], errs: list[str]) -> dict[str, list | None]:
    """Every grid and training axis -> its list of values (None where it is wrong), defaults filled."""
    axes: dict[str, list[Any] | None] = {}
    for table, schema, given in (("grid", GRID_AXES, grid), ("train", TRAIN_AXES, train)):
        for axis, (kind, default) in schema.items():
            path = f"{table}.{axis}"
            if axis not in given:
                if axis in _REQUIRED:
                    errs.append(f"{path}: missing; this axis is required")
                    axes[axis] = None
                else:
                    axes[axis] = [default]
                continue
            vals = _parse_axis(path, kind, given[axis], errs)
            if vals is not None and not _check_values(path, axis, vals, errs):
                vals = None
            axes[axis] = vals
    # Per-cell constraint N <= K: cells breaking it are dropped; an N value that fits no K at all is a
    # mistake (it would silently contribute nothing).
    Ns, Ks = axes.get("N"), axes.get("K")
    if Ns and Ks:
        kmax = max(Ks)
        ks = f"grid.K = {kmax}" if len(Ks) == 1 else f"the largest grid.K = {kmax}"
        for n in Ns:
            if n > kmax:
                errs.append(f"grid.N: {n} exceeds {ks}")
    return axes


def _parse_widths(width: dict[str, Any], errs: list[str]) -> tuple[list[int] | None, str, str, str]:
    """Candidate widths (an explicit list or lower/upper/step), the search strategy, the reported width
    and the pinned rule version ("" for the strategy's newest)."""
    from ftcjax._src.search import DEFAULT_STRATEGY, REPORT_WIDTHS, RULE_VERSIONS, STRATEGIES

    widths: list[int] | None = None
    if "values" in width:
        for k in ("lower", "upper", "step"):
            if k in width:
                errs.append(f"width.{k}: give either width.values or width.lower/upper/step, not both")
        widths = _parse_axis("width.values", "int", width["values"], errs)
        if widths is not None:
            bad = [w for w in widths if not 1 <= w <= guards.VALUE_CEILINGS["width"]]
            for w in bad:
                errs.append(f"width.values: {w} must be a positive integer <= "
                            f"{guards.VALUE_CEILINGS['width']}")
            widths = None if bad else sorted(widths)
    else:
        bounds = {"lower": width.get("lower", SWEEP_DEFAULTS["width.lower"]),
                  "upper": width.get("upper", SWEEP_DEFAULTS["width.upper"]), "step": width.get("step", 1)}
        ok = True
        for k, v in bounds.items():
            if not _is_int(v) or v < 1:
                errs.append(f"width.{k}: {_fmt(v)} must be a positive integer")
                ok = False
            elif k != "step" and v > guards.VALUE_CEILINGS["width"]:
                errs.append(f"width.{k}: {v} exceeds the limit of {guards.VALUE_CEILINGS['width']}")
                ok = False
        if ok and bounds["lower"] > bounds["upper"]:
            errs.append(f"width.lower: {bounds['lower']} exceeds width.upper = {bounds['upper']}")
            ok = False
        n_widths = guards.range_length(bounds["lower"], bounds["upper"], bounds["step"]) if ok else 0
        if ok and n_widths > guards.MAX_WIDTHS:
            errs.append(f"width: {bounds['lower']}..{bounds['upper']} step {bounds['step']} gives {n_widths} "
                        f"candidate widths, more than the limit of {guards.MAX_WIDTHS}")
            ok = False
        if ok:
            widths = list(range(bounds["lower"], bounds["upper"] + 1, bounds["step"]))
    strategy = width.get("strategy", DEFAULT_STRATEGY)  # the search's own default (default.toml pins bisect)
    if strategy not in STRATEGIES:
        errs.append(f"width.strategy: unknown value {_fmt(strategy)}; choose one of {', '.join(STRATEGIES)}")
    report = width.get("report", "typical")
    if report not in REPORT_WIDTHS:
        errs.append(f"width.report: unknown value {_fmt(report)}; choose one of {', '.join(REPORT_WIDTHS)}")
    rule = width.get("rule", "")
    versions = RULE_VERSIONS.get(strategy, ())
    if "rule" in width and strategy in RULE_VERSIONS and rule not in versions:
        errs.append(f"width.rule: {_fmt(rule)} is not a version of strategy {strategy!r}; choose one of "
                    f"{', '.join(versions)}")
        rule = ""
    return widths, strategy, report, rule


def spec_from_dict(data: dict[str, Any], *, text: str = "", source: str | None = None,
                   default_name: str = "sweep", overrides: tuple[str, ...] = ()) -> SweepSpec:
    """Validate parsed TOML data and return the canonical :class:`SweepSpec`.

    The spec checks the shape and types of the TOML; the kernels' validators decide which values are
    legal, and their messages are reported with the field path.

    Raises:
      SpecError: listing every problem found (unknown keys, wrong types, impossible values, N > K for
        every K, empty grid, ...), each naming the field path and the value.
    """
    errs: list[str] = []
    if not isinstance(data, dict):
        raise SpecError([f"spec: a {type(data).__name__}, expected a table of keys"], source)
    deep = guards.nesting_problems(data)
    if deep:  # nothing below may recurse into such values
        raise SpecError(deep, source)
    _unknown("", data, TOP_KEYS, errs)
    name, description, seed, replicates = _parse_header(data, default_name, errs)
    grid, train, width, batch = (_table(data, t, errs) for t in ("grid", "train", "width", "batch"))
    _unknown("grid", grid, GRID_AXES, errs)
    for k in train:
        if k in GRID_AXES:
            errs.append(f"train.{k}: {k!r} is a grid axis; put it under [grid]")
    _unknown("train", {k: v for k, v in train.items() if k not in GRID_AXES}, TRAIN_AXES, errs)
    _unknown("width", width, WIDTH_KEYS, errs)
    _unknown("batch", batch, BATCH_KEYS, errs)
    axes = _parse_axes(grid, train, errs)
    from ftcjax.sweep import form_axes

    form = form_axes.parse_form(data.get("form"), _parse_axis, errs)
    form_options: tuple = ()
    if form is not None:
        form_axes.check_cells(axes, errs)
        axes.update(form[0])
        form_options = tuple(sorted(form[1].items()))
    portfolio = ()
    if "portfolio" in data:
        from ftcjax.sweep.portfolio import parse_portfolio

        portfolio = parse_portfolio(data["portfolio"], TRAIN_AXES, axes, errs)
        if portfolio:
            axes["member"] = [name for name, _ in portfolio]
    widths, strategy, report, rule = _parse_widths(width, errs)
    chunk_size = batch.get("chunk_size", SWEEP_DEFAULTS["batch.chunk_size"])
    if not _is_int(chunk_size) or chunk_size < 1:
        errs.append(f"batch.chunk_size: {_fmt(chunk_size)} must be a positive integer")
        chunk_size = 1
    elif chunk_size > guards.VALUE_CEILINGS["chunk_size"]:
        errs.append(f"batch.chunk_size: {chunk_size} exceeds the limit of {guards.VALUE_CEILINGS['chunk_size']}")
        chunk_size = 1

    if not errs:  # counted before any cell is built
        n_cells = math.prod(len(v) for v in axes.values() if v is not None)
        if n_cells > guards.MAX_CELLS:
            sizes = ", ".join(f"{k} {len(v)}" for k, v in axes.items() if v is not None and len(v) > 1)
            errs.append(f"grid: {n_cells} cells (axes {sizes}), more than the limit of {guards.MAX_CELLS}")
        elif n_cells * replicates > guards.MAX_INSTANCES:
            errs.append(f"replicates: {n_cells} cells x {replicates} replicates = {n_cells * replicates} "
                        f"instances, more than the limit of {guards.MAX_INSTANCES}")

    if not errs:
        ordered = tuple((k, tuple(v)) for k, v in axes.items() if v is not None)
        spec = SweepSpec(name=name, description=description, seed=seed, replicates=replicates,
                         axes=ordered, widths=tuple(widths or ()), strategy=strategy, report=report, rule=rule,
                         chunk_size=chunk_size, text=text, form_options=form_options, portfolio=portfolio,
                         overrides=tuple(overrides))
        if not spec.cells():
            errs.append("grid: no cell satisfies N <= K; the grid is empty")
        else:
            errs += _core_checks(spec)
        if not errs:
            return spec
    raise SpecError(errs, source)


def _core_checks(spec: SweepSpec) -> list[str]:
    """Let the core validate every distinct protocol and problem of the grid (what our schema cannot)."""
    from ftcjax._src.problems import validate_problem_args
    from ftcjax.sweep.cells import PROBLEM_ARGS, candidate_widths, protocol_for_cell
    from ftcjax.sweep.form_axes import check_cell

    errs: list[str] = []
    seen_p, seen_q = set(), set()
    for cell in spec.cells():
        errs += check_cell(cell, dict(spec.form_options))
        pkey = tuple(sorted((k, v) for k, v in cell.items() if k not in ("N", "K", "d", "data", "labels", "frozen")))
        if pkey not in seen_p:
            seen_p.add(pkey)
            try:
                protocol = protocol_for_cell(cell)
            except (FTCInputError, ValueError, TypeError) as e:
                errs.append(f"train: {e} (cell depth={cell['depth']}, criterion={cell['criterion']!r})")
            else:
                if cell.get("form") != "lora" and not candidate_widths(spec.widths, protocol):
                    errs.append(f"width: no candidate width in {list(spec.widths)} fits a depth-{cell['depth']} "
                                "net (each hidden layer needs a neuron)")
        qkey = tuple(cell[k] for k in ("N", "K", "d", "data", "labels", "frozen", "dtype") if k in cell)
        if qkey not in seen_q:
            seen_q.add(qkey)
            try:
                # the cell's dtype, as the kernels will see it (problems are drawn in float64)
                validate_problem_args(N=cell["N"], **{k: cell[k] for k in PROBLEM_ARGS},
                                      dtype=cell.get("dtype", "float64"))
            except (FTCInputError, ValueError, TypeError) as e:
                errs.append(f"grid: {e} (cell N={cell['N']}, K={cell['K']}, data={cell['data']!r})")
    return sorted(set(errs), key=errs.index)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.steps=500"`` -> (["train", "steps"], 500); ``"grid.N=[1,2,4]"`` -> (["grid", "N"], [1, 2, 4]).

    The value is read as a TOML value (numbers, lists, quoted strings, booleans), falling back to a
    bare string (``grid.data=sphere``), so an override means what the same line means in the file.
    """
    key, sep, raw = item.partition("=")
    path = [p.strip() for p in key.split(".")]
    if not sep or not all(path):
        raise SpecError([f"override {item!r}: write KEY=VALUE, e.g. train.steps=500 or grid.N=[1,2,4]"])
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if not raw or any(c in raw for c in "[]{}\"'="):
            raise SpecError([f"override {item!r}: {raw!r} is not a TOML value"]) from None
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of parsed TOML ``data`` with each ``key=value`` override set (later ones win).

    Overrides only set values; the result is validated like a file (:func:`spec_from_dict`), so a
    misspelt key or a bad value is reported with its field path.
    """
    out = json.loads(json.dumps(data))  # deep copy of plain TOML data
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SpecError([f"override {item!r}: {'.'.join(path[:i + 1])} is not a table"])
            node = nxt
        node[path[-1]] = value
    return out


def parse_spec(text: str, *, source: str | None = None, default_name: str = "sweep",
               overrides: Sequence[str] = ()) -> SweepSpec:
    """Parse TOML text, apply ``key=value`` overrides and validate (see :func:`spec_from_dict`)."""
    if len(text) > guards.MAX_SPEC_BYTES:
        raise SpecError([f"spec: {len(text)} characters, more than the limit of {guards.MAX_SPEC_BYTES}"],
                        source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"TOML syntax error: {e}"], source) from None
    except RecursionError:
        raise SpecError([f"spec: values nested too deep (at most {guards.MAX_NESTING} levels)"], source) from None
    data = apply_overrides(data, overrides)
    return spec_from_dict(data, text=text, source=source, default_name=default_name,
                          overrides=tuple(overrides))


def load_spec(path: str | Path, *, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and validate a spec file (plus overrides); the file stem is the default sweep name."""
    from ftcjax.sweep.files import read_regular

    p = Path(path)
    try:
        if p.is_dir():
            raise SpecError([f"spec file {str(p)!r} is a directory"])
        # Regular files only, size-limited, opened without blocking: a FIFO or /dev/zero is refused.
        data = read_regular(p.resolve(), limit=guards.MAX_SPEC_BYTES, what="spec file")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SpecError([f"spec file {str(p)!r} does not exist"]) from None
    except FTCEnvironmentError as e:
        raise SpecError([str(e)]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([f"spec file {str(p)!r} cannot be read: {e}"]) from None
    return parse_spec(text, source=str(p), default_name=p.stem, overrides=overrides)
