#!/usr/bin/env python
"""ftcjax benchmark suite: one command, one table of ratios, results saved as JSON.

    .venv/bin/python benchmarks/run.py            # full run (~5-10 min on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # tiny sizes, seconds: a smoke run

Everything is measured side by side in this one process: ftcjax's batched kernel over several B, the
same kernel on one instance in a Python loop, a minimal fast JAX kernel (the yardstick of what the
formulation allows), PyTorch eager one instance at a time and PyTorch ``torch.func`` ensembling, all
training the same networks on the same data with full-batch Adam for the same number of steps. See
benchmarks/README.md for the definitions of every column and the targets.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def _configure_devices(argv) -> None:
    """Expose the cores as XLA host devices before jax initialises (design: the largest CPU win)."""
    n = None
    for i, a in enumerate(argv):
        if a == "--devices" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif a.startswith("--devices="):
            n = int(a.split("=", 1)[1])
    n = n or os.cpu_count() or 1
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={n}").strip()


if __name__ == "__main__":
    _configure_devices(sys.argv[1:])
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402

from benchmarks import harness  # noqa: E402
from benchmarks.harness import fmt_rate, mlp_sizes, time_fn, train_flops  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------

FULL = {
    "mode": "full",
    "steps": 1000,
    "learning_rate": 1e-2,
    "schedule": "cosine",
    "W1": {"depth": 3, "m": 24, "K": 1000, "d": 10, "N": 50,
           "B": [1, 4, 16, 64, 256, 1024], "loop": 8, "eager": 3, "func_B": [1, 16, 64],
           "proto_B": [16, 64, 256], "alt_check": 10},
    "W2": {"depth": 2, "m": 16, "K": 64, "d": 2, "N": 5,
           "B": [1, 16, 64, 256, 1024], "loop": 32, "eager": 3, "func_B": [1, 16, 128, 1024],
           "alt_chunk": 4, "alt_check": 10,
           "proto_B": [64, 256, 1024]},
    "scale": {"B": 64, "K": [250, 500, 1000, 2000], "m": [12, 24, 48]},
    "W3": {"B": 16, "N": 10, "widths": [4, 8, 12, 16, 20, 24, 28, 32], "restarts": 2, "steps": 1000,
           "criterion": "relative", "rel_eps": 0.05},
    "sweep": {"override": []},
    "xla_mem_min_B": 16,
    "min_time": 1.5,
}

QUICK = {
    "mode": "quick",
    "steps": 20,
    "learning_rate": 1e-2,
    "schedule": "cosine",
    "W1": {"depth": 3, "m": 24, "K": 200, "d": 10, "N": 20,
           "B": [1, 8], "loop": 2, "eager": 1, "func_B": [1, 8], "proto_B": [8], "alt_check": 10},
    "W2": {"depth": 2, "m": 16, "K": 64, "d": 2, "N": 5,
           "B": [1, 8], "loop": 2, "eager": 1, "func_B": [8], "proto_B": [8], "alt_chunk": 4, "alt_check": 10},
    "scale": {"B": 8, "K": [100, 200], "m": [12, 24]},
    "W3": {"B": 4, "N": 4, "widths": [4, 8, 12, 16], "restarts": 1, "steps": 40,
           "criterion": "relative", "rel_eps": 0.05},
    "sweep": {"override": ["train.steps=40", "replicates=1", "grid.N=[1, 4]"]},
    "min_time": 0.0,
}

# Issue 15's goals (the first round's floors were 25 ms, 25x, 4x, 25%, 300x, 6x).
TARGETS = {
    "W1_ms_per_training": 25.0,
    "W1_ms_per_training_stretch": 15.0,
    "W1_vs_eager": 40.0,
    "W1_vs_torch_func": 10.0,
    "W1_peak_fraction": 0.40,
    "W1_overhead_vs_yardstick": 0.05,
    "W2_vs_eager": 600.0,
    "W2_vs_torch_func": 12.0,
    "memory_vs_model": 2.0,
    "search_vs_kernel": 1.5,
}

# A criterion no float32 run can meet, so no run stops early and every implementation does exactly
# `steps` updates (ftcjax freezes a run at its first success; the references never stop).
NEVER_TOL = 1e-12

# ----------------------------------------------------------------------------------------------------
# Data and the ftcjax adapter
# ----------------------------------------------------------------------------------------------------


def _ftcjax():
    """The ftcjax module if its kernel is importable, else None (the table says so)."""
    try:
        import ftcjax

        for name in ("fit_batch", "Protocol", "make_problems"):
            getattr(ftcjax, name)
        return ftcjax
    except (ImportError, AttributeError):
        return None


def make_data(key_seed: int, *, num: int, K: int, d: int, N: int):
    """``num`` float32 problems; returns ``(problems or None, x (num, K, d), z (num, K))`` numpy.

    Drawn with ftcjax.make_problems when available (gaussian x, uniform labels), else numpy with the
    same distributions, so every implementation trains on the very same arrays.
    """
    ftc = _ftcjax()
    if ftc is not None:
        import jax

        probs = ftc.make_problems(jax.random.key(key_seed), num=num, K=K, d=d, N=N, dtype="float32")
        return probs, np.asarray(probs.x), np.asarray(probs.z)
    rng = np.random.default_rng(key_seed)
    x = rng.standard_normal((num, K, d)).astype(np.float32)
    z = np.zeros((num, K), np.float32)
    for i in range(num):
        idx = rng.permutation(K)[:N]
        z[i, idx] = rng.uniform(-1, 1, N)
    return None, x, z


def ftc_protocol(ftc, cfg, wl, *, steps=None, **over):
    kw = dict(depth=wl["depth"], learning_rate=cfg["learning_rate"], schedule=cfg["schedule"],
              steps=steps or cfg["steps"], restarts=1, criterion="strict", tol=NEVER_TOL,
              dtype="float32")
    kw.update(over)
    return ftc.Protocol(**kw)


def ftc_fit(ftc, probs, widths, protocol, seed=0, bucket=None, on_segment=None):
    """One blocking call of ftcjax.fit_batch; returns the FitResult with numpy leaves."""
    import jax

    B = probs.x.shape[0]
    keys = jax.random.split(jax.random.key(seed), B)
    res = ftc.fit_batch(probs, np.asarray(widths, np.int32), keys=keys, protocol=protocol, bucket=bucket,
                        on_segment=on_segment)
    return jax.tree.map(np.asarray, jax.device_get(res))


def _take(probs, n):
    import jax

    return jax.tree.map(lambda a: a[:n], probs)


# ----------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------


def _row(workload, impl, B, n, timing, *, sizes, K, steps, peak, extra=None):
    sec = timing.best
    per = sec / n
    flops = train_flops(sizes, K, steps) * n / sec
    row = {"workload": workload, "impl": impl, "B": B, "trainings": n,
           "seconds_best": sec, "seconds_median": timing.median, "reps": len(timing.times),
           "warmup_s": timing.warmup_s, "trainings_per_s": n / sec, "ms_per_training": per * 1e3,
           "flops_per_s": flops, "peak_fraction": flops / peak}
    row.update(extra or {})
    return row


class SegmentSpy:
    """``fit_batch(..., on_segment=spy)`` callback recording the per-segment program and the abstract
    arguments of its first call, so :meth:`memory_analysis` can ask XLA what that program needs."""

    def __init__(self):
        self.captured = None
        self._kernel = None

    def __call__(self, kernel, args):
        import jax

        if self.captured is None:
            cfg, *rest = args
            self._kernel = kernel
            self.captured = (cfg, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tuple(rest)))

    def memory_analysis(self) -> dict:
        """XLA's compiled memory analysis (bytes), summed over the devices (one program each)."""
        import jax

        if self.captured is None:
            return {"xla_error": "fit_batch never called on_segment (no segment ran)"}
        try:
            cfg, args = self.captured
            with jax.enable_x64(getattr(cfg, "dtype", "float32") == "float64"):
                ma = self._kernel.lower(cfg, *args).compile().memory_analysis()
            n_dev = len(jax.local_devices())
            out = {k: n_dev * int(getattr(ma, k)) for k in
                   ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                    "temp_size_in_bytes")}
            out["xla_total_bytes"] = (out["argument_size_in_bytes"] + out["output_size_in_bytes"]
                                      - out["alias_size_in_bytes"] + out["temp_size_in_bytes"])
            return out
        except Exception as e:  # noqa: BLE001 - a report, not a failure
            return {"xla_error": f"{type(e).__name__}: {e}"}


def bench_ftcjax_batched(ftc, cfg, wl, name, sizes, peak, *, mem_model):
    """ftcjax.fit_batch at every B of the workload; also RSS peak per B and compile seconds."""
    rows = []
    probs_all, _, _ = make_data(1, num=max(wl["B"]), K=wl["K"], d=wl["d"], N=wl["N"])
    proto = ftc_protocol(ftc, cfg, wl)
    warm_proto = ftc_protocol(ftc, cfg, wl, steps=min(cfg["steps"], proto.segment))
    for B in wl["B"]:
        probs = _take(probs_all, B)
        widths = np.full((B,), wl["m"], np.int32)
        spy = SegmentSpy()
        with harness.CompileCounter() as cc:
            t0 = time.perf_counter()
            ftc_fit(ftc, probs, widths, warm_proto, on_segment=spy)  # compiles; a short budget keeps warm-up cheap
            first = time.perf_counter() - t0
        out = {}

        def call():
            out["res"] = ftc_fit(ftc, probs, widths, proto)

        # The first timed call also measures the RSS high-water mark (one training pass serves both).
        t0 = time.perf_counter()
        mem = harness.rss_peak_delta(call)
        first_rep = time.perf_counter() - t0
        big = B * cfg["steps"] * wl["K"] >= 64 * 1000 * 1000
        t = time_fn(call, warmup=0, reps=0 if big else 1, min_time=0 if big else cfg["min_time"])
        t.times.insert(0, first_rep)
        xla_mem = spy.memory_analysis() if B >= cfg.get("xla_mem_min_B", 1) else {}
        res = out["res"]
        steps_done = np.asarray(res.steps).reshape(-1)
        rows.append(_row(name, "ftcjax fit_batch", B, B, t, sizes=sizes, K=wl["K"], steps=cfg["steps"],
                         peak=peak, extra={
                             "first_call_s": first, "compiles": cc.count, "compile_s": cc.seconds,
                             "rss_delta_bytes": mem["rss_delta_bytes"],
                             "model_bytes": mem_model(B), **xla_mem,
                             "steps_min": int(steps_done.min()), "steps_max": int(steps_done.max()),
                             "final_mse_mean": float(np.mean(res.mse))}))
    return rows


def _bench_ftcjax_variant(ftc, cfg, wl, name, sizes, peak, impl, **over):
    """One fit_batch row at the largest B with ``over`` set in the protocol (compiled first, then timed)."""
    B = max(wl["B"])
    probs_all, _, _ = make_data(1, num=B, K=wl["K"], d=wl["d"], N=wl["N"])
    widths = np.full((B,), wl["m"], np.int32)
    proto = ftc_protocol(ftc, cfg, wl, **over)
    ftc_fit(ftc, probs_all, widths, ftc_protocol(ftc, cfg, wl, steps=min(cfg["steps"], proto.segment), **over))
    t = time_fn(lambda: ftc_fit(ftc, probs_all, widths, proto), warmup=0, reps=2)
    return [_row(name, impl, B, B, t, sizes=sizes, K=wl["K"], steps=cfg["steps"], peak=peak)]


def bench_ftcjax_chunk_variant(ftc, cfg, wl, name, sizes, peak):
    """fit_batch with an explicit ``Protocol.lanes_per_step`` (lanes vmapped together per device) at the largest B.

    The default (0) lets the kernel choose from the problem size (``ftcjax.auto_lanes_per_step``: 64 on
    W2, 4 on W1); this row keeps the fixed value of before that rule, so the table shows what the rule buys.
    """
    chunk = wl.get("alt_chunk")
    if not chunk:
        return []
    return _bench_ftcjax_variant(ftc, cfg, wl, name, sizes, peak,
                                 f"ftcjax fixed lanes_per_step={chunk} (before the size rule)", lanes_per_step=chunk)


CHECK_IMPL = "ftcjax check_every="


def bench_ftcjax_check_variant(ftc, cfg, wl, name, sizes, peak):
    """fit_batch judging every ``alt_check`` steps (``Protocol.check_every``), at the largest B.

    A protocol choice, not the default: the steps between checks are bare Adam steps (no max-error
    reduction, no criteria, no freezing), and a run can stop only at a judged step. The row shows what
    judging every step costs the default.
    """
    k = wl.get("alt_check")
    if not k:
        return []
    return _bench_ftcjax_variant(ftc, cfg, wl, name, sizes, peak, f"{CHECK_IMPL}{k} (judged every {k} steps)",
                                 check_every=k)


def bench_ftcjax_loop(ftc, cfg, wl, name, sizes, peak):
    n = wl["loop"]
    probs_all, _, _ = make_data(2, num=n, K=wl["K"], d=wl["d"], N=wl["N"])
    import jax

    singles = [jax.tree.map(lambda a, i=i: a[i:i + 1], probs_all) for i in range(n)]
    proto = ftc_protocol(ftc, cfg, wl)
    w = np.full((1,), wl["m"], np.int32)
    ftc_fit(ftc, singles[0], w, ftc_protocol(ftc, cfg, wl, steps=min(cfg["steps"], proto.segment)))

    def call():
        for i, p in enumerate(singles):
            ftc_fit(ftc, p, w, proto, seed=i)

    t = time_fn(call, warmup=0, reps=1)
    return [_row(name, "ftcjax fit_batch, B=1 in a Python loop", 1, n, t, sizes=sizes, K=wl["K"],
                 steps=cfg["steps"], peak=peak)]


def bench_prototype(cfg, wl, name, sizes, peak):
    import jax

    from benchmarks import jax_prototype as proto

    tr = proto.make_trainer(steps=cfg["steps"], learning_rate=cfg["learning_rate"],
                            schedule=cfg["schedule"])
    unit = 4 * tr.num_devices
    rows = []
    _, x, z = make_data(3, num=max(wl["proto_B"]), K=wl["K"], d=wl["d"], N=wl["N"])
    for B in wl["proto_B"]:
        Bp = -(-B // unit) * unit
        xt = np.ascontiguousarray(np.swapaxes(np.resize(x, (Bp,) + x.shape[1:]), 1, 2))
        zz = np.resize(z, (Bp,) + z.shape[1:])
        params = proto.init_params(jax.random.key(0), sizes, Bp)
        t = time_fn(lambda: tr(params, xt, zz), warmup=1, reps=1 if B >= 256 else 2,
                    min_time=cfg["min_time"])
        rows.append(_row(name, "JAX yardstick (no masks/criteria)", B, B, t, sizes=sizes, K=wl["K"],
                         steps=cfg["steps"], peak=peak, extra={"padded_B": Bp}))
    return rows


def _torch_threads(n):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old


def bench_torch_isolated(cfg, wl, name, sizes, peak):
    """Run :func:`bench_torch` in a fresh Python process that never imports jax.

    Same data (passed as .npz), same process-wide settings, but no XLA thread pools beside PyTorch's
    OpenMP threads: on 2 shared cores that neighbourhood alone made eager PyTorch 10-40x slower.
    """
    import subprocess
    import tempfile

    n_data = max(max(wl["func_B"]), wl["eager"])
    _, x, z = make_data(4, num=n_data, K=wl["K"], d=wl["d"], N=wl["N"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "data.npz", x=x, z=z)
        (tmp / "job.json").write_text(json.dumps({"cfg": cfg, "wl": wl, "name": name, "sizes": list(sizes),
                                                  "peak": peak, "data": str(tmp / "data.npz"),
                                                  "out": str(tmp / "rows.json")}, default=_json_default))
        env = dict(os.environ)
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--torch-worker",
                               str(tmp / "job.json")], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"torch worker failed:\n{proc.stderr[-3000:]}")
        return json.loads((tmp / "rows.json").read_text())


def _torch_worker(job_path) -> None:
    job = json.loads(Path(job_path).read_text())
    data = np.load(job["data"])
    rows = bench_torch(job["cfg"], job["wl"], job["name"], tuple(job["sizes"]), job["peak"],
                       data=(data["x"], data["z"]))
    Path(job["out"]).write_text(json.dumps(rows, default=_json_default))
    assert "jax" not in sys.modules, "the torch worker must not import jax"


def bench_torch(cfg, wl, name, sizes, peak, data=None):
    """PyTorch eager (one instance at a time) and torch.func ensembling at every func_B.

    Both run with PyTorch's default thread count (what users get) and eager also with one thread:
    on tiny ops a second OpenMP thread buys nothing and, on a busy machine, costs a lot. The targets
    compare against the faster setting, so the ratios never flatter ftcjax.
    """
    import torch

    from benchmarks import torch_reference as tref

    rows = []
    if data is None:
        n_data = max(max(wl["func_B"]), wl["eager"])
        _, x, z = make_data(4, num=n_data, K=wl["K"], d=wl["d"], N=wl["N"])
    else:
        x, z = data
    kw = dict(sizes=sizes, steps=cfg["steps"], learning_rate=cfg["learning_rate"],
              schedule=cfg["schedule"])
    default_threads = torch.get_num_threads()
    thread_settings = sorted({default_threads, 1}, reverse=True)
    losses = []

    def eager():
        # At most wl["eager"] instances, and no more once 20 s are spent (a busy machine can make the
        # multi-threaded eager loop 10-40x slower); the row records how many ran.
        losses.clear()
        t0 = time.perf_counter()
        for i in range(wl["eager"]):
            losses.append(tref.train_eager(x[i], z[i], **kw, seed=i))
            if time.perf_counter() - t0 > 20.0:
                break

    for nt in thread_settings:
        old = _torch_threads(nt)
        try:
            tref.train_eager(x[0], z[0], **{**kw, "steps": 3})  # warm torch up (allocator, kernels)
            t = time_fn(eager, warmup=0, reps=1)
        finally:
            _torch_threads(old)
        rows.append(_row(name, f"PyTorch eager, one at a time ({nt} thr)", 1, len(losses), t,
                         sizes=sizes, K=wl["K"], steps=cfg["steps"], peak=peak,
                         extra={"final_mse_mean": float(np.mean(losses)), "torch_threads": nt}))
    func_runs = [(B, default_threads) for B in wl["func_B"]]
    if default_threads != 1:
        func_runs.append((max(wl["func_B"]), 1))
    for B, nt in func_runs:
        old = _torch_threads(nt)
        try:
            tref.train_ensemble(x[:B], z[:B], **{**kw, "steps": 2})
            out = {}
            t = time_fn(lambda: out.__setitem__("l", tref.train_ensemble(x[:B], z[:B], **kw, seed=0)),
                        warmup=0, reps=1)
        finally:
            _torch_threads(old)
        rows.append(_row(name, f"PyTorch torch.func vmap ensemble ({nt} thr)", B, B, t, sizes=sizes,
                         K=wl["K"], steps=cfg["steps"], peak=peak,
                         extra={"final_mse_mean": float(np.mean(out["l"])), "torch_threads": nt}))
    return rows


def param_count(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def model_bytes_fn(sizes, K, d, itemsize=4):
    """Bytes the training state of B instances needs at least (the memory target's yardstick).

    Per instance: parameters, gradient and Adam's two moments (4P), the data x, z and the changed
    mask ((d + 2) K), and the pre- and post-activations of every layer (2 (m + 1) K).
    """
    P = param_count(sizes)
    m_plus_1 = sum(sizes[1:])
    per = 4 * P + (d + 2) * K + 2 * m_plus_1 * K
    return lambda B: int(B * per * itemsize)


def bench_scaling(ftc, cfg, name, wl, peak):
    """ftcjax time against K and against m at a fixed B (one compile per shape)."""
    rows = []
    sc = cfg["scale"]
    B = sc["B"]
    for axis, values in (("K", sc["K"]), ("m", sc["m"])):
        for v in values:
            w = dict(wl, **{axis: v})
            sizes = mlp_sizes(w["depth"], w["m"], w["d"])
            probs, _, _ = make_data(5, num=B, K=w["K"], d=w["d"], N=min(w["N"], w["K"]))
            widths = np.full((B,), w["m"], np.int32)
            proto = ftc_protocol(ftc, cfg, w)
            ftc_fit(ftc, probs, widths, ftc_protocol(ftc, cfg, w, steps=min(cfg["steps"], proto.segment)))
            t = time_fn(lambda: ftc_fit(ftc, probs, widths, proto), warmup=0, reps=1)
            rows.append(_row(name, f"ftcjax scaling {axis}", B, B, t, sizes=sizes, K=w["K"],
                             steps=cfg["steps"], peak=peak, extra={"K": w["K"], "m": w["m"],
                                                                    "axis": axis}))
    return rows


def bench_recompile(ftc, cfg, wl):
    """Compile time of a first cell, and compiles triggered by a second cell's new widths / N / lr.

    A sweep fixes the width bucket from its spec, so the kernel calls pass ``bucket`` explicitly; the
    last case shows what happens when the bucket follows ``max(widths)`` (fit_batch's default).
    """
    B = min(8, max(wl["B"]))
    steps = min(cfg["steps"], 50)
    bucket = wl["m"] + 8
    probs, _, _ = make_data(6, num=B, K=wl["K"], d=wl["d"], N=wl["N"])
    probs2, _, _ = make_data(7, num=B, K=wl["K"], d=wl["d"], N=max(1, wl["N"] // 2))
    base = ftc_protocol(ftc, cfg, wl, steps=steps)
    widths = np.full((B,), wl["m"], np.int32)
    other = np.full((B,), max(4, wl["m"] - 4), np.int32)
    cases = [
        ("first cell (compile)", probs, widths, base, bucket),
        ("same cell again", probs, widths, base, bucket),
        ("new widths, same bucket", probs, other, base, bucket),
        ("new N", probs2, widths, base, bucket),
        ("new learning rate", probs, widths, base.replace(learning_rate=cfg["learning_rate"] / 3), bucket),
    ]
    if cfg.get("recompile_default_bucket", True):
        cases.append(("new widths, default bucket=max(widths)", probs, other, base, None))
    out = {}
    for label, p, w, pr, bk in cases:
        with harness.CompileCounter() as cc:
            t0 = time.perf_counter()
            ftc_fit(ftc, p, w, pr, bucket=bk)
            dt = time.perf_counter() - t0
        out[label] = {"seconds": dt, "compiles": cc.count, "compile_s": cc.seconds,
                      "longest_compile_s": max(cc.durations, default=0.0)}
    first = out["first cell (compile)"]["longest_compile_s"]
    for label, v in out.items():
        if label != "first cell (compile)":
            # Small host-side helper ops may compile once for a new shape; the kernel recompiling
            # shows as a compile comparable to the first cell's longest one.
            v["recompiled_kernel"] = v["longest_compile_s"] > 0.25 * max(first, 1e-9)
    return out


def bench_search(ftc, cfg, wl3, base_wl, peak):
    """min_width_batch (bisect) against an exhaustive grid over the same widths: trainings and answers."""
    import jax

    if not hasattr(ftc, "min_width_batch"):
        return {"skipped": "ftcjax.min_width_batch not available"}
    probs, _, _ = make_data(8, num=wl3["B"], K=base_wl["K"], d=base_wl["d"], N=wl3["N"])
    proto = ftc.Protocol(depth=base_wl["depth"], learning_rate=cfg["learning_rate"],
                         schedule=cfg["schedule"], steps=wl3["steps"], restarts=wl3["restarts"],
                         criterion=wl3["criterion"], rel_eps=wl3["rel_eps"], dtype="float32")
    keys = jax.random.split(jax.random.key(9), wl3["B"])
    out = {"B": wl3["B"], "N": wl3["N"], "widths": wl3["widths"], "protocol": proto.to_dict()}
    answers = {}
    for strategy in ("bisect", "grid"):
        # Warm-up on the same shapes so compile time does not count as search cost.
        ftc.min_width_batch(_take(probs, wl3["B"]), keys=keys, protocol=proto.replace(steps=proto.segment
                            if proto.segment < proto.steps else proto.steps),
                            widths=wl3["widths"], strategy=strategy)
        res = {}
        t = time_fn(lambda: res.__setitem__("r", ftc.min_width_batch(
            probs, keys=keys, protocol=proto, widths=wl3["widths"], strategy=strategy)), warmup=0, reps=1)
        recs = [r.to_dict() for r in res["r"]]
        trainings = sum(r["trainings"] for r in recs)
        opt_steps = sum(sum(sum(p["steps"]) for p in r["probes"]) for r in recs)
        answers[strategy] = [r["min_width"] for r in recs]
        if strategy == "grid":
            monotone = [not r["non_monotone"] for r in recs]
        out[strategy] = {"seconds": t.best, "trainings": trainings,
                         "trainings_per_instance": trainings / wl3["B"],
                         "trainings_per_s": trainings / t.best, "optimizer_steps": opt_steps,
                         "steps_per_s": opt_steps / t.best, "min_widths": answers[strategy],
                         "censored": sum(bool(r["censored"]) for r in recs),
                         "non_monotone": sum(bool(r["non_monotone"]) for r in recs)}
    out["same_answers"] = answers["bisect"] == answers["grid"]
    out["agreeing_instances"] = int(sum(a == b for a, b in zip(answers["bisect"], answers["grid"])))
    # Bisection assumes trainability is monotone in the width; where the grid saw it monotone the two
    # must agree, elsewhere a disagreement is the instance's (or the protocol's) noise, not a bug.
    out["monotone_instances"] = int(sum(monotone))
    out["agreeing_where_monotone"] = int(sum(a == b for a, b, mono in
                                             zip(answers["bisect"], answers["grid"], monotone) if mono))
    return out


def bench_sweep(ftc, cfg):
    """The default sweep (ftcjax/sweep/default.toml) end to end, against the bare kernel at its sizes.

    Reports wall time, compile time (jax monitoring events) and the steady-state rest; trainings/s
    and optimizer steps/s of the sweep; and the time the bare kernel (fit_batch, the sweep's lane
    count per round, the same K, d, depth, dtype and width bucket, full step budget, no early stop)
    would need for the same number of trainings.
    """
    import tempfile

    import jax

    try:
        from ftcjax.cli import default_spec_path
        from ftcjax.sweep.cells import protocol_for_cell
        from ftcjax.sweep.runner import run_sweep
        from ftcjax.sweep.spec import load_spec
    except ImportError as e:
        return {"skipped": f"ftcjax.sweep not available ({e})"}
    # the spec API's own overrides (validated like the file), never a regex over the TOML text
    spec = load_spec(default_spec_path(), overrides=cfg["sweep"].get("override", []))
    runs = []
    for label in ("cold", "warm"):
        # Cold: the first sweep in this process (compiles included). Warm: the same sweep again into
        # a fresh directory, every kernel already compiled: the steady state of a long sweep.
        recs: list = []
        with tempfile.TemporaryDirectory() as d, harness.CompileCounter() as cc:
            t0 = time.perf_counter()
            run_sweep(spec, d, on_chunk=lambda c, r, recs=recs: recs.extend(r))
            runs.append({"run": label, "wall_s": time.perf_counter() - t0, "compile_s": cc.seconds,
                         "compiles": cc.count, "records": recs})
    wall, steady = runs[0]["wall_s"], runs[1]["wall_s"]
    recs = runs[0]["records"]
    by_depth: dict = {}
    for r in recs:
        dep = int(r["cell"]["depth"])
        e = by_depth.setdefault(dep, {"trainings": 0, "steps": 0, "instances": 0})
        e["trainings"] += r["trainings"]
        e["steps"] += sum(sum(p["steps"]) for p in r["probes"])
        e["instances"] += 1
    axes = spec.axis_dict
    K, d_in = int(axes["K"][0]), int(axes["d"][0])
    restarts = int(axes.get("restarts", (1,))[0])
    lanes = spec.chunk_size * restarts
    bucket = max(spec.widths)
    kernel = {}
    for dep, e in by_depth.items():
        # the cell -> protocol bridge the runner uses (sweep/cells.py), on the sweep's first cell of this depth
        proto = protocol_for_cell(next(c for c in spec.cells() if c["depth"] == dep))
        proto = proto.replace(restarts=1, criterion="strict", tol=NEVER_TOL)
        probs = ftc.make_problems(jax.random.key(12), num=lanes, K=K, d=d_in,
                                  N=int(axes["N"][-1]), dtype=proto.dtype)
        widths = np.full((lanes,), max(proto.depth - 1, bucket // 2), np.int32)
        ftc_fit(ftc, probs, widths, proto.replace(steps=min(proto.steps, proto.segment)), bucket=bucket)
        t = time_fn(lambda: ftc_fit(ftc, probs, widths, proto, bucket=bucket), warmup=0, reps=2)
        kernel[dep] = {"lanes": lanes, "seconds": t.best, "trainings_per_s": lanes / t.best,
                       "steps_per_s": lanes * proto.steps / t.best}
    trainings = sum(e["trainings"] for e in by_depth.values())
    steps = sum(e["steps"] for e in by_depth.values())
    kernel_s = sum(e["trainings"] / kernel[dep]["trainings_per_s"] for dep, e in by_depth.items())
    same = [r["min_width"] for r in runs[0]["records"]] == [r["min_width"] for r in runs[1]["records"]]
    return {"spec": spec.to_dict(), "instances": len(recs), "trainings": trainings,
            "optimizer_steps": steps, "wall_s": wall, "compile_s": runs[0]["compile_s"],
            "compiles": runs[0]["compiles"], "steady_s": steady,
            "warm_compiles": runs[1]["compiles"], "warm_run_same_answers": same,
            "trainings_per_s_wall": trainings / wall,
            "trainings_per_s_steady": trainings / steady, "steps_per_s_steady": steps / steady,
            "by_depth": by_depth, "kernel": kernel, "kernel_seconds_for_same_trainings": kernel_s,
            "slowdown_steady": steady / kernel_s, "slowdown_wall": wall / kernel_s}


# ----------------------------------------------------------------------------------------------------
# Printing
# ----------------------------------------------------------------------------------------------------


def print_table(title, headers, rows):
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(headers)]
    widths = [max(len(c) for c in col) for col in cols]
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in
                        enumerate(zip(r, widths))))


def _best(rows, impl_prefix):
    cand = [r for r in rows if r["impl"].startswith(impl_prefix)]
    return max(cand, key=lambda r: r["trainings_per_s"]) if cand else None


def print_workload(name, rows, spec):
    ref = _best(rows, "ftcjax fit_batch") or _best(rows, "JAX yardstick")
    table = []
    for r in rows:
        ratio = ref["trainings_per_s"] / r["trainings_per_s"] if ref else float("nan")
        table.append([r["impl"], r["B"], r["trainings"], f"{r['ms_per_training']:.3f}",
                      fmt_rate(r["trainings_per_s"]), f"{ratio:.2f}x",
                      f"{100 * r['peak_fraction']:.1f}%"])
    refname = f"{ref['impl']} B={ref['B']}" if ref else "-"
    print_table(f"{name}: {spec}; ratio = best ftcjax throughput / row throughput ({refname})",
                ["implementation", "B", "n", "ms/training", "trainings/s", "ftcjax is", "of peak"],
                table)


def summarize_targets(results) -> list[dict]:
    out = []

    def add(name, value, target, ok, unit=""):
        out.append({"target": name, "value": value, "goal": target, "met": ok, "unit": unit})

    for wl in ("W1", "W2"):
        rows = results.get(wl, [])
        ftc = _best(rows, "ftcjax fit_batch")
        eager = _best(rows, "PyTorch eager")
        func = _best(rows, "PyTorch torch.func")
        if ftc is None:
            continue
        if wl == "W1":
            add("W1 ms per instance-training (best B)", ftc["ms_per_training"],
                f"<= {TARGETS['W1_ms_per_training']}", ftc["ms_per_training"] <= TARGETS["W1_ms_per_training"], "ms")
            add("W1 stretch", ftc["ms_per_training"], f"<= {TARGETS['W1_ms_per_training_stretch']}",
                ftc["ms_per_training"] <= TARGETS["W1_ms_per_training_stretch"], "ms")
            add("W1 fraction of matmul peak", ftc["peak_fraction"], f">= {TARGETS['W1_peak_fraction']}",
                ftc["peak_fraction"] >= TARGETS["W1_peak_fraction"])
            yard = _best(rows, "JAX yardstick")
            if yard is not None:
                over = yard["trainings_per_s"] / ftc["trainings_per_s"] - 1
                goal = TARGETS["W1_overhead_vs_yardstick"]
                add("W1 overhead over the JAX yardstick", over, f"<= {goal}", over <= goal)
        for ref, key in ((eager, "vs_eager"), (func, "vs_torch_func")):
            if ref is None:
                continue
            ratio = ftc["trainings_per_s"] / ref["trainings_per_s"]
            goal = TARGETS[f"{wl}_{key}"]
            add(f"{wl} speed-up {key.replace('vs_', 'over ')}", ratio, f">= {goal}", ratio >= goal, "x")
        # The same goals for the protocol that judges every k steps (Protocol.check_every): reported
        # beside the default's, never in its place (it stops runs only at judged steps).
        chk = _best(rows, CHECK_IMPL)
        if chk is not None:
            k = chk["impl"][len(CHECK_IMPL):].split()[0]
            yard = _best(rows, "JAX yardstick")
            if wl == "W1" and yard is not None:
                over = yard["trainings_per_s"] / chk["trainings_per_s"] - 1
                goal = TARGETS["W1_overhead_vs_yardstick"]
                add(f"W1 overhead over the JAX yardstick (check_every = {k})", over, f"<= {goal}", over <= goal)
            for ref, key in ((eager, "vs_eager"), (func, "vs_torch_func")):
                if ref is not None:
                    ratio = chk["trainings_per_s"] / ref["trainings_per_s"]
                    goal = TARGETS[f"{wl}_{key}"]
                    add(f"{wl} speed-up {key.replace('vs_', 'over ')} (check_every = {k})", ratio,
                        f">= {goal}", ratio >= goal, "x")
    mem = [r for r in results.get("W1", []) if r["impl"] == "ftcjax fit_batch" and r["B"] >= 16]
    if mem:
        key = "xla_total_bytes" if all("xla_total_bytes" in r for r in mem) else "rss_delta_bytes"
        worst = max((r[key] or 0) / r["model_bytes"] for r in mem)
        add(f"memory / model bytes (W1, B >= 16, {key.split('_')[0].upper()})", worst,
            f"<= {TARGETS['memory_vs_model']}", worst <= TARGETS["memory_vs_model"])
    sw = results.get("sweep", {})
    if "slowdown_steady" in sw:
        add("default sweep time / bare kernel time (warm: compiled)", sw["slowdown_steady"],
            f"<= {TARGETS['search_vs_kernel']}", sw["slowdown_steady"] <= TARGETS["search_vs_kernel"], "x")
        add("default sweep time / bare kernel time (cold: first run)", sw["slowdown_wall"],
            f"<= {TARGETS['search_vs_kernel']}", sw["slowdown_wall"] <= TARGETS["search_vs_kernel"], "x")
    rc = results.get("recompile", {})
    if rc:
        bad = [k for k, v in rc.items() if v.get("recompiled_kernel") and "default bucket" not in k]
        add("no recompile for new widths / N / learning rate", ", ".join(bad) or "none recompiled",
            "none", not bad)
    return out


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------


def _guard(results, label, fn, default):
    """Run one section; on an exception print it, record it under results["errors"], go on.

    A change in ftcjax must cost one section of the table, not the whole run and its JSON.
    """
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - reported, never swallowed silently
        import traceback

        msg = f"{type(e).__name__}: {e}"
        print(f"\n!! section {label} failed: {msg}")
        results.setdefault("errors", {})[label] = traceback.format_exc()[-4000:]
        return default


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (seconds)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    ap.add_argument("--devices", type=int, default=None,
                    help="XLA host devices (default: CPU count; only effective before jax starts)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--torch-in-process", action="store_true",
                    help="run the PyTorch rows in this process (default: a fresh process without jax)")
    ap.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only", default=None,
                    help="comma list of sections: W1,W2,scale,W3,sweep,recompile (default all)")
    args = ap.parse_args(argv)
    if args.torch_worker:
        _torch_worker(args.torch_worker)
        return {}
    cfg = QUICK if args.quick else FULL
    sections = set((args.only or "W1,W2,scale,W3,sweep,recompile").split(","))

    import jax

    results: dict = {"config": cfg, "targets": TARGETS, "environment": harness.environment()}
    env = results["environment"]
    print(f"ftcjax benchmark ({cfg['mode']}): {env['cpu']}, {env['cpu_count']} cores, jax {env['jax']} "
          f"on {len(jax.devices())} {env['jax_backend']} device(s), XLA_FLAGS='{env['XLA_FLAGS']}'")
    ftc = _ftcjax()
    if ftc is None:
        print("NOTE: ftcjax.fit_batch is not importable: ftcjax rows are skipped.")
    try:
        import torch  # noqa: F401

        have_torch = not args.no_torch
        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        have_torch = False
        print("NOTE: PyTorch is not installed, so the PyTorch rows are skipped "
              "(install the CPU build: .venv/bin/pip install torch==2.13.0).")
    results["torch_available"] = have_torch

    t_start = time.perf_counter()
    peak = harness.matmul_peak(n=1024 if args.quick else 2048)
    results["matmul_peak"] = peak
    print(f"matmul peak float32 (n={peak['n']}): {fmt_rate(peak['peak_flops'])}FLOP/s  " +
          ", ".join(f"{k} {fmt_rate(v)}" for k, v in peak["by_backend"].items()))
    P = peak["peak_flops"]

    for name in ("W1", "W2"):
        if name not in sections:
            continue
        wl = cfg[name]
        sizes = mlp_sizes(wl["depth"], wl["m"], wl["d"])
        spec = (f"{wl['depth']}-layer {'->'.join(map(str, sizes))}, K={wl['K']}, N={wl['N']}, "
                f"{cfg['steps']} Adam steps, {cfg['schedule']} lr {cfg['learning_rate']}, float32")
        rows = []
        if ftc is not None:
            rows += _guard(results, f"{name} ftcjax batched", lambda: bench_ftcjax_batched(
                ftc, cfg, wl, name, sizes, P, mem_model=model_bytes_fn(sizes, wl["K"], wl["d"])), [])
            rows += _guard(results, f"{name} ftcjax chunk variant",
                           lambda: bench_ftcjax_chunk_variant(ftc, cfg, wl, name, sizes, P), [])
            rows += _guard(results, f"{name} ftcjax check_every variant",
                           lambda: bench_ftcjax_check_variant(ftc, cfg, wl, name, sizes, P), [])
            rows += _guard(results, f"{name} ftcjax loop", lambda: bench_ftcjax_loop(ftc, cfg, wl, name, sizes, P), [])
        rows += _guard(results, f"{name} yardstick", lambda: bench_prototype(cfg, wl, name, sizes, P), [])
        if have_torch:
            rows += _guard(results, f"{name} torch", lambda: (
                bench_torch(cfg, wl, name, sizes, P) if args.torch_in_process
                else bench_torch_isolated(cfg, wl, name, sizes, P)), [])
        results[name] = rows
        print_workload(name, rows, spec)
        mem = [r for r in rows if r["impl"] == "ftcjax fit_batch"]
        if mem:
            print_table(f"{name}: ftcjax memory and compile per B (RSS delta of one call; model = "
                        "4 x params + data + activations of B instances)",
                        ["B", "XLA MB", "RSS delta MB", "model MB", "XLA/model", "first call s", "compiles",
                         "compile s", "steps run"],
                        [[r["B"], f"{r.get('xla_total_bytes', float('nan')) / 1e6:.2f}",
                          f"{(r['rss_delta_bytes'] or 0) / 1e6:.1f}", f"{r['model_bytes'] / 1e6:.2f}",
                          f"{r.get('xla_total_bytes', float('nan')) / r['model_bytes']:.2f}",
                          f"{r['first_call_s']:.2f}",
                          r["compiles"], f"{r['compile_s']:.2f}", f"{r['steps_min']}-{r['steps_max']}"]
                         for r in mem])

    if ftc is not None and "scale" in sections:
        wl = cfg["W1"]
        rows = _guard(results, "scaling", lambda: bench_scaling(ftc, cfg, "W1", wl, P), [])
        results["scaling"] = rows
        print_table(f"W1 scaling at B={cfg['scale']['B']} (time per training should grow ~linearly in K "
                    "and m)", ["axis", "K", "m", "ms/training", "of peak"],
                    [[r["axis"], r["K"], r["m"], f"{r['ms_per_training']:.2f}",
                      f"{100 * r['peak_fraction']:.1f}%"] for r in rows])

    if ftc is not None and "W3" in sections:
        wl3 = cfg["W3"]
        s = _guard(results, "W3", lambda: bench_search(ftc, cfg, wl3, cfg["W1"], P), {"skipped": "failed"})
        # Kernel throughput at the same sizes (optimizer steps per second, the fair unit when runs
        # stop early): the best W1 ftcjax row if its K matches, in steps.
        k = _best([r for r in results.get("W1", []) if r["B"] >= 16], "ftcjax fit_batch")
        if k is not None:
            s["kernel_steps_per_s"] = k["trainings_per_s"] * cfg["steps"]
        results["W3"] = s
        if "bisect" in s:
            print_table(f"W3 min-width search on {wl3['B']} W1-like instances (N={wl3['N']}, widths "
                        f"{wl3['widths'][0]}..{wl3['widths'][-1]}, {wl3['restarts']} restarts, "
                        f"{wl3['steps']} steps, {wl3['criterion']} criterion, rel_eps {wl3['rel_eps']})",
                        ["strategy", "trainings/instance", "seconds", "trainings/s", "opt steps/s",
                         "censored"],
                        [[st, f"{s[st]['trainings_per_instance']:.1f}", f"{s[st]['seconds']:.2f}",
                          fmt_rate(s[st]["trainings_per_s"]), fmt_rate(s[st]["steps_per_s"]),
                          s[st]["censored"]] for st in ("bisect", "grid")])
            print(f"same answers: {s['same_answers']} ({s['agreeing_instances']}/{wl3['B']}; "
                  f"{s['agreeing_where_monotone']}/{s['monotone_instances']} where the grid saw trainability "
                  f"monotone in the width); "
                  f"bisect min widths {s['bisect']['min_widths']}")
            if s.get("kernel_steps_per_s"):
                print(f"kernel alone: {fmt_rate(s['kernel_steps_per_s'])} opt steps/s -> search is "
                      f"{s['kernel_steps_per_s'] / s['bisect']['steps_per_s']:.2f}x slower per step")
        else:
            print(f"\nW3: {s.get('skipped')}")

    if ftc is not None and "sweep" in sections:
        sw = _guard(results, "sweep", lambda: bench_sweep(ftc, cfg), {"skipped": "failed"})
        results["sweep"] = sw
        if "skipped" in sw:
            print(f"\nsweep: {sw['skipped']}")
        else:
            print_table(f"Default sweep (ftcjax/sweep/default.toml{', reduced' if cfg['sweep']['override'] else ''}): "
                        f"{sw['instances']} instances, {sw['trainings']} trainings, "
                        f"{sw['optimizer_steps']} optimizer steps",
                        ["cold wall s", "compile CPU s (n)", "warm wall s", "trainings/s warm", "bare kernel s",
                         "steady / kernel", "wall / kernel"],
                        [[f"{sw['wall_s']:.2f}", f"{sw['compile_s']:.2f} ({sw['compiles']})",
                          f"{sw['steady_s']:.2f}", fmt_rate(sw["trainings_per_s_steady"]),
                          f"{sw['kernel_seconds_for_same_trainings']:.2f}", f"{sw['slowdown_steady']:.2f}x",
                          f"{sw['slowdown_wall']:.2f}x"]])
            for dep, k in sw["kernel"].items():
                print(f"  bare kernel depth {dep}: {k['lanes']} lanes x full budget: "
                      f"{fmt_rate(k['trainings_per_s'])} trainings/s; sweep ran "
                      f"{sw['by_depth'][dep]['trainings']} trainings at depth {dep}")

    if ftc is not None and "recompile" in sections:
        rc = _guard(results, "recompile", lambda: bench_recompile(ftc, cfg, cfg["W1"]), {})
        results["recompile"] = rc
        print_table("Compilation: a second sweep cell must not recompile",
                    ["call", "seconds", "compiles", "compile s", "kernel recompiled"],
                    [[k, f"{v['seconds']:.2f}", v["compiles"], f"{v['compile_s']:.2f}",
                      v.get("recompiled_kernel", "-")] for k, v in rc.items()])

    targets = summarize_targets(results)
    results["target_summary"] = targets
    if targets:
        if cfg["mode"] == "quick":
            print("\n(quick mode: tiny sizes and few steps; the target verdicts below only show the "
                  "report works, run without --quick for real numbers)")
        print_table("Targets (reported, not asserted)", ["target", "value", "goal", "met"],
                    [[t["target"], f"{t['value']:.3g}{t['unit']}" if isinstance(t["value"], float)
                      else t["value"], t["goal"], "yes" if t["met"] else "NO"] for t in targets])
    results["total_seconds"] = time.perf_counter() - t_start
    results["environment"]["loadavg_end"] = os.getloadavg()
    out = args.out
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
        out = _REPO / "benchmarks" / "results" / (f"quick.json" if args.quick else f"cpu-{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=_json_default))
    out.with_suffix(".md").write_text(render_markdown(results))
    print(f"\nwrote {out} and {out.with_suffix('.md').name} ({results['total_seconds']:.0f} s)")
    return results


def _md_table(headers, rows) -> str:
    out = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def render_markdown(results) -> str:
    """The headline tables of a run as markdown (pasted into benchmarks/README.md)."""
    env = results["environment"]
    peak = results["matmul_peak"]
    parts = [f"Run {env['time_utc']} ({results['config']['mode']}): {env['cpu']}, {env['cpu_count']} cores, "
             f"jax {env['jax']} on {len(env.get('jax_devices', []))} XLA CPU devices, torch {env.get('torch')}, "
             f"load average at start {tuple(round(v, 2) for v in env['loadavg_start'])}, "
             f"total {results['total_seconds']:.0f} s. Matmul peak float32: "
             f"{peak['peak_flops'] / 1e9:.0f} GFLOP/s (" +
             ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peak["by_backend"].items()) + ")."]
    for name in ("W1", "W2"):
        rows = results.get(name)
        if not rows:
            continue
        ref = _best(rows, "ftcjax fit_batch") or _best(rows, "JAX yardstick")
        parts.append(f"\n**{name}** (ratio = best ftcjax throughput / row throughput)\n")
        parts.append(_md_table(
            ["implementation", "B", "ms / training", "trainings / s", "ftcjax is", "of peak"],
            [[r["impl"], r["B"], f"{r['ms_per_training']:.3g}", f"{r['trainings_per_s']:.3g}",
              f"{ref['trainings_per_s'] / r['trainings_per_s']:.2f}x", f"{100 * r['peak_fraction']:.1f}%"]
             for r in rows]))
        mem = [r for r in rows if r["impl"] == "ftcjax fit_batch"]
        parts.append(f"\n{name} memory and compilation per B (XLA = compiled memory analysis of the segment "
                     "kernel; model = B x (4 params + data + activations))\n")
        parts.append(_md_table(
            ["B", "XLA MB", "RSS delta MB", "model MB", "XLA / model", "first call s", "steps run"],
            [[r["B"], f"{r['xla_total_bytes'] / 1e6:.2f}" if "xla_total_bytes" in r else "-",
              f"{(r['rss_delta_bytes'] or 0) / 1e6:.1f}", f"{r['model_bytes'] / 1e6:.2f}",
              f"{r['xla_total_bytes'] / r['model_bytes']:.2f}" if "xla_total_bytes" in r else "-",
              f"{r['first_call_s']:.2f}", f"{r['steps_min']}-{r['steps_max']}"] for r in mem]))
    if results.get("scaling"):
        parts.append("\n**Scaling** (W1, fixed B)\n")
        parts.append(_md_table(["varied", "K", "m", "ms / training", "of peak"],
                               [[r["axis"], r["K"], r["m"], f"{r['ms_per_training']:.3g}",
                                 f"{100 * r['peak_fraction']:.1f}%"] for r in results["scaling"]]))
    s3 = results.get("W3", {})
    if "bisect" in s3:
        parts.append(f"\n**W3 search** ({s3['B']} W1-like instances, N={s3['N']}, widths {s3['widths']}; "
                     f"same answers: {s3['agreeing_instances']}/{s3['B']}, {s3['agreeing_where_monotone']}/"
                     f"{s3['monotone_instances']} where trainability is monotone in the width)\n")
        parts.append(_md_table(["strategy", "trainings / instance", "seconds", "trainings / s", "censored",
                                "non-monotone"],
                               [[st, f"{s3[st]['trainings_per_instance']:.2f}", f"{s3[st]['seconds']:.2f}",
                                 f"{s3[st]['trainings_per_s']:.3g}", s3[st]["censored"], s3[st]["non_monotone"]]
                                for st in ("bisect", "grid")]))
    sw = results.get("sweep", {})
    if "wall_s" in sw:
        parts.append(f"\n**Default sweep** ({sw['instances']} instances, {sw['trainings']} trainings)\n")
        parts.append(_md_table(["cold wall s", "compile CPU s (compiles)", "warm wall s", "bare kernel s",
                                "warm / kernel", "cold / kernel"],
                               [[f"{sw['wall_s']:.1f}", f"{sw['compile_s']:.1f} ({sw['compiles']})",
                                 f"{sw['steady_s']:.1f}", f"{sw['kernel_seconds_for_same_trainings']:.1f}",
                                 f"{sw['slowdown_steady']:.2f}x", f"{sw['slowdown_wall']:.2f}x"]]))
    rc = results.get("recompile", {})
    if rc:
        parts.append("\n**Compilation** (a second cell must not recompile)\n")
        parts.append(_md_table(["call", "seconds", "compiles", "compile s", "kernel recompiled"],
                               [[k, f"{v['seconds']:.2f}", v["compiles"], f"{v['compile_s']:.2f}",
                                 v.get("recompiled_kernel", "-")] for k, v in rc.items()]))
    if results.get("target_summary"):
        parts.append("\n**Targets**\n")
        parts.append(_md_table(["target", "value", "goal", "met"],
                               [[t["target"], f"{t['value']:.3g}{t['unit']}" if isinstance(t["value"], float)
                                 else t["value"], t["goal"], "yes" if t["met"] else "**no**"]
                                for t in results["target_summary"]]))
    return "\n".join(parts) + "\n"


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


if __name__ == "__main__":
    main()
