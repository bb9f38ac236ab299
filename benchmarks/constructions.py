"""Time of every explicit construction at the paper's sizes (numpy + fractions; no jax).

    python3 benchmarks/constructions.py                 # both sizes, every construction, ~1-3 min
    python3 benchmarks/constructions.py --quick         # tiny sizes: does it all run?
    python3 benchmarks/constructions.py --out FILE.json

Each row builds one construction on a Gaussian instance (x ~ N(0, I_d), N changed samples with
z ~ U[-1, 1], 0 elsewhere; the same instance for every construction at a size) WITH its exact
verification where it is exact (``verify=True``: g(x_i) = z_i checked in rationals; the 2-layer
float64 constructions report their float error instead), in a fresh process with a time limit, so
one slow construction cannot stall the table. Wall time and CPU time (``time.process_time``) are
both reported: on a shared machine the wall time is inflated by other processes, the CPU time is
what the construction itself costs. Targets (issue 15): K = 1000, N = 100, d = 10 under 10 s;
K = 20000, N = 3, d = 10 under 30 s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

SIZES = [  # (K, N, d, target seconds)
    (1000, 100, 10, 10.0),
    (20000, 3, 10, 30.0),
]
QUICK_SIZES = [(60, 6, 3, 10.0), (400, 2, 3, 30.0)]
NAMES = ["thm44", "thm44_exact", "slab", "tooth", "u3", "u3_T", "4n4", "u1", "u2", "deep_L6"]


def instance(K: int, N: int, d: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((K, d))
    changed = np.zeros(K, dtype=bool)
    changed[rng.choice(K, N, replace=False)] = True
    z = np.where(changed, rng.uniform(-1.0, 1.0, K), 0.0)
    return x, z, changed


def build(name: str, x, z, changed):
    from ftcjax import constructions as C
    three = dict(rng=0, rescale=True, verify=True)
    return {
        "thm44": lambda: C.two_layer_thm44(x, z, changed, rng=0),
        "thm44_exact": lambda: C.two_layer_thm44(x, z, changed, rng=0, exact=True, verify=True),
        "slab": lambda: C.two_layer_slab(x, z, changed, rng=0),
        "tooth": lambda: C.tooth(x, z, changed, **three),
        "u3": lambda: C.three_layer_u3(x, z, changed, **three),
        "u3_T": lambda: C.three_layer_u3(x, z, changed, points="T", **three),
        "4n4": lambda: C.three_layer_4n4(x, z, changed, **three),
        "u1": lambda: C.three_layer_u1(x, z, changed, **three),
        "u2": lambda: C.three_layer_u2(x, z, changed, **three),
        "deep_L6": lambda: C.deep_stacked(x, z, changed, L=6, **three),
    }[name]()


def _one(name: str, K: int, N: int, d: int) -> dict:
    """Child process: build once, print one JSON line."""
    x, z, changed = instance(K, N, d)
    import ftcjax.constructions  # noqa: F401  (the import, jax included, is not the build's cost)
    t0, c0 = time.perf_counter(), time.process_time()
    c = build(name, x, z, changed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"name": name, "K": K, "N": N, "d": d, "wall_s": wall, "cpu_s": cpu,
            "neurons": c.neurons, "bound": c.bound, "exact": c.exact_layers is not None,
            "float_error": c.float_error}


def run(sizes, names, limit_factor: float = 3.0) -> list[dict]:
    rows = []
    here = os.path.abspath(__file__)
    repo = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ)     # the children time this checkout's ftcjax, like the parent imports
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for K, N, d, target in sizes:
        for name in names:
            limit = target * limit_factor
            cmd = [sys.executable, here, "--one", name, str(K), str(N), str(d)]
            t0 = time.perf_counter()
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
            except subprocess.TimeoutExpired:
                rows.append({"name": name, "K": K, "N": N, "d": d, "target_s": target,
                             "wall_s": None, "cpu_s": None, "status": f"over {limit:.0f} s (killed)"})
                print(f"  {name:12s} K={K:6d} N={N:4d}: over {limit:.0f} s", flush=True)
                continue
            if out.returncode != 0:
                err = (out.stderr.strip().splitlines() or ["?"])[-1]
                rows.append({"name": name, "K": K, "N": N, "d": d, "target_s": target,
                             "wall_s": time.perf_counter() - t0, "cpu_s": None,
                             "status": f"failed: {err}"})
                print(f"  {name:12s} K={K:6d} N={N:4d}: failed: {err}", flush=True)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["target_s"] = target
            row["status"] = "ok" if row["cpu_s"] <= target else "over target"
            rows.append(row)
            print(f"  {name:12s} K={K:6d} N={N:4d}: wall {row['wall_s']:7.2f} s  cpu "
                  f"{row['cpu_s']:7.2f} s  neurons {row['neurons']:5d}  {row['status']}", flush=True)
    return rows


def render(rows) -> str:
    lines = ["| construction | K | N | d | wall s | CPU s | target s | neurons | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = (lambda v: "-" if v is None else f"{v:.2f}")
        lines.append(f"| {r['name']} | {r['K']} | {r['N']} | {r['d']} | {f(r.get('wall_s'))} | "
                     f"{f(r.get('cpu_s'))} | {r['target_s']:.0f} | {r.get('neurons', '-')} | "
                     f"{r['status']} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", default=None, help="comma-separated construction names")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--one", nargs=4, metavar=("NAME", "K", "N", "D"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        name, K, N, d = args.one
        print(json.dumps(_one(name, int(K), int(N), int(d))))
        return []
    names = args.only.split(",") if args.only else NAMES
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        ap.error(f"--only: unknown construction(s) {unknown}; choose from {NAMES}")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"constructions: {platform.node()} load {load:.1f} on {os.cpu_count()} cores "
          "(CPU s is the construction's own cost; wall s includes waiting for other processes)")
    rows = run(QUICK_SIZES if args.quick else SIZES, names)
    print(render(rows))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"load_before": load, "rows": rows}, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
