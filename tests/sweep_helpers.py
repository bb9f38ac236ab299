"""Helpers for the sweep tests: a tiny spec and a way to run the CLI in a fresh process.

Tests that compare runs (resume, devices, processes, shards) must run the real command in separate
processes: device counts and ``jax.distributed`` are fixed when jax initialises.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Small enough that a whole run is compile time plus a second or two on one core, big enough for
# several chunks and groups (two K values -> two compiled shapes).
TINY_SPEC = """\
name = "tiny"
seed = 7
replicates = 2

[grid]
depth = 2
N = "1:3"
K = [6, 8]
d = 2
criterion = "relative"

[train]
steps = 60
segment = 20
restarts = 2
learning_rate = 0.05
rel_eps = 0.05
unroll = 1                # fast compiles for tests

[width]
lower = 1
upper = 8

[batch]
chunk_size = 2
"""


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a CLI subprocess: the repo importable, no inherited device flags."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.update(extra or {})
    return env


def cli_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftcjax.cli", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``ftcjax ARGS`` in a fresh interpreter; returns the completed process (text output)."""
    return subprocess.run(cli_args(*args), env=cli_env(env), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO)


def results_without_timing(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """instance id -> record minus its bookkeeping (``timing``, ``checksum``), for bit-for-bit comparisons."""
    from ftcjax.sweep.store import RunDir

    out = {}
    for iid, rec in RunDir(run_dir).load().records.items():
        rec = dict(rec)
        rec.pop("timing", None)
        rec.pop("checksum", None)  # it covers the timing too
        out[iid] = json.loads(json.dumps(rec, sort_keys=True))
    return out


DEVICES = ("--cpu-devices", "2")


def shared_cache(base: Path) -> str:
    """A compilation cache shared by the test runs of one session (same programs compile once)."""
    return str(Path(base) / "xla-cache")


def session_dir() -> Path:
    """A directory of this test session shared by all its pytest-xdist workers (conftest.py sets it
    before the workers start, and they inherit the environment)."""
    return Path(os.environ["FTCJAX_TEST_SESSION_DIR"])


def reference_run(base: Path, spec_text: str = TINY_SPEC, *extra: str) -> Path:
    """An uninterrupted one-process run of ``spec_text`` on 2 CPU devices (one per test session).

    Every other multi-device configuration (8 devices, 2 processes, shards, a killed and resumed run)
    must reproduce it bit for bit. Two fake devices, not one: the core's one-device program differs
    from the multi-device one in the last bits (see tests/test_devices.py). The run is computed once
    per session in :func:`session_dir` (the first worker to ask runs it under a file lock, the others
    wait and reuse it) and is read-only to its users; ``base`` keeps the caller's compilation cache.
    """
    import fcntl
    import hashlib

    digest = hashlib.sha256("\0".join((spec_text, *DEVICES, *extra)).encode()).hexdigest()[:16]
    root = session_dir()
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"reference-{digest}"
    with open(root / f"reference-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / f"reference-{digest}.done"
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # a run that died half-way is redone
            spec = root / f"reference-{digest}.toml"
            spec.write_text(spec_text)
            proc = run_cli("run", str(spec), "--out", str(out), "--no-report", "--progress", "none",
                           *DEVICES, "--compilation-cache", shared_cache(base), *extra)
            if proc.returncode != 0:
                raise RuntimeError(f"reference run failed:\n{proc.stdout}\n{proc.stderr}")
            done.touch()
    return out


def raw_lines(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record line of every shard, duplicates included."""
    lines = []
    for p in sorted((Path(run_dir) / "results").glob("*.jsonl")):
        for line in p.read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line))
    return lines
