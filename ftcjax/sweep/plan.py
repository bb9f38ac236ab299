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
* A **chunk** is up to ``chunk_size`` consecutive instances of one *batch group*: the cells that share
  every axis except N (N is a mask over K in the kernels, so it may vary inside a batch; everything
  else changes a static shape or the protocol). Inside a group instances are ordered by (N, replicate).
  Chunk indices are global and follow the group order, so the same spec always gives the same chunks.
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
    """``instances`` share every axis but N; ``index`` is the chunk's position in the whole plan."""

    index: int
    instances: tuple[Instance, ...]

    @property
    def group(self) -> dict[str, Any]:
        """The axes shared by every instance of the chunk (all but N)."""
        return {k: v for k, v in self.instances[0].cell.items() if k != "N"}

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i.id for i in self.instances)

    def __len__(self) -> int:
        return len(self.instances)


def make_plan(spec: SweepSpec) -> list[Chunk]:
    """Every chunk of the sweep, in deterministic order (see module docstring)."""
    groups: dict[str, list[Instance]] = {}
    n_order = {n: i for i, n in enumerate(spec.axis_dict["N"])}
    for cell in spec.cells():  # cells come in axis-product order: group order follows it
        gkey = json.dumps({k: v for k, v in cell.items() if k != "N"}, sort_keys=True)
        bucket = groups.setdefault(gkey, [])
        bucket.extend(Instance(cell, r) for r in range(spec.replicates))
    chunks: list[Chunk] = []
    for members in groups.values():
        members.sort(key=lambda inst: (n_order[inst.cell["N"]], inst.replicate))
        for start in range(0, len(members), spec.chunk_size):
            chunks.append(Chunk(len(chunks), tuple(members[start:start + spec.chunk_size])))
    return chunks


def instance_keys(seed: int, instances: Sequence[Instance]):
    """Problem keys and training keys for a batch of instances.

    Returns:
      (problem_keys, train_keys): two typed key arrays of shape ``(len(instances),)``.
    """
    import jax
    import jax.numpy as jnp

    words = jnp.asarray([inst.fold_words for inst in instances], dtype=jnp.uint32)  # (B, 5)
    root = jax.random.key(seed)

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
