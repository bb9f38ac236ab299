"""A sweep in a new run directory, with an empty and with a filled user-level compilation cache.

    python3 benchmarks/cold_sweep.py                       # the default sweep, ~1-2 min on 2 cores
    python3 benchmarks/cold_sweep.py --spec sweeps/x.toml --out FILE.json

Runs ``ftcjax run SPEC --out NEW_DIR --no-report`` twice in fresh processes sharing one new
compilation cache (``FTCJAX_COMPILATION_CACHE``): the first starts from an empty cache (a user's
very first run of these shapes), the second from the cache the first filled (every later run,
whatever its directory). Reports wall time, the children's CPU time, and jax's own counts of
backend compilation requests and persistent-cache hits (real compilations = requests - hits).
Then (unless ``--no-kernel``; the default spec only) runs ``run.py --only sweep`` in a third
process for the bare kernel's seconds for the same trainings, and reports both runs' wall time over
it, side by side: the issue-15 target "cold default sweep <= 1.5x the bare kernel", for a user's
very first run (empty cache) and for every later run in a new directory (filled cache).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DRIVER = textwrap.dedent("""
    import json, sys
    import jax
    counts = {"requests": 0, "hits": 0, "segments_compiled": 0, "segments_loaded": 0, "store_hits": 0}
    def on_duration(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            counts["requests"] += 1
    def on_event(event, **kw):
        if event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1
        # the training segment: compiled once per shape, loaded onto the other devices and, in a
        # later process, from ftcjax's own store (ftcjax._src.executables)
        for name, field in (("compiled", "segments_compiled"), ("loaded", "segments_loaded"),
                            ("store_hits", "store_hits")):
            if event == "/ftcjax/executables/" + name:
                counts[field] += 1
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    from ftcjax.cli import main
    rc = main(sys.argv[1:])
    print("COUNTS " + json.dumps(dict(counts, rc=rc)))
""")


def one_run(spec: str, out_dir: Path, cache: Path, extra: list[str]) -> dict:
    env = dict(os.environ, FTCJAX_COMPILATION_CACHE=str(cache))
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DRIVER, "run", spec, "--out", str(out_dir),
                           "--no-report", "--progress", "none", *extra],
                          env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("COUNTS ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"cold_sweep: the run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    counts = json.loads(line[-1][len("COUNTS "):])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "compile_requests": counts["requests"],
            "cache_hits": counts["hits"], "compilations": counts["requests"] - counts["hits"],
            **{k: counts.get(k, 0) for k in ("segments_compiled", "segments_loaded", "store_hits")}}


def bare_kernel_seconds(out: Path, cache: Path) -> float:
    """``run.py --only sweep``'s bare-kernel seconds for the default sweep's trainings (own process)."""
    env = dict(os.environ, FTCJAX_COMPILATION_CACHE=str(cache))
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--only", "sweep", "--no-torch",
                           "--out", str(out)], env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"cold_sweep: the kernel measurement failed:\n{proc.stderr[-2000:]}")
    return float(json.loads(out.read_text())["sweep"]["kernel_seconds_for_same_trainings"])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spec", default=str(REPO / "sweeps" / "default.toml"))
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument("--no-kernel", action="store_true", help="skip the bare-kernel measurement")
    ap.add_argument("extra", nargs="*", help="more `ftcjax run` options (after --)")
    args = ap.parse_args(argv)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="ftcjax-cold-") as tmp:
        cache = Path(tmp) / "cache"
        for label in ("empty cache", "filled cache"):
            rows[label] = one_run(args.spec, Path(tmp) / label.replace(" ", "-"), cache, args.extra)
            r = rows[label]
            print(f"  {label:12s}: wall {r['wall_s']:6.1f} s  cpu {r['cpu_s']:6.1f} s  compilations "
                  f"{r['compilations']:4d} of {r['compile_requests']} requests ({r['cache_hits']} hits); "
                  f"segments {r['segments_compiled']} compiled, {r['segments_loaded']} loaded "
                  f"({r['store_hits']} from the store)", flush=True)
        kernel = None
        default = Path(args.spec).resolve() == (REPO / "sweeps" / "default.toml").resolve()
        if not args.no_kernel and default and not args.extra:
            kernel = bare_kernel_seconds(Path(tmp) / "kernel.json", cache)
    result = {"spec": args.spec, "load_before": load, "runs": rows,
              "second_over_first": rows["filled cache"]["wall_s"] / rows["empty cache"]["wall_s"]}
    print(f"cold sweep {Path(args.spec).name} (load {load:.1f} before): a new directory with a filled "
          f"cache takes {result['second_over_first']:.2f}x the first run's wall time")
    if kernel is not None:
        result["bare_kernel_s"] = kernel
        for label in rows:
            result[f"{label.replace(' ', '_')}_over_kernel"] = rows[label]["wall_s"] / kernel
        print(f"bare kernel for the same trainings: {kernel:.2f} s; empty cache "
              f"{result['empty_cache_over_kernel']:.2f}x, filled cache {result['filled_cache_over_kernel']:.2f}x "
              "(goal <= 1.5x)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
