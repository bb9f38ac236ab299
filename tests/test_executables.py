"""One compile per shape (ftcjax._src.executables): a kernel compiled once, loaded onto every device
and into later processes, with the kernel's bits; a damaged, foreign or unloadable stored program
is never used; a store others can change is never read."""
from __future__ import annotations

import collections
import functools
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ftcjax._src import executables

REPO = Path(__file__).resolve().parents[1]


@functools.partial(jax.jit, static_argnums=(0,))
def _kernel(n, x, y):
    # arange(3.0) is float64 under x64 and float32 without: the same arguments make two programs
    return jnp.sin(x) * n + y.sum(), jnp.arange(3.0)


class _Events:
    """jax's compile requests for _kernel and the store's own events, counted while inside."""

    def __init__(self):
        self.counts = collections.Counter()

    def _duration(self, event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration" and kw.get("fun_name") == "jit(_kernel)":
            self.counts["compile"] += 1

    def _event(self, event, **kw):
        if event.startswith("/ftcjax/executables/"):
            self.counts[event.rsplit("/", 1)[1]] += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)
        return self.counts

    def __exit__(self, *exc):
        from jax._src import monitoring

        monitoring.unregister_event_duration_listener(self._duration)
        monitoring.unregister_event_listener(self._event)


def _args(size):
    # a new shape per test: jit's own in-process cache would otherwise hide a compile
    return (3, jnp.linspace(0.0, 1.0, size, dtype=jnp.float32), jnp.ones((2,), jnp.float32))


def _check(out, args):
    want = _kernel(*args)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _store(tmp_path) -> Path:
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    return path


def test_a_second_process_loads_the_stored_program_and_compiles_nothing(tmp_path):
    store, args, dev = _store(tmp_path), _args(101), jax.devices()[0]
    with _Events() as first:
        _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
    assert first["compile"] == 1 and first["compiled"] == 1, first
    (entry,) = store.iterdir()
    assert entry.suffix == ".exe" and entry.stat().st_mode & 0o077 == 0
    with _Events() as second:     # a fresh wrapper: nothing in memory, as in a new process
        _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
    assert second == {"store_hits": 1, "loaded": 1}, second


def test_thread_local_settings_make_a_new_program(tmp_path):
    per_device, args, dev = executables.PerDevice(_kernel, store=_store(tmp_path)), _args(102), jax.devices()[0]
    with jax.enable_x64(False):
        out32 = per_device(*args, device=dev)
        _check(out32, args)
    with jax.enable_x64(True):
        out64 = per_device(*args, device=dev)
        _check(out64, args)
    assert out32[1].dtype == jnp.float32 and out64[1].dtype == jnp.float64
    assert len(list((tmp_path / "store").iterdir())) == 2


def _damage(entry: Path, how: str) -> None:
    blob = entry.read_bytes()
    magic, key, digest, packed = blob.split(b"\n", 3)
    if how == "flipped byte":
        i = len(blob) // 2
        entry.write_bytes(blob[:i] + bytes([blob[i] ^ 1]) + blob[i + 1:])
    elif how == "truncated":
        entry.write_bytes(blob[: len(blob) // 3])
    elif how == "foreign key":       # another program's entry under this name
        entry.write_bytes(b"\n".join([magic, b"0" * 64, digest, packed]))
    elif how == "other format":
        entry.write_bytes(b"\n".join([b"ftcjax-executable-0", key, digest, packed]))
    elif how == "consistent garbage":  # passes the digest, but is not an executable
        import hashlib

        junk = zlib.compress(b"not an executable" * 100)
        entry.write_bytes(b"\n".join([magic, key, hashlib.sha256(junk).hexdigest().encode(), junk]))
    elif how == "not compressed":
        import hashlib

        raw = b"x" * 1000
        entry.write_bytes(b"\n".join([magic, key, hashlib.sha256(raw).hexdigest().encode(), raw]))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["flipped byte", "truncated", "foreign key", "other format",
                                 "consistent garbage", "not compressed"])
def test_a_damaged_or_foreign_entry_is_never_used(tmp_path, how):
    store, args, dev = _store(tmp_path), _args(103), jax.devices()[0]
    executables.PerDevice(_kernel, store=store)(*args, device=dev)
    (entry,) = store.iterdir()
    _damage(entry, how)
    with _Events() as counts:
        _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
    if how == "consistent garbage":
        # read, fails to load: deleted, and this device runs jit's own program
        assert counts["store_hits"] == 1 and counts["loaded"] == 0 and not entry.exists(), counts
    else:
        # rejected before loading: compiled afresh and stored again, intact
        assert counts["store_hits"] == 0 and counts["compiled"] == 1, counts
        with _Events() as again:
            _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
        assert again == {"store_hits": 1, "loaded": 1}, again


def test_a_store_others_can_change_is_not_used(tmp_path):
    store, args, dev = _store(tmp_path), _args(104), jax.devices()[0]
    store.chmod(0o777)
    with _Events() as counts:
        _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
    assert counts["compiled"] == 1 and list(store.iterdir()) == []


def test_a_store_that_cannot_be_written_only_costs_a_compile(tmp_path, monkeypatch):
    # a read-only directory, as the file system reports it (root would write anyway, so simulated)
    store, args, dev = _store(tmp_path), _args(105), jax.devices()[0]
    real_open = os.open

    def refuse(path, *a, **kw):
        if str(path).startswith(str(store)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(os, "open", refuse)
    _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
    monkeypatch.setattr(os, "open", real_open)
    assert list(store.iterdir()) == []


def test_a_full_disk_only_costs_a_compile(tmp_path, monkeypatch):
    store, args, dev = _store(tmp_path), _args(106), jax.devices()[0]
    real_replace = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    _check(executables.PerDevice(_kernel, store=store)(*args, device=dev), args)
    monkeypatch.setattr(os, "replace", real_replace)
    assert list(store.iterdir()) == []        # nor a temporary file left behind


def test_the_store_keeps_the_most_recently_used_programs_within_its_bound(tmp_path):
    store, dev = _store(tmp_path), jax.devices()[0]
    sizes = (111, 112, 113, 114)

    def run(size, bound):
        args = _args(size)
        with _Events() as counts:
            _check(executables.PerDevice(_kernel, store=store, max_bytes=bound)(*args, device=dev), args)
        return counts

    run(sizes[0], 1 << 30)
    (first,) = store.iterdir()
    bound = int(2.5 * first.stat().st_size)      # room for two entries of about this size
    run(sizes[1], bound)
    os.utime(first, ns=(1, 1)), os.utime(next(p for p in store.iterdir() if p != first), ns=(2, 2))
    assert run(sizes[0], bound) == {"store_hits": 1, "loaded": 1}   # a hit: sizes[0] is the newest
    run(sizes[2], bound)                         # a third entry: the least recently used goes
    names = {p.name for p in store.iterdir()}
    assert len(names) == 2 and first.name in names, names
    assert sum(p.stat().st_size for p in store.iterdir()) <= bound
    assert run(sizes[1], bound)["compiled"] == 1      # evicted: compiled afresh
    assert run(sizes[3], 10)["compiled"] == 1         # larger than the bound: never kept ...
    assert len(list(store.iterdir())) == 2            # ... and nothing else evicted for it
    assert not any(p.name.startswith(".") for p in store.iterdir())


def test_the_store_bound_follows_jax_cache_bound():
    assert executables.store_max_bytes(123) == 123
    assert executables.store_max_bytes() == executables.DEFAULT_MAX_BYTES   # jax's default: unbounded
    before = jax.config.jax_compilation_cache_max_size
    try:
        jax.config.update("jax_compilation_cache_max_size", 5 << 20)
        assert executables.store_max_bytes() == 5 << 20
    finally:
        jax.config.update("jax_compilation_cache_max_size", before)


_CHILD = textwrap.dedent(r"""
    import collections, json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from ftcjax._src import executables
    counts = collections.Counter()
    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration" and kw.get("fun_name") == "jit(kernel)":
            counts["compile"] += 1
    def on_event(event, **kw):
        if event.startswith("/ftcjax/executables/") or event == "/jax/compilation_cache/cache_hits":
            counts[event.rsplit("/", 1)[1]] += 1
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

    @jax.jit
    def kernel(x):
        return jnp.cos(x) @ x.T

    per_device = executables.PerDevice(kernel, num_static=0)
    x = np.linspace(-1.0, 1.0, 48 * 8, dtype=np.float32).reshape(48, 8)
    outs = []
    for d in jax.devices():
        xd = jax.device_put(x, d)
        got, own = per_device(xd, device=d), kernel(xd)   # kernel(xd): jit's own program for d
        assert got.devices() == {d}, (got.devices(), d)
        outs.append([np.asarray(got).tolist(), np.asarray(own).tolist()])
    print("RESULT " + json.dumps(dict(counts=counts, outs=outs)))
""")


def _child(cache: Path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONPATH=str(REPO),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cache)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    for got, own in out["outs"]:
        assert got == own          # every device: the bits of its own compile
    assert out["outs"][0] == out["outs"][1]
    return out["counts"]


def test_two_devices_compile_once_and_later_processes_never(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    store = cache / executables.STORE_DIRNAME
    # 1st process: one compile for both devices (the second loads it); kernel(xd) for device 1 then
    # compiles jit's own copy for the comparison, which jax caches on disk
    first = _child(cache)
    assert first["compiled"] == 1 and first["loaded"] == 1, first
    real = lambda c: c["compile"] - c.get("cache_hits", 0)  # noqa: E731 - requests jax's cache missed
    assert real(first) == 1 + 1, first   # ours + jit's own device-1 copy (device 0's: from jax's cache)
    assert len(list(store.iterdir())) == 1
    # 2nd process: both devices load the stored program; the comparisons come from jax's cache
    second = _child(cache)
    assert second.get("compiled", 0) == 0 and second["store_hits"] == 1 and second["loaded"] == 2, second
    assert real(second) == 0, second
    # without the store, the first device gets jax's cached program, whose bytes cannot be loaded
    # elsewhere: the second device falls back to jit's own (cached) program, with the same bits
    for entry in store.iterdir():
        entry.unlink()
    third = _child(cache)
    assert third.get("compiled", 0) == 0 and third.get("loaded", 0) == 0 and real(third) == 0, third
    assert list(store.iterdir()) == []
