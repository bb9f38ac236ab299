"""Run the pending chunks of a sweep into a run directory.

For each chunk this writer owns and has not finished: derive keys from the seed and the instance
coordinates, draw the problems, run the minimal-width search (rounds of the core's jitted, vmapped,
device-sharded fit kernel), fetch everything to the host, and only then append the chunk's records
with one fsynced write (:mod:`ftcjax.sweep.store`). Killing the process at any moment loses at most
the chunk in flight; rerunning resumes with the chunks still missing, which recompute to the same
bits because nothing in a chunk depends on what ran before it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ftcjax._src.errors import FTCInputError
from ftcjax.sweep import guards
from ftcjax.sweep.environment import environment
from ftcjax.sweep.plan import Chunk, make_plan, shard_chunks
from ftcjax.sweep.record import make_record
from ftcjax.sweep.spec import SweepSpec, spec_hash
from ftcjax.sweep.store import RunDir

__all__ = ["RunSummary", "run_chunk", "run_sweep", "writer_name", "pending_chunks"]


def writer_name(index: int, count: int) -> str:
    """Shard file name of writer ``index`` of ``count`` (fixed width so files sort naturally)."""
    return f"shard-{index:04d}-of-{count:04d}"


def run_chunk(spec: SweepSpec, chunk: Chunk, *, spec_hash_: str | None = None,
              only: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Compute the records of one chunk (pure function of the spec and the chunk; no I/O).

    ``only``: instance ids to compute (default all); the others are left out of the batch. A lane's
    result does not depend on the other lanes of its batch (``ftcjax._src.fit``), so the remainder of
    a chunk computes the same bits as the whole chunk.

    Returns:
      One :mod:`ftcjax.sweep.record` per computed instance, in chunk order.
    """
    import jax

    from ftcjax import AdaptiveRule, min_width_batch
    from ftcjax.sweep.cells import kernel_inputs

    h = spec_hash_ or spec_hash(spec)
    instances = [i for i in chunk.instances if only is None or i.id in only]
    if not instances:
        return []
    options = dict(spec.form_options)
    inp = kernel_inputs(spec.seed, instances, widths=spec.widths, strategy=spec.strategy, form_options=options,
                        chunk_size=spec.chunk_size)
    results = min_width_batch(inp.problems, keys=inp.train_keys, protocol=inp.protocol, widths=inp.widths,
                              strategy=inp.strategy, report=spec.report, form=inp.form,
                              rule=AdaptiveRule.named(spec.search_rule) if spec.strategy == "adaptive" else None)
    results = jax.device_get(results)
    proto = inp.protocol.to_dict()
    records = []
    for inst, res in zip(instances, results):
        extra = {}
        if options:  # a form sweep: say what the size is and what it costs in trainable parameters
            extra = dict(form=inp.form.to_dict(),
                         trainable_params=_trainable_params(inp.form, res.min_width, inp.problems, inp.protocol))
        records.append(make_record(res.to_dict(), spec_hash=h, instance_id=inst.id, cell=inst.cell,
                                   replicate=inst.replicate, protocol=proto, chunk=chunk.key, **extra))
    return records


def _group_text(chunk: Chunk, spec: SweepSpec) -> str:
    """The axes that tell this chunk's batch group apart from the others (for progress lines)."""
    varying = [a for a, v in spec.axes if len(v) > 1 and a != "N"]
    return " ".join(f"{a}={chunk.group[a]}" for a in varying) or "the sweep"


def _trainable_params(form, size, problems, protocol):
    """Trainable parameters of ``form`` at ``size`` (None for a censored instance)."""
    if size is None:
        return None
    from ftcjax._src.lora import frozen_shapes

    return form.num_params(size, in_dim=problems.x.shape[-1], depth=protocol.depth, split=protocol.split,
                           frozen_shapes=frozen_shapes(problems.frozen))


def _refuse_other_search_rule(out_dir, records, search_rule: str) -> None:
    """A run directory holds one search rule: resuming records of another version would mix the two."""
    other = sorted({r.get("search_rule") for r in records if r.get("search_rule") not in (None, search_rule)})
    if other:
        raise FTCInputError(f"{out_dir}: its records were searched with {', '.join(other)}, this spec searches "
                            f"with {search_rule}; resuming would mix the two rules in one run: pin "
                            f"width.rule = \"{other[0]}\" in the spec to continue it, or write to a new --out "
                            "directory (this one still reports as it is)")


def pending_chunks(chunks: Sequence[Chunk], done_ids) -> list[Chunk]:
    """Chunks with at least one instance not yet stored (only those instances are computed)."""
    return [c for c in chunks if any(i not in done_ids for i in c.ids)]


@dataclasses.dataclass
class RunSummary:
    """What one call of :func:`run_sweep` did."""

    run_dir: Path
    writer: str
    chunks_total: int        # chunks in the whole plan
    chunks_owned: int        # chunks of this writer
    chunks_skipped: int      # already done when we started (resume)
    chunks_run: int
    instances_written: int
    seconds: float
    notes: list = dataclasses.field(default_factory=list)  # what the store repaired or set aside


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, shard_index: int = 0, shard_count: int = 1,
              progress: Any = None, max_chunks: int | None = None,
              on_chunk: Callable[[Chunk, list], None] | None = None) -> RunSummary:
    """Run (or resume) this writer's share of a sweep.

    Args:
      spec: validated spec.
      out_dir: run directory (created; if it exists it must hold the same spec).
      shard_index, shard_count: this writer's share of the chunks (round robin on the chunk index).
      progress: object with ``start(total_chunks, total_instances, done_chunks, done_instances)``,
        ``update(n_instances, seconds)`` and ``finish()`` (see :mod:`ftcjax.sweep.progress`), or None.
      max_chunks: stop after this many chunks (for tests and benchmarks).
      on_chunk: called with each chunk and its records after they are durable.
    Raises:
      SpecMismatchError: ``out_dir`` holds a different sweep.
    """
    if max_chunks is not None and (isinstance(max_chunks, bool) or not isinstance(max_chunks, int)
                                   or max_chunks < 0):
        raise FTCInputError(f"--max-chunks: {max_chunks!r} must be an integer >= 0")
    t0 = time.perf_counter()
    run_dir = RunDir(out_dir)
    env = environment()
    too_big = guards.memory_problems(spec)  # jax is up: device memory is known
    if too_big:
        raise FTCInputError("\n".join(too_big))
    # before prepare may write or grow the manifest of a run this spec cannot continue
    _refuse_other_search_rule(out_dir, run_dir.load(expected_spec_hash=spec.hash).records.values(),
                              spec.search_rule)
    manifest = run_dir.prepare(spec, env)
    h = manifest["spec_hash"]
    name = writer_name(shard_index, shard_count)

    plan = make_plan(spec)
    mine = shard_chunks(plan, shard_index, shard_count)
    run_dir.clean_temporaries()
    notes = run_dir.quarantine()  # unusable lines out of the way: their instances become pending
    loaded = run_dir.load(expected_spec_hash=h)
    done = set(loaded.records)
    todo = pending_chunks(mine, done)
    skipped = len(mine) - len(todo)
    if max_chunks is not None:
        todo = todo[:max_chunks]
    n_done_inst = sum(sum(1 for i in c.ids if i in done) for c in mine)
    if progress is not None:
        progress.start(len(mine), sum(len(c) for c in mine), skipped, n_done_inst)
    written = 0
    seen_groups: set[str] = set()
    # Nothing to do writes nothing: a finished run in a read-only directory still reports.
    with contextlib.ExitStack() as stack:
        if todo:
            stack.enter_context(run_dir.layout_lock(shard_count))
            w = stack.enter_context(run_dir.writer(name))
            # Only once we own the shard (never over a live writer's): the env record doubles as the
            # writer's liveness record: pid + host (ftcjax status checks that the process still
            # exists) and a heartbeat refreshed after every chunk (for writers on other hosts).
            run_dir.record_environment(name, dict(env, state="running", heartbeat=time.time()))
        for chunk in todo:
            group = json.dumps(chunk.group, sort_keys=True)
            if progress is not None and hasattr(progress, "begin_chunk"):
                progress.begin_chunk(compiling=group not in seen_groups, group=_group_text(chunk, spec))
            seen_groups.add(group)
            tc = time.perf_counter()
            todo_ids = [i for i in chunk.ids if i not in done]
            fresh = run_chunk(spec, chunk, spec_hash_=h, only=todo_ids)
            seconds = time.perf_counter() - tc
            finished = time.time()
            for r in fresh:
                # Bookkeeping kept apart from the results, so results compare bit for bit across runs.
                r["timing"] = {"writer": name, "chunk_seconds": seconds, "finished_at": finished,
                               "chunk_size": len(chunk), "computed": len(fresh)}
            written += w.append(fresh)
            done.update(r["instance_id"] for r in fresh)
            if on_chunk is not None:
                on_chunk(chunk, fresh)
            run_dir.record_environment(name, dict(env, state="running", heartbeat=time.time()))
            if progress is not None:
                progress.update(len(fresh), seconds)
        if todo:
            run_dir.record_environment(name, dict(env, state="finished", heartbeat=time.time()))
    if progress is not None:
        progress.finish()
    return RunSummary(run_dir=run_dir.root, writer=name, chunks_total=len(plan), chunks_owned=len(mine),
                      chunks_skipped=skipped, chunks_run=len(todo), instances_written=written,
                      seconds=time.perf_counter() - t0, notes=notes)
