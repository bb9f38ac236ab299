"""Measurement helpers for the benchmark: timing, FLOP counting, matmul peak, memory, compile events.

Plain Python + numpy; jax and torch are imported lazily so this module loads without either.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import statistics
import time
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "Timing",
    "time_fn",
    "mlp_sizes",
    "train_flops",
    "matmul_peak",
    "rss_peak_delta",
    "CompileCounter",
    "environment",
]


@dataclasses.dataclass
class Timing:
    """Wall-clock seconds of repeated calls (after one untimed warm-up call unless ``warmup=0``)."""

    times: list[float]
    warmup_s: float | None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict:
        return {"times_s": self.times, "best_s": self.best, "median_s": self.median,
                "warmup_s": self.warmup_s}


def time_fn(fn: Callable[[], object], *, warmup: int = 1, reps: int = 3, min_time: float = 0.0,
            max_reps: int | None = None) -> Timing:
    """Time ``fn()`` (which must block until its result is ready, e.g. via ``device_get``).

    Runs ``warmup`` untimed calls (the first one compiles), then at least ``reps`` timed calls and more
    while the total is under ``min_time`` seconds (up to ``max_reps``). On a shared 2-core machine the
    best time is the most reproducible statistic; the median is kept too.
    """
    warm = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        warm = time.perf_counter() - t0
    times: list[float] = []
    max_reps = max_reps if max_reps is not None else max(reps, 1000)
    while len(times) < reps or (sum(times) < min_time and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(times, warm)


def mlp_sizes(depth: int, m: int, d: int) -> tuple[int, ...]:
    """Layer sizes ``(d, h_1, ..., 1)`` of a depth-``depth`` g with ``m`` hidden neurons in total.

    2-layer: one hidden layer of width m. 3-layer: m split ``(m - ceil(m/2), ceil(m/2))`` (the paper's
    count-maximising split, d2 = ceil(m/2)), so m = 24 gives 12 + 12.
    """
    if depth == 2:
        return (d, m, 1)
    if depth == 3:
        d2 = (m + 1) // 2
        return (d, m - d2, d2, 1)
    raise ValueError(f"depth: only 2 and 3 are benchmarked, got {depth!r}")


def train_flops(sizes: Sequence[int], K: int, steps: int) -> float:
    """Matmul FLOPs of one full-batch training: ``steps * 3 * sum_l 2 K in_l out_l``.

    Convention: backward = 2x forward (weight gradient + input gradient for every layer), the usual
    "3x forward" count and the one behind the design's 34%-of-peak figure. The exact minimum (no input
    gradient for the first layer) is lower by ``2 K d h_1`` per step; elementwise work is not counted.
    """
    fwd = sum(2.0 * K * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return float(steps) * 3.0 * fwd


def matmul_peak(*, n: int = 2048, dtype: str = "float32", reps: int = 5,
                backends: Sequence[str] = ("jax", "numpy", "torch")) -> dict:
    """This machine's dense matmul peak (FLOP/s): best of ``reps`` ``n x n @ n x n`` products.

    Measured with every available backend (jax on one device, numpy's BLAS, torch); the peak is the
    maximum, so a kernel's fraction of it is conservative.
    """
    flops = 2.0 * n ** 3
    out: dict = {"n": n, "dtype": dtype, "flops_per_call": flops, "by_backend": {}}
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    for name in backends:
        try:
            if name == "jax":
                import jax
                import jax.numpy as jnp

                dev = jax.devices()[0]
                ja, jb = jax.device_put(a, dev), jax.device_put(b, dev)
                f = jax.jit(jnp.matmul)
                t = time_fn(lambda: f(ja, jb).block_until_ready(), reps=reps)
            elif name == "numpy":
                t = time_fn(lambda: a @ b, reps=reps)
            elif name == "torch":
                import torch

                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
                t = time_fn(lambda: ta @ tb, reps=reps)
            else:
                raise ValueError(name)
        except ImportError:
            continue
        out["by_backend"][name] = flops / t.best
    out["peak_flops"] = max(out["by_backend"].values())
    return out


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_peak_delta(fn: Callable[[], object]) -> dict:
    """Peak resident memory added by ``fn()`` (bytes), from Linux's VmHWM after resetting it.

    Writing "5" to /proc/self/clear_refs resets the high-water mark to the current RSS, so
    ``VmHWM_after - VmRSS_before`` is the peak this call added. Allocator caching can hide reuse, so
    this is a lower bound on the working set and an upper bound on nothing; pair it with XLA's
    compiled memory analysis. Returns ``{"rss_delta_bytes": None}`` off Linux.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        fn()
        return {"rss_delta_bytes": None}
    before = _proc_status_kb("VmRSS")
    fn()
    hwm = _proc_status_kb("VmHWM")
    if before is None or hwm is None:
        return {"rss_delta_bytes": None}
    return {"rss_delta_bytes": (hwm - before) * 1024, "rss_before_bytes": before * 1024}


class CompileCounter(contextlib.AbstractContextManager):
    """Count XLA compilations inside a ``with`` block, and the seconds spent making them.

    Uses jax's monitoring events: ``backend_compile_duration`` (one per XLA compilation not served
    from a cache; ``count`` and ``durations``) plus the tracing and lowering events that precede it
    (``seconds`` sums all three: the whole price of a cache miss). The sum is CPU time: compilations
    running in parallel threads (ftcjax compiles one program per device) each add their own, and a
    trace nested in another trace counts in both, so it can exceed the wall time.
    """

    BACKEND = "/jax/core/compile/backend_compile_duration"
    EVENTS = (BACKEND, "/jax/core/compile/jaxpr_trace_duration",
              "/jax/core/compile/jaxpr_to_mlir_module_duration")

    def __init__(self):
        self.durations: list[float] = []
        self.other_seconds = 0.0

    def _listener(self, event: str, duration: float, **_kw) -> None:
        if event == self.BACKEND:
            self.durations.append(float(duration))
        elif event in self.EVENTS:
            self.other_seconds += float(duration)

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._listener)
        return False

    @property
    def count(self) -> int:
        return len(self.durations)

    @property
    def seconds(self) -> float:
        return float(sum(self.durations)) + self.other_seconds


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """What the numbers depend on: CPU, core count, library versions, XLA flags, jax devices."""
    env = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import jax

        env["jax"] = jax.__version__
        env["jax_backend"] = jax.default_backend()
        env["jax_devices"] = [str(dv) for dv in jax.devices()]
        env["jax_device_kind"] = jax.devices()[0].device_kind
    except ImportError:
        env["jax"] = None
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    return env


def fmt_rate(x: float | None) -> str:
    """Human format of a rate (per second)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
