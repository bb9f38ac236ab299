"""One compile per shape, not per device: a jitted kernel compiled once and loaded onto every device.

``jax.jit`` compiles a separate executable for every device it runs on (jax 0.10.2 keys its
in-process and persistent caches on the device assignment, except on GPU), so the training segment,
the most expensive kernel to compile, was compiled once per device, one device after another. An
XLA:CPU executable, serialised, can be loaded onto another device of the same client by passing the
target's device assignment in the compile options; the copy runs the same machine code, so it gives
the same bits as the target's own compile (``tests/test_executables.py``) and loads in a fraction of
a second instead of seconds.

:class:`PerDevice` wraps one jitted kernel. The first device to need a signature (static arguments,
the tree, shapes, dtypes and weak types of the others, and jax's trace-affecting settings, which
are thread-local) lowers and compiles it; every other device loads that executable's bytes. The
bytes of a fresh compilation are also kept on disk next to jax's persistent cache (``ftcjax-
executables/`` inside ``jax_compilation_cache_dir``, when one is set), keyed by the lowered module
text and everything else that changes the program (jax and jaxlib versions, platform version,
device kind, ``XLA_FLAGS``), so a later process on any number of devices compiles nothing. An
executable that jax itself served from its persistent cache is not reusable this way (re-serialised,
its bytes fail to load: "NOT_FOUND: Function ... not found"); such a signature falls back to plain
``jit`` on the other devices, which is what ran before. A store entry is checked (magic, key and
sha256 digest) before it is loaded; a damaged, foreign or unloadable one is deleted and never used,
and a failed write (full disk, read-only directory) only costs a later compile. The store is bounded:
after a write, the least recently used entries (a hit refreshes an entry's time) are deleted until
the store holds at most ``max_bytes`` (default: jax's ``jax_compilation_cache_max_size`` when it is
set, else :data:`DEFAULT_MAX_BYTES`); a program larger than that is not kept at all.

Only on the CPU backend, where it was measured; elsewhere the wrapper is plain ``jit``. The caches
are memo tables (a signature maps to one program; results never depend on them), bounded in size.

Events (``jax.monitoring``), for benchmarks and tests: ``/ftcjax/executables/compiled`` (a fresh
compilation whose bytes were kept), ``/ftcjax/executables/loaded`` (bytes loaded onto a device, from
memory or the store) and ``/ftcjax/executables/store_hits``.
"""
from __future__ import annotations

import collections
import hashlib
import io
import os
import stat
import threading
import zlib
from pathlib import Path

import jax

try:  # the pieces used are jax's own (de)serialisation of compiled programs
    from jax._src import compiler as _compiler
    from jax._src.config import trace_context as _trace_context
    from jax._src.lib import xla_client as _xc
    from jax.experimental import serialize_executable as _serialize
    _AVAILABLE = True
except ImportError:  # another jax: plain jit, as before
    _AVAILABLE = False

__all__ = ["PerDevice", "STORE_DIRNAME", "DEFAULT_MAX_BYTES", "store_max_bytes"]

STORE_DIRNAME = "ftcjax-executables"
# A training segment is 0.3-0.5 MB stored: 1 GiB holds a few thousand shapes, and a user who runs
# many sweeps never sees the store grow without bound (jax's own cache is unbounded by default).
DEFAULT_MAX_BYTES = 1 << 30
_MAGIC = b"ftcjax-executable-1\n"
_MAX_SIGNATURES = 64
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"

# jax records a persistent-cache hit in the thread that compiles; counting per thread tells whether
# the executable this thread just got was compiled (its bytes reusable) or read from jax's cache.
_thread = threading.local()
_listener_lock = threading.Lock()
_listening = []


def _count_cache_hit(event, **kwargs):
    if event == _CACHE_HIT_EVENT:
        _thread.hits = getattr(_thread, "hits", 0) + 1


def _cache_hits_here() -> int:
    with _listener_lock:
        if not _listening:
            jax.monitoring.register_event_listener(_count_cache_hit)
            _listening.append(True)
    return getattr(_thread, "hits", 0)


class _Unpickler(_serialize._JaxPjrtUnpickler if _AVAILABLE else object):
    """jax's executable unpickler, retargeted: every device id maps to ``target``, and the executable
    is loaded with the target's device assignment (without it, it stays assigned to its old device)."""

    def __init__(self, file, target):
        super().__init__(file, target.client, [target])
        self._target = target

    def persistent_load(self, pid):
        if pid[0] == "exec":
            options = _compiler.get_compile_options(num_replicas=1, num_partitions=1,
                                                    device_assignment=[self._target])
            return self.backend.deserialize_executable(
                pid[1], executable_devices=_xc.DeviceList((self._target,)), compile_options=options)
        if pid[0] == "device":
            return self._target
        return super().persistent_load(pid)


def _load(payload: bytes, in_tree, out_tree, device) -> jax.stages.Compiled:
    unloaded, args_info, no_kwargs = _Unpickler(io.BytesIO(payload), device).load()
    return jax.stages.Compiled(unloaded.load(), [], in_tree.unflatten(args_info), out_tree,
                               no_kwargs=no_kwargs)


def _store_dir(path) -> Path | None:
    """The store directory (created 0700): ``path``, or by default (``path = None``)
    ``<jax_compilation_cache_dir>/ftcjax-executables``; None when there is none (``path = False``, or
    no persistent cache configured) or it is not this user's alone (what is in it is loaded and run)."""
    if path is False:
        return None
    if path is None:
        root = jax.config.jax_compilation_cache_dir
        if not root:
            return None
        path = Path(root) / STORE_DIRNAME
    path = Path(path)
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return path


def store_max_bytes(max_bytes=None) -> int:
    """The store's size bound: ``max_bytes`` if given, else jax's ``jax_compilation_cache_max_size``
    when positive (the user's bound for the cache the store lives in), else :data:`DEFAULT_MAX_BYTES`."""
    if max_bytes is not None:
        return int(max_bytes)
    jax_max = int(getattr(jax.config, "jax_compilation_cache_max_size", -1) or -1)
    return jax_max if jax_max > 0 else DEFAULT_MAX_BYTES


def _evict(store: Path, max_bytes: int, keep: Path) -> None:
    """Delete the least recently used entries until the store holds at most ``max_bytes`` (``keep``,
    the entry just written, goes last). Another process may evict at the same time: a file that is
    already gone is skipped."""
    entries = []
    for path in store.glob("*.exe"):
        try:
            st = path.stat()
        except OSError:
            continue
        entries.append((path == keep, st.st_mtime_ns, path.name, st.st_size, path))
    total = sum(e[3] for e in entries)
    for *_, size, path in sorted(entries):
        if total <= max_bytes:
            break
        _discard(path)
        total -= size


def _touch(path: Path) -> None:
    """Mark a stored entry as just used (the eviction order); failing to is harmless."""
    try:
        os.utime(path)
    except OSError:
        pass


def _disk_key(lowered, device) -> str:
    """What makes the program: the lowered module and its trees, the jax build, the device kind and
    XLA's flags (the lowered text has no device id: one key serves every device)."""
    import jaxlib

    h = hashlib.sha256()
    for part in (jax.__version__, jaxlib.__version__, device.platform, device.client.platform_version,
                 device.device_kind, os.environ.get("XLA_FLAGS", ""), str(lowered.in_tree),
                 str(lowered.out_tree), lowered.as_text()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read(path: Path, key: str) -> bytes | None:
    """The payload stored under ``key``, or None (absent; damaged or foreign: deleted)."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = _MAGIC + key.encode() + b"\n"
    digest_end = len(head) + 64
    if (blob.startswith(head) and blob[digest_end:digest_end + 1] == b"\n"
            and hashlib.sha256(blob[digest_end + 1:]).hexdigest().encode() == blob[len(head):digest_end]):
        try:
            return zlib.decompress(blob[digest_end + 1:])
        except zlib.error:
            pass
    _discard(path)
    return None


def _write(path: Path, key: str, payload: bytes, max_bytes: int) -> None:
    """Compressed, with a digest, atomically (a temporary file renamed), then the store trimmed to
    ``max_bytes``; a failure only costs a later compile."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    packed = zlib.compress(payload, 1)  # executables shrink ~5x; level 1 costs milliseconds
    blob = _MAGIC + key.encode() + b"\n" + hashlib.sha256(packed).hexdigest().encode() + b"\n" + packed
    if len(blob) > max_bytes:
        return
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except OSError:
        _discard(tmp)
        return
    _evict(path.parent, max_bytes, keep=path)


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class _Program:
    """One signature's program: its bytes (None: not reusable), trees and store entry."""

    __slots__ = ("payload", "in_tree", "out_tree", "path", "lock", "device_locks")

    def __init__(self):
        self.payload = self.in_tree = self.out_tree = self.path = None
        self.lock = threading.Lock()
        self.device_locks = {}


class PerDevice:
    """``kernel`` (a ``jax.jit`` function whose leading ``num_static`` arguments are static), compiled
    once per signature and loaded onto every device (see the module docstring).

    ``per_device(*args, device=d)`` runs ``kernel(*args)`` on device ``d``, where the non-static
    arguments already are; the result is the kernel's, bit for bit. ``store``: the directory that
    keeps compiled bytes across processes (default: next to jax's persistent cache; False: none).
    ``max_bytes``: the store's size bound (default :func:`store_max_bytes`, read at each write).
    """

    def __init__(self, kernel, num_static: int = 1, store=None, max_bytes: int | None = None):
        self._kernel = kernel
        self._num_static = num_static
        self._store = store
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._programs: collections.OrderedDict = collections.OrderedDict()   # signature -> _Program
        self._compiled: dict = {}                                            # (signature, device id) -> Compiled

    def _signature(self, args):
        static, dynamic = args[:self._num_static], args[self._num_static:]
        leaves, tree = jax.tree.flatten(dynamic)
        return (static, tree, tuple((x.shape, x.dtype, getattr(x, "weak_type", False)) for x in leaves),
                _trace_context())

    def __call__(self, *args, device):
        if not _AVAILABLE or device.platform != "cpu":
            return self._kernel(*args)
        signature = self._signature(args)
        dynamic = args[self._num_static:]
        compiled = self._compiled.get((signature, device.id))
        if compiled is None:
            compiled = self._prepare(signature, args, device)
            if compiled is None:  # not reusable: this device compiles its own, as jit always did
                return self._kernel(*args)
        return compiled(*dynamic)

    def _program(self, signature) -> _Program:
        with self._lock:
            program = self._programs.get(signature)
            if program is None:
                program = self._programs[signature] = _Program()
                if len(self._programs) > _MAX_SIGNATURES:
                    old, _ = self._programs.popitem(last=False)
                    self._compiled = {k: v for k, v in self._compiled.items() if k[0] != old}
            return program

    def _prepare(self, signature, args, device):
        program = self._program(signature)
        with program.lock:  # one device lowers and compiles (or reads the store); the others wait
            key = (signature, device.id)
            if key in self._compiled:
                return self._compiled[key]
            if program.in_tree is None:
                lowered = self._kernel.lower(*args)
                program.in_tree, program.out_tree = lowered.in_tree, lowered.out_tree
                store = _store_dir(self._store)
                disk_key = _disk_key(lowered, device)
                program.path = None if store is None else store / f"{disk_key}.exe"
                if program.path is not None:
                    program.payload = _read(program.path, disk_key)
                    if program.payload is not None:
                        _touch(program.path)
                        jax.monitoring.record_event("/ftcjax/executables/store_hits")
                if program.payload is None:
                    before = _cache_hits_here()
                    compiled = lowered.compile()
                    if _cache_hits_here() == before:  # compiled here, not read from jax's cache
                        program.payload = _serialize.serialize(compiled)[0]
                        jax.monitoring.record_event("/ftcjax/executables/compiled")
                        if program.path is not None:
                            _write(program.path, disk_key, program.payload, store_max_bytes(self._max_bytes))
                    self._compiled[key] = compiled
                    return compiled
            payload = program.payload
            device_lock = program.device_locks.setdefault(device.id, threading.Lock())
        if payload is None:
            return None
        with device_lock:  # devices load their copies at the same time, each device once
            if key in self._compiled:
                return self._compiled[key]
            try:
                compiled = _load(payload, program.in_tree, program.out_tree, device)
            except Exception:  # noqa: BLE001 - bytes that do not load are never used, whatever the error
                program.payload = None
                if program.path is not None:
                    _discard(program.path)
                return None
            jax.monitoring.record_event("/ftcjax/executables/loaded")
            self._compiled[key] = compiled
            return compiled
