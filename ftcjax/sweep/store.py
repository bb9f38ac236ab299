"""The durable result store of a run directory.

Layout of a run directory::

    DIR/manifest.json            spec (canonical + original text), spec hash, environment of the creator
    DIR/spec.toml                the original spec text, for humans
    DIR/results/<writer>.jsonl   append-only log of records, one JSON object per line, one file per writer
    DIR/env/<writer>.json        environment of each writer (hosts may differ)
    DIR/cache/                   persistent XLA compilation cache (default; see the CLI)
    DIR/quarantine/<writer>.jsonl.bad   lines moved out of a shard because they failed a check (raw bytes)
    DIR/locks/                   flock files: the shard layout in use (``--shard i/n``)

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
the same shard do not interleave lines (the lock is local to a host; separate hosts use separate names),
and a shared lock on its shard *layout* (``--shard i/n`` with the same n) so that writers of two
different layouts (``0/1`` and ``0/2``) never run at once and duplicate each other's work.

Nothing here trusts what it reads (see :mod:`ftcjax.sweep.integrity`): every record carries the spec
hash and a checksum, the loader sets aside (with file and line number) every line that fails a check,
and the next run moves such lines to ``DIR/quarantine/`` and recomputes their instances. The manifest is
not the only witness of the spec: records alone refuse a different spec when the manifest is lost, and
an edited manifest whose spec no longer hashes to its recorded hash is refused. Files are created
without following links, 0600 in 0700 directories (:mod:`ftcjax.sweep.files`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from ftcjax._src.errors import FTCEnvironmentError, FTCInputError
from ftcjax.sweep import files
from ftcjax.sweep.integrity import check_record, encode_record, parse_line
from ftcjax.sweep.plan import instance_id
from ftcjax.sweep.record import upgrade
from ftcjax.sweep.spec import SweepSpec, canonical_dict, diff_specs, growth_problems, spec_from_dict, spec_hash

__all__ = [
    "RunDir",
    "ShardWriter",
    "LoadedResults",
    "RejectedLine",
    "SpecMismatchError",
    "load_results",
    "MANIFEST",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
QUARANTINE = "quarantine"
_MANIFEST_LIMIT = 64 << 20
_MANIFEST_FIELDS = {"spec_hash": str, "spec": dict, "format": int}


class SpecMismatchError(FTCInputError):
    """The run directory holds a different sweep; ``differences`` names each differing field."""

    def __init__(self, run_dir: Path, differences: list[str]):
        self.differences = differences
        lines = [f"{run_dir} already holds a different sweep; refusing to mix results "
                 "(use another --out directory, or the original spec to resume). Differing fields:"]
        lines += [f"  - {d}" for d in differences]
        super().__init__("\n".join(lines))


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _legacy_spec_hash(canon: Any) -> str | None:
    """The spec hash of ftcjax before sweeps could grow (SHA-256 of the whole canonical dict), to tell
    an old run directory from an edited one."""
    import hashlib

    try:
        text = json.dumps(canon, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _spec_text(manifest: dict[str, Any]) -> str:
    """The human copy of the spec (``spec.toml``): its text, then the command-line overrides if any."""
    text = str(manifest.get("spec_text", ""))
    overrides = manifest.get("overrides") or []
    if isinstance(overrides, list) and overrides:
        text += ("\n# overrides given on the command line (applied on top of the text above):\n"
                 + "".join(f"#   {o}\n" for o in overrides))
    return text


@dataclasses.dataclass(frozen=True)
class RejectedLine:
    """A stored line that is not used: ``file`` (shard name), 1-based ``line``, ``reason``."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


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

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE

    def exists(self) -> bool:
        return os.path.lexists(self.manifest_path)

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise FTCInputError(f"{str(self.root)!r} is a file, not a run directory")

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, checked: a JSON object whose spec hashes to its recorded ``spec_hash``.

        Raises:
          FTCInputError: no manifest (not a run directory).
          FTCEnvironmentError: the manifest is damaged or edited (not valid, or its spec does not hash
            to the recorded hash).
        """
        self._check_root()
        try:
            data = files.read_regular(self.manifest_path, limit=_MANIFEST_LIMIT, what="manifest")
        except FileNotFoundError:
            if self.results_dir.is_dir():
                raise FTCInputError(f"run directory {str(self.root)!r}: {MANIFEST} is missing; rerun "
                                    "`ftcjax run` with the original spec to rebuild it from the "
                                    "records") from None
            raise FTCInputError(f"run directory {str(self.root)!r}: no {MANIFEST}; "
                                "not a ftcjax run directory (start one with `ftcjax run`)") from None
        value, reason = parse_line(data)
        where = f"{self.manifest_path}: damaged manifest"
        if reason is not None:
            raise FTCEnvironmentError(f"{where}: {reason}")
        if not isinstance(value, dict):
            raise FTCEnvironmentError(f"{where}: a JSON {type(value).__name__}, not an object")
        for k, t in _MANIFEST_FIELDS.items():
            if not isinstance(value.get(k), t) or isinstance(value.get(k), bool):
                raise FTCEnvironmentError(f"{where}: field {k!r} is missing or not a {t.__name__}")
        try:
            actual = spec_hash(value["spec"])
        except (TypeError, ValueError) as e:
            raise FTCEnvironmentError(f"{where}: its spec cannot be hashed ({e})") from None
        if actual != value["spec_hash"] and _legacy_spec_hash(value["spec"]) == value["spec_hash"]:
            raise FTCInputError(
                f"run directory {str(self.root)!r} was written by an older ftcjax (before spec hashes "
                "covered only what growing a sweep keeps, and Protocol.chunk became lanes_per_step); "
                "this version cannot continue or report it: rerun its spec.toml into a new directory "
                "(the same spec gives the same results)")
        if actual != value["spec_hash"]:
            raise FTCEnvironmentError(
                f"{where}: its spec hashes to {actual}, not to the recorded spec_hash "
                f"{value['spec_hash']} (edited by hand?); restore it, or remove it and rerun with the "
                "original spec (the records rebuild it)")
        return value

    def spec(self) -> SweepSpec:
        """The sweep spec stored in the manifest."""
        # Rebuilt from the canonical dict (a valid spec itself), not from the text: defaults that were
        # filled when the run started stay what they were.
        m = self.read_manifest()
        name = m.get("name") if isinstance(m.get("name"), str) else "sweep"
        spec = spec_from_dict(m["spec"], text=str(m.get("spec_text", "")), source=str(self.manifest_path),
                              default_name=name)
        desc = m.get("description") if isinstance(m.get("description"), str) else ""
        overrides = m.get("overrides")
        overrides = tuple(overrides) if isinstance(overrides, list) and all(isinstance(o, str) for o in overrides) else ()
        return dataclasses.replace(spec, name=name, description=desc, overrides=overrides)

    def _manifest_for(self, spec: SweepSpec, env: dict[str, Any] | None) -> dict[str, Any]:
        canon = canonical_dict(spec)
        return {
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

    def _refuse_if_other(self, existing: dict[str, Any], canon: dict[str, Any], h: str) -> None:
        """Refuse a spec that cannot continue the stored sweep: another spec hash, or a change that is
        not growth (a dropped axis value, fewer replicates; see :func:`spec.growth_problems`)."""
        problems = growth_problems(existing["spec"], canon)
        if existing["spec_hash"] != h or problems:
            raise SpecMismatchError(self.root, problems or diff_specs(existing["spec"], canon) or [
                f"spec_hash: {existing['spec_hash']} in the run directory, {h} now"])

    def _refuse_foreign_records(self, spec: SweepSpec, *, manifest_agrees: bool = False) -> None:
        """The records witness the spec too. Without a manifest any sound record of another sweep
        refuses; with an agreeing manifest only records that ALL belong elsewhere do (a replaced
        manifest), while a few foreign lines among ours are set aside by the loader."""
        canon = canonical_dict(spec)
        h = spec_hash(canon)
        hashes = self.load(expected_spec_hash=None).spec_hashes
        others = hashes - {h}
        if not others or (manifest_agrees and h in hashes):
            return
        diffs = []
        try:  # the human copy of the spec, if still there, names the fields
            from ftcjax.sweep.spec import parse_spec

            old = parse_spec(files.read_regular(self.root / "spec.toml", limit=1 << 20).decode("utf-8"))
            if old.hash in others:
                diffs = diff_specs(canonical_dict(old), canon)
        except (OSError, FTCInputError, FTCEnvironmentError, UnicodeDecodeError):
            pass
        why = (f"{MANIFEST} says {h} too: was it replaced?" if manifest_agrees
               else f"{MANIFEST} is missing, so the fields cannot be named")
        raise SpecMismatchError(self.root, diffs or [
            f"spec_hash: the records in {self.results_dir} were written by sweep "
            f"{', '.join(sorted(others))}, this spec is {h} ({why})"])

    def prepare(self, spec: SweepSpec, env: dict[str, Any] | None = None) -> dict[str, Any]:
        """Create the directory for ``spec`` or check that it already holds the same sweep.

        Creation is race-free between processes and hosts: the manifest is written to a temporary file
        and ``os.link``-ed into place, which fails if another writer got there first (then we compare).
        A lost manifest is rebuilt only when every sound record in the directory belongs to ``spec``.
        Nothing is written into a directory that already holds this sweep (so a finished run in a
        read-only directory still reports), except a missing ``spec.toml`` and, when ``spec`` grows
        the stored sweep (more axis values or replicates, same spec hash), the grown manifest.

        Raises:
          SpecMismatchError: the directory (its manifest, or its records) holds another sweep.
        """
        self._check_root()
        canon = canonical_dict(spec)
        h = spec_hash(canon)
        if self.exists():
            existing = self.read_manifest()
            self._refuse_if_other(existing, canon, h)
            self._refuse_foreign_records(spec, manifest_agrees=True)
            if existing["spec"] != canon:
                return self._grow(existing, spec, env)
            self._restore_spec_text(existing)
            return existing
        files.ensure_dir(self.root, parents=True)
        files.ensure_dir(self.results_dir)
        self._refuse_foreign_records(spec)
        manifest = self._manifest_for(spec, env)
        tmp = self.root / f".manifest.{secrets.token_hex(8)}{files.TEMP_SUFFIX}"
        fd = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         files.FILE_MODE)
            files.try_lock(fd)
            files.write_all(fd, _json_bytes(manifest))
            os.fsync(fd)
            try:
                os.link(tmp, self.manifest_path)
                created = True
            except FileExistsError:
                created = False
        except OSError as e:
            raise FTCEnvironmentError(f"{self.manifest_path}: cannot write the manifest: "
                                      f"{files.describe(e)}; nothing was computed yet") from None
        finally:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if created:
            files.fsync_dir(self.root)
            self._restore_spec_text(manifest)
            return manifest
        existing = self.read_manifest()
        self._refuse_if_other(existing, canon, h)
        return existing

    def _grow(self, existing: dict[str, Any], spec: SweepSpec, env: dict[str, Any] | None) -> dict[str, Any]:
        """The spec grows the run (more axis values or replicates; same spec hash): the manifest
        describes the grown sweep from now on; the records already stored stay valid."""
        grown = dict(self._manifest_for(spec, env), created=existing.get("created"),
                     environment=existing.get("environment", {}),
                     grown_from=[*(existing.get("grown_from") or []), existing.get("spec")])
        files.atomic_write_bytes(self.manifest_path, _json_bytes(grown))
        files.atomic_write_bytes(self.root / "spec.toml", _spec_text(grown).encode("utf-8"))
        return grown

    def _restore_spec_text(self, manifest: dict[str, Any]) -> None:
        # The human copy; written after the manifest, so a kill in between leaves none: restore it.
        path = self.root / "spec.toml"
        if files.is_regular(path):
            return
        try:
            files.atomic_write_bytes(path, _spec_text(manifest).encode("utf-8"))
        except FTCEnvironmentError:
            pass  # a read-only directory: the manifest holds the same text

    def check(self, spec: SweepSpec) -> dict[str, Any]:
        """Refuse early (before any device work) if the directory holds a sweep ``spec`` cannot continue.

        ``spec`` may grow the stored sweep (see :func:`ftcjax.sweep.spec.growth_problems`). Returns the
        existing manifest ({} for a new directory).
        """
        self._check_root()
        canon = canonical_dict(spec)
        if self.exists():
            existing = self.read_manifest()
            self._refuse_if_other(existing, canon, spec_hash(canon))
            self._refuse_foreign_records(spec, manifest_agrees=True)
            return existing
        if self.results_dir.is_dir():
            self._refuse_foreign_records(spec)
        return {}

    def record_environment(self, writer: str, env: dict[str, Any]) -> None:
        d = files.ensure_dir(self.root / "env")
        files.atomic_write_bytes(d / f"{writer}.json", _json_bytes(env))

    def clean_temporaries(self) -> list[Path]:
        """Remove temporaries left by crashed writers (see :func:`files.clean_stale_temporaries`)."""
        removed = []
        for d in (self.root, self.root / "env", self.results_dir):
            if d.is_dir() and not d.is_symlink():
                removed += files.clean_stale_temporaries(d)
        return removed

    def shard_paths(self) -> list[Path]:
        if not self.results_dir.is_dir():
            return []
        return sorted(self.results_dir.glob("*.jsonl"))

    def writer(self, name: str) -> "ShardWriter":
        return ShardWriter(self.results_dir / f"{name}.jsonl")

    def load(self, *, expected_spec_hash: str | None | type(...) = ...) -> "LoadedResults":
        """Every sound record of the directory (see :func:`load_results`).

        ``expected_spec_hash`` defaults to the manifest's (records of another sweep are set aside);
        None accepts every sweep (to inspect records without a manifest).
        """
        if expected_spec_hash is ...:
            expected_spec_hash = self.read_manifest()["spec_hash"] if self.exists() else None
        return load_results(self.shard_paths(), spec_hash_=expected_spec_hash)

    @contextlib.contextmanager
    def layout_lock(self, count: int) -> Iterator[None]:
        """Hold this writer's shard layout (``count`` writers); refuse while another layout runs.

        Writers of one layout share ``locks/layout-<count>.lock``; a new writer checks, under a short
        exclusive ``locks/guard.lock``, that no other layout's lock is held.
        """
        locks = files.ensure_dir(self.root / "locks")
        with files.locked_file(locks / "guard.lock"):
            for p in sorted(locks.glob("layout-*.lock")):
                if p.name == f"layout-{count}.lock" or not files.is_regular(p):
                    continue
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    if files.try_lock(fd) is False:
                        other = p.name[len("layout-"):-len(".lock")]
                        raise FTCInputError(
                            f"--shard: writers of another shard layout (N = {other}) are running in "
                            f"{self.root}; writers with N = {count} at the same time would duplicate "
                            "their work (use the same --shard i/N for every writer, or wait)")
                finally:
                    os.close(fd)
            fd = files.open_append(locks / f"layout-{count}.lock")
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                    os.close(fd)
                    raise
        try:
            yield
        finally:
            os.close(fd)

    def quarantine(self) -> list[str]:
        """Move every line that fails a check out of the shards nobody is writing; repair torn tails.

        A shard whose lock another process holds (a live writer) is left alone: its writer repairs it.
        Bad lines go to ``quarantine/<shard>.bad`` (raw bytes, one per line, appended), so nothing is
        ever deleted; the shard is rewritten atomically with the good lines only. The instances of
        those lines are then pending, and the run recomputes them.

        Returns:
          One message per shard changed (what moved where), for the log.
        """
        expected = self.read_manifest()["spec_hash"] if self.exists() else None
        notes = []
        for path in self.shard_paths():
            if not files.is_regular(path):
                continue  # links and other planted entries are reported by the loader, never opened
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if files.try_lock(fd) is False:
                    continue
                data = _read_fd(fd)
                good, bad, lines_bad = _split_lines(path.name, data, expected)
                if not bad:
                    continue
                qdir = files.ensure_dir(self.quarantine_dir)
                qfd = files.open_append(qdir / f"{path.name}.bad")
                try:
                    files.write_all(qfd, b"".join(b + b"\n" for b in bad))
                    os.fsync(qfd)
                finally:
                    os.close(qfd)
                files.atomic_write_bytes(path, b"".join(g + b"\n" for g in good))
                shown = ", ".join(str(n) for n in lines_bad[:10]) + (" ..." if len(lines_bad) > 10 else "")
                notes.append(f"quarantined {len(bad)} unusable line(s) of results/{path.name} (line "
                             f"{shown}) to {QUARANTINE}/{path.name}.bad; their instances are recomputed")
            except (OSError, FTCEnvironmentError) as e:
                notes.append(f"could not quarantine the bad lines of results/{path.name} "
                             f"({e}); they stay set aside")
            finally:
                os.close(fd)
        return notes


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _split_lines(name: str, data: bytes, expected: str | None) -> tuple[list[bytes], list[bytes], list[int]]:
    """Good lines, bad lines (torn tail included) and the bad lines' numbers of one shard's bytes."""
    good, bad, numbers = [], [], []
    for n, (line, complete) in enumerate(_split(data), start=1):
        if not line.strip():
            continue
        value, reason = parse_line(line)
        if reason is None:
            reason = check_record(value, expected_spec_hash=expected, instance_id_fn=instance_id)
        if reason is None and complete:
            good.append(line)
        else:
            bad.append(line)
            numbers.append(n)
    return good, bad, numbers


class ShardWriter:
    """Append-only, fsynced writer of one shard file (context manager).

    On open it takes an exclusive advisory lock and truncates a torn last line left by a crash, so new
    records always start on a fresh line. Every record is sealed (:func:`integrity.encode_record`). A
    failed write (a full disk) is cut back to the last whole record, so the file never holds a half
    line that the next write would glue onto.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> "ShardWriter":
        files.ensure_dir(self.path.parent)
        while True:
            is_new = not os.path.lexists(self.path)
            fd = files.open_append(self.path)
            try:
                locked = files.try_lock(fd)
            except OSError as e:
                os.close(fd)
                raise FTCEnvironmentError(f"{self.path}: cannot lock: {files.describe(e)}") from None
            if locked is False:
                os.close(fd)
                raise FTCInputError(f"{self.path} is being written by another process; two writers "
                                    "must not share a shard (check --shard / process indices)")
            # A quarantine may have replaced the file between our open and our lock: lock the live one.
            try:
                same = os.fstat(fd).st_ino == os.lstat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            self._repair(fd)
        except OSError as e:
            os.close(fd)
            raise FTCEnvironmentError(f"{self.path}: cannot repair its torn last line: "
                                      f"{files.describe(e)}") from None
        if is_new:
            files.fsync_dir(self.path.parent)
        self._fd = fd
        return self

    @staticmethod
    def _repair(fd: int) -> None:
        """Drop a torn last line (no trailing newline): it is the tail of a write cut by a crash."""
        size = os.lseek(fd, 0, os.SEEK_END)
        if size == 0:
            return
        if os.pread(fd, 1, size - 1) == b"\n":
            return
        # Walk back to the last newline; everything after it is the torn record.
        pos, block = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            buf = os.pread(fd, pos - start, start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        os.ftruncate(fd, keep)
        os.fsync(fd)

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Write records (one sealed line each) in one write, then fsync. Returns the count.

        Raises:
          FTCEnvironmentError: the write failed (e.g. disk full); the file is cut back to what it held.
        """
        assert self._fd is not None, "use ShardWriter as a context manager"
        lines = [encode_record(r) for r in records]
        if not lines:
            return 0
        data = b"\n".join(lines) + b"\n"
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            files.write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            raise FTCEnvironmentError(f"{self.path}: cannot append {len(lines)} record(s): "
                                      f"{files.describe(e)}") from None
        return len(lines)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclasses.dataclass
class LoadedResults:
    """Sound records deduplicated by instance id (first occurrence wins; recomputations are identical).

    Attributes:
      records: instance id -> record (each passed every check of :mod:`ftcjax.sweep.integrity`).
      torn: torn last lines skipped (a writer crashed mid-write, or is writing right now).
      rejected: every other line that is not used, with file, line number and reason.
      duplicates: sound records seen more than once.
      per_shard: shard file name -> number of records read from it.
      spec_hashes: the spec hashes carried by sound records (before the spec-hash check).
    """

    records: dict[str, dict[str, Any]]
    torn: int = 0
    rejected: list[RejectedLine] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    per_shard: dict[str, int] = dataclasses.field(default_factory=dict)
    spec_hashes: set[str] = dataclasses.field(default_factory=set)

    @property
    def corrupt(self) -> int:
        """Lines set aside (damaged, foreign, unreadable): should be 0."""
        return len(self.rejected)

    def __len__(self) -> int:
        return len(self.records)

    def values(self) -> list[dict[str, Any]]:
        return list(self.records.values())


def _split(data: bytes) -> Iterator[tuple[bytes, bool]]:
    """(line, is_complete) for each line; only the last line can be incomplete."""
    if not data:
        return
    parts = data.split(b"\n")
    for part in parts[:-1]:
        yield part, True
    if parts[-1]:
        yield parts[-1], False


def load_results(paths: Iterable[Path], *, spec_hash_: str | None = None) -> LoadedResults:
    """Read every shard; use only sound records; dedupe by ``instance_id``. Never raises on content.

    A torn last line is counted in ``torn``; every other line that fails (any bytes, any JSON value,
    a wrong checksum, type, id or spec hash) goes to ``rejected`` with its line number. A shard that is
    a link or not a regular file is rejected whole (line 0), never opened.

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
        path = Path(path)
        n = 0
        try:
            data = files.read_regular(path, what="shard")
        except FileNotFoundError:
            continue
        except FTCEnvironmentError as e:
            out.rejected.append(RejectedLine(path.name, 0, str(e).split(": ", 1)[-1]))
            continue
        for lineno, (line, complete) in enumerate(_split(data), start=1):
            if not line.strip():
                continue
            value, reason = parse_line(line)
            if not complete:  # parsed or not: a write in progress, or a crash; the writer repairs it
                out.torn += 1
                continue
            if reason is None:
                reason = check_record(value, expected_spec_hash=None, instance_id_fn=instance_id)
            if reason is None:
                out.spec_hashes.add(value["spec_hash"])
                if spec_hash_ is not None and value["spec_hash"] != spec_hash_:
                    reason = (f"spec_hash {value['spec_hash']!r} belongs to another sweep (this run is "
                              f"{spec_hash_!r})")
            if reason is not None:
                out.rejected.append(RejectedLine(path.name, lineno, reason))
                continue
            # Checked on the stored bytes (checksum, id of the stored cell) first; only then read
            # in the current schema (an older one upgraded, a newer one refused by name).
            value = upgrade(value, source=str(path))
            iid = value["instance_id"]
            if iid in out.records:
                out.duplicates += 1
                continue
            out.records[iid] = value
            n += 1
        out.per_shard[path.name] = n
    return out
