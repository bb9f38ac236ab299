"""Convergence check of the measurement itself: re-search the same instances with 2x steps and restarts.

A minimal width found with a training budget is a property of (instance, architecture, protocol). If
doubling the budget moves it, it was not yet a measurement of capacity. The check is two steps:

1. :func:`doubled_spec_text` turns a spec into one with ``train.steps`` and ``train.restarts`` doubled
   (problem keys depend only on the problem coordinates and the replicate, see
   ``ftcjax.sweep.plan``, so the new run sees exactly the same instances);
2. :func:`compare_runs` pairs the instances of the two run directories and counts moved widths.

Command line (``python -m ftcjax.analysis ...`` is an alias of ``ftcjax convergence ...``)::

    ftcjax convergence double sweeps/default.toml runs/default-x2.toml [--only d=2]
    ftcjax run runs/default-x2.toml --out runs/default-x2
    ftcjax convergence compare runs/default runs/default-x2
    ftcjax report runs/default        # finds runs/default-x2 by itself and prints the comparison
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import tomllib
from typing import Optional, Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError

__all__ = ["doubled_spec_dict", "doubled_spec_text", "dump_toml", "Comparison", "compare_records",
           "compare_runs", "main", "budget_spec_dict", "reseeded_spec_dict", "GroupVerdict", "noise_floor_verdicts",
           "format_verdicts", "next_budgets", "until_converged", "format_until"]

# Protocol defaults used when a spec leaves steps/restarts out (read from the core when importable).
_FALLBACK = {"steps": 2000, "restarts": 4}


def _protocol_default(name: str) -> int:
    try:
        from ftcjax._src.protocol import Protocol

        return int(getattr(Protocol, "__dataclass_fields__")[name].default)
    except (ImportError, KeyError, AttributeError):
        return _FALLBACK[name]


def doubled_spec_dict(data: dict, *, factor: int = 2, subset: Optional[dict] = None,
                      axes: Sequence[str] = ("steps", "restarts")) -> dict:
    """A parsed spec (TOML dict) with every ``train.steps`` and ``train.restarts`` value times ``factor``.

    Everything else (seed, grid, replicates, widths, chunking) is kept, so the instances are identical.
    The name gets a ``-x{factor}`` suffix so the default output directory differs.
    ``subset``: optional {grid axis: list of values} restricting the re-search to part of the grid
    (to fit a budget: 2x steps and 2x restarts cost 4x); instances keep their identity, so the
    comparison pairs them with the same instances of the full run.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise FTCInputError(f"factor: {factor!r} must be an integer >= 2")
    out = json.loads(json.dumps(data))  # deep copy of plain TOML data
    for axis, values in (subset or {}).items():
        grid = out.setdefault("grid", {})
        if axis not in grid:
            raise FTCInputError(f"subset: grid.{axis} is not set in the spec; cannot restrict it")
        have = grid[axis] if isinstance(grid[axis], list) else [grid[axis]]
        if isinstance(grid[axis], str):
            raise FTCInputError(f"subset: grid.{axis} is a range {grid[axis]!r}; write it as a list to restrict it")
        bad = [v for v in values if v not in have]
        if bad or not values:
            raise FTCInputError(f"subset: grid.{axis} values {bad or values!r} are not in the spec's {have!r}")
        grid[axis] = list(values)
    train = out.setdefault("train", {})
    for k in axes:
        v = train.get(k, _protocol_default(k))
        if isinstance(v, list):
            train[k] = [int(x) * factor for x in v]
        elif isinstance(v, int) and not isinstance(v, bool):
            train[k] = int(v) * factor
        else:
            raise FTCInputError(f"train.{k}: {v!r} must be an integer or a list of integers")
        # a portfolio member's own budget scales too, or its twin would repeat it unchanged
        for i, member in enumerate((out.get("portfolio") or {}).get("member") or []):
            if isinstance(member, dict) and k in member:
                if isinstance(member[k], bool) or not isinstance(member[k], int):
                    raise FTCInputError(f"portfolio.member[{i}].{k}: {member[k]!r} must be an integer")
                member[k] = int(member[k]) * factor
    tag = "" if tuple(axes) == ("steps", "restarts") else "-" + "-".join(axes)
    out["name"] = f"{data.get('name', 'sweep')}{tag}-x{factor}"
    desc = data.get("description", "")
    out["description"] = (desc + " " if desc else "") + f"[convergence check: {' and '.join(axes)} x{factor}]"
    return out


def budget_spec_dict(data: dict, axis: str, *, factor: int = 2, subset: Optional[dict] = None) -> dict:
    """The spec with only ``train.<axis>`` (``steps`` or ``restarts``) times ``factor``; same instances."""
    if axis not in ("steps", "restarts"):
        raise FTCInputError(f"axis: {axis!r} must be 'steps' or 'restarts'")
    return doubled_spec_dict(data, factor=factor, subset=subset, axes=(axis,))


def reseeded_spec_dict(data: dict, *, train_seed: int = 1, subset: Optional[dict] = None) -> dict:
    """The spec at the same budget with new training keys (``train.train_seed``): the noise floor.

    Problem keys do not depend on training axes, so the instances are the same; only the
    initialisations (and so the restart outcomes) are new draws.
    """
    if isinstance(train_seed, bool) or not isinstance(train_seed, int) or train_seed < 1:
        raise FTCInputError(f"train_seed: {train_seed!r} must be an integer >= 1")
    out = doubled_spec_dict(data, factor=2, subset=subset, axes=())
    out.setdefault("train", {})["train_seed"] = train_seed
    out["name"] = f"{data.get('name', 'sweep')}-reseed{train_seed}"
    desc = data.get("description", "")
    out["description"] = (desc + " " if desc else "") + f"[noise floor: same budget, train_seed = {train_seed}]"
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise FTCInputError(f"spec value {v!r} is not finite")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise FTCInputError(f"spec value {v!r} of type {type(v).__name__} cannot be written as TOML")


def dump_toml(data: dict) -> str:
    """Minimal TOML writer for sweep specs (top-level scalars, then one level of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if not isinstance(v, dict):
            continue
        scalars = {kk: vv for kk, vv in v.items() if not _is_table_array(vv)}
        if scalars or len(scalars) == len(v):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in scalars.items()]
        for kk, vv in v.items():  # arrays of tables, e.g. [[portfolio.member]]
            if _is_table_array(vv):
                for table in vv:
                    lines += ["", f"[[{k}.{kk}]]"] + [f"{a} = {_toml_value(b)}" for a, b in table.items()]
    return "\n".join(lines) + "\n"


def _is_table_array(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(t, dict) for t in v)


def doubled_spec_text(text: str, *, factor: int = 2, subset: Optional[dict] = None) -> str:
    """TOML text of the doubled spec (see :func:`doubled_spec_dict`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FTCInputError(f"spec: TOML syntax error: {e}") from None
    return dump_toml(doubled_spec_dict(data, factor=factor, subset=subset))


def _parse_subset(items: Sequence[str]) -> dict:
    """['d=2', 'data=gaussian,sphere'] -> {'d': [2], 'data': ['gaussian', 'sphere']}.

    Each value is read as a TOML scalar (numbers), falling back to a bare string.
    """
    out = {}
    for it in items:
        if "=" not in it:
            raise FTCInputError(f"--only: {it!r} must look like AXIS=V1,V2")
        k, v = it.split("=", 1)
        vals = []
        for x in v.split(","):
            x = x.strip()
            try:
                vals.append(tomllib.loads(f"v = {x}")["v"])
            except tomllib.TOMLDecodeError:
                vals.append(x)
        out[k.strip()] = vals
    return out


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Paired minimal widths of two runs.

    ``moved``: (instance key, width_a, width_b) for every pair whose width or censoring differs
    (None = censored). ``per_group``: {group label: (n_paired, n_moved)}.
    """

    n_paired: int
    n_only_a: int
    n_only_b: int
    moved: tuple
    n_down: int
    n_up: int
    n_censoring_changed: int
    per_group: dict
    label_a: str = "A"
    label_b: str = "B"
    median_ratio: Optional[float] = None  # median of width_b / width_a over pairs measured in both
    budget_ratio: tuple = (None, None)  # (steps B / A, restarts B / A) read from the paired records

    @property
    def n_moved(self) -> int:
        return len(self.moved)

    def summary_lines(self) -> list:
        if self.n_paired == 0:
            return [f"convergence: no instance of {self.label_a} was found in {self.label_b} "
                    "(different seeds or grids?): nothing compared"]
        frac = self.n_moved / self.n_paired
        steps, restarts = self.budget_ratio
        if steps is not None and restarts is not None and steps <= 1 and restarts <= 1:
            # Same budget on both sides: a repeatability check, which says nothing about convergence.
            verdict = (f"{self.label_b} has no larger budget than {self.label_a} "
                       f"(steps x{steps:g}, restarts x{restarts:g}): this is not a convergence check")
        elif self.n_moved == 0:
            verdict = "no minimal width moved: the widths are converged for this protocol family"
        else:
            verdict = f"{self.n_moved} widths still move: they are not yet measurements of capacity"
        budget = ("larger budget" if steps is None else f"steps x{steps:g}, restarts x{restarts:g}")
        out = [f"convergence ({self.label_b} = {budget} vs {self.label_a}): "
               f"{self.n_moved}/{self.n_paired} minimal widths moved ({100 * frac:.1f}%; "
               f"{self.n_down} down, {self.n_up} up, {self.n_censoring_changed} censoring changed"
               + ("" if self.median_ratio is None else f"; median width ratio B/A {self.median_ratio:.2f}")
               + f"); {verdict}."]
        for g, (n, k) in self.per_group.items():
            if k:
                out.append(f"  moved in {g}: {k}/{n}")
        if self.n_only_a or self.n_only_b:
            out.append(f"  unpaired instances: {self.n_only_a} only in {self.label_a}, {self.n_only_b} only in {self.label_b}")
        return out


_IGNORED = ("steps", "restarts", "train_seed")


def _pair_key(rec: dict, ignore: Sequence[str]) -> tuple:
    cell = {k: v for k, v in rec["cell"].items() if k not in ignore}
    return (json.dumps(cell, sort_keys=True), int(rec.get("replicate", 0)))


def compare_records(recs_a: Sequence[dict], recs_b: Sequence[dict], *, ignore: Sequence[str] = _IGNORED,
                    label_a: str = "A", label_b: str = "B") -> Comparison:
    """Pair records by (cell without the ``ignore`` axes, replicate) and compare minimal widths."""
    from ftcjax.analysis.records import group_label, group_records

    from ftcjax.analysis.records import search_rule_of

    a = {_pair_key(r, ignore): r for r in recs_a}
    b = {_pair_key(r, ignore): r for r in recs_b}
    both = [k for k in a if k in b]
    mixed = sorted({(search_rule_of(a[k]), search_rule_of(b[k])) for k in both
                    if search_rule_of(a[k]) != search_rule_of(b[k])})
    if mixed:
        raise FTCInputError(f"records: {label_a} and {label_b} were searched by different rules "
                            f"({mixed[0][0]} vs {mixed[0][1]}); their widths are not comparable")
    moved = []
    down = up = cens = 0
    per_group: dict = {}
    for k in both:
        ra, rb = a[k], b[k]
        wa = None if ra.get("censored") else ra.get("min_width")
        wb = None if rb.get("censored") else rb.get("min_width")
        glabel = group_label(next(iter(group_records([ra]))), skip=ignore, show=())
        n, m = per_group.get(glabel, (0, 0))
        if wa != wb:
            moved.append((k, wa, wb))
            if wa is None or wb is None:
                cens += 1
            elif wb < wa:
                down += 1
            else:
                up += 1
            m += 1
        per_group[glabel] = (n + 1, m)
    ratios = [b[k]["min_width"] / a[k]["min_width"] for k in both
              if not a[k].get("censored") and not b[k].get("censored")
              and (a[k].get("min_width") or 0) > 0 and (b[k].get("min_width") or 0) > 0]
    def budget(name):
        vals = [float(b[k]["protocol"][name]) / float(a[k]["protocol"][name]) for k in both
                if name in a[k].get("protocol", {}) and name in b[k].get("protocol", {})]
        return float(np.median(vals)) if vals else None

    return Comparison(n_paired=len(both), n_only_a=len(a) - len(both), n_only_b=len(b) - len(both),
                      moved=tuple(moved), n_down=down, n_up=up, n_censoring_changed=cens,
                      per_group=per_group, label_a=label_a, label_b=label_b,
                      median_ratio=float(np.median(ratios)) if ratios else None,
                      budget_ratio=(budget("steps"), budget("restarts")))


def compare_runs(dir_a: str, dir_b: str, *, ignore: Sequence[str] = _IGNORED) -> Comparison:
    """Compare the minimal widths of two run directories (B: the 2x re-search of A)."""
    from ftcjax.analysis.records import load_records

    return compare_records(load_records(dir_a), load_records(dir_b), ignore=ignore,
                           label_a=str(dir_a), label_b=str(dir_b))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ftcjax.analysis ACTION ...``: a thin alias of ``ftcjax convergence ACTION ...`` (the
    actions are subcommands of the one ``ftcjax`` parser, see :mod:`ftcjax._convergence_cli`)."""
    from ftcjax.cli import main as cli_main

    return cli_main(["convergence", *(sys.argv[1:] if argv is None else list(argv))])


if __name__ == "__main__":
    raise SystemExit(main())


# ----------------------------------------------------------------------------------------------
# The verdict against the noise floor.


@dataclasses.dataclass(frozen=True)
class GroupVerdict:
    """Budget shift vs noise floor for one group (all cell axes but N and the budget axes).

    Per paired instance i: ``b_i = log w_budget - log w_base`` and ``r_i = log w_reseed - log w_base``
    (censored widths ranked above every measured one: they enter as twice the largest probed width).
    ``p_value``: two-sided Wilcoxon signed-rank test of ``b_i - r_i = log w_budget - log w_reseed``
    (does the larger budget move widths more than new seeds do?). ``median_ratio``: ``exp(median b)``
    with a distribution-free ``level`` interval (order statistics of b). ``verdict``: ``"moving"``
    when ``p_value < alpha``, else ``"converged"``; ``"too few"`` below 6 pairs.
    ``moved_budget``/``moved_reseed``: instances whose width changed under each.
    """

    label: str
    n: int
    moved_budget: int
    moved_reseed: int
    p_value: Optional[float]
    median_ratio: Optional[float]
    ratio_ci: Optional[tuple]
    reseed_ratio: Optional[float]
    verdict: str
    budget: str = ""


def _log_width(rec: dict) -> float:
    if rec.get("censored") or rec.get("min_width") is None:
        top = max([p["width"] for p in rec.get("probes", [])] or [1])
        return float(np.log(2.0 * top))
    return float(np.log(max(float(rec["min_width"]), 0.5)))  # trivial width 0: below every width


def _median_ci(v: np.ndarray, level: float) -> Optional[tuple]:
    """Distribution-free interval for the median: order statistics from the binomial(n, 1/2)."""
    from scipy import stats

    n = v.shape[0]
    if n < 2:
        return None
    v = np.sort(v)
    k = int(stats.binom.ppf((1 - level) / 2, n, 0.5))
    lo, hi = max(k - 1, 0), min(n - k, n - 1)
    return float(v[lo]), float(v[hi])


def noise_floor_verdicts(base: Sequence[dict], reseed: Sequence[dict], budget: Sequence[dict], *,
                         alpha: float = 0.05, level: float = 0.95, budget_label: str = "") -> list:
    """One :class:`GroupVerdict` per group of ``base`` (records of three runs on the same instances)."""
    from scipy import stats

    from ftcjax.analysis.records import group_label, group_records, search_rule_of

    ignore = _IGNORED
    rs = {_pair_key(r, ignore): r for r in reseed}
    bs = {_pair_key(r, ignore): r for r in budget}
    out = []
    for key, recs in group_records(base).items():
        pairs = [(r, rs[k], bs[k]) for r in recs for k in [_pair_key(r, ignore)] if k in rs and k in bs]
        for a, r, b in pairs:
            if len({search_rule_of(a), search_rule_of(r), search_rule_of(b)}) > 1:
                raise FTCInputError(f"records of instance {a.get('instance_id')!r} were searched by different "
                                    "rules in the three runs; their widths are not comparable")
        label = group_label(key, skip=ignore + ("search_rule",), show=())
        if not pairs:
            continue
        w0 = np.array([_log_width(a) for a, _, _ in pairs])
        wr = np.array([_log_width(r) for _, r, _ in pairs])
        wb = np.array([_log_width(b) for _, _, b in pairs])
        bsh, rsh = wb - w0, wr - w0
        diff = wb - wr
        p = None
        if len(pairs) >= 6:  # zeros (equal widths) split their ranks: agreement counts as agreement
            p = 1.0 if not np.any(diff) else float(stats.wilcoxon(diff, zero_method="zsplit").pvalue)
        ci = _median_ci(bsh, level)
        verdict = "too few" if p is None else ("moving" if p < alpha else "converged")
        out.append(GroupVerdict(label=label, n=len(pairs), moved_budget=int(np.sum(bsh != 0)),
                                moved_reseed=int(np.sum(rsh != 0)), p_value=p,
                                median_ratio=float(np.exp(np.median(bsh))),
                                ratio_ci=None if ci is None else (float(np.exp(ci[0])), float(np.exp(ci[1]))),
                                reseed_ratio=float(np.exp(np.median(rsh))), verdict=verdict, budget=budget_label))
    return out


def format_verdicts(verdicts: Sequence[GroupVerdict]) -> str:
    """A plain table: one line per group with the noise floor beside the budget shift."""
    lines = ["group | n | moved: budget / reseed | median ratio budget/base [95%] | reseed/base | Wilcoxon p | verdict"]
    for v in verdicts:
        ci = "-" if v.ratio_ci is None else f"[{v.ratio_ci[0]:.2f}, {v.ratio_ci[1]:.2f}]"
        p = "-" if v.p_value is None else f"{v.p_value:.3g}"
        lines.append(f"{v.label} {v.budget}| {v.n} | {v.moved_budget} / {v.moved_reseed} | "
                     f"{v.median_ratio:.2f} {ci} | {v.reseed_ratio:.2f} | {p} | {v.verdict}")
    return "\n".join(lines)


def next_budgets(verdicts_by_axis: dict, factors: dict, *, max_factor: int = 8) -> dict:
    """Budget factors for the next round of ``--until-converged``.

    ``verdicts_by_axis``: {"steps": [GroupVerdict], "restarts": [...]}; ``factors``: {group label:
    {"steps": f, "restarts": f}} current factors. A group moving under an axis doubles that axis
    (up to ``max_factor``). Returns the new factors of the groups still moving and below the cap.
    """
    out = {}
    for axis, verdicts in verdicts_by_axis.items():
        for v in verdicts:
            cur = dict(factors.get(v.label, {"steps": 1, "restarts": 1}))
            if v.verdict == "moving" and cur[axis] * 2 <= max_factor:
                cur[axis] *= 2
                out.setdefault(v.label, dict(factors.get(v.label, {"steps": 1, "restarts": 1})))[axis] = cur[axis]
    return out


def _subset_for(records: Sequence[dict], labels: set, grid_axes: Sequence[str]) -> dict:
    """Grid values (axis -> list) covering the groups whose label is in ``labels``."""
    from ftcjax.analysis.records import group_label, group_records

    out: dict = {}
    for key, recs in group_records(records).items():
        if group_label(key, skip=_IGNORED + ("search_rule",), show=()) in labels:
            for a in grid_axes:
                v = recs[0]["cell"].get(a)
                if v is not None and v not in out.setdefault(a, []):
                    out[a].append(v)
    return {a: sorted(v, key=str) for a, v in out.items() if v}


def until_converged(data: dict, out_dir: str, *, run, max_factor: int = 8, alpha: float = 0.05) -> dict:
    """Double the budget of the groups still moving until every group is converged or ``max_factor``.

    Args:
      data: the parsed spec (TOML dict) of the baseline.
      out_dir: baseline run directory; the other runs go to ``<out_dir>-<suffix>`` siblings.
      run: ``run(spec_dict, run_dir) -> list of records`` (the CLI passes one that calls the sweep
        runner; tests pass synthetic runs).
    Level f (1, 2, 4, ...): the run at budget f, its reseed (noise floor at that budget), and budget
    f with 2x steps and with 2x restarts separately; each group gets a verdict per axis
    (:func:`noise_floor_verdicts`). Groups converged under both axes stop at f; the others go on at
    2f (both axes doubled), restricted to their grid values.
    Returns {group label: {"converged_at": f or None, "too_few": bool, "verdicts": [...]}};
    ``None`` means it still moved at the cap, or (``too_few``) that it could not be judged: fewer than
    6 instances pair up across the runs, and a larger budget adds no pairs, so it is not re-run.
    """
    if isinstance(max_factor, bool) or not isinstance(max_factor, int) or max_factor < 2:
        raise FTCInputError(f"max-factor: {max_factor!r} must be an integer >= 2")
    grid_axes = [a for a in (data.get("grid") or {}) if a != "N"]
    status: dict = {}
    level, spec, subset = 1, json.loads(json.dumps(data)), None
    base = run(spec, out_dir)
    while True:
        tag = "" if level == 1 else f"-b{level}"
        reseed = run(reseeded_spec_dict(spec, subset=subset), f"{out_dir}{tag}-reseed")
        verdicts = {axis: noise_floor_verdicts(base, reseed,
                                               run(budget_spec_dict(spec, axis, subset=subset),
                                                   f"{out_dir}{tag}-{axis}-x2"),
                                               alpha=alpha, budget_label=f"x{level}->{axis} x2 ")
                    for axis in ("steps", "restarts")}
        moving, unjudged = set(), set()
        for axis, vs in verdicts.items():
            for v in vs:
                entry = status.setdefault(v.label, {"converged_at": None, "too_few": False, "verdicts": []})
                entry["verdicts"].append(v)
                if v.verdict == "moving":
                    moving.add(v.label)
                elif v.verdict != "converged":  # "too few" pairs: no test, neither converged nor moving
                    unjudged.add(v.label)
        for label in unjudged - moving:
            status[label]["too_few"] = True
        for label in {v.label for vs in verdicts.values() for v in vs} - moving - unjudged:
            if status[label]["converged_at"] is None:
                status[label]["converged_at"] = level
        if not moving or level * 2 > max_factor:
            return status
        subset = _subset_for(base, moving, grid_axes) or None
        spec = doubled_spec_dict(spec, factor=2, subset=subset)
        spec["name"] = data.get("name", "sweep")
        level *= 2
        base = run(spec, f"{out_dir}-b{level}")


def format_until(status: dict, max_factor: int) -> str:
    lines = []
    for label, e in status.items():
        f = e["converged_at"]
        if e.get("too_few"):
            lines.append(f"{label}: NOT judged: fewer than 6 instances pair up across the runs "
                         "(the paired test needs 6); add replicates")
            continue
        lines.append(f"{label}: " + (f"converged at budget x{f} (steps and restarts)" if f is not None
                                     else f"NOT converged by budget x{max_factor}: widths still move"))
    lines.append("")
    lines.append(format_verdicts([v for e in status.values() for v in e["verdicts"]]))
    return "\n".join(lines)


def _run_spec_dir(spec_dict: dict, run_dir: str) -> list:
    """Run (or resume) a spec dict into ``run_dir`` with the sweep runner and return its records."""
    import os

    from ftcjax.analysis.records import load_records
    from ftcjax.sweep.runner import run_sweep
    from ftcjax.sweep.spec import spec_from_dict

    text = dump_toml(spec_dict)
    os.makedirs(os.path.dirname(os.path.abspath(run_dir)) or ".", exist_ok=True)
    spec = spec_from_dict(tomllib.loads(text), text=text)
    print(f"convergence: running {spec.name!r} -> {run_dir}", file=sys.stderr)
    run_sweep(spec, run_dir)
    return load_records(run_dir)
