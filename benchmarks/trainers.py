"""Trainer benchmark: Levenberg-Marquardt beside Adam on the same lanes, and beside a scipy loop.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python3 -m benchmarks.trainers [--quick]

Rows (warm timings, compile excluded, best of ``--reps``):

* W1 (3-layer 10 -> 6 -> 6 -> 1, K = 1000) and W2 (2-layer 2 -> 16 -> 1, K = 64): time per training
  of Adam (float32, 1000 steps, the workload of the speed table in design.md) and of LM (float64,
  ``--lm-iters`` iterations) on the same problems, widths and lane count, with the fraction of this
  machine's float64 matmul peak the LM reaches. LM FLOPs per iteration (matmul-like work only): the
  Jacobian from per-sample gradients ``3 F + K P`` (``F`` = forward FLOPs ``2 K sum(in * out)``: a
  forward and a backward pass, then each row's outer products; until 2026-12-03 it was made by
  forward mode, ``2 P F``, and counted so), ``J^T J`` ``2 K P^2``, ``J^T r`` ``2 K P``, Cholesky
  ``P^3 / 3`` and its solve ``2 P^2``, the trial forward ``F``; when ``P > K`` (since 2026-12-04 LM
  then solves the ``K x K`` system) ``J D^-1 J^T`` ``2 K^2 P``, Cholesky ``K^3 / 3``, its solve
  ``2 K^2`` and ``J^T u`` ``2 K P`` instead of the normal matrix and its solve. The column "by the old
  count" keeps the forward-mode count, for comparison with earlier tables.
* LM memory: XLA's compiled memory analysis of LM's segment kernel (all lanes, all devices) against
  its model, per lane ``8 (K P + min(K, P)^2 + 6 P + (d + 2) K)`` bytes (the Jacobian, the system,
  parameters / step / gradient / trial vectors, the lane's data). Target: within 2x.
* T64 (2-layer 1 -> 64 -> 1, K = 64, P = 193): the top width bucket of the committed sweeps with an
  LM member, where the parameter-space solve (``P^3``) would outweigh the Jacobian (``K P^2``); LM
  solves the ``K x K`` system there.
* LM's linear solve alone (blocked Cholesky factor and substitutions) at P = 65, 115, 193, 301,
  against the same code in one block (the column loop), with each one's compile time.
* W2, LM vs ``scipy.optimize.least_squares(method="lm")`` per instance with an analytic numpy
  Jacobian and the same iteration budget (``max_nfev``): what a user would write instead. Target:
  ftcjax's batched LM at least 20x faster per instance.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _problems(num, K, d, seed=0):
    import jax

    import ftcjax

    return ftcjax.make_problems(jax.random.key(seed), num=num, K=K, d=d, N=max(1, K // 16))


def _time(fn, reps):
    fn()  # compile
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _forward_flops(sizes, K):
    return sum(2.0 * K * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _num_params(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _lm_flops(sizes, K, iters, *, jacobian="per-sample"):
    P, F = _num_params(sizes), _forward_flops(sizes, K)
    jac = 3 * F + K * P if jacobian == "per-sample" else 2 * P * F
    if P > K:  # LM solves the K x K system (J D^-1 J^T + mu I) u = r, then delta = -D^-1 J^T u
        system = 2 * K * K * P + K ** 3 / 3 + 2 * K * K + 2 * K * P
    else:      # the P x P normal equations
        system = 2 * K * P * P + P ** 3 / 3 + 2 * P * P
    return iters * (jac + system + 2 * K * P + F)


def _scipy_w2(prob, key, width, iters):
    """Per-instance scipy LM on a 2-layer net (analytic Jacobian), same start as ftcjax's lane."""
    import jax
    import jax.numpy as jnp
    from scipy.optimize import least_squares

    import ftcjax

    x, z = np.asarray(prob.x, np.float64), np.asarray(prob.z, np.float64)
    d = x.shape[1]
    with jax.enable_x64(True):
        p = ftcjax.init_mlp(key, width, in_dim=d, depth=2, dtype=jnp.float64)
    v0 = np.concatenate([np.asarray(a).ravel() for layer in p for a in layer])

    def split(v):
        w1 = v[:width * d].reshape(width, d)
        return w1, v[width * d:width * (d + 1)], v[width * (d + 1):width * (d + 2)], v[-1]

    # MINPACK's LM needs at least as many residuals as unknowns; W2 is overparameterised (P > K), so
    # append zero residuals (zero Jacobian rows): the objective is unchanged, and it is what a user would
    # write to run scipy's LM here.
    pad = max(0, v0.size - len(x))

    def res(v):
        w1, b1, w2, b2 = split(v)
        return np.concatenate([np.maximum(x @ w1.T + b1, 0.0) @ w2 + b2 - z, np.zeros(pad)])

    def jac(v):
        w1, b1, w2, b2 = split(v)
        pre = x @ w1.T + b1
        act = (pre > 0).astype(np.float64)
        gw1 = (act * w2)[:, :, None] * x[:, None, :]
        rows = np.concatenate([gw1.reshape(len(x), -1), act * w2, np.maximum(pre, 0.0), np.ones((len(x), 1))], 1)
        return np.concatenate([rows, np.zeros((pad, v.size))], 0)

    t0 = time.perf_counter()
    out = least_squares(res, v0, jac=jac, method="lm", max_nfev=iters, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return time.perf_counter() - t0, float(np.mean(out.fun[:len(x)] ** 2))


def _solve_rows(reps, lanes=4, sizes=(65, 115, 193, 301)):
    """LM's linear solve alone (factor + two substitutions, ``lanes`` lanes vmapped, float64): the
    blocked Cholesky LM uses against the same code in one block (the column loop)."""
    import jax
    import jax.numpy as jnp

    from ftcjax._src import lm

    rows = []
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for P in sizes:
            B = rng.standard_normal((lanes, P, P + 5))
            M = jnp.asarray(B @ B.transpose(0, 2, 1) + 1e-3 * np.eye(P))
            g = jnp.asarray(rng.standard_normal((lanes, P)))
            times = {}
            for name, kw in (("one block", dict(max_blocks=1)), ("blocked", {})):
                f = jax.jit(jax.vmap(lambda m, b, kw=kw: lm.cho_solve(lm.cho_factor(m, **kw), b)))
                t0 = time.perf_counter()
                f(M, g).block_until_ready()
                compile_s = time.perf_counter() - t0
                times[name] = (_time(lambda: f(M, g).block_until_ready(), max(reps, 20)), compile_s)
            nb = len(lm.cho_factor(jnp.eye(P)).diag)
            rows.append((P, nb, *(f"{t * 1e3:.3f} ms (compile {c:.2f} s)" for t, c in times.values()),
                         f"{times['one block'][0] / times['blocked'][0]:.1f}x"))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer lanes and iterations (a smoke run)")
    ap.add_argument("--lm-iters", type=int, default=100)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)

    import jax

    import ftcjax
    from benchmarks.harness import matmul_peak
    from benchmarks.run import SegmentSpy

    peak = matmul_peak(n=1024, dtype="float64", reps=3, backends=("jax", "numpy"))["peak_flops"]
    q = args.quick
    iters = 20 if q else args.lm_iters
    adam_steps = 200 if q else 1000
    rows = []
    # T64: the top bucket of the committed LM sweeps (worst_case, alternating: 2-layer, d = 1, widths to 64)
    for name, depth, m, K, d, lanes in (("W1", 3, 12, 1000, 10, 4 if q else 8), ("W2", 2, 16, 64, 2, 16 if q else 64),
                                        ("T64", 2, 64, 64, 1, 4 if q else 16)):
        probs = _problems(lanes, K, d)
        keys = jax.random.split(jax.random.key(1), lanes)
        widths = np.full(lanes, m)
        common = dict(depth=depth, segment=100, restarts=1, criterion="strict", tol=1e-300,
                      lanes_per_step=4)  # pinned: more lanes per step put more Jacobians in flight (LM W2: 9.5 -> 16.8 ms at the size rule)
        adam = ftcjax.Protocol(optimizer="adam", steps=adam_steps, dtype="float32", unroll=4, **common)
        lm = ftcjax.Protocol(optimizer="lm", steps=iters, dtype="float64", unroll=1,
                             **(common | dict(segment=min(100, iters))))
        t_adam = _time(lambda: ftcjax.fit_batch(probs, widths, keys=keys, protocol=adam), args.reps) / lanes
        spy = SegmentSpy()
        t_lm = _time(lambda: ftcjax.fit_batch(probs, widths, keys=keys, protocol=lm, on_segment=spy), args.reps) / lanes
        sizes = (d, m, 1) if depth == 2 else (d, m - (m + 1) // 2, (m + 1) // 2, 1)
        frac = _lm_flops(sizes, K, iters) / t_lm / peak
        frac_old = _lm_flops(sizes, K, iters, jacobian="forward") / t_lm / peak
        P = _num_params(sizes)
        mem = spy.memory_analysis().get("xla_total_bytes")
        model = lanes * 8 * (K * P + min(K, P) ** 2 + 6 * P + (d + 2) * K)
        rows.append((name, f"P={P}", lanes, f"{t_adam * 1e3:.2f} ms ({adam_steps} steps, f32)",
                     f"{t_lm * 1e3:.2f} ms ({iters} it, f64)", f"{t_lm / t_adam:.2f}", f"{100 * frac:.1f}%",
                     f"{100 * frac_old:.1f}%",
                     "-" if mem is None else f"{mem / 2**20:.2f} / {model / 2**20:.2f} MiB = {mem / model:.2f}"))
        if name == "W2":
            n_sp = 4 if q else 16
            sp = [_scipy_w2(jax.tree.map(lambda a: a[i], probs), keys[i], m, iters) for i in range(n_sp)]
            t_sp = float(np.median([s[0] for s in sp]))
            ours = ftcjax.fit_batch(probs, widths, keys=keys, protocol=lm)
            scipy_row = (t_sp, t_lm, float(np.median([s[1] for s in sp])), float(np.median(ours.mse_end[:n_sp])))
    print(f"float64 matmul peak: {peak / 1e9:.1f} GFLOP/s; devices: {len(jax.local_devices())}")
    print("| workload | params | lanes | Adam / training | LM / training | LM / Adam | LM % of f64 peak "
          "| by the old count | LM memory: XLA / model |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    t_sp, t_lm, l_sp, l_ours = scipy_row
    print()
    print("| W2, LM per instance | time | median final mse |")
    print("|---|---|---|")
    print(f"| scipy least_squares(method='lm'), analytic jac, loop | {t_sp * 1e3:.2f} ms | {l_sp:.3g} |")
    print(f"| ftcjax batched LM | {t_lm * 1e3:.2f} ms | {l_ours:.3g} |")
    print(f"| speed-up | {t_sp / t_lm:.1f}x (target >= 20x) | |")
    print()
    print("| LM solve, 4 lanes, f64: P | blocks | one block | blocked | speed-up |")
    print("|---|---|---|---|---|")
    for r in _solve_rows(args.reps, sizes=(65, 193) if q else (65, 115, 193, 301)):
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    main()
