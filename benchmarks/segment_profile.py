"""Where one training segment's time goes at W1 size: an ablation ladder, side by side in one run.

Each rung is the previous one plus one kind of work, all at the same shapes (B lanes of a 3-layer
ReLU net 10 -> 12 -> 12 -> 1 on K = 1000 samples, float32, full batch, the yardstick's layout:
feature-major activations, lanes sharded over the XLA host devices, ``lax.map`` over 4 lanes,
``lax.scan`` unrolled 4):

1. ``matmuls``: the forward products ``W h``, the input gradients ``W^T delta`` and the weight
   gradients ``delta h^T`` of every layer, with no bias, ReLU, loss or optimizer (a tiny update
   keeps them live);
2. ``+ elementwise``: the real loss and its gradient (bias, ReLU and its mask, residual), SGD update;
3. ``+ Adam``: the optax-constant Adam update with cosine rate (this is ``jax_prototype``, the
   yardstick);
4. ``ftcjax fit_batch``: the product (width masks, per-step criteria, freeze, stall tracking,
   segments, the float64 re-check at the end), with a criterion no run meets so no lane stops early.

Differences between rungs are the cost of what the rung adds. Not a tracing profiler: XLA fuses
the elementwise work into the matmul loops' neighbours, so a per-op trace would not separate them
either; the ladder measures what removing each kind of work would save.

    python benchmarks/segment_profile.py              # W1 size, ~1-2 min on 2 idle cores
    python benchmarks/segment_profile.py --quick      # K = 200, under a minute (compiles dominate)
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

if __name__ == "__main__":
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = (flags + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}").strip()
    if str(_REPO) not in sys.path:
        sys.path.insert(0, str(_REPO))

import numpy as np  # noqa: E402

from benchmarks.harness import matmul_peak, time_fn  # noqa: E402

NEVER_TOL = 1e-30


def _rungs(steps, lr):
    import jax
    import jax.numpy as jnp

    def matmuls(params, x_t, z):
        def step(p, t):
            hs, h = [x_t], x_t
            for w, _ in p:
                h = w @ h
                hs.append(h)
            delta = hs[-1] - z[None, :]
            grads = []
            for (w, _), h_in in zip(reversed(p), reversed(hs[:-1])):
                grads.append(delta @ h_in.T)
                delta = w.T @ delta
            grads = grads[::-1]
            return tuple((w - 1e-9 * g, b) for (w, b), g in zip(p, grads)), None

        p, _ = jax.lax.scan(step, params, jnp.arange(steps), unroll=4)
        return jnp.sum(p[-1][0])

    def loss(p, x_t, z):
        h = x_t
        for w, b in p[:-1]:
            h = jax.nn.relu(w @ h + b[:, None])
        w, b = p[-1]
        return jnp.mean(((w @ h + b[:, None])[0] - z) ** 2)

    def sgd(params, x_t, z):
        def step(p, t):
            g = jax.grad(loss)(p, x_t, z)
            return jax.tree.map(lambda a, gg: a - lr * gg, p, g), None

        p, _ = jax.lax.scan(step, params, jnp.arange(steps), unroll=4)
        return loss(p, x_t, z)

    return {"matmuls": matmuls, "+ elementwise (loss, ReLU, bias; SGD)": sgd}


def _sharded(fn, chunk=4):
    import jax

    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("i",), devices=devices)
    spec = jax.P("i")
    per_device = lambda params, x_t, z: jax.lax.map(lambda a: fn(*a), (params, x_t, z), batch_size=chunk)  # noqa: E731
    jitted = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec))
    sharding = jax.NamedSharding(mesh, spec)
    return lambda *args: np.asarray(jitted(*jax.device_put(args, sharding)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    import jax

    import ftcjax
    from benchmarks import jax_prototype as proto

    K, d, widths, B, steps = (200, 10, (12, 12), 16, 100) if a.quick else (1000, 10, (12, 12), a.B, a.steps)
    sizes = (d, *widths, 1)
    lr = 1e-2
    probs = ftcjax.make_problems(jax.random.key(1), num=B, K=K, d=d, N=min(50, K // 4), dtype="float32")
    x_t = np.ascontiguousarray(np.swapaxes(np.asarray(probs.x), 1, 2))
    z = np.asarray(probs.z)
    params = proto.init_params(jax.random.key(0), sizes, B)
    flops = steps * 3 * sum(2 * K * i * o for i, o in zip(sizes[:-1], sizes[1:]))  # per training

    calls = {}
    for name, fn in _rungs(steps, lr).items():
        calls[name] = (lambda f: lambda: f(params, x_t, z))(_sharded(fn))
    yard = proto.make_trainer(steps=steps, learning_rate=lr, schedule="cosine")
    calls["+ Adam, cosine rate (the JAX yardstick)"] = lambda: yard(params, x_t, z)
    protocol = ftcjax.Protocol(depth=3, learning_rate=lr, schedule="cosine", steps=steps, restarts=1,
                               criterion="strict", tol=NEVER_TOL, dtype="float32", lanes_per_step=4)
    keys = jax.random.split(jax.random.key(0), B)
    w = np.full((B,), sum(widths), np.int32)
    call = lambda: jax.device_get(ftcjax.fit_batch(probs, w, keys=keys, protocol=protocol).mse)  # noqa: E731
    calls["+ product: masks, criteria, freeze, segments, float64 re-check (ftcjax fit_batch)"] = call
    for f in calls.values():
        f()  # compile
    # Interleaved rounds (every rung once per round), best per rung: on a shared machine a slow
    # moment then hits every rung alike instead of one rung's whole timing.
    times = {name: [] for name in calls}
    for _ in range(a.rounds):
        for name, f in calls.items():
            times[name].extend(time_fn(f, warmup=0, reps=1).times)
    rows = []
    for name, ts in times.items():
        ms = 1e3 * min(ts) / B
        rows.append({"rung": name, "ms_per_training": ms, "gflops": flops / (ms * 1e-3) / 1e9, "times_s": ts})

    # The float32 matmul peak measured in this run (every backend present, the best): the rungs'
    # fractions of it compare across days, their milliseconds do not.
    peak = matmul_peak(dtype="float32", backends=("jax", "numpy"))
    for r in rows:
        r["fraction_of_peak"] = r["gflops"] * 1e9 / peak["peak_flops"]
    total = rows[-1]["ms_per_training"]
    prev = 0.0
    print(f"\nsegment profile: B = {B}, K = {K}, sizes {sizes}, {steps} steps, float32, "
          f"{jax.device_count()} host devices; best of {a.rounds} interleaved rounds; float32 matmul peak "
          f"{peak['peak_flops'] / 1e9:.0f} GFLOP/s\n")
    print(f"{'rung':<88} {'ms/training':>11} {'added':>8} {'share':>6} {'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        r["added_ms"] = r["ms_per_training"] - prev
        r["share_of_product"] = r["added_ms"] / total
        prev = r["ms_per_training"]
        print(f"{r['rung']:<88} {r['ms_per_training']:>11.3f} {r['added_ms']:>8.3f} "
              f"{100 * r['share_of_product']:>5.1f}% {r['gflops']:>8.1f} {100 * r['fraction_of_peak']:>7.1f}%")
    result = {"B": B, "K": K, "d": d, "sizes": list(sizes), "steps": steps, "devices": jax.device_count(),
              "stamp": time.strftime("%Y%m%dT%H%M", time.gmtime()), "load_avg": os.getloadavg(),
              "matmul_peak": peak, "rows": rows}
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
