"""The environment of a writer process: versions, backend, devices, numerics settings, liveness.

Kept apart from the store (which is only the file format): the runner captures it once per writer
and the store writes it as ``DIR/env/<writer>.json``; ``ftcjax status`` reads the ``pid``, ``hostname``
and ``heartbeat`` fields to tell a live writer from a dead one.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any

__all__ = ["environment", "writer_alive"]


def environment() -> dict[str, Any]:
    """Versions, backend, devices and numerics settings of this process (initialises jax)."""
    import importlib.metadata as md

    import jax

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    devices = jax.local_devices()
    import ftcjax

    return {
        "ftcjax": version("ftcjax") or getattr(ftcjax, "__version__", None),
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "optax": version("optax"),
        "numpy": version("numpy"),
        "python": __import__("platform").python_version(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind if devices else None,
        "local_device_count": len(devices),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        # Global defaults only: the kernels enable x64 and set the matmul precision per call from the
        # protocol (recorded in every record's "protocol" and in the manifest's "numerics").
        "x64_default": bool(jax.config.jax_enable_x64),
        "matmul_precision_default": str(jax.config.jax_default_matmul_precision),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": _process_start(os.getpid()),
        "time": time.time(),
    }


def writer_alive(env: dict[str, Any]) -> bool | None:
    """Whether the process that wrote ``env`` still runs: True/False on this host, None elsewhere.

    A pid can be reused after the writer died; the start time check (``/proc``, Linux) rules that out
    where it is available.
    """
    if env.get("hostname") != socket.gethostname() or not isinstance(env.get("pid"), int):
        return None
    pid = env["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    started = env.get("process_start")
    if started is not None and _process_start(pid) not in (None, started):
        return False  # the pid was reused by another process
    return True


def _process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None
