"""Sweeps: TOML specs, deterministic plans, a durable resumable store, and the runner behind ``ftcjax run``.

Orchestration only (plain Python around the kernels); ``import ftcjax`` never imports this package.
"""
from ftcjax.sweep.plan import Chunk, Instance, instance_keys, make_plan, shard_chunks
from ftcjax.sweep.runner import RunSummary, run_chunk, run_sweep
from ftcjax.sweep.spec import SpecError, SweepSpec, load_spec, parse_spec, spec_from_dict, spec_hash
from ftcjax.sweep.store import LoadedResults, RunDir, SpecMismatchError, load_results

__all__ = [
    "Chunk", "Instance", "instance_keys", "make_plan", "shard_chunks",
    "RunSummary", "run_chunk", "run_sweep",
    "SpecError", "SweepSpec", "load_spec", "parse_spec", "spec_from_dict", "spec_hash",
    "LoadedResults", "RunDir", "SpecMismatchError", "load_results",
]
