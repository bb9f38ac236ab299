"""Hostile cases (issue 16): bad bytes, lost files, full disks, hostile specs, planted links, odd modes.

Each case must end in a clear message and a distinct exit status (2 bad input, 3 environment / I/O),
never a traceback; no case may use a damaged or foreign record; after a fault the same command resumes
to results identical to an uninterrupted run. Most cases need no training: they damage a copy of one
finished tiny run (computed once per session) and read it back in-process.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from ftcjax._src.errors import FTCEnvironmentError, FTCInputError
from ftcjax.cli import main
from ftcjax.sweep import files, guards
from ftcjax.sweep.integrity import seal
from ftcjax.sweep.results import status
from ftcjax.sweep.spec import parse_spec
from ftcjax.sweep.store import RunDir, ShardWriter
from sweep_helpers import (TINY_SPEC, cli_args, cli_env, reference_run, results_without_timing, run_cli,
                           shared_cache)

SPEC = parse_spec(TINY_SPEC)
SHARD = "shard-0000-of-0001.jsonl"
FAST = ("--no-report", "--progress", "none", "--cpu-devices", "2")


# ---------------------------------------------------------------------------------------------------
# Helpers

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished run of the tiny spec (12 instances in 6 chunks), shared read-only by the module."""
    return reference_run(tmp_path_factory.getbasetemp() / "sweep-reference")


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A private copy of the finished run to damage."""
    dst = tmp_path / "run"
    shutil.copytree(finished, dst, symlinks=True, ignore=shutil.ignore_patterns("cache"))
    return dst


def shard(run_dir: Path) -> Path:
    return run_dir / "results" / SHARD


def lines(run_dir: Path) -> list[bytes]:
    return shard(run_dir).read_bytes().splitlines()


def append(run_dir: Path, data: bytes) -> None:
    with open(shard(run_dir), "ab") as f:
        f.write(data)


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    msg = [ln for ln in err.splitlines() if ln.startswith("ftcjax: error:")]
    assert len(msg) == 1, err
    for n in needles:
        assert n in msg[0], (n, msg[0])


def expected_records(finished: Path) -> dict:
    return results_without_timing(finished)


def sound_ids(run_dir: Path) -> set[str]:
    return set(RunDir(run_dir).load().records)


def run_tiny(spec_path: Path, out: Path, base: Path, *extra: str, env=None):
    return run_cli("run", str(spec_path), "--out", str(out), *FAST, "--compilation-cache",
                   shared_cache(base), *extra, env=env)


def write_spec(tmp_path: Path, text: str = TINY_SPEC, name: str = "tiny.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------------------------------
# 1. Bad lines: never a crash, never used, reported with their line numbers

BAD_LINES = {
    "not_utf8": b"\xff\xfe\x00garbage",
    "int": b"123",
    "null": b"null",
    "string": b'"a record?"',
    "list_id": b'{"instance_id": ["x"]}',
    "deep_nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep_objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "nan_garbage": b"NaN",
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_is_set_aside_with_its_line_number(run, finished, kind, capsys):
    n_before = len(lines(run))
    append(run, BAD_LINES[kind] + b"\n")
    loaded = RunDir(run).load()
    assert set(loaded.records) == set(expected_records(finished))
    assert [(r.file, r.line) for r in loaded.rejected] == [(SHARD, n_before + 1)]
    rc, out, err = cli(capsys, "status", str(run))
    assert rc == 0 and "Traceback" not in err
    assert f"{SHARD}:{n_before + 1}:" in out and "12/12 done" in out
    rc, out, err = cli(capsys, "export", str(run), "--csv", "-")
    assert rc == 0 and len(out.splitlines()) == 1 + 12


def _record_lines(run_dir):
    return [json.loads(b) for b in lines(run_dir)]


def _rewrite(run_dir, records, raw=False):
    shard(run_dir).write_bytes(b"".join((r if raw else json.dumps(r).encode()) + b"\n" for r in records))


def test_record_without_cell_is_rejected(run):
    recs = _record_lines(run)
    del recs[3]["cell"]
    _rewrite(run, recs)
    loaded = RunDir(run).load()
    assert len(loaded) == 11 and "missing field 'cell'" in loaded.rejected[0].reason


def test_resealed_record_with_a_foreign_cell_is_rejected_by_its_id(run):
    """A record whose checksum was recomputed after editing its cell: the id no longer matches."""
    recs = _record_lines(run)
    victim = recs[0]
    victim["cell"] = dict(victim["cell"], N=3)
    recs[0] = seal(victim)
    _rewrite(run, recs)
    loaded = RunDir(run).load()
    assert victim["instance_id"] not in loaded.records
    assert "is not the id" in loaded.rejected[0].reason


def test_record_of_another_sweep_is_rejected(run):
    recs = _record_lines(run)
    recs[2] = seal(dict(recs[2], spec_hash="0123456789abcdef"))
    _rewrite(run, recs)
    loaded = RunDir(run).load()
    assert len(loaded) == 11 and "another sweep" in loaded.rejected[0].reason


def test_wrong_field_type_is_rejected(run):
    recs = _record_lines(run)
    recs[1] = seal(dict(recs[1], min_width="7"))
    _rewrite(run, recs)
    assert "field 'min_width' is a str" in RunDir(run).load().rejected[0].reason


def test_two_records_merged_by_overwritten_bytes_are_not_used(run, finished, capsys):
    """100 bytes overwritten across the newline between two records: one valid JSON object may
    result; its checksum fails, so neither instance is used, and status shows the true counts."""
    data = bytearray(shard(run).read_bytes())
    nl = data.index(b"\n", len(data) // 3)
    a_end = data.rindex(b"}", 0, nl)           # end of record A
    b_start = nl + 1
    # Keep A's prefix up to its last 50 bytes, then B's suffix after its first 50 bytes, so the
    # glued line is one object carrying A's keys and B's tail (what the issue reproduced).
    glued = data[:a_end - 50] + data[b_start + 50:]
    shard(run).write_bytes(bytes(glued))
    loaded = RunDir(run).load()
    assert len(loaded) == 10 and len(loaded.rejected) == 1
    good = expected_records(finished)
    for iid, rec in loaded.records.items():
        assert {k: v for k, v in rec.items() if k not in ("timing", "checksum")} == good[iid]
    st = status(run)
    assert st["instances_done"] == 10 and st["corrupt_lines"] == 1


def test_bytes_overwritten_inside_a_string_fail_the_checksum(run, finished):
    data = bytearray(shard(run).read_bytes())
    i = data.index(b'"strategy":"') + len(b'"strategy":"')
    data[i:i + 4] = b"zzzz"
    shard(run).write_bytes(bytes(data))
    loaded = RunDir(run).load()
    assert len(loaded) == 11 and "checksum mismatch" in loaded.rejected[0].reason
    good = {r["strategy"] for r in expected_records(finished).values()}
    assert len(good) == 1 and {r.get("strategy") for r in loaded.records.values()} == good


def test_torn_non_utf8_tail_is_skipped_then_repaired(run, finished):
    size = shard(run).stat().st_size
    append(run, b'{"cell": \xff\xfe half a rec')
    loaded = RunDir(run).load()
    assert loaded.torn == 1 and loaded.corrupt == 0 and len(loaded) == 12
    with ShardWriter(shard(run)):
        pass
    assert shard(run).stat().st_size == size and shard(run).read_bytes().endswith(b"\n")


def test_planted_shard_link_is_never_read(run, tmp_path, capsys):
    secret = tmp_path / "secret.jsonl"
    secret.write_text(lines(run)[0].decode() + "\n")
    os.symlink(secret, run / "results" / "shard-0009-of-0010.jsonl")
    loaded = RunDir(run).load()
    assert [r.line for r in loaded.rejected] == [0] and "symbolic link" in loaded.rejected[0].reason
    rc, out, _ = cli(capsys, "status", str(run))
    assert rc == 0 and "shard-0009-of-0010.jsonl:0" in out


def test_fifo_shard_does_not_block_the_loader(run):
    os.mkfifo(run / "results" / "shard-0001-of-0002.jsonl")
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", RunDir(run).load()), daemon=True)
    t.start()
    t.join(20)
    assert "r" in result, "the loader blocked on a FIFO"
    assert "not a regular file" in result["r"].rejected[0].reason


def test_corrupt_lines_are_quarantined_and_recomputed_identically(run, finished, tmp_path):
    """The issue's exact first case, then resume: same command, same results, bad bytes kept aside."""
    recs = lines(run)
    damaged = [recs[0], b"\xff", recs[1][:40] + b"XXXX" + recs[1][44:], b"123"] + recs[2:]
    shard(run).write_bytes(b"\n".join(damaged) + b"\n" + b'{"torn": \xff')
    assert len(RunDir(run).load()) == 11
    proc = run_tiny(write_spec(tmp_path), run, finished.parent)
    assert proc.returncode == 0, proc.stderr
    assert "quarantined 4 unusable line(s)" in proc.stderr  # 3 bad + the torn tail and "1 chunks computed now" in proc.stdout
    assert results_without_timing(run) == expected_records(finished)
    q = (run / "quarantine" / f"{SHARD}.bad").read_bytes()
    assert b"\xff" in q and b"XXXX" in q and b"123" in q
    assert RunDir(run).load().corrupt == 0


# ---------------------------------------------------------------------------------------------------
# 2. The manifest is not the single point of truth

def test_lost_manifest_with_another_seed_is_refused_by_the_records(run, tmp_path):
    (run / "manifest.json").unlink()
    other = write_spec(tmp_path, TINY_SPEC.replace("seed = 7", "seed = 1"))
    proc = run_tiny(other, run, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "seed: 7 in the run directory, 1 in the new spec" in proc.stderr
    assert not (run / "manifest.json").exists()


def test_lost_manifest_and_spec_text_with_other_widths_is_refused(run, tmp_path):
    (run / "manifest.json").unlink()
    (run / "spec.toml").unlink()
    other = write_spec(tmp_path, TINY_SPEC.replace("upper = 8", "upper = 16"))
    proc = run_tiny(other, run, tmp_path)
    assert proc.returncode == 2 and "were written by sweep" in proc.stderr, proc.stderr


def test_lost_manifest_is_rebuilt_from_the_same_spec(run, finished, tmp_path):
    """... and a planted DIR/cache link (the old default cache location) is never followed."""
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").unlink()
    world = tmp_path / "world-writable"
    world.mkdir(mode=0o777)
    os.symlink(world, run / "cache")
    proc = run_tiny(write_spec(tmp_path), run, finished.parent)
    assert proc.returncode == 0, proc.stderr
    assert "0 chunks computed now, 6 already done" in proc.stdout
    rebuilt = json.loads((run / "manifest.json").read_text())
    assert rebuilt["spec_hash"] == manifest["spec_hash"] and rebuilt["spec"] == manifest["spec"]
    assert results_without_timing(run) == expected_records(finished)
    assert list(world.iterdir()) == []


@pytest.mark.parametrize("content", [b"[]", b"{}", b"\xff\xfe", b"null", b'{"spec_hash": 3}'])
def test_damaged_manifest_is_one_line_and_status_3(run, content, capsys):
    (run / "manifest.json").write_bytes(content)
    for cmd in (["status", str(run)], ["export", str(run), "--csv", "-"]):
        rc, out, err = cli(capsys, *cmd)
        assert rc == 3, err
        assert_one_line_error(err, "damaged manifest")


def test_edited_manifest_with_its_hash_kept_is_refused(run, capsys):
    m = json.loads((run / "manifest.json").read_text())
    m["spec"]["seed"] = 1
    (run / "manifest.json").write_text(json.dumps(m))
    rc, _, err = cli(capsys, "status", str(run))
    assert rc == 3
    assert_one_line_error(err, "edited by hand")


def test_manifest_link_is_refused(run, tmp_path, capsys):
    target = tmp_path / "elsewhere.json"
    shutil.move(run / "manifest.json", target)
    os.symlink(target, run / "manifest.json")
    rc, _, err = cli(capsys, "status", str(run))
    assert rc == 3
    assert_one_line_error(err, "symbolic link")


def test_missing_spec_text_is_restored(run):
    (run / "spec.toml").unlink()
    RunDir(run).prepare(SPEC)
    assert (run / "spec.toml").read_text() == SPEC.text


# ---------------------------------------------------------------------------------------------------
# 3. Hostile specs: refused in validation, naming the field and the number, without allocating

HOSTILE_SPECS = {
    "huge_N_range": (TINY_SPEC.replace('N = "1:3"', 'N = "1:100000000"'), "grid.N"),
    "huge_width": (TINY_SPEC.replace("upper = 8", "upper = 1000000000"), "width.upper"),
    "huge_width_count": (TINY_SPEC.replace("upper = 8", "upper = 5000000"), "candidate widths"),
    "huge_replicates": (TINY_SPEC.replace("replicates = 2", "replicates = 1000000000"), "replicates"),
    "huge_K": (TINY_SPEC.replace("K = [6, 8]", "K = 1000000000"), "grid.K"),
    "huge_d": (TINY_SPEC.replace("d = 2", "d = 1000000000"), "grid.d"),
    "huge_restarts": (TINY_SPEC.replace("restarts = 2", "restarts = 1000000000"), "train.restarts"),
    "huge_lbfgs_memory": (TINY_SPEC.replace("restarts = 2", "restarts = 2\nlbfgs_memory = 1000000000"),
                          "train.lbfgs_memory"),
    "huge_chunk_size": (TINY_SPEC.replace("chunk_size = 2", "chunk_size = 1000000000"), "batch.chunk_size"),
    "too_many_cells": (TINY_SPEC.replace('N = "1:3"', 'N = "1:5000"').replace("K = [6, 8]", "K = 5000")
                       .replace("learning_rate = 0.05", "learning_rate = ["
                                + ", ".join(str(0.001 * (i + 1)) for i in range(300)) + "]"), "cells"),
    "deep_nesting": (TINY_SPEC.replace('N = "1:3"', "N = " + "[" * 5000 + "1" + "]" * 5000), "nested"),
    "worst_case_too_small_K": (TINY_SPEC.replace('N = "1:3"', "N = [1, 2, 3]").replace(
        "K = [6, 8]", "K = 8").replace('criterion = "relative"', 'criterion = "relative"\ndata = "worst_case"'),
        "K must be >= 3N + 2 = 11"),
    "name_with_newline": ('name = "a\\nb"\n' + TINY_SPEC.replace('name = "tiny"\n', ""), "name"),
    "name_with_escape": ('name = "a\\u001b[31mred"\n' + TINY_SPEC.replace('name = "tiny"\n', ""), "name"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_SPECS))
def test_hostile_spec_is_refused_in_validation(tmp_path, kind, capsys):
    text, needle = HOSTILE_SPECS[kind]
    rc, _, err = cli(capsys, "validate", str(write_spec(tmp_path, text)))
    assert rc == 2, err
    assert needle in err and "Traceback" not in err


def test_spec_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero", str(tmp_path)):
        proc = subprocess.run(cli_args("validate", path), env=cli_env(), capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr


def test_oversize_spec_file_is_refused(tmp_path, capsys):
    p = write_spec(tmp_path, TINY_SPEC + "#" * (guards.MAX_SPEC_BYTES + 1) + "\n")
    rc, _, err = cli(capsys, "validate", str(p))
    assert rc == 2 and "more than the limit" in err


def test_memory_estimate_refuses_what_the_machine_cannot_hold():
    big = parse_spec(TINY_SPEC.replace("K = [6, 8]", "K = 2000000").replace("d = 2", "d = 1000"))
    msg = guards.memory_problems(big, available=16 << 30, what="test memory")
    assert len(msg) == 1 and "grid.K = 2000000" in msg[0] and "16 GiB of test memory" in msg[0]
    assert guards.memory_problems(SPEC, available=16 << 30, what="test memory") == []
    # the estimate grows with every factor it names
    base = dict(K=1000, d=10, depth=3, width=24, lanes=16, lanes_per_step=4, unroll=4, optimizer="adam",
                lbfgs_memory=10, itemsize=4, batch=4)
    for k in ("K", "d", "width", "lanes"):
        assert guards.peak_bytes(**dict(base, **{k: base[k] * 2})) > guards.peak_bytes(**base)
    assert guards.peak_bytes(**dict(base, itemsize=8)) == 2 * guards.peak_bytes(**base)
    assert guards.peak_bytes(**dict(base, optimizer="lbfgs")) > guards.peak_bytes(**base)


# ---------------------------------------------------------------------------------------------------
# 4. OS errors: one line, exit status 3 (2 for bad arguments), what was saved said

def test_status_on_a_file_is_bad_input(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = cli(capsys, "status", str(f))
    assert rc == 2
    assert_one_line_error(err, "is a file, not a run directory")


def test_export_onto_a_directory_is_refused_and_leaves_nothing(run, tmp_path, capsys):
    target = tmp_path / "out.csv"
    target.mkdir()
    rc, _, err = cli(capsys, "export", str(run), "--csv", str(target))
    assert rc == 2 and "is a directory" in err
    assert os.listdir(tmp_path) == sorted(os.listdir(tmp_path)) and not list(tmp_path.glob(".*tmp"))


def test_report_into_a_missing_directory_is_refused(run, tmp_path, capsys):
    rc, _, err = cli(capsys, "report", str(run), "--output", str(tmp_path / "nope" / "r.md"))
    assert rc == 2
    assert_one_line_error(err, "does not exist")


def test_name_too_long_is_one_line_status_3(run, tmp_path, capsys):
    rc, _, err = cli(capsys, "export", str(run), "--csv", str(tmp_path / ("x" * 300 + ".csv")))
    assert rc == 3
    assert_one_line_error(err, "File name too long")


def test_out_naming_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    proc = run_tiny(write_spec(tmp_path), f, tmp_path)
    assert proc.returncode == 2 and "is a file, not a run directory" in proc.stderr, proc.stderr
    assert f.read_text() == "x"


@pytest.mark.parametrize("value", ["-1", "-5"])
def test_negative_max_chunks_is_refused(tmp_path, value, capsys):
    rc, _, err = cli(capsys, "run", str(write_spec(tmp_path)), "--out", str(tmp_path / "o"),
                     "--max-chunks", value)
    assert rc == 2 and "--max-chunks" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["a\nb", "red\x1b[31m"])
def test_control_characters_in_names_are_refused(tmp_path, name, capsys):
    rc, _, err = cli(capsys, "run", str(write_spec(tmp_path)), "--out", str(tmp_path / name))
    assert rc == 2 and "control characters" in err and "\x1b" not in err
    assert not (tmp_path / name).exists()


def test_disk_full_while_appending_cuts_back_to_whole_records(run, finished, monkeypatch):
    """A fault-injecting writer: the second os.write of an append fails with ENOSPC after a partial
    write; the shard is cut back to its last whole record and the error is an FTCEnvironmentError."""
    before = shard(run).read_bytes()
    rec = json.loads(lines(run)[0])
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:37])  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    with ShardWriter(shard(run)) as w:
        monkeypatch.setattr(files.os, "write", flaky_write)
        with pytest.raises(FTCEnvironmentError, match="No space left on device"):
            w.append([rec, rec])
        monkeypatch.setattr(files.os, "write", real_write)
    assert shard(run).read_bytes() == before
    assert RunDir(run).load().corrupt == 0


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@pytest.mark.slow  # fresh-process sweeps on a mounted tmpfs (~40 s); the fault-injecting writer test covers the default suite
def test_disk_full_on_a_real_small_file_system_then_resume(finished, tmp_path):
    """A 24 KiB tmpfs (6 pages) fills up mid-run: one line, status 3, then the same command on a bigger disk
    (the directory moved) finishes to the uninterrupted results. Needs root to mount; without it the
    fault-injected case above covers the writer."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "24k"):
        pytest.skip("cannot mount a tmpfs here (not root); covered by the fault-injecting writer test")
    try:
        spec = write_spec(tmp_path)
        proc = run_tiny(spec, mnt / "run", finished.parent)
        assert proc.returncode == 3, proc.stderr
        assert_one_line_error(proc.stderr, "No space left on device", "saved", "rerun the same command")
        shutil.copytree(mnt / "run", tmp_path / "moved")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    proc = run_tiny(spec, tmp_path / "moved", finished.parent)
    assert proc.returncode == 0, proc.stderr
    assert results_without_timing(tmp_path / "moved") == expected_records(finished)


def test_finished_run_in_a_read_only_directory_writes_nothing(run, tmp_path):
    """With nothing pending, `run` must not write (a read-only shard or directory still reports)."""
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
                for p in run.rglob("*")}
    proc = run_tiny(write_spec(tmp_path), run, tmp_path, "--compilation-cache", "off")
    assert proc.returncode == 0, proc.stderr
    assert "0 chunks computed now, 6 already done" in proc.stdout
    after = {p: (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in run.rglob("*")}
    assert after == snapshot


def test_partial_cluster_environments_are_one_line_status_3(tmp_path):
    spec = write_spec(tmp_path)
    for env in ({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "2"}, {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}):
        proc = run_tiny(spec, tmp_path / "o", tmp_path, env=env)
        assert proc.returncode == 3, proc.stderr
        assert_one_line_error(proc.stderr, "jax.distributed could not start", "nothing was computed")
        assert not list((tmp_path / "o" / "results").glob("*.jsonl")) if (tmp_path / "o").exists() else True


# ---------------------------------------------------------------------------------------------------
# 5. Links, modes, temporaries, concurrent and overlapping writers

def test_planted_spec_text_link_is_replaced_not_followed(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    rd = RunDir(tmp_path / "run")
    (tmp_path / "run").mkdir()
    os.symlink(target, tmp_path / "run" / "spec.toml")
    rd.prepare(SPEC)
    assert target.read_text() == "do not touch"
    assert not (tmp_path / "run" / "spec.toml").is_symlink()


def test_planted_shard_link_is_refused_by_the_writer(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.prepare(SPEC)
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    os.symlink(target, rd.results_dir / SHARD)
    with pytest.raises(FTCEnvironmentError, match="symbolic link"):
        with rd.writer("shard-0000-of-0001"):
            pass
    assert target.read_text() == "do not touch"


def test_modes_ignore_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        rd = RunDir(tmp_path / "run")
        rd.prepare(SPEC)
        rd.record_environment("w", {"a": 1})
        with rd.writer("w") as w:
            w.append([{"x": 1}])
        with rd.layout_lock(1):
            pass
    finally:
        os.umask(old)
    for p in [rd.root, *rd.root.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(p).st_mode)
        assert mode & 0o077 == 0, (p, oct(mode))


def test_stale_temporaries_are_cleaned_but_live_ones_kept(tmp_path):
    import fcntl

    rd = RunDir(tmp_path / "run")
    rd.prepare(SPEC)
    rd.record_environment("w", {})
    stale = [rd.root / ".manifest.host.123.tmp", rd.root / "env" / ".w.json.abc.tmp",
             rd.results_dir / ".x.jsonl.def.tmp"]
    for p in stale:
        p.write_text("leftover")
        os.utime(p, (1, 1))
    live = rd.root / "env" / ".w.json.live.tmp"
    live.write_text("being written")
    os.utime(live, (1, 1))
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        removed = rd.clean_temporaries()
    finally:
        os.close(fd)
    assert sorted(removed) == sorted(stale) and live.exists()


def test_temporary_names_are_unpredictable(tmp_path, monkeypatch):
    seen = []
    real_open = os.open

    def spy(path, flags, *a):
        if str(path).endswith(".tmp"):
            seen.append((Path(path).name, flags))
        return real_open(path, flags, *a)

    monkeypatch.setattr(files.os, "open", spy)
    for _ in range(2):
        files.atomic_write_bytes(tmp_path / "f.json", b"{}")
    assert len({n for n, _ in seen}) == 2
    assert all(f & os.O_EXCL and f & os.O_NOFOLLOW for _, f in seen)


def test_overlapping_shard_layouts_are_refused(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.prepare(SPEC)
    with rd.layout_lock(2):
        with rd.layout_lock(2):  # the other writer of the same layout may run
            pass
        with pytest.raises(FTCInputError, match="another shard layout"):
            with rd.layout_lock(1):
                pass
    with rd.layout_lock(1):  # sequential layout changes are fine
        pass


def test_refused_concurrent_writer_leaves_the_live_env_record(tmp_path):
    """A second process on the same shard is refused before it writes its environment."""
    from ftcjax.sweep.runner import run_sweep

    rd = RunDir(tmp_path / "run")
    rd.prepare(SPEC)
    with rd.writer("shard-0000-of-0001"):
        rd.record_environment("shard-0000-of-0001", {"writer": "live"})
        with pytest.raises(FTCInputError, match="another process"):
            run_sweep(SPEC, rd.root)
        assert json.loads((rd.root / "env" / "shard-0000-of-0001.json").read_text()) == {"writer": "live"}


# ---------------------------------------------------------------------------------------------------
# 6. Python API: clear errors naming the argument, never raw numpy/jax errors

import jax  # noqa: E402
import numpy as np  # noqa: E402

import ftcjax  # noqa: E402

_CHANGED = np.array([False, True, False])


@pytest.mark.parametrize("x, y, f_x, needle", [
    ([[1.0], [1.0 + 1e-12], [2.0]], [0.0, 1.0, 2.0], None, "duplicate samples at rows [0, 1] in float32"),
    ([[1.0], [2.0], [3.0]], [0.0, 1e39, 2.0], None, "non-finite value inf at index (1,) in float32"),
    ([[1.0 + 1.0j], [2.0], [3.0]], [0.0, 1.0, 2.0], None, "x: complex"),
    ([[1.0], [2.0], [3.0]], [0.0, 1.0j, 2.0], None, "y: complex"),
    ([["a"], ["b"], ["c"]], [0.0, 1.0, 2.0], None, "x: dtype"),
    ([[1.0], [2.0], [3.0]], [0.0, 3e38, 2.0], [0.0, -3e38, 2.0], "residual y - f_x overflows float32"),
])
def test_problem_from_arrays_checks_in_the_target_dtype(x, y, f_x, needle):
    with pytest.raises(FTCInputError) as e:
        ftcjax.problem_from_arrays(np.asarray(x), np.asarray(y), _CHANGED,
                                   None if f_x is None else np.asarray(f_x))
    assert needle in str(e.value)


def test_problem_from_arrays_float64_keeps_distinct_rows():
    with jax.enable_x64(True):
        p = ftcjax.problem_from_arrays(np.array([[1.0], [1.0 + 1e-12], [2.0]]), np.array([0.0, 1.0, 2.0]),
                                       _CHANGED)
    assert p.x.dtype == np.float64 and float(p.z[1]) == 1.0


@pytest.mark.parametrize("field, value", [("learning_rate", "0.01"), ("tol", True), ("rel_eps", b"1"),
                                          ("paper_threshold", None), ("learning_rate", [0.1])])
def test_protocol_refuses_non_numbers(field, value):
    with pytest.raises(FTCInputError, match=field):
        ftcjax.Protocol(**{field: value})


@pytest.fixture(scope="module")
def two_problems():
    return ftcjax.make_problems(jax.random.key(0), num=2, K=6, d=2, N=2, dtype="float32")


@pytest.mark.parametrize("case, needle", [
    ("empty_widths", "widths: must be a non-empty"),
    ("no_devices", "devices: empty"),
    ("huge_width", "exceeds the limit"),
    ("float_keys", "not PRNG keys"),
    ("k_mismatch", "does not match x"),
])
def test_fit_batch_bad_arguments_name_the_argument(two_problems, case, needle):
    proto = ftcjax.Protocol(steps=2, segment=2, restarts=1, dtype="float32")
    keys = jax.random.split(jax.random.key(1), 2)
    kwargs = dict(problems=two_problems, widths=np.array([2, 3]), keys=keys, protocol=proto)
    if case == "empty_widths":
        kwargs["widths"] = np.array([], int)
    elif case == "no_devices":
        kwargs["devices"] = []
    elif case == "huge_width":
        kwargs["widths"] = np.array([2, 10**9])
    elif case == "float_keys":
        kwargs["keys"] = np.zeros((2,), np.float32)
    elif case == "k_mismatch":
        kwargs["problems"] = two_problems._replace(z=two_problems.z[:, :4])
    problems = kwargs.pop("problems")
    widths = kwargs.pop("widths")
    with pytest.raises(FTCInputError, match=needle):
        ftcjax.fit_batch(problems, widths, **kwargs)


def test_structured_rule_matches_the_builders():
    """Validation's rule for worst_case/alternating data is exactly where the builders refuse."""
    from ftcjax._src import worst_case

    for data, build in (("worst_case", worst_case.worst_case_two_layer),
                        ("alternating", worst_case.alternating_turns)):
        for N in range(1, 5):
            for K in range(max(1, N), 16):
                try:
                    build(N, K)
                    built = True
                except FTCInputError:
                    built = False
                assert built == (worst_case.structured_problem(data, N, K) is None), (data, N, K)


def _bind_read_only(src: Path, dst: Path) -> bool:
    dst.mkdir(parents=True, exist_ok=True)
    for cmd in (["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,ro,bind", str(dst)]):
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(dst)], capture_output=True)
            return False
    return True


def test_read_only_run_directory_reports_when_done_and_fails_cleanly_when_not(run, tmp_path):
    """On a read-only mount (EROFS, which binds root too): a finished run still reports (exit 0); with
    work pending the run stops with one line and status 3, changing nothing."""
    ro = tmp_path / "ro"
    if not _bind_read_only(run, ro):
        pytest.skip("cannot bind-mount read-only here (not root); the no-write check above still runs")
    try:
        spec = write_spec(tmp_path)
        proc = run_tiny(spec, ro, tmp_path)
        assert proc.returncode == 0 and "12/12 instances done" in proc.stdout, proc.stderr
        proc = run_tiny(write_spec(tmp_path, TINY_SPEC, "again.toml"), ro, tmp_path, "--max-chunks", "0")
        assert proc.returncode == 0, proc.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)
    # now with pending work: drop two records, mount again
    recs = lines(run)
    shard(run).write_bytes(b"\n".join(recs[:-2]) + b"\n")
    if not _bind_read_only(run, ro):
        pytest.skip("cannot bind-mount read-only a second time")
    try:
        before = shard(run).read_bytes()
        proc = run_tiny(spec, ro, tmp_path)
        assert proc.returncode == 3, proc.stderr
        assert_one_line_error(proc.stderr, "Read-only file system")
        assert shard(run).read_bytes() == before
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


def test_manifest_replaced_by_another_sweeps_is_refused_by_the_records(run, tmp_path):
    """A self-consistent manifest of another spec over these records: the records outvote it."""
    other = parse_spec(TINY_SPEC.replace("seed = 7", "seed = 1"))
    (run / "manifest.json").unlink()
    RunDir(tmp_path / "other").prepare(other)
    shutil.copy(tmp_path / "other" / "manifest.json", run / "manifest.json")
    with pytest.raises(FTCInputError, match="seed: 7 in the run directory"):  # named via spec.toml
        RunDir(run).check(other)
    (run / "spec.toml").unlink()
    with pytest.raises(FTCInputError, match="were written by sweep .* was it replaced"):
        RunDir(run).prepare(other)
    assert len(RunDir(run).load(expected_spec_hash=None)) == 12  # nothing moved or lost


def test_a_few_foreign_lines_among_ours_are_quarantined_not_refused(run):
    recs = _record_lines(run)
    recs.append(seal(dict(recs[0], spec_hash="0123456789abcdef")))
    _rewrite(run, recs)
    RunDir(run).check(SPEC)
    notes = RunDir(run).quarantine()
    assert len(notes) == 1 and "line 13" in notes[0]
    assert len(RunDir(run).load()) == 12 and RunDir(run).load().corrupt == 0


def test_writer_states_skip_planted_fifos_and_links(tmp_path):
    # `ftcjax status` reads DIR/env/*.json (liveness): a FIFO must not block it, a link is not followed.
    from ftcjax.sweep.results import writer_states

    env = tmp_path / "env"
    env.mkdir()
    os.mkfifo(env / "fifo.json")
    (tmp_path / "elsewhere.json").write_text('{"state": "running", "pid": 1}')
    os.symlink(tmp_path / "elsewhere.json", env / "link.json")
    (env / "shard-0000-of-0001.json").write_text('{"state": "finished", "pid": 1, "hostname": "h"}')
    assert writer_states(RunDir(tmp_path)) == {
        "shard-0000-of-0001": {"state": "finished", "pid": 1, "hostname": "h", "heartbeat": None}}


def test_resuming_records_of_another_search_rule_is_refused(run, monkeypatch):
    """A run directory holds one search rule: a newer ftcjax never appends its rule's records beside the old."""
    from ftcjax._src import search
    from ftcjax.sweep.runner import run_sweep

    lines = shard(run).read_text().splitlines()
    shard(run).write_text("\n".join(lines[:6]) + "\n")  # part of the run done: resuming would compute more
    before = shard(run).read_bytes()
    manifest = (run / "manifest.json").read_bytes()
    monkeypatch.setitem(search.RULES, "adaptive", "adaptive-v99")
    with pytest.raises(FTCInputError, match=r"searched with adaptive-v\d, this spec searches with adaptive-v99; "
                                            r"resuming would mix the two rules in one run: pin width.rule"):
        run_sweep(SPEC, run)
    assert shard(run).read_bytes() == before and (run / "manifest.json").read_bytes() == manifest


def test_a_spec_pinning_the_records_rule_resumes_them_with_that_rule(run, finished, monkeypatch):
    """Pinning width.rule to the records' version continues the run as that rule, bit for bit."""
    import dataclasses

    from ftcjax._src import search
    from ftcjax.sweep.runner import run_sweep

    shard(run).write_bytes(b"\n".join(lines(run)[:6]) + b"\n")
    old = search.RULES["adaptive"]
    monkeypatch.setitem(search.RULES, "adaptive", "adaptive-v99")  # a newer default: no longer this run's rule
    pinned = dataclasses.replace(SPEC, rule=old)
    assert pinned.hash == SPEC.hash
    run_sweep(pinned, run)
    assert results_without_timing(run) == expected_records(finished)


def test_status_counts_unresolved_apart_from_censored(run):
    """No width, neither censored nor trivial (the adaptive budget spent undecided): its own count."""
    from ftcjax.sweep.results import status, summary_rows

    recs = [{"cell": {"N": 1}, "min_width": None, "censored": False, "trivial": False},
            {"cell": {"N": 1}, "min_width": None, "censored": True, "trivial": False},
            {"cell": {"N": 1}, "min_width": 3, "censored": False, "trivial": False}]
    (row,) = summary_rows(recs, ["N"])
    assert (row["n"], row["censored"], row["unresolved"], row["min"], row["max"]) == (3, 1, 1, 3, 3)
    st = status(run)
    assert st["unresolved"] == sum(1 for r in st_records(run) if r.get("min_width") is None
                                   and not r.get("censored") and not r.get("trivial"))
    assert "unresolved" in st["summary_columns"]


def st_records(run_dir):
    from ftcjax.sweep.store import RunDir

    return list(RunDir(run_dir).load().records.values())
