"""The store: fsynced appends, torn last lines, dedupe, one writer per shard, manifest checks."""
import io
import json

import pytest

from ftcjax._src.errors import FTCInputError
from sweep_helpers import TINY_SPEC
from ftcjax.sweep.plan import make_plan
from ftcjax.sweep.results import export_rows, format_status, status, write_csv
from ftcjax.sweep.spec import parse_spec
from ftcjax.sweep.store import RunDir, SpecMismatchError

SPEC = parse_spec(TINY_SPEC)


def fake_record(inst, chunk, writer="shard-0000-of-0001", width=3):
    """A record shaped like the runner's (no kernels needed)."""
    return {
        "spec_hash": SPEC.hash, "instance_id": inst.id, "cell": inst.cell, "replicate": inst.replicate,
        "chunk": chunk, "protocol": {}, "min_width": None if width is None else width,
        "censored": width is None, "trivial": False, "non_monotone": False, "trainings": 4,
        "strategy": "bisect",
        "problem": {"N": inst.cell["N"], "K": inst.cell["K"], "z_max": 0.5, "mse_zero": 0.1},
        "probes": [{"width": 8, "success": True, "successes": 2, "restarts": 2, "mse": [1e-5, 2e-5],
                    "max_err": [1e-3, 2e-3], "steps": [10, 20],
                    "passed": {"paper": [True, True], "strict": [True, False], "relative": [True, True]}}],
        "timing": {"writer": writer, "chunk_seconds": 0.5, "finished_at": 1000.0 + chunk},
    }


def prepared(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.prepare(SPEC, {"backend": "cpu"})
    return rd


def test_append_load_roundtrip_and_dedupe(tmp_path):
    rd = prepared(tmp_path)
    plan = make_plan(SPEC)
    with rd.writer("a") as w:
        assert w.append([fake_record(i, 0) for i in plan[0].instances]) == len(plan[0])
    with rd.writer("b") as w:  # a second shard repeating one record (e.g. an overlapping launcher)
        w.append([fake_record(plan[0].instances[0], 0, "b"), fake_record(plan[1].instances[0], 1, "b")])
    loaded = rd.load()
    assert set(loaded.records) == set(plan[0].ids) | {plan[1].ids[0]}
    assert loaded.duplicates == 1 and loaded.torn == 0 and loaded.corrupt == 0


def test_torn_last_line_is_skipped_then_repaired(tmp_path):
    rd = prepared(tmp_path)
    plan = make_plan(SPEC)
    with rd.writer("a") as w:
        w.append([fake_record(plan[0].instances[0], 0)])
    path = rd.results_dir / "a.jsonl"
    full = json.dumps(fake_record(plan[0].instances[1], 0))
    with open(path, "a") as f:  # a crash mid-write: half a record, no newline
        f.write(full[: len(full) // 2])
    loaded = rd.load()
    assert list(loaded.records) == [plan[0].ids[0]] and loaded.torn == 1
    # a complete record without its newline is also treated as in flight, never half-counted
    with open(path, "a") as f:
        f.write("\n" + full)
    assert rd.load().corrupt == 1 and rd.load().torn == 1
    # reopening for append truncates the torn tail so the next record starts on a fresh line
    with rd.writer("a") as w:
        w.append([fake_record(plan[1].instances[0], 1)])
    loaded = rd.load()
    assert set(loaded.records) == {plan[0].ids[0], plan[1].ids[0]}
    assert loaded.torn == 0
    assert path.read_text().endswith("\n")


def test_one_writer_per_shard(tmp_path):
    rd = prepared(tmp_path)
    with rd.writer("a"):
        with pytest.raises(FTCInputError, match="another process"):
            with rd.writer("a"):
                pass
    with rd.writer("a"):  # released after exit
        pass


def test_manifest_mismatch_names_fields(tmp_path):
    rd = prepared(tmp_path)
    assert rd.prepare(SPEC)["spec_hash"] == SPEC.hash  # same spec: accepted
    other = parse_spec(TINY_SPEC.replace("seed = 7", "seed = 8").replace("steps = 60", "steps = 61"))
    with pytest.raises(SpecMismatchError) as e:
        rd.prepare(other)
    msg = str(e.value)
    assert "seed: 7 in the run directory, 8 in the new spec" in msg
    assert "train.steps: [60] in the run directory but not in the new spec" in msg
    assert "grid.K" not in msg
    # the stored spec round-trips from the manifest
    assert rd.spec().hash == SPEC.hash and rd.spec().name == "tiny"


def test_status_and_export_of_partial_run(tmp_path):
    rd = prepared(tmp_path)
    plan = make_plan(SPEC)
    with rd.writer("a") as w:
        w.append([fake_record(i, 0) for i in plan[0].instances])
        w.append([fake_record(plan[2].instances[0], 2, width=None)])
    with open(rd.results_dir / "a.jsonl", "a") as f:
        f.write('{"instance_id": "tor')
    st = status(rd.root)
    assert st["instances_total"] == SPEC.num_instances
    assert st["instances_done"] == len(plan[0]) + 1
    assert st["chunks_done"] == 1 and st["censored"] == 1 and st["torn_lines"] == 1
    assert "torn" in format_status(st)
    header, rows = export_rows(rd.root)
    assert [r["instance_id"] for r in rows] == list(plan[0].ids) + [plan[2].ids[0]]  # plan order
    assert rows[0]["probe_widths"] == "8" and rows[0]["probe_passed_strict"] == "1"
    assert rows[-1]["censored"] == "1" and rows[-1]["min_width"] == ""
    assert "N" in header and "learning_rate" in header
    assert len(header) == len(set(header))  # no column shadows another (the protocol has a "chunk")
    buf = io.StringIO()
    assert write_csv(rd.root, buf) == len(rows)
    assert buf.getvalue().count("\n") == len(rows) + 1


def test_not_a_run_dir(tmp_path):
    with pytest.raises(FTCInputError, match="not a ftcjax run directory"):
        status(tmp_path)


def test_a_run_directory_of_an_older_ftcjax_is_named_not_called_damaged(tmp_path):
    import json

    import pytest

    from ftcjax import FTCInputError
    from ftcjax.sweep.spec import parse_spec
    from ftcjax.sweep.store import RunDir, _legacy_spec_hash
    from sweep_helpers import TINY_SPEC

    rd = RunDir(tmp_path / "run")
    rd.prepare(parse_spec(TINY_SPEC))
    m = json.loads(rd.manifest_path.read_text())
    m["spec_hash"] = _legacy_spec_hash(m["spec"])  # what ftcjax wrote before sweeps could grow
    rd.manifest_path.write_text(json.dumps(m))
    with pytest.raises(FTCInputError, match="written by an older ftcjax"):
        rd.read_manifest()
