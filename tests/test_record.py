"""The record: one definition, a schema version, old files read, newer ones refused, the success rule."""
import json

import pytest

from ftcjax import FTCInputError
from ftcjax.analysis.records import width_from_probes
from ftcjax.analysis.synthetic import synthetic_records
from ftcjax.sweep.record import SCHEMA_VERSION, make_record, results_only, upgrade


def test_make_record_round_trips_through_json():
    rec = make_record({"min_width": 4, "censored": False, "probes": [{"width": 4}]}, spec_hash="ab" * 8,
                      instance_id="c-r1", cell={"N": 2, "lanes_per_step": 4}, replicate=1,
                      protocol={"depth": 2}, chunk="c-b0", true_width=3)
    back = upgrade(json.loads(json.dumps(rec)))
    assert back == rec and back["schema"] == SCHEMA_VERSION and back["true_width"] == 3
    assert "chunk" not in results_only(back) and results_only(back)["min_width"] == 4


def test_schema_1_is_read_and_newer_refused():
    old = {"instance_id": "x-r0", "cell": {"N": 1, "chunk": 4}, "protocol": {"chunk": 4}, "min_width": 2}
    new = upgrade(old)
    assert new["cell"] == {"N": 1, "lanes_per_step": 4} and new["protocol"] == {"lanes_per_step": 4}
    assert new["schema"] == SCHEMA_VERSION and old["cell"] == {"N": 1, "chunk": 4}  # input untouched
    with pytest.raises(FTCInputError, match=r"shard.jsonl: record schema 99 is newer"):
        upgrade({"schema": 99}, source="shard.jsonl")


def _sealed_line(**fields) -> bytes:
    from ftcjax.sweep.integrity import encode_record
    from ftcjax.sweep.plan import instance_id

    cell = fields.pop("cell", {"N": 1, "chunk": 4})
    rec = {"spec_hash": "ab" * 8, "instance_id": instance_id(cell, 0), "cell": cell, "replicate": 0,
           "min_width": 2, "censored": False, "protocol": {"chunk": 4}, **fields}
    return encode_record(rec) + b"\n"


def test_store_loader_refuses_a_newer_schema_by_name(tmp_path):
    from ftcjax.sweep.store import load_results

    shard = tmp_path / "w.jsonl"
    shard.write_bytes(_sealed_line(schema=SCHEMA_VERSION + 1))
    with pytest.raises(FTCInputError, match="w.jsonl: record schema"):
        load_results([shard])


def test_store_checks_the_stored_bytes_before_the_upgrade(tmp_path):
    # A schema-1 record is sealed over its stored names (cell "chunk"): the checksum and the id are
    # checked on those bytes, and only a sound record is upgraded to the current names.
    from ftcjax.sweep.store import load_results

    shard = tmp_path / "w.jsonl"
    good = _sealed_line()
    shard.write_bytes(good + good.replace(b'"min_width":2', b'"min_width":3'))
    out = load_results([shard])
    (rec,) = out.records.values()
    assert rec["cell"] == {"N": 1, "lanes_per_step": 4} and rec["protocol"] == {"lanes_per_step": 4}
    assert rec["schema"] == SCHEMA_VERSION and rec["min_width"] == 2
    assert [r.line for r in out.rejected] == [2] and "checksum" in out.rejected[0].reason
    # a schema that is not an integer is damage, set aside like any other bad field (never an upgrade)
    shard.write_bytes(_sealed_line(schema="2"))
    out = load_results([shard])
    assert not out.records and "schema" in out.rejected[0].reason


def test_synthetic_records_follow_the_definition():
    for rec in synthetic_records(Ns=[2], replicates=2):
        assert upgrade(rec) is rec and rec["schema"] == SCHEMA_VERSION


def test_width_from_probes_uses_the_search_rule_with_min_successes():
    probe = lambda w, passed: {"width": w, "passed": {"strict": passed}}  # noqa: E731
    rec = {"protocol": {"restarts": 4, "success_fraction": 0.5},
           "probes": [probe(2, [True, False, False, False]), probe(3, [True, True, False, False])]}
    assert width_from_probes(rec, "strict") == (3, False, False)  # 1 of 4 is not enough at width 2
    rec["protocol"]["success_fraction"] = 0.0
    assert width_from_probes(rec, "strict") == (2, False, False)
