"""The result record: ONE definition of what a sweep stores per instance.

A record is a JSON object (one line of a shard file). Its fields:

=============== =====================================================================================
``schema``      :data:`SCHEMA_VERSION` of this definition (absent in files written before it: 1)
``spec_hash``   :func:`ftcjax.sweep.spec.spec_hash` of the sweep that wrote it
``instance_id`` ``<12 hex of the cell hash>-r<replicate>`` (:func:`ftcjax.sweep.plan.instance_id`)
``cell``        every axis value of the instance's cell (problem, criterion and training axes)
``replicate``   the replicate index inside the cell
``protocol``    :meth:`ftcjax.Protocol.to_dict` of the training protocol
``chunk``       the plan chunk that computed it (bookkeeping: a key that survives growing the sweep)
``min_width``   ... ``probes``: :meth:`ftcjax.WidthResult.to_dict` (the search's outcome)
``form``        ``[form]`` sweeps only: the fine-tuning form (``Form.to_dict()``) and
                ``trainable_params``, its trainable parameters at the found size (None if censored)
``timing``      bookkeeping kept apart from the results (writer, chunk seconds, finish time)
=============== =====================================================================================

Readers use :func:`upgrade` (through the store's loader) and the accessors below instead of reaching
into the dict with their own defaults.

>>> rec = make_record({"min_width": 3, "censored": False, "trivial": False, "probes": []},
...                   spec_hash="0123456789abcdef", instance_id="abc-r0", cell={"N": 1}, replicate=0,
...                   protocol={"depth": 2}, chunk="abc-b0")
>>> upgrade(rec) == rec, width(rec), is_censored(rec)
(True, 3, False)
"""
from __future__ import annotations

from typing import Any, Mapping, TypedDict

from ftcjax._src.errors import FTCInputError

__all__ = [
    "SCHEMA_VERSION",
    "Record",
    "BOOKKEEPING",
    "make_record",
    "upgrade",
    "results_only",
    "width",
    "is_censored",
    "is_trivial",
    "cell",
    "min_successes",
    "probe_passes",
]

SCHEMA_VERSION = 2
# Fields that say how and when a record was computed, not what was found: dropped when comparing runs.
BOOKKEEPING = ("timing", "chunk")
# Axis renames between schemas (old name -> new name), applied to ``cell`` and ``protocol``.
_RENAMED_V1 = {"chunk": "lanes_per_step"}


class Record(TypedDict, total=False):
    """One stored instance (see the module docstring for each field)."""

    schema: int
    spec_hash: str
    instance_id: str
    cell: dict
    replicate: int
    protocol: dict
    chunk: str
    min_width: int | None
    censored: bool
    trivial: bool
    non_monotone: bool
    trainings: int
    strategy: str
    problem: dict
    probes: list
    form: dict
    trainable_params: int | None
    timing: dict


def make_record(result: Mapping[str, Any], *, spec_hash: str, instance_id: str, cell: Mapping[str, Any],
                replicate: int, protocol: Mapping[str, Any], chunk: str | int | None = None,
                **extra: Any) -> Record:
    """The record of one instance: the search result (``WidthResult.to_dict()``) plus its identity.

    ``extra`` fields (e.g. a synthetic record's ``true_width``) are kept as given.
    """
    rec: dict[str, Any] = dict(result)
    rec.update(schema=SCHEMA_VERSION, spec_hash=spec_hash, instance_id=instance_id, cell=dict(cell),
               replicate=int(replicate), protocol=dict(protocol))
    if chunk is not None:
        rec["chunk"] = chunk
    rec.update(extra)
    return rec  # type: ignore[return-value]


def upgrade(rec: Mapping[str, Any], *, source: str = "record") -> Record:
    """A record of any readable schema in the current one; a newer schema is refused.

    Schema 1 (no ``schema`` field, before the renames of ftcjax 0.1) named ``Protocol.lanes_per_step``
    ``chunk``; the values are unchanged.

    Raises:
      FTCInputError: the record comes from a newer ftcjax (``source`` names the file).
    """
    version = rec.get("schema", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise FTCInputError(f"{source}: record schema {version!r} is newer than this ftcjax reads "
                            f"(schema {SCHEMA_VERSION}); upgrade ftcjax to read it")
    if version == SCHEMA_VERSION:
        return rec  # type: ignore[return-value]
    out = dict(rec)
    for field in ("cell", "protocol"):
        if isinstance(out.get(field), dict):
            out[field] = {_RENAMED_V1.get(k, k): v for k, v in out[field].items()}
    out["schema"] = SCHEMA_VERSION
    return out  # type: ignore[return-value]


def results_only(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The record without its bookkeeping: what must be bit-identical between two runs of one spec."""
    return {k: v for k, v in rec.items() if k not in BOOKKEEPING}


def width(rec: Mapping[str, Any]) -> int | None:
    """The minimal width found (None when censored)."""
    return rec.get("min_width")


def is_censored(rec: Mapping[str, Any]) -> bool:
    """True when even the largest candidate width failed (the width is only a lower bound)."""
    return bool(rec.get("censored", rec.get("min_width") is None))


def is_trivial(rec: Mapping[str, Any]) -> bool:
    """True when ``g = 0`` already met the decision criterion (the width says nothing)."""
    return bool(rec.get("trivial", False))


def min_successes(rec: Mapping[str, Any]) -> int:
    """Restarts that must meet a criterion for a probe to succeed: the search's own rule,
    ``max(1, ceil(success_fraction * restarts))`` with the record's protocol."""
    import math

    proto = rec.get("protocol") or {}
    restarts = int(proto.get("restarts") or max((p.get("restarts", 1) for p in rec.get("probes", [])), default=1))
    return max(1, math.ceil(float(proto.get("success_fraction", 0.0)) * restarts))


def probe_passes(rec: Mapping[str, Any], probe: Mapping[str, Any], criterion: str) -> bool:
    """Whether ``probe`` of ``rec`` succeeds under ``criterion`` by the search's rule (not 'any restart')."""
    return sum(bool(v) for v in probe.get("passed", {}).get(criterion, [])) >= min_successes(rec)


def cell(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The cell (every axis value) of the record's instance."""
    return dict(rec.get("cell") or {})
