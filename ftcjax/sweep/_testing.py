"""Helpers for the sweep tests: a tiny spec and a way to run the CLI in a fresh process.

Tests that compare runs (resume, devices, processes, shards) must run the real command in separate
processes: device counts and ``jax.distributed`` are fixed when jax initialises.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

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
steps = 40
segment = 40
restarts = 2
learning_rate = 0.05

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
    """instance id -> record minus its bookkeeping (``timing``), for bit-for-bit comparisons."""
    from ftcjax.sweep.store import RunDir

    out = {}
    for iid, rec in RunDir(run_dir).load().records.items():
        rec = dict(rec)
        rec.pop("timing", None)
        out[iid] = json.loads(json.dumps(rec, sort_keys=True))
    return out


def raw_lines(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every complete record line of every shard, duplicates included."""
    lines = []
    for p in sorted((Path(run_dir) / "results").glob("*.jsonl")):
        for line in p.read_text().splitlines():
            if line.strip():
                lines.append(json.loads(line))
    return lines
