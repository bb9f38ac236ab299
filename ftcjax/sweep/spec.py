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
    strategy = "bisect"

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
from typing import Any

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
    "diff_specs",
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
# Choices for string axes come from the core where it exposes them (see `_choices`), so the spec never
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


def _fill_grid_defaults() -> None:
    from ftcjax._src.protocol import Protocol

    for name in ("criterion", "tol"):
        kind, _ = GRID_AXES[name]
        GRID_AXES[name] = (kind, getattr(Protocol, name))


_fill_grid_defaults()
_REQUIRED = ("N", "K")

TOP_KEYS = {"name", "description", "seed", "replicates", "grid", "train", "width", "batch", "form", "portfolio"}
WIDTH_KEYS = {"lower", "upper", "step", "values", "strategy", "report"}
BATCH_KEYS = {"chunk_size"}
_POSITIVE_INT = {"depth": 2, "N": 1, "K": 1, "d": 1, "steps": 1, "restarts": 1, "segment": 1,
                 "lbfgs_memory": 1, "chunk": 1, "unroll": 1}
_POSITIVE_FLOAT = {"tol", "learning_rate", "paper_threshold", "rel_eps"}
_SEED_LIMIT = 2**32


def _choices(field: str) -> tuple[str, ...]:
    """Allowed values of a string field, taken from the core so the two never disagree."""
    from ftcjax._src import criteria, problems, protocol, search

    table = {
        "data": problems.DATA,
        "labels": problems.LABELS,
        "frozen": problems.FROZEN,
        "criterion": criteria.CRITERIA,
        "optimizer": protocol.OPTIMIZERS,
        "lm_damping": protocol.LM_DAMPINGS,
        "schedule": protocol.SCHEDULES,
        "matmul_precision": protocol.PRECISIONS,
        "dtype": problems.DTYPES,
        "strategy": search.STRATEGIES,
        "report": search.REPORT_WIDTHS,
    }
    return tuple(table.get(field, ()))


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
      report: which adaptive width the records' ``min_width`` (and so every report) holds:
        "typical" (w50, default) or "existence" (smallest width with any success).
      chunk_size: instances per chunk.
      text: the original TOML text (kept in the run directory for humans).
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
    # The optional [form] table's non-axis options (LoRA layers, alpha, ranks) as sorted pairs; empty
    # without the table (see ftcjax.sweep.form_axes).
    form_options: tuple = ()
    # ((member name, ((train field, value), ...)), ...): see ftcjax.sweep.portfolio
    portfolio: tuple = ()

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
            if cell["N"] <= cell["K"] and keep_cell(cell, first_depth):
                out.append(member_cell(cell, self.portfolio) if self.portfolio else cell)
        return out

    @property
    def num_instances(self) -> int:
        return len(self.cells()) * self.replicates

    def to_dict(self) -> dict[str, Any]:
        return canonical_dict(self)

    @property
    def hash(self) -> str:
        return spec_hash(self)


def canonical_dict(spec: SweepSpec) -> dict[str, Any]:
    """The sweep's identity as plain JSON data: every default filled, every range expanded."""
    from ftcjax.sweep.form_axes import form_table

    axes = spec.axis_dict
    out = {
        "seed": spec.seed,
        "replicates": spec.replicates,
        "grid": {k: list(axes[k]) for k in GRID_AXES},
        "train": {k: list(v) for k, v in spec.axes if k in TRAIN_AXES},
        # "report" only when not the default, so specs written before it keep their hash
        "width": {"values": list(spec.widths), "strategy": spec.strategy,
                  **({"report": spec.report} if spec.report != "typical" else {})},
        "batch": {"chunk_size": spec.chunk_size},
    }
    if spec.form_options:  # only form sweeps carry the key: older specs keep their hashes
        out["form"] = form_table(axes, dict(spec.form_options))
    if spec.portfolio:  # the spec's own [[portfolio.member]] shape, so the manifest re-parses as a spec
        out["portfolio"] = {"member": [{"name": name, **dict(fields)} for name, fields in spec.portfolio]}
    return out


def _canonical_json(obj: Any) -> str:
    # sort_keys + fixed separators + repr-exact floats (json uses repr) = one text per meaning.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_hash(spec: SweepSpec | dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of the spec."""
    data = canonical_dict(spec) if isinstance(spec, SweepSpec) else spec
    return hashlib.sha256(_canonical_json(data).encode()).hexdigest()[:16]


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


def _check_values(path: str, name: str, values: list[Any], errs: list[str]) -> bool:
    """Range and choice checks for one axis; True when every value is acceptable."""
    ok = True
    if name in _POSITIVE_INT:
        lo = _POSITIVE_INT[name]
        for v in values:
            if v < lo:
                errs.append(f"{path}: {v} must be an integer >= {lo}")
                ok = False
    if name in guards.VALUE_CEILINGS and all(_is_int(v) for v in values):
        hi = guards.VALUE_CEILINGS[name]
        for v in values:
            if v > hi:
                errs.append(f"{path}: {v} exceeds the limit of {hi}")
                ok = False
    elif name in _POSITIVE_FLOAT:
        for v in values:
            if v <= 0:
                errs.append(f"{path}: {v} must be > 0")
                ok = False
    choices = _choices(name)
    if choices:
        for v in values:
            if v not in choices:
                errs.append(f"{path}: unknown value {v!r}; choose one of {', '.join(choices)}")
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


def spec_from_dict(data: dict[str, Any], *, text: str = "", source: str | None = None,
                   default_name: str = "sweep") -> SweepSpec:
    """Validate parsed TOML data and return the canonical :class:`SweepSpec`.

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
    replicates = data.get("replicates", 1)
    if not _is_int(replicates) or replicates < 1:
        errs.append(f"replicates: {_fmt(replicates)} must be a positive integer")
        replicates = 1
    elif replicates > guards.VALUE_CEILINGS["replicates"]:
        errs.append(f"replicates: {replicates} exceeds the limit of {guards.VALUE_CEILINGS['replicates']}")
        replicates = 1

    grid = _table(data, "grid", errs)
    train = _table(data, "train", errs)
    width = _table(data, "width", errs)
    batch = _table(data, "batch", errs)
    _unknown("grid", grid, GRID_AXES, errs)
    for k in train:
        if k in GRID_AXES:
            errs.append(f"train.{k}: {k!r} is a grid axis; put it under [grid]")
    _unknown("train", {k: v for k, v in train.items() if k not in GRID_AXES}, TRAIN_AXES, errs)
    _unknown("width", width, WIDTH_KEYS, errs)
    _unknown("batch", batch, BATCH_KEYS, errs)

    axes: dict[str, list[Any] | None] = {}
    for axis, (kind, default) in GRID_AXES.items():
        path = f"grid.{axis}"
        if axis not in grid:
            if axis in _REQUIRED:
                errs.append(f"{path}: missing; this axis is required")
                axes[axis] = None
            else:
                axes[axis] = [default]
            continue
        vals = _parse_axis(path, kind, grid[axis], errs)
        if vals is not None and not _check_values(path, axis, vals, errs):
            vals = None
        axes[axis] = vals
    for axis, (kind, default) in TRAIN_AXES.items():
        path = f"train.{axis}"
        if axis not in train:
            axes[axis] = [default]
            continue
        vals = _parse_axis(path, kind, train[axis], errs)
        if vals is not None and not _check_values(path, axis, vals, errs):
            vals = None
        axes[axis] = vals
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

    # Per-cell constraint N <= K: cells breaking it are dropped; an N value that fits no K at all is a
    # mistake (it would silently contribute nothing), and so is a grid left empty.
    Ns, Ks = axes.get("N"), axes.get("K")
    if Ns and Ks:
        kmax = max(Ks)
        ks = f"grid.K = {kmax}" if len(Ks) == 1 else f"the largest grid.K = {kmax}"
        for n in Ns:
            if n > kmax:
                errs.append(f"grid.N: {n} exceeds {ks}")

    # Widths: an explicit list or lower/upper/step.
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
        lower = width.get("lower", 1)
        upper = width.get("upper")
        step = width.get("step", 1)
        ok = True
        for k, v in (("lower", lower), ("upper", upper), ("step", step)):
            if v is None:
                errs.append(f"width.{k}: missing; give width.upper (and optionally lower, step) "
                            "or width.values")
                ok = False
            elif not _is_int(v) or v < 1:
                errs.append(f"width.{k}: {_fmt(v)} must be a positive integer")
                ok = False
            elif k != "step" and v > guards.VALUE_CEILINGS["width"]:
                errs.append(f"width.{k}: {v} exceeds the limit of {guards.VALUE_CEILINGS['width']}")
                ok = False
        if ok and lower > upper:
            errs.append(f"width.lower: {lower} exceeds width.upper = {upper}")
            ok = False
        if ok and guards.range_length(lower, upper, step) > guards.MAX_WIDTHS:
            errs.append(f"width: {lower}..{upper} step {step} gives {guards.range_length(lower, upper, step)} "
                        f"candidate widths, more than the limit of {guards.MAX_WIDTHS}")
            ok = False
        if ok:
            widths = list(range(lower, upper + 1, step))
    from ftcjax._src.search import DEFAULT_STRATEGY

    strategy = width.get("strategy", DEFAULT_STRATEGY)
    if strategy not in _choices("strategy"):
        errs.append(f"width.strategy: unknown value {_fmt(strategy)}; choose one of "
                    f"{', '.join(_choices('strategy'))}")
    report = width.get("report", "typical")
    if report not in _choices("report"):
        errs.append(f"width.report: unknown value {_fmt(report)}; choose one of {', '.join(_choices('report'))}")

    chunk_size = batch.get("chunk_size", 16)
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
                         axes=ordered, widths=tuple(widths or ()), strategy=strategy, report=report,
                         chunk_size=chunk_size, text=text, form_options=form_options, portfolio=portfolio)
        if not spec.cells():
            errs.append("grid: no cell satisfies N <= K; the grid is empty")
        else:
            errs += _core_checks(spec)
        if not errs:
            return spec
    raise SpecError(errs, source)


def protocol_for_cell(cell: dict[str, Any]):
    """The ftcjax Protocol of a cell (depth, criterion, tol from the grid; the rest from train axes)."""
    from ftcjax._src.protocol import Protocol

    kwargs = {k: cell[k] for k in TRAIN_AXES if k in cell}
    return Protocol(depth=cell["depth"], criterion=cell["criterion"], tol=cell["tol"], **kwargs)


def widths_for_depth(widths: tuple[int, ...], depth: int) -> list[int]:
    """Candidate widths usable at ``depth``: those giving every hidden layer a neuron.

    One width list serves every depth of a grid, so a 2-layer-friendly lower bound of 1 simply starts
    the 3-layer search at 2.
    """
    from ftcjax._src.networks import min_width

    lo = min_width(depth)
    return [w for w in widths if w >= lo]


def _core_checks(spec: SweepSpec) -> list[str]:
    """Let the core validate every distinct protocol and problem of the grid (what our schema cannot)."""
    from ftcjax._src.problems import validate_problem_args

    from ftcjax.sweep.form_axes import check_cell

    errs: list[str] = []
    seen_p, seen_q = set(), set()
    for cell in spec.cells():
        errs += check_cell(cell, dict(spec.form_options))
        pkey = tuple(sorted((k, v) for k, v in cell.items() if k not in ("N", "K", "d", "data", "labels", "frozen")))
        if pkey not in seen_p:
            seen_p.add(pkey)
            try:
                protocol_for_cell(cell)
            except (FTCInputError, ValueError, TypeError) as e:
                errs.append(f"train: {e} (cell depth={cell['depth']}, criterion={cell['criterion']!r})")
            if not widths_for_depth(spec.widths, cell["depth"]):
                errs.append(f"width: no candidate width in {list(spec.widths)} fits a depth-{cell['depth']} "
                            "net (each hidden layer needs a neuron)")
        qkey = tuple(cell[k] for k in ("N", "K", "d", "data", "labels", "frozen", "dtype") if k in cell)
        if qkey not in seen_q:
            seen_q.add(qkey)
            try:
                validate_problem_args(K=cell["K"], d=cell["d"], N=cell["N"], data=cell["data"],
                                      labels=cell["labels"], frozen=cell["frozen"],
                                      dtype=cell.get("dtype", "float64"))
            except (FTCInputError, ValueError, TypeError) as e:
                errs.append(f"grid: {e} (cell N={cell['N']}, K={cell['K']}, data={cell['data']!r})")
    return sorted(set(errs), key=errs.index)


def parse_spec(text: str, *, source: str | None = None, default_name: str = "sweep") -> SweepSpec:
    """Parse TOML text and validate it (see :func:`spec_from_dict`)."""
    if len(text) > guards.MAX_SPEC_BYTES:
        raise SpecError([f"spec: {len(text)} characters, more than the limit of {guards.MAX_SPEC_BYTES}"],
                        source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError([f"TOML syntax error: {e}"], source) from None
    except RecursionError:
        raise SpecError([f"spec: values nested too deep (at most {guards.MAX_NESTING} levels)"], source) from None
    return spec_from_dict(data, text=text, source=source, default_name=default_name)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; the file stem is the default sweep name."""
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
    return parse_spec(text, source=str(p), default_name=p.stem)
