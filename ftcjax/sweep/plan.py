"""The plan: a spec -> instances and chunks, fixed by the spec alone.

Identity and randomness never depend on which chunks are pending, on the order work is done, on the
number of devices or processes: that is what makes a chunk recomputed after a crash give the same bits.

* An **instance** is (cell, replicate). Its id is ``<12 hex of the cell hash>-r<replicate>``, where
  the cell hash is the SHA-256 of the cell's canonical JSON (every axis, sorted keys).
* Its **problem key** is ``fold_in`` over the seed, a stable hash of the *problem* coordinates
  (N, K, d, data, labels, frozen) and the replicate. Training choices (depth, criterion, optimizer,
  learning rate, dtype, ...) are deliberately left out: replicate r of a problem cell is the same
  instance under every protocol and depth, so protocols are compared on paired instances.
  Both come from separate branches of one *instance key*: the problem key is
  ``fold_in(instance_key, 0)`` and the **training key** ``fold_in(instance_key, 1)``, so no key a
  problem draws from (``make_problem`` folds 0..4 into its key) is ever an initialisation key.
* A **chunk** is a block of up to ``chunk_size`` replicates of ONE cell: replicates
  ``[b * chunk_size, (b + 1) * chunk_size)`` for block ``b``. Its content is a function of the cell,
  the block and ``chunk_size`` alone, never of the grid's other values: growing a sweep (more N, K or
  any other axis value, more replicates) adds chunks and never changes an existing full chunk, so the
  instances already stored stay exactly what a fresh run of the grown spec computes. (More replicates
  complete the last, partial block of each cell; its new instances run as that block's remainder, and
  the fit kernel's lanes are independent of their batch, see ``ftcjax._src.fit``.) Chunks are ordered
  by batch group (the axes but N), then N, then block; ``index`` is the position in that order.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Sequence

from ftcjax.sweep.spec import SweepSpec

__all__ = [
    "Instance",
    "Chunk",
    "PROBLEM_AXES",
    "cell_hash",
    "instance_id",
    "make_plan",
    "instance_keys",
    "shard_chunks",
    "cost_estimate",
]

PROBLEM_AXES = ("N", "K", "d", "data", "labels", "frozen")


def _stable_digest(obj: dict[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).digest()


def cell_hash(cell: dict[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of a cell (every axis)."""
    return _stable_digest(cell).hex()


def instance_id(cell: dict[str, Any], replicate: int) -> str:
    return f"{cell_hash(cell)[:12]}-r{replicate}"


def _fold_words(cell: dict[str, Any]) -> tuple[int, int, int, int]:
    """Four 31-bit words of the hash of the problem coordinates (fold_in takes 32-bit data)."""
    # A form sweep's explicit frozen net is part of the problem; the form is not (paired instances).
    from ftcjax.sweep.form_axes import FROZEN_NET_AXES

    digest = _stable_digest({k: cell[k] for k in PROBLEM_AXES + FROZEN_NET_AXES if k in cell})
    return tuple(int.from_bytes(digest[4 * i:4 * i + 4], "little") & 0x7FFFFFFF for i in range(4))


@dataclasses.dataclass(frozen=True)
class Instance:
    """One random instance: a cell (dict axis -> value) and a replicate index."""

    cell: dict[str, Any]
    replicate: int

    @property
    def id(self) -> str:
        return instance_id(self.cell, self.replicate)

    @property
    def fold_words(self) -> tuple[int, ...]:
        """Integers folded into the seed key, in order: problem-cell hash words, then replicate."""
        return (*_fold_words(self.cell), self.replicate)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Replicates ``block * chunk_size ...`` of one cell; ``index`` is the position in the whole plan."""

    index: int
    instances: tuple[Instance, ...]
    block: int = 0

    @property
    def cell(self) -> dict[str, Any]:
        """The cell of every instance of the chunk."""
        return self.instances[0].cell

    @property
    def group(self) -> dict[str, Any]:
        """The batch group: every axis of the cell but N."""
        return {k: v for k, v in self.cell.items() if k != "N"}

    @property
    def key(self) -> str:
        """Identity of the chunk that survives growing the sweep: ``<cell hash 12>-b<block>``."""
        return f"{cell_hash(self.cell)[:12]}-b{self.block}"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.instances)

    def __len__(self) -> int:
        return len(self.instances)


def make_plan(spec: SweepSpec) -> list[Chunk]:
    """Every chunk of the sweep, in deterministic order (see module docstring)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for cell in spec.cells():  # cells come in axis-product order: group order follows it
        gkey = json.dumps({k: v for k, v in cell.items() if k != "N"}, sort_keys=True)
        groups.setdefault(gkey, []).append(cell)
    size, R = spec.chunk_size, spec.replicates
    chunks: list[Chunk] = []
    for cells in groups.values():
        for cell in sorted(cells, key=lambda c: c["N"]):
            for block, start in enumerate(range(0, R, size)):
                members = tuple(Instance(cell, r) for r in range(start, min(start + size, R)))
                chunks.append(Chunk(len(chunks), members, block))
    return chunks


def instance_keys(seed: int, instances: Sequence[Instance]):
    """Problem keys and training keys for a batch of instances.

    Returns:
      (problem_keys, train_keys): two typed key arrays of shape ``(len(instances),)``.
    """
    import jax
    import jax.numpy as jnp

    words = jnp.asarray([inst.fold_words for inst in instances], dtype=jnp.uint32)  # (B, 5)
    # one jitted program (exact integer work: the bits of the eager ops, which compiled ~10 programs)
    return jax.jit(_instance_keys)(jax.random.key(seed), words)


def _instance_keys(root, words):
    """``(problem_keys, train_keys)`` from the sweep's root key and each instance's ``(B, 5)`` words."""
    import jax

    def one(w):  # w: (5,) uint32 -> one key
        k = root
        for i in range(w.shape[0]):
            k = jax.random.fold_in(k, w[i])
        return k

    instance = jax.vmap(one)(words)
    problem_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(instance)
    train_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(instance)
    return problem_keys, train_keys


def shard_chunks(chunks: Sequence[Chunk], index: int, count: int) -> list[Chunk]:
    """The chunks owned by writer ``index`` of ``count``: round robin on the chunk index.

    Round robin (not contiguous blocks) spreads the expensive groups (large N, depth 3) evenly.
    The ``count`` shards are disjoint and together cover every chunk exactly once.
    """
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        from ftcjax._src.errors import FTCInputError

        raise FTCInputError(f"shard: index {index} of count {count} must satisfy 0 <= index < count")
    return [c for c in chunks if c.index % count == index]


def cost_estimate(spec: SweepSpec, *, run_dir=None) -> dict[str, Any]:
    """Upper bounds on the work of a sweep, priced by a run directory's measured throughput if any.

    Returns ``trainings`` (instances x probes x restarts, summed over cells; bisection needs at most
    ``1 + ceil(log2(candidates))`` probes, a grid search all candidates), ``probes_per_instance``
    (the largest), ``max_steps``, and ``seconds`` / ``seconds_per_training`` / ``measured_in``
    (None without measurements: seconds of chunk time per training in the stored records).
    """
    import math

    from ftcjax.sweep.cells import cell_widths, protocol_for_cell

    trainings = 0
    most = 0
    for cell in spec.cells():
        protocol = protocol_for_cell(cell)
        n = len(cell_widths(cell, spec.widths, protocol, dict(spec.form_options)))
        probes = n if spec.strategy == "grid" else 1 + math.ceil(math.log2(n)) if n > 1 else 1
        most = max(most, probes)
        trainings += spec.replicates * probes * protocol.restarts
    out: dict[str, Any] = {"trainings": trainings, "probes_per_instance": most,
                           "max_steps": max(spec.axis_dict["steps"]), "seconds": None,
                           "seconds_per_training": None, "measured_in": None}
    per = _seconds_per_training(run_dir) if run_dir is not None else None
    if per is not None:
        out.update(seconds=per * trainings, seconds_per_training=per, measured_in=str(run_dir))
    return out


def _seconds_per_training(run_dir) -> float | None:
    """Chunk seconds per training over the records of a run directory (None if it has none)."""
    from pathlib import Path

    from ftcjax.sweep.store import RunDir

    rd = RunDir(run_dir)
    if not Path(rd.results_dir).is_dir():
        return None
    seconds: dict[tuple, float] = {}
    trainings = 0
    for rec in rd.load().values():
        t = rec.get("timing") or {}
        if "chunk_seconds" not in t or not rec.get("trainings"):
            continue
        seconds[(t.get("writer"), rec.get("chunk"), t.get("finished_at"))] = float(t["chunk_seconds"])
        trainings += int(rec["trainings"])
    return sum(seconds.values()) / trainings if trainings else None
