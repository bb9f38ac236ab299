"""The integrity envelope of a stored record: a checksum of its canonical body, and the checks that
decide whether a stored line may be used at all.

A line in a shard is used only if every check passes; otherwise the loader sets it aside with the
reason (and the next run quarantines it and recomputes its instance):

1. it parses as JSON (any bytes: invalid UTF-8, absurd nesting and huge lines are reasons, not crashes);
2. it is an object whose ``checksum`` equals the checksum of the rest of it (catches bytes overwritten
   inside a record, and two records merged by damage across their newline);
3. its envelope fields have the right types (:data:`ENVELOPE`, :data:`TYPED`);
4. its ``instance_id`` is the id computed from its ``cell`` and ``replicate``
   (:func:`ftcjax.sweep.plan.instance_id`, never re-implemented here);
5. its ``spec_hash`` is the run's (a record of another sweep is never mixed in).

The checksum is ``sha256:`` + 16 hex digits of the SHA-256 of the record without its ``checksum`` key,
serialised as the store writes records (sorted keys, no spaces). JSON floats round-trip exactly, so a
loaded record re-serialises to the same text.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["CHECKSUM_KEY", "seal", "checksum", "encode_record", "parse_line", "check_record",
           "MAX_LINE_BYTES", "MAX_DEPTH"]

CHECKSUM_KEY = "checksum"
MAX_LINE_BYTES = 16 << 20   # a record is a few KB; anything near this is damage

# Fields every record has, with their types (bool is not an int here).
ENVELOPE: dict[str, tuple[type, ...]] = {
    "spec_hash": (str,),
    "instance_id": (str,),
    "cell": (dict,),
    "replicate": (int,),
    CHECKSUM_KEY: (str,),
}
# Fields the analysis reads, type-checked when present (the record's own definition adds more).
TYPED: dict[str, tuple[type, ...]] = {
    "min_width": (int, type(None)),
    "censored": (bool,),
    "trivial": (bool,),
    "non_monotone": (bool,),
    "trainings": (int,),
    "strategy": (str,),
    "chunk": (int, str),  # the plan chunk: an index, or a key that survives growing the sweep
    "problem": (dict,),
    "protocol": (dict,),
    "probes": (list,),
    "timing": (dict,),
    "schema": (int,),  # the record definition's version (ftcjax.sweep.record); absent: 1
}
_INT_FIELDS = {"replicate", "trainings", "chunk", "min_width", "schema"}  # where bool (an int subclass) is wrong
_SCALARS = (str, int, float, bool)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def checksum(record: dict[str, Any]) -> str:
    """Checksum of ``record`` without its ``checksum`` key."""
    body = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    return "sha256:" + hashlib.sha256(_dumps(body).encode("utf-8")).hexdigest()[:16]


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` carrying its checksum."""
    out = {k: v for k, v in record.items() if k != CHECKSUM_KEY}
    out[CHECKSUM_KEY] = checksum(out)
    return out


def encode_record(record: dict[str, Any]) -> bytes:
    """One sealed line (no newline)."""
    return _dumps(seal(record)).encode("utf-8")


def parse_line(line: bytes) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)`` for one line of a shard; never raises."""
    if len(line) > MAX_LINE_BYTES:
        return None, f"line of {len(line)} bytes exceeds {MAX_LINE_BYTES}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e.reason} at byte {e.start})"
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "nested too deep to be a record"
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"not JSON ({msg[:80]})"


def _type_ok(value: Any, types: tuple[type, ...], name: str) -> bool:
    if name in _INT_FIELDS and isinstance(value, bool):
        return False
    return isinstance(value, types)


def check_record(value: Any, *, expected_spec_hash: str | None, instance_id_fn) -> str | None:
    """The reason ``value`` (a parsed line) must not be used, or None when it passes every check.

    Args:
      value: the parsed JSON value.
      expected_spec_hash: the run's spec hash (None: accept any, e.g. when inspecting records alone).
      instance_id_fn: ``(cell, replicate) -> id`` (:func:`ftcjax.sweep.plan.instance_id`).
    """
    try:
        return _check(value, expected_spec_hash, instance_id_fn)
    except RecursionError:  # a value nested just under json's limit cannot be re-serialised
        return "nested too deep to be a record"


def _check(value: Any, expected_spec_hash: str | None, instance_id_fn) -> str | None:
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not a record object"
    if CHECKSUM_KEY not in value:
        return "no checksum (damaged, or written before records were sealed)"
    for name, types in ENVELOPE.items():
        if name not in value:
            return f"missing field {name!r}"
        if not _type_ok(value[name], types, name):
            return f"field {name!r} is a {type(value[name]).__name__}"
    if value[CHECKSUM_KEY] != checksum(value):
        return "checksum mismatch (the record's bytes were changed)"
    for name, types in TYPED.items():
        if name in value and not _type_ok(value[name], types, name):
            return f"field {name!r} is a {type(value[name]).__name__}"
    cell = value["cell"]
    for k, v in cell.items():
        if not isinstance(v, _SCALARS):
            return f"cell axis {k!r} is a {type(v).__name__}"
    if value["replicate"] < 0:
        return f"replicate {value['replicate']} is negative"
    try:
        expected_id = instance_id_fn(cell, value["replicate"])
    except (TypeError, ValueError) as e:
        return f"instance id cannot be computed ({e})"
    if value["instance_id"] != expected_id:
        return (f"instance_id {value['instance_id']!r} is not the id {expected_id!r} of its cell and "
                "replicate")
    if expected_spec_hash is not None and value["spec_hash"] != expected_spec_hash:
        return f"spec_hash {value['spec_hash']!r} belongs to another sweep (this run is {expected_spec_hash!r})"
    return None
