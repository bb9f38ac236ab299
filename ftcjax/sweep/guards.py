"""Resource guards: refuse, before any work, a spec that cannot fit the machine or is absurdly large.

Two kinds of limits, each refusal naming the field and the number:

* **Hard limits** checked during validation, before anything is expanded or allocated: the size of a
  spec file, the nesting of its values, the number of values of an axis or of the candidate widths
  (``N = "1:100000000"`` is refused by counting, not by building the list), the number of cells and of
  instances, and ceilings on sizes (K, d, widths, restarts, ...) far beyond any sensible sweep. They are
  about the spec alone, so a stored spec validates the same on every machine.
* **A memory estimate** per kernel call, checked against the memory this machine has (``ftcjax run``
  and ``ftcjax validate``). One kernel call trains ``chunk_size x restarts`` lanes at the group's
  largest width (the search runs one round of all active instances as one call); the estimate is the
  benchmarks' model-bytes yardstick (``benchmarks/run.py``: parameters, gradient and optimizer state,
  the lane's data, activations of the lanes in flight), which the measured peak stays below.
"""
from __future__ import annotations

import math
import os
from typing import Any, Iterable

__all__ = ["MAX_SPEC_BYTES", "MAX_NESTING", "MAX_AXIS_VALUES", "MAX_WIDTHS", "MAX_CELLS", "MAX_INSTANCES",
           "VALUE_CEILINGS", "range_length", "nesting_problems", "peak_bytes", "available_memory",
           "memory_problems", "format_bytes"]

MAX_SPEC_BYTES = 1 << 20        # a spec is a page of TOML
MAX_NESTING = 8                 # tables and lists in a spec nest 2-3 deep
MAX_AXIS_VALUES = 10_000        # values of one axis
MAX_WIDTHS = 100_000            # candidate widths
MAX_CELLS = 1_000_000           # product of the axis lengths
MAX_INSTANCES = 1_000_000       # cells x replicates (records are a few KB each)
# Integer fields: the largest value accepted (memory decides below these).
VALUE_CEILINGS: dict[str, int] = {
    "K": 10_000_000, "N": 10_000_000, "d": 1_000_000, "depth": 64, "steps": 1_000_000_000,
    "segment": 1_000_000_000, "restarts": 100_000, "lbfgs_memory": 10_000, "lanes_per_step": 100_000,
    "unroll": 1_024, "check_every": 1_000_000_000, "width": 10_000_000, "replicates": MAX_INSTANCES, "chunk_size": 1_000_000,
}


def range_length(start: int, stop: int, step: int) -> int:
    """Number of values of the inclusive range ``start:stop:step`` (0 when empty), without building it."""
    if step <= 0 or stop < start:
        return 0
    return (stop - start) // step + 1


def nesting_problems(data: Any, limit: int = MAX_NESTING) -> list[str]:
    """Field paths nested deeper than ``limit`` (checked iteratively: no recursion to exhaust)."""
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack and len(problems) < 5:
        value, path, depth = stack.pop()
        if depth > limit:
            problems.append(f"{path or 'spec'}: values nested {depth} levels deep (at most {limit})")
            continue
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
    return problems


def _hidden_sizes(depth: int, width: int, split: Iterable[int] | None = None) -> list[int]:
    """Upper bound of the hidden layer sizes of a depth-``depth`` net of total width ``width``."""
    layers = max(1, depth - 1)
    return [int(math.ceil(width / layers))] * layers


def peak_bytes(*, K: int, d: int, depth: int, width: int, lanes: int, lanes_per_step: int, unroll: int,
               optimizer: str, lbfgs_memory: int, itemsize: int, batch: int) -> int:
    """Estimated bytes of one kernel call (see the module docstring).

    Per lane: parameters, gradient and two Adam moments (4 P; L-BFGS keeps 2 x memory more vectors)
    and the lane's copy of the data ((d + 2) K). Per lane in flight (``lanes_per_step`` vmapped, ``unroll``
    steps unrolled): pre- and post-activations of every layer (2 (m + 1) K). Plus drawing the
    ``batch`` problems (the pre-trained interpolant: 256 hidden units on K samples).
    """
    sizes = [d, *_hidden_sizes(depth, width), 1]
    P = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    vectors = 4 + (2 * lbfgs_memory if optimizer == "lbfgs" else 0)
    per_lane = vectors * P + (d + 2) * K
    act = 2 * sum(sizes[1:]) * K
    in_flight = min(lanes, lanes_per_step) * max(1, unroll) * act
    problems = batch * K * (d + 2 * 256)
    return int(itemsize * (lanes * per_lane + in_flight + problems))


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return None


def available_memory() -> tuple[int | None, str]:
    """Bytes one kernel call may use on this machine, and what they are.

    Accelerators: the free memory of the local devices together (lanes are split over them), when jax
    is already running on one. Otherwise the host's available memory (``MemAvailable``, capped by a
    cgroup limit). ``(None, why)`` when unknown (then nothing is refused).
    """
    import sys

    jax = sys.modules.get("jax")
    if jax is not None:
        try:
            from jax._src import xla_bridge

            if xla_bridge.backends_are_initialized() and jax.default_backend() != "cpu":
                devs = jax.local_devices()
                free = 0
                for dev in devs:
                    st = dev.memory_stats() or {}
                    free += int(st.get("bytes_limit", 0)) - int(st.get("bytes_in_use", 0))
                if free > 0:
                    return free, f"free memory of {len(devs)} {jax.default_backend()} device(s)"
        except Exception:  # memory stats are optional per backend; fall back to the host
            pass
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None, "unknown"
    limit = _cgroup_limit()
    if limit is not None and limit < avail:
        return limit, "the memory limit of this process's cgroup"
    return avail, "available host memory"


_ITEMSIZE = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}


def memory_problems(spec, available: int | None = None, what: str | None = None) -> list[str]:
    """One message per batch group whose kernel call would not fit ``available`` bytes."""
    if available is None:
        available, what = available_memory()
        if available is None:
            return []
    from ftcjax.sweep.cells import candidate_widths, plan_lanes_per_step, protocol_for_cell

    seen: dict[tuple, None] = {}
    worst: tuple[int, dict[str, Any]] | None = None
    for cell in spec.cells():
        group = tuple(sorted((k, v) for k, v in cell.items() if k != "N"))
        if group in seen:
            continue
        seen[group] = None
        p = protocol_for_cell(cell)
        widths = candidate_widths(spec.widths, p)
        if not widths:
            continue
        est = peak_bytes(K=cell["K"], d=cell["d"], depth=p.depth, width=max(widths),
                         lanes=spec.chunk_size * p.restarts, lanes_per_step=plan_lanes_per_step(p, cell, widths, spec.chunk_size),
                         unroll=p.unroll,
                         optimizer=p.optimizer, lbfgs_memory=p.lbfgs_memory,
                         itemsize=_ITEMSIZE.get(p.dtype, 8), batch=spec.chunk_size)
        if worst is None or est > worst[0]:
            worst = (est, cell)
    if worst is None or worst[0] <= available:
        return []
    est, cell = worst
    p = protocol_for_cell(cell)
    return [f"memory: one kernel call needs about {format_bytes(est)} (grid.K = {cell['K']}, grid.d = "
            f"{cell['d']}, width up to {max(spec.widths)}, batch.chunk_size = {spec.chunk_size} x "
            f"train.restarts = {p.restarts} lanes, train.dtype = {p.dtype!r}), more than the "
            f"{format_bytes(available)} of {what}; lower batch.chunk_size, train.restarts, the widths "
            "or grid.K"]
