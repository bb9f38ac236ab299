"""Kill a real sweep with SIGKILL mid-way, resume it, and get exactly the uninterrupted results."""
import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from sweep_helpers import (DEVICES, TINY_SPEC, cli_args, cli_env, raw_lines, reference_run,
                                   results_without_timing, run_cli)
from ftcjax.sweep.spec import parse_spec


def _complete_lines(run_dir):
    n = 0
    for p in (run_dir / "results").glob("*.jsonl"):
        n += p.read_bytes().count(b"\n")
    return n


# A killed process and a resume in fresh processes (~50 s on 2 slow cores): the slow CI step runs it, so
# the default suite keeps its margin under 10 minutes.
@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path_factory, tmp_path):
    ref = reference_run(tmp_path_factory.getbasetemp() / "sweep-reference")
    expected = results_without_timing(ref)
    total = parse_spec(TINY_SPEC).num_instances
    assert len(expected) == total
    # The measurement is not degenerate: some instances found a width, some did not.
    assert any(r["censored"] for r in expected.values()) and any(not r["censored"] for r in expected.values())

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    out = tmp_path / "run"
    # Its own (cold) compilation cache: the second group's compile keeps the process busy after
    # the first chunks are durable, which is when we kill it.
    proc = subprocess.Popen(cli_args("run", str(spec), "--out", str(out), "--no-report", "--progress", "none",
                                     *DEVICES, "--compilation-cache", str(tmp_path / "own-cache")),
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "results").is_dir() and _complete_lines(out) >= 1:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = len(results_without_timing(out))
    assert 0 < done_at_kill < total
    # `ftcjax status` notices that the writer is gone (its pid no longer exists) and gives no ETA
    st = run_cli("status", str(out))
    assert st.returncode == 0, st.stderr
    assert "DEAD (pid" in st.stdout and "ETA        none: no writer is running" in st.stdout, st.stdout
    assert "at the current rate" not in st.stdout

    # Simulate the worst moment for a kill, mid-write: a torn half record at the end of the shard.
    shard = sorted((out / "results").glob("*.jsonl"))[0]
    some = json.dumps(next(iter(expected.values())))
    with open(shard, "ab") as f:
        f.write(some[:57].encode())

    st = run_cli("status", str(out))  # readable while interrupted, torn line reported
    assert st.returncode == 0 and f"{done_at_kill}/{total} done" in st.stdout and "torn" in st.stdout

    res = run_cli("run", str(spec), "--out", str(out), "--no-report", "--progress", "log", *DEVICES)
    assert res.returncode == 0, res.stderr
    assert f"resuming with" in res.stderr
    got = results_without_timing(out)
    assert got == expected  # bit for bit: every float of every probe
    ids = [r["instance_id"] for r in raw_lines(out)]
    assert len(ids) == total and not [i for i, c in Counter(ids).items() if c > 1]  # none lost, none twice

    again = run_cli("run", str(spec), "--out", str(out), "--no-report", "--progress", "none", *DEVICES)
    assert again.returncode == 0 and "0 chunks computed now" in again.stdout
    assert len(raw_lines(out)) == total


def test_resume_with_other_spec_is_refused_naming_the_field(tmp_path_factory, tmp_path):
    ref = reference_run(tmp_path_factory.getbasetemp() / "sweep-reference")
    before = sorted(p.stat().st_mtime_ns for p in (ref / "results").glob("*"))
    other = tmp_path / "other.toml"
    other.write_text(TINY_SPEC.replace("seed = 7", "seed = 8").replace("K = [6, 8]", "K = [6, 9]"))
    res = run_cli("run", str(other), "--out", str(ref), "--no-report")
    assert res.returncode == 2
    assert "seed: 7 in the run directory, 8 in the new spec" in res.stderr
    assert "grid.K: [8] in the run directory but not in the new spec" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.stat().st_mtime_ns for p in (ref / "results").glob("*")) == before
