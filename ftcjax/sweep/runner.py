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
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ftcjax._src.errors import FTCInputError
from ftcjax.sweep import guards
from ftcjax.sweep.form_axes import form_for_cell
from ftcjax.sweep.plan import Chunk, instance_keys, make_plan, shard_chunks
from ftcjax.sweep.spec import SweepSpec, protocol_for_cell, spec_hash, widths_for_depth
from ftcjax.sweep.store import RunDir, environment

__all__ = ["RunSummary", "run_chunk", "run_sweep", "writer_name", "pending_chunks"]


def writer_name(index: int, count: int) -> str:
    """Shard file name of writer ``index`` of ``count`` (fixed width so files sort naturally)."""
    return f"shard-{index:04d}-of-{count:04d}"


def _make_problems(chunk: Chunk, problem_keys):
    """Problems of a chunk, stacked: ``x (B, K, d)``, the rest ``(B, K)``.

    Each problem is drawn from its own key alone (one ``make_problem`` call per instance), so a problem
    never depends on which other instances share its chunk. Problems are always drawn in float64 (the
    kernels cast to the cell's training dtype), so a dtype axis compares the SAME instances.
    """
    from ftcjax._src.lora import make_lora_problem
    from ftcjax._src.problems import make_problem, stack_problems

    g = chunk.group
    if "form" in g:  # a [form] sweep: explicit frozen nets, the same instances for every form
        probs = [make_lora_problem(problem_keys[i], K=g["K"], d=g["d"], N=inst.cell["N"], data=g["data"],
                                   labels=g["labels"], frozen=g["frozen"], width=g["frozen_width"],
                                   depth=g["frozen_depth"], dtype=g.get("dtype", "float64"))
                 for i, inst in enumerate(chunk.instances)]
        return stack_problems(probs)
    probs = [make_problem(problem_keys[i], K=g["K"], d=g["d"], N=inst.cell["N"], data=g["data"],
                          labels=g["labels"], frozen=g["frozen"], dtype="float64")
             for i, inst in enumerate(chunk.instances)]
    return stack_problems(probs)


def run_chunk(spec: SweepSpec, chunk: Chunk, *, spec_hash_: str | None = None) -> list[dict[str, Any]]:
    """Compute the records of one chunk (pure function of the spec and the chunk; no I/O).

    Returns:
      One record per instance: ``WidthResult.to_dict()`` plus ``spec_hash``, ``instance_id``,
      ``cell`` (every axis), ``replicate``, ``protocol`` (every training choice) and ``chunk``.
    """
    import jax

    from ftcjax._src.search import min_width_batch

    h = spec_hash_ or spec_hash(spec)
    protocol = protocol_for_cell(chunk.group | {"N": 0})
    options = dict(spec.form_options)
    form = form_for_cell(chunk.group, options)
    lora = form.name == "lora"
    widths = list(options["ranks"]) if lora else widths_for_depth(spec.widths, protocol.depth)
    problem_keys, train_keys = instance_keys(spec.seed, chunk.instances)
    problems = _make_problems(chunk, problem_keys)
    results = min_width_batch(problems, keys=train_keys, protocol=protocol, widths=widths,
                              strategy=spec.strategy, report=spec.report, form=form)
    results = jax.device_get(results)
    proto = protocol.to_dict()
    records = []
    for inst, res in zip(chunk.instances, results):
        rec = res.to_dict()
        rec.update(spec_hash=h, instance_id=inst.id, cell=dict(inst.cell), replicate=inst.replicate,
                   protocol=proto, chunk=chunk.index)
        if options:  # a form sweep: say what the size is and what it costs in trainable parameters
            rec.update(form=form.to_dict(), trainable_params=_trainable_params(form, res.min_width,
                                                                               problems, protocol))
        records.append(rec)
    return records


def _trainable_params(form, size, problems, protocol):
    """Trainable parameters of ``form`` at ``size`` (None for a censored instance)."""
    if size is None:
        return None
    from ftcjax._src.lora import frozen_shapes

    return form.num_params(size, in_dim=problems.x.shape[-1], depth=protocol.depth, split=protocol.split,
                           frozen_shapes=frozen_shapes(problems.frozen))


def pending_chunks(chunks: Sequence[Chunk], done_ids) -> list[Chunk]:
    """Chunks with at least one instance not yet stored (a partly stored chunk is recomputed whole:
    its layout, hence its bits, must stay the one the plan fixed)."""
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
    manifest = run_dir.prepare(spec, env)
    h = manifest["spec_hash"]
    name = writer_name(shard_index, shard_count)

    plan = make_plan(spec)
    mine = shard_chunks(plan, shard_index, shard_count)
    run_dir.clean_temporaries()
    notes = run_dir.quarantine()  # unusable lines out of the way: their instances become pending
    done = set(run_dir.load(expected_spec_hash=h).records)
    todo = pending_chunks(mine, done)
    skipped = len(mine) - len(todo)
    if max_chunks is not None:
        todo = todo[:max_chunks]
    n_done_inst = sum(sum(1 for i in c.ids if i in done) for c in mine)
    if progress is not None:
        progress.start(len(mine), sum(len(c) for c in mine), skipped, n_done_inst)
    written = 0
    # Nothing to do writes nothing: a finished run in a read-only directory still reports.
    with contextlib.ExitStack() as stack:
        if todo:
            stack.enter_context(run_dir.layout_lock(shard_count))
            w = stack.enter_context(run_dir.writer(name))
            run_dir.record_environment(name, env)  # only once we own the shard: never a live writer's
        for chunk in todo:
            tc = time.perf_counter()
            records = run_chunk(spec, chunk, spec_hash_=h)
            seconds = time.perf_counter() - tc
            finished = time.time()
            fresh = [r for r in records if r["instance_id"] not in done]
            for r in fresh:
                # Bookkeeping kept apart from the results, so results compare bit for bit across runs.
                r["timing"] = {"writer": name, "chunk_seconds": seconds, "finished_at": finished,
                               "chunk_size": len(chunk)}
            written += w.append(fresh)
            done.update(r["instance_id"] for r in fresh)
            if on_chunk is not None:
                on_chunk(chunk, fresh)
            if progress is not None:
                progress.update(len(chunk), seconds)
    if progress is not None:
        progress.finish()
    return RunSummary(run_dir=run_dir.root, writer=name, chunks_total=len(plan), chunks_owned=len(mine),
                      chunks_skipped=skipped, chunks_run=len(todo), instances_written=written,
                      seconds=time.perf_counter() - t0, notes=notes)
