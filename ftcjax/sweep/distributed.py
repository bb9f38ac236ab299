"""Scaling out: local devices, several processes or hosts, and independent shards.

* **One process, many devices.** The core's ``fit_batch`` shards training lanes over
  ``jax.local_devices()`` (``shard_map`` over a 1-D mesh) with a fixed per-device chunk, so results do not
  depend on the device count. On a CPU the two cores only both work when exposed as two XLA host
  devices; :func:`configure_cpu_devices` does that before jax initialises its backends.
* **Many processes (hosts).** Under ``jax.distributed`` (SLURM, TPU pods, or an explicit coordinator)
  every process runs the same command; chunk ``c`` belongs to process ``c % process_count``. Each process
  computes on its own local devices (no cross-host collectives: chunks are independent) and writes its
  own shard file. ``--shard i/n`` does the same for launchers that start independent processes (SLURM
  arrays); the two compose: writer ``i * process_count + process_index`` of ``n * process_count``.
"""
from __future__ import annotations

import dataclasses
import os
import re

from ftcjax._src.errors import FTCEnvironmentError, FTCInputError

__all__ = ["parse_shard", "configure_cpu_devices", "DistributedConfig", "maybe_initialize",
           "writer_share", "cpu_count", "barrier"]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise FTCInputError(f"--shard: {text!r} must look like i/n, e.g. 0/4 (shards are numbered from 0)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or i >= n:
        raise FTCInputError(f"--shard: {text!r} needs n >= 1 and 0 <= i < n")
    return i, n


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, which respects cgroups/taskset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def configure_cpu_devices(n: int | None = None) -> int | None:
    """Expose ``n`` (default: every usable core) XLA host devices, unless the user already chose.

    Must run before jax initialises its backends (first device query or computation). Only affects the
    CPU platform, so it is harmless on a GPU machine. Returns the count set, or None if left alone
    (``XLA_FLAGS`` already holds ``--xla_force_host_platform_device_count`` or
    ``JAX_NUM_CPU_DEVICES`` is set).
    """
    if n is None:
        if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
            return None
        if os.environ.get("JAX_NUM_CPU_DEVICES"):
            return None
        n = cpu_count()
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError:  # backends already initialised (e.g. inside a notebook): keep what exists
        return None
    return int(n)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How to start ``jax.distributed``: ``mode`` is "off", "auto" (cluster env detected) or "explicit"."""

    mode: str = "auto"
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


def _cluster_detected() -> bool:
    """A multi-task SLURM step or an explicit coordinator in the environment."""
    ntasks = os.environ.get("SLURM_NTASKS") or os.environ.get("SLURM_NPROCS")
    if os.environ.get("SLURM_JOB_ID") and ntasks and ntasks.isdigit() and int(ntasks) > 1:
        return True
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def maybe_initialize(cfg: DistributedConfig) -> tuple[int, int]:
    """Start ``jax.distributed`` if configured or detected; return ``(process_index, process_count)``."""
    import jax

    explicit = cfg.coordinator is not None or cfg.num_processes is not None or cfg.process_id is not None
    if cfg.mode == "off" and not explicit:
        return 0, 1
    if explicit:
        missing = [n for n, v in (("--coordinator", cfg.coordinator), ("--num-processes", cfg.num_processes),
                                  ("--process-id", cfg.process_id)) if v is None]
        if missing:
            raise FTCInputError(f"{', '.join(missing)}: needed with the other distributed options "
                                "(give --coordinator, --num-processes and --process-id together)")
        if not 0 <= cfg.process_id < cfg.num_processes:
            raise FTCInputError(f"--process-id: {cfg.process_id} must be in [0, --num-processes = "
                                f"{cfg.num_processes})")
        _initialize(dict(coordinator_address=cfg.coordinator, num_processes=cfg.num_processes,
                         process_id=cfg.process_id), "the --coordinator/--num-processes/--process-id options")
    elif cfg.mode == "on" or (cfg.mode == "auto" and _cluster_detected()):
        # jax's own cluster detection (SLURM, TPU pods, env variables)
        _initialize({}, _detected_from() or "--distributed on")
    else:
        return 0, 1
    return jax.process_index(), jax.process_count()


def _detected_from() -> str:
    names = [k for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NPROCS", "SLURM_PROCID", "SLURM_STEP_NODELIST",
                         "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k in os.environ]
    return f"the environment ({', '.join(names)})" if names else ""


def _initialize(kwargs: dict, source: str) -> None:
    """``jax.distributed.initialize`` with its failures (a partial SLURM or coordinator environment,
    an unreachable coordinator) as one line naming where the settings came from."""
    import jax

    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FTCEnvironmentError(
            f"jax.distributed could not start from {source}: {first}; nothing was computed "
            "(complete those settings, or run with --distributed off)") from None


def barrier(name: str, timeout_s: float = 7 * 24 * 3600) -> bool:
    """Wait until every ``jax.distributed`` process reaches ``name``; False if no barrier is available.

    Uses the coordination service's barrier (no device collective, so it also works on CPU clusters).
    """
    try:
        from jax._src import distributed as _dist  # the public API has no host-side barrier

        client = _dist.global_state.client
        if client is None:
            return False
    except (ImportError, AttributeError):
        return False
    try:
        client.wait_at_barrier(name, int(timeout_s * 1000))
    except Exception as e:  # the runtime's error type is private; a dead peer or a timeout
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FTCEnvironmentError(
            f"another process of this distributed run stopped before the end ({first}); this process's "
            "chunks are saved; rerun the same command on every process to resume") from None
    return True


def writer_share(shard: tuple[int, int], process: tuple[int, int]) -> tuple[int, int]:
    """Combine ``--shard i/n`` with (process index, process count) into one writer index and count."""
    (i, n), (p, P) = shard, process
    return i * P + p, n * P
