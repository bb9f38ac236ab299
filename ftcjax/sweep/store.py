"""The durable result store of a run directory.

Layout of a run directory::

    DIR/manifest.json            spec (canonical + original text), spec hash, environment of the creator
    DIR/spec.toml                the original spec text, for humans
    DIR/results/<writer>.jsonl   append-only log of records, one JSON object per line, one file per writer
    DIR/env/<writer>.json        environment of each writer (hosts may differ)
    DIR/cache/                   persistent XLA compilation cache (default; see the CLI)

Why append-only JSONL, one file per writer (and not SQLite or Parquet):

* Durability is simple to reason about: a chunk's records are serialised first, written with a single
  ``write``, then ``flush`` + ``os.fsync``; only then does the chunk count as done. A crash (``kill -9``,
  power loss) can leave at most a torn *last* line, which the loader drops and the next writer truncates.
  Nothing already fsynced is ever rewritten.
* Several writers (devices of one host never write: one process = one writer; processes under
  ``jax.distributed``, SLURM array tasks, ``--shard i/n``) each own their file, so there is no locking
  protocol to get right across hosts. SQLite's locking (and WAL) is unreliable on network file systems,
  where clusters keep their results; a Parquet file is unreadable after a crash mid-write.
* Readers (``ftcjax status``/``export``, the analysis) need no coordination with a running sweep: they
  read every shard, ignore a torn last line and dedupe records by instance id. Loading is idempotent.
* Text records survive version changes and are greppable; the size (a few KB per instance) is no issue
  at the scale of these sweeps (10^5 instances -> a few hundred MB).

Each writer takes an advisory ``flock`` on its own file so that two processes started by mistake with
the same shard do not interleave lines (the lock is local to a host; separate hosts use separate names).
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ftcjax._src.errors import FTCInputError
from ftcjax.sweep.record import upgrade
from ftcjax.sweep.spec import SweepSpec, canonical_dict, diff_specs, growth_problems, spec_from_dict, spec_hash

__all__ = [
    "RunDir",
    "ShardWriter",
    "LoadedResults",
    "SpecMismatchError",
    "load_results",
    "MANIFEST",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class SpecMismatchError(FTCInputError):
    """The run directory holds a different sweep; ``differences`` names each differing field."""

    def __init__(self, run_dir: Path, differences: list[str]):
        self.differences = differences
        lines = [f"{run_dir} already holds a different sweep; refusing to mix results "
                 "(use another --out directory, or the original spec to resume). Differing fields:"]
        lines += [f"  - {d}" for d in differences]
        super().__init__("\n".join(lines))


def _fsync_dir(path: Path) -> None:
    # Making a new file's directory entry durable needs an fsync of the directory itself.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data file is still synced
        pass
    finally:
        os.close(fd)


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class RunDir:
    """A run directory: manifest handling, writers, loading (all paths under ``root``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        try:
            with open(self.manifest_path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            raise FTCInputError(f"run directory {str(self.root)!r}: no {MANIFEST}; "
                                "not a ftcjax run directory (start one with `ftcjax run`)") from None
        except json.JSONDecodeError as e:
            raise FTCInputError(f"{self.manifest_path}: corrupt manifest ({e})") from None

    def spec(self) -> SweepSpec:
        """The sweep spec stored in the manifest."""
        # Rebuilt from the canonical dict (a valid spec itself), not from the text: defaults that were
        # filled when the run started stay what they were.
        m = self.read_manifest()
        spec = spec_from_dict(m["spec"], text=m.get("spec_text", ""), source=str(self.manifest_path),
                              default_name=m.get("name", "sweep"))
        return dataclasses.replace(spec, name=m.get("name", spec.name), description=m.get("description", ""),
                                   overrides=tuple(m.get("overrides", ())))

    def prepare(self, spec: SweepSpec, env: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the directory for ``spec`` or check that it already holds the same sweep.

        Creation is race-free between processes and hosts: the manifest is written to a temporary file
        and ``os.link``-ed into place, which fails if another writer got there first (then we compare).

        Raises:
          SpecMismatchError: the directory holds another sweep (the differing fields are named).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(exist_ok=True)
        canon = canonical_dict(spec)
        manifest = {
            "format": FORMAT_VERSION,
            "name": spec.name,
            "description": spec.description,
            "spec_hash": spec_hash(canon),
            "spec": canon,
            "spec_text": spec.text,
            "overrides": list(spec.overrides),
            "num_instances": spec.num_instances,
            "created": time.time(),
            "environment": env or {},
            # The numerics that decide the bits, next to the environment that ran them.
            "numerics": {k: list(spec.axis_dict.get(k, ())) for k in ("dtype", "matmul_precision")},
        }
        if not self.exists():
            tmp = self.root / f".manifest.{socket.gethostname()}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.manifest_path)
                created = True
            except FileExistsError:
                created = False
            finally:
                tmp.unlink(missing_ok=True)
            if created:
                self._write_spec_text(spec)
                _fsync_dir(self.root)
                return manifest
        existing = self.check(spec)
        if existing.get("spec") != canon:
            # The spec grows the run (more axis values or replicates): the manifest describes the grown
            # sweep from now on; the records already stored stay valid (same spec hash).
            grown = dict(manifest, created=existing.get("created"), environment=existing.get("environment", {}),
                         grown_from=[*existing.get("grown_from", []), existing.get("spec")])
            _atomic_write_json(self.manifest_path, grown)
            self._write_spec_text(spec)
            return grown
        return existing

    def _write_spec_text(self, spec: SweepSpec) -> None:
        text = spec.text
        if spec.overrides:
            text += ("\n# overrides given on the command line (applied on top of the text above):\n"
                     + "".join(f"#   {o}\n" for o in spec.overrides))
        (self.root / "spec.toml").write_text(text, encoding="utf-8")

    def check(self, spec: SweepSpec) -> dict[str, Any]:
        """Refuse early (before any device work) if the directory holds a sweep ``spec`` cannot continue.

        ``spec`` may grow the stored sweep (see :func:`ftcjax.sweep.spec.growth_problems`). Returns the
        existing manifest ({} for a new directory).
        """
        if not self.exists():
            return {}
        existing = self.read_manifest()
        canon = canonical_dict(spec)
        problems = growth_problems(existing.get("spec", {}), canon) if "spec" in existing else []
        if existing.get("spec_hash") != spec_hash(canon) or problems:
            raise SpecMismatchError(self.root, problems or diff_specs(existing.get("spec", {}), canon) or [
                f"spec_hash: {existing.get('spec_hash')} in the run directory, {spec_hash(canon)} now"])
        return existing

    def record_environment(self, writer: str, env: dict[str, Any]) -> None:
        d = self.root / "env"
        d.mkdir(exist_ok=True)
        _atomic_write_json(d / f"{writer}.json", env)

    def shard_paths(self) -> list[Path]:
        if not self.results_dir.is_dir():
            return []
        return sorted(self.results_dir.glob("*.jsonl"))

    def writer(self, name: str) -> "ShardWriter":
        return ShardWriter(self.results_dir / f"{name}.jsonl")

    def load(self) -> "LoadedResults":
        return load_results(self.shard_paths())


class ShardWriter:
    """Append-only, fsynced writer of one shard file (context manager).

    On open it takes an exclusive advisory lock and truncates a torn last line left by a crash, so new
    records always start on a fresh line.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = None

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        is_new = not self.path.exists()
        f = open(self.path, "a+b")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                f.close()
                raise FTCInputError(f"{self.path} is being written by another process; two writers "
                                    "must not share a shard (check --shard / process indices)") from None
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                f.close()
                raise
            # A file system without locks (some network mounts): the shard names alone keep
            # writers apart, so go on without the safety net rather than refuse to run.
        self._repair(f)
        if is_new:
            _fsync_dir(self.path.parent)
        self._f = f
        return self

    @staticmethod
    def _repair(f) -> None:
        """Drop a torn last line (no trailing newline): it is the tail of a write cut by a crash."""
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline; everything after it is the torn record.
        pos, block = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write records (one line each) in one write, then flush and fsync. Returns the count."""
        assert self._f is not None, "use ShardWriter as a context manager"
        lines = [json.dumps(r, sort_keys=True, separators=(",", ":"), allow_nan=True) for r in records]
        if not lines:
            return 0
        self._f.write(("\n".join(lines) + "\n").encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())
        return len(lines)

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            try:
                fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            except OSError:
                pass
            finally:
                self._f.close()
                self._f = None


@dataclasses.dataclass
class LoadedResults:
    """Records deduplicated by instance id (first occurrence wins; recomputations are identical).

    Attributes:
      records: instance id -> record.
      torn: torn last lines skipped (a writer crashed mid-write, or is writing right now).
      corrupt: unparsable lines that were not the last line of their file (should be 0).
      duplicates: records seen more than once.
      per_shard: shard file name -> number of records read from it.
    """

    records: dict[str, dict[str, Any]]
    torn: int = 0
    corrupt: int = 0
    duplicates: int = 0
    per_shard: dict[str, int] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def values(self) -> list[dict[str, Any]]:
        return list(self.records.values())


def _iter_lines(path: Path) -> Iterator[tuple[bytes, bool]]:
    """(line, is_complete) for each line; only the last line can be incomplete."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return
    parts = data.split(b"\n")
    for part in parts[:-1]:
        yield part, True
    if parts[-1]:
        yield parts[-1], False


def load_results(paths: Iterable[Path], *, spec_hash_: str | None = None) -> LoadedResults:
    """Read every shard; tolerate torn last lines; dedupe by ``instance_id``.

    ``paths``: shard files, or one run directory (its ``results/*.jsonl``) or one shard file.
    """
    if isinstance(paths, (str, os.PathLike)):
        one = Path(paths)
        if one.is_dir():
            paths = RunDir(one).shard_paths() if (one / MANIFEST).exists() else sorted(one.glob("*.jsonl"))
        elif one.is_file():
            paths = [one]
        else:
            raise FTCInputError(f"paths: {str(one)!r} is neither a run directory nor a shard file")
    out = LoadedResults(records={})
    for path in paths:
        n = 0
        try:
            lines = list(_iter_lines(Path(path)))
        except FileNotFoundError:
            continue
        for line, complete in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if complete:
                    out.corrupt += 1
                else:
                    out.torn += 1
                continue
            if not complete:  # parsed but no newline yet: a write in progress; the writer repairs it
                out.torn += 1
                continue
            if not isinstance(rec, dict):
                out.corrupt += 1
                continue
            rec = upgrade(rec, source=str(path))  # older schemas read, newer ones refused by name
            if spec_hash_ is not None and rec.get("spec_hash") != spec_hash_:
                out.corrupt += 1
                continue
            iid = rec.get("instance_id")
            if iid is None:
                out.corrupt += 1
                continue
            if iid in out.records:
                out.duplicates += 1
                continue
            out.records[iid] = rec
            n += 1
        out.per_shard[Path(path).name] = n
    return out
