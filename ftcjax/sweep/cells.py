"""The one bridge from spec cells to kernel arguments.

A *cell* is a plain dict of axis values (``{"depth": 3, "N": 4, "K": 24, "d": 2, "data": "gaussian",
..., "steps": 2000, ...}``, see :mod:`ftcjax.sweep.spec`). This module is the ONLY place that knows
which axis becomes which kernel argument: the runner, the analysis (constructions regenerated on a
run's instances) and the benchmarks all call it, so the three can never disagree about what a cell
means. It imports the public kernel names only (plus the plan's key derivation).

>>> from ftcjax.sweep.cells import protocol_for_cell, candidate_widths
>>> cell = {"depth": 3, "criterion": "relative", "tol": 0.01, "steps": 100, "restarts": 2}
>>> protocol_for_cell(cell).steps, candidate_widths([1, 2, 3, 8], protocol_for_cell(cell))
(100, [2, 3, 8])
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

__all__ = [
    "PROBLEM_ARGS",
    "KernelInputs",
    "plan_lanes_per_step",
    "protocol_for_cell",
    "candidate_widths",
    "problem_args",
    "make_cell_problem",
    "form_for_cell",
    "cell_widths",
    "instance_problems",
    "kernel_inputs",
]

# Cell axes -> keyword arguments of ftcjax.make_problem (N comes per instance, the rest per cell).
# The cell's dtype is the TRAINING dtype: additive problems are always drawn in float64 (the kernels
# cast), so a dtype axis compares the SAME instances; a [form] sweep's LoRA problems carry their frozen
# net in the cell's dtype.
PROBLEM_ARGS = ("K", "d", "data", "labels", "frozen")
# Axes of a cell that are not Protocol fields (the problem axes) and Protocol fields that are not axes.
_NOT_PROTOCOL = ("N", "K", "d", "data", "labels", "frozen")


def protocol_for_cell(cell: dict[str, Any]):
    """The :class:`ftcjax.Protocol` of a cell: every axis that is a Protocol field, validated.

    Axes absent from the cell take the Protocol's defaults (the spec fills them all in, so the
    defaults only matter for hand-made cells).
    """
    import dataclasses as dc

    from ftcjax import Protocol

    fields = {f.name for f in dc.fields(Protocol)}
    return Protocol(**{k: v for k, v in cell.items() if k in fields and k not in _NOT_PROTOCOL})


def candidate_widths(widths: Sequence[int], protocol) -> list[int]:
    """The candidate widths usable under ``protocol``: those giving every hidden layer a neuron.

    One width list serves every depth of a grid, so a 2-layer-friendly lower bound of 1 simply starts
    the 3-layer search at 2.
    """
    from ftcjax._src.networks import smallest_valid_width

    lo = smallest_valid_width(protocol.depth, protocol.split)
    return [int(w) for w in widths if w >= lo]


def problem_args(cell: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :func:`ftcjax.make_problem` for a cell (without the key).

    A [form] cell (``"form"`` in it) adds the explicit frozen net's ``width`` and ``depth`` and its
    ``dtype``: the arguments of :func:`ftcjax.make_lora_problem`.
    """
    out = {"N": cell["N"], **{k: cell[k] for k in PROBLEM_ARGS}}
    if "form" in cell:
        out.update(width=cell["frozen_width"], depth=cell["frozen_depth"], dtype=cell.get("dtype", "float64"))
    else:
        out["dtype"] = "float64"
    return out


def make_cell_problem(key, cell: dict[str, Any]):
    """One problem of a cell drawn from ``key``: ``x (K, d)``, the rest ``(K,)``.

    ``data`` is a built-in distribution or the path of an ``.npz`` file holding ``x (K, d)``, ``y (K,)``
    (the labels ``f`` was trained on) and optionally ``f_x (K,)``; see :func:`ftcjax.make_problem`.
    A [form] cell draws a LoRA problem with its explicit frozen net (the same instance for every form).
    """
    if "form" in cell:
        from ftcjax import make_lora_problem

        return make_lora_problem(key, **problem_args(cell))
    from ftcjax import make_problem

    return make_problem(key, **problem_args(cell))


def form_for_cell(cell: dict[str, Any], form_options: dict[str, Any] | None = None):
    """The fine-tuning form of a cell (additive without a ``[form]`` table; see ``sweep.form_axes``)."""
    from ftcjax.sweep.form_axes import form_for_cell as _form

    return _form(cell, dict(form_options or {}))


def cell_widths(cell: dict[str, Any], widths: Sequence[int], protocol,
                form_options: dict[str, Any] | None = None) -> list[int]:
    """The searched sizes of a cell: LoRA ranks (``form.ranks``) or the usable candidate widths."""
    if cell.get("form") == "lora":
        return [int(r) for r in dict(form_options or {})["ranks"]]
    return candidate_widths(widths, protocol)


def instance_problems(seed: int, instances: Sequence) -> list:
    """The problem of each instance (any cells), exactly as the runner draws it: one per instance."""
    from ftcjax.sweep.plan import instance_keys

    if not instances:
        return []
    problem_keys, _ = instance_keys(seed, instances)
    return [make_cell_problem(problem_keys[i], inst.cell) for i, inst in enumerate(instances)]


@dataclasses.dataclass(frozen=True)
class KernelInputs:
    """Everything :func:`ftcjax.min_width_batch` needs for a batch of instances of one batch group.

    Attributes:
      problems: stacked problems, ``x (B, K, d)``, the rest ``(B, K)``.
      problem_keys, train_keys: ``(B,)`` typed PRNG keys (never equal: see ``plan.instance_keys``).
      protocol: the group's :class:`ftcjax.Protocol`.
      widths: candidate sizes usable under the protocol (widths, or LoRA ranks).
      strategy: the search strategy.
      form: the group's fine-tuning form (:class:`ftcjax.Additive` or :class:`ftcjax.LoRA`).
    """

    problems: Any
    problem_keys: Any
    train_keys: Any
    protocol: Any
    widths: list
    strategy: str
    form: Any = None


def plan_lanes_per_step(protocol, cell: dict[str, Any], widths: Sequence[int], chunk_size: int) -> int:
    """The ``lanes_per_step`` a sweep trains a cell with: explicit in the spec, else fixed by the plan.

    ``0`` (the default) becomes :func:`ftcjax._src.protocol.round_lanes_per_step` for a round of
    ``chunk_size x restarts`` lanes (the spec's chunk, not the instances left to compute in it, so a
    resumed chunk computes the same bits).

    >>> from ftcjax import Protocol
    >>> plan_lanes_per_step(Protocol(restarts=8, dtype="float32"), {"K": 64, "d": 2}, [16], chunk_size=16)
    64
    >>> plan_lanes_per_step(Protocol(restarts=2), {"K": 24, "d": 2}, [1, 48], chunk_size=10)
    8
    """
    from ftcjax._src.protocol import round_lanes_per_step

    return round_lanes_per_step(protocol, num_samples=cell["K"], in_dim=cell["d"], bucket=max(widths, default=1),
                                lanes_per_round=int(chunk_size) * protocol.restarts,
                                sized=cell.get("form") in (None, "additive"))


def kernel_inputs(seed: int, instances: Sequence, *, widths: Sequence[int], strategy: str,
                  form_options: dict[str, Any] | None = None, chunk_size: int | None = None) -> KernelInputs:
    """Kernel arguments of a batch of :class:`ftcjax.sweep.plan.Instance` sharing every axis but N.

    Each problem is drawn from its own key alone (one ``make_problem`` call per instance), so a problem
    never depends on which other instances share its batch. ``chunk_size`` (the spec's) fixes
    ``lanes_per_step`` when the protocol leaves it to the plan (:func:`plan_lanes_per_step`; default:
    the number of instances given).
    """
    from ftcjax import stack_problems
    from ftcjax._src.errors import FTCInputError
    from ftcjax.sweep.plan import instance_keys

    if not instances:
        raise FTCInputError("instances: need at least one instance")
    group = {k: v for k, v in instances[0].cell.items() if k != "N"}
    for inst in instances[1:]:
        if {k: v for k, v in inst.cell.items() if k != "N"} != group:
            raise FTCInputError("instances: a batch must share every axis but N")
    protocol = protocol_for_cell(instances[0].cell)
    problem_keys, train_keys = instance_keys(seed, instances)
    problems = stack_problems([make_cell_problem(problem_keys[i], inst.cell)
                               for i, inst in enumerate(instances)])
    cell = instances[0].cell
    widths = cell_widths(cell, widths, protocol, form_options)
    protocol = protocol.replace(lanes_per_step=plan_lanes_per_step(
        protocol, cell, widths, len(instances) if chunk_size is None else chunk_size))
    return KernelInputs(problems=problems, problem_keys=problem_keys, train_keys=train_keys,
                        protocol=protocol, widths=widths,
                        strategy=strategy, form=form_for_cell(cell, form_options))
