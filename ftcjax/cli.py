"""The ``ftcjax`` command line: run sweeps, watch them, export and analyse their results.

Bad input (a malformed spec, a run directory holding another sweep, a bad option) prints a message
naming the field and exits with status 2, never a traceback. Trouble with the machine or the file
system (a full disk, a read-only or damaged run directory, a planted link, too little memory, a
distributed peer that died) prints one line saying what was saved and exits with status 3. Heavy imports (jax, the kernels, the
analysis and matplotlib) happen inside the subcommands, after the device options are applied.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from ftcjax._src.errors import FTCEnvironmentError, FTCInputError  # plain exceptions: import nothing heavy

__all__ = ["main", "default_spec_path"]

EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


def default_spec_path() -> Path:
    """The shipped default spec: inside the package (works after any install), else the repo's copy."""
    here = Path(__file__).resolve().parent
    for cand in (here / "sweep" / "default.toml", here.parent / "sweeps" / "default.toml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError("default.toml")


def _resolve_spec(arg: str | None) -> Path:
    if arg is None or arg == "default":
        try:
            return default_spec_path()
        except FileNotFoundError:
            raise FTCInputError("SPEC: the default spec (ftcjax/sweep/default.toml) is missing from this "
                                "install; give a spec file") from None
    p = Path(arg)
    if not p.exists() and not p.suffix:
        for cand in (Path("sweeps") / f"{arg}.toml", default_spec_path().parent / f"{arg}.toml"):
            if cand.is_file():
                return cand
    return p


def _version() -> str:
    from ftcjax import __version__  # the package face imports no jax

    return __version__


def _load_spec_and_overrides(items: list[str]):
    """``[SPEC] [KEY=VALUE ...]`` -> the validated spec (SPEC may be left out: the default spec)."""
    from ftcjax.sweep.spec import load_spec

    items = list(items or [])
    spec_arg = None
    if items and not ("=" in items[0] and not Path(items[0]).exists()):
        spec_arg = items.pop(0)
    bad = [i for i in items if "=" not in i]
    if bad:
        raise FTCInputError(f"SPEC: give one spec file, then KEY=VALUE overrides; {bad[0]!r} is neither")
    return load_spec(_resolve_spec(spec_arg), overrides=items)


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftcjax", formatter_class=_formatter,
        description="Measure the fine-tuning capacity of small ReLU networks: run sweeps of minimal-width "
                    "searches, durably and resumably, and analyse them.",
        epilog=textwrap.dedent("""\
            examples:
              ftcjax run                          # the default sweep into runs/default
              ftcjax run sweeps/my.toml --out runs/my
              ftcjax status runs/default          # while it runs, from another shell
              ftcjax export runs/default --csv -  # one CSV row per instance
              ftcjax report runs/default
            """))
    p.add_argument("--version", action="version", version=f"ftcjax {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser(
        "run", formatter_class=_formatter, help="run (or resume) a sweep spec into a run directory",
        description="Run a TOML sweep spec into an output directory. Rerunning the same command resumes: "
                    "finished chunks are skipped. A directory holding a different spec is refused.",
        epilog=textwrap.dedent("""\
            examples:
              ftcjax run                                  # sweeps/default.toml -> runs/default
              ftcjax run sweeps/my.toml --out runs/my     # kill it any time; rerun to resume
              ftcjax run default train.steps=500 grid.N=[1,2,4] --out runs/quick
              ftcjax run my.toml grid.N=[1,2,4,8,16,32]   # grow a finished run: only new instances run
              ftcjax run my.toml --shard 3/16             # SLURM array task 3 of 16 (same --out for all)
              srun -n 4 ftcjax run my.toml --out /shared/runs/my   # jax.distributed, auto-detected
            """))
    r.add_argument("spec", nargs="*", metavar="SPEC [KEY=VALUE ...]",
                   help="TOML sweep spec (default: the shipped default.toml), then overrides such as "
                        "train.steps=500 grid.N=[1,2,4] (validated like the file, recorded in DIR)")
    r.add_argument("--out", metavar="DIR", help="run directory (default: runs/<spec name>)")
    r.add_argument("--shard", metavar="I/N", default="0/1",
                   help="run only shard I of N (chunks c with c %% N == I); shards share --out")
    r.add_argument("--cpu-devices", type=int, metavar="N",
                   help="XLA host devices on CPU (default: one per usable core, unless XLA_FLAGS or "
                        "JAX_NUM_CPU_DEVICES already set it)")
    r.add_argument("--compilation-cache", metavar="DIR|off",
                   help="persistent XLA compilation cache, shared by your runs (default: "
                        "$FTCJAX_COMPILATION_CACHE, else $XDG_CACHE_HOME/ftcjax or ~/.cache/ftcjax; "
                        "a subdirectory per jax version; 'off' disables)")
    r.add_argument("--distributed", choices=("auto", "on", "off"), default="auto",
                   help="start jax.distributed: auto = when a multi-task SLURM step or "
                        "JAX_COORDINATOR_ADDRESS is detected (default auto)")
    r.add_argument("--coordinator", metavar="HOST:PORT", help="jax.distributed coordinator address")
    r.add_argument("--num-processes", type=int, metavar="N", help="jax.distributed process count")
    r.add_argument("--process-id", type=int, metavar="I", help="jax.distributed index of this process")
    r.add_argument("--progress", choices=("auto", "bar", "log", "none"), default="auto",
                   help="bar on a terminal, log lines otherwise (default auto)")
    r.add_argument("--log-interval", type=float, default=30.0, metavar="S",
                   help="seconds between log lines when not on a terminal (default 30)")
    r.add_argument("--max-chunks", type=int, metavar="N", help="stop after N chunks (resume later)")
    r.add_argument("--no-report", action="store_true",
                   help="do not write the report and figures at the end")
    r.add_argument("--until-converged", action="store_true",
                   help="also run a reseeded copy (noise floor) and 2x steps / 2x restarts, and double the "
                        "budget of the groups whose widths still move beyond the noise floor")
    r.add_argument("--max-factor", type=int, default=8, metavar="F",
                   help="largest budget factor for --until-converged (default 8)")

    v = sub.add_parser("validate", formatter_class=_formatter, help="check a spec and print its plan",
                       description="Validate a sweep spec (every problem reported at once) and print its "
                                   "hash, cells, instances, chunks, the effective protocol with every "
                                   "default filled in, and an estimated cost, without running anything.",
                       epilog="examples:\n  ftcjax validate sweeps/default.toml\n"
                              "  ftcjax validate default train.steps=500")
    v.add_argument("spec", nargs="*", metavar="SPEC [KEY=VALUE ...]", help="spec file and overrides, as for run")
    v.add_argument("--out", metavar="DIR",
                   help="run directory whose measured throughput prices the estimate (default runs/<name>)")

    s = sub.add_parser("status", formatter_class=_formatter, help="progress and results of a run directory",
                       description="Done / pending / censored counts, throughput and a per-cell table of "
                                   "minimal widths. Safe while the sweep runs.",
                       epilog="example:\n  ftcjax status runs/default\n  ftcjax status runs/default --json")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    e = sub.add_parser("export", formatter_class=_formatter, help="export results as CSV",
                       description="One CSV row per finished instance (plan order) with every probe "
                                   "summarised. Safe while the sweep runs.",
                       epilog="examples:\n  ftcjax export runs/default --csv results.csv\n"
                              "  ftcjax export runs/default --csv - | head")
    e.add_argument("dir", metavar="DIR")
    e.add_argument("--csv", required=True, metavar="PATH|-", help="output file, or - for stdout")

    rp = sub.add_parser("report", formatter_class=_formatter, help="exponent fits and tables of a run",
                        description="Fit log m* on log N per group, with bootstrap intervals and censoring "
                                    "counts, beside the theory.",
                        epilog="examples:\n  ftcjax report runs/default --format markdown --output report.md\n"
                               "  ftcjax report runs/a runs/b --format json   # two runs merged")
    rp.add_argument("dir", nargs="+", metavar="DIR", help="run directories (several are merged)")
    rp.add_argument("--format", default="table", help="table, markdown, csv or json (default table)")
    rp.add_argument("--output", metavar="PATH", help="write here instead of stdout")
    rp.add_argument("--over", choices=("N", "K"), help="fit the width against N or K (default: the axis with more values)")

    cv = sub.add_parser(
        "convergence", formatter_class=_formatter,
        help="convergence checks: re-search the same instances with more budget or new seeds",
        description="Convergence check of the measurement: write specs with more budget (double, budget) "
                    "or new training seeds (reseed), compare two runs, judge a budget shift against the "
                    "noise floor (verdict), or run until converged (until).",
        epilog="examples:\n  ftcjax convergence double sweeps/default.toml runs/default-x2.toml\n"
               "  ftcjax run runs/default-x2.toml --out runs/default-x2\n"
               "  ftcjax convergence compare runs/default runs/default-x2")
    from ftcjax._convergence_cli import add_actions  # argparse only: imports nothing heavy

    add_actions(cv.add_subparsers(dest="action", metavar="ACTION"), _formatter)

    b = sub.add_parser("bracket", formatter_class=_formatter,
                       help="capacity bracket per instance: proven lower bound, best known, trained",
                       description="Regenerate every instance of a run from its seed and put three numbers "
                                   "side by side: the best proven lower bound (with what it assumes), the "
                                   "best known network (constructions built on the instance, float64 strict "
                                   "fits) and each protocol's trained widths; fit the trainability gap.",
                       epilog="examples:\n  ftcjax bracket runs/worst_case\n"
                              "  ftcjax bracket runs/k_dependence --over K --out figures/k_dependence")
    b.add_argument("dir", metavar="DIR", help="run directory")
    b.add_argument("--over", choices=("N", "K"), help="the axis the gap is fitted against (default: the report's)")
    b.add_argument("--out", metavar="DIR", help="where bracket.md and bracket.png/.pdf go (default DIR/figures)")

    c = sub.add_parser("cache", formatter_class=_formatter,
                       help="show or clear the persistent compilation cache",
                       description="Show where the persistent compilation cache is (the one `ftcjax run` uses "
                                   "with the same --compilation-cache and environment), what it holds per jax "
                                   "version (jax's entries and ftcjax's compiled training segments) and its size; "
                                   "--clear deletes this jax version's part (a later run recompiles).",
                       epilog="examples:\n  ftcjax cache\n  ftcjax cache --clear\n  ftcjax cache --clear --all-versions\n"
                              "  ftcjax cache --compilation-cache /scratch/me/ftc --json")
    c.add_argument("--compilation-cache", metavar="DIR|off",
                   help="the cache root to inspect (default: as `ftcjax run`: $FTCJAX_COMPILATION_CACHE, else "
                        "$XDG_CACHE_HOME/ftcjax or ~/.cache/ftcjax)")
    c.add_argument("--clear", action="store_true", help="delete this jax version's cache directory")
    c.add_argument("--all-versions", action="store_true", help="with --clear: every jax version's")
    c.add_argument("--json", action="store_true", help="print the listing as JSON")

    f = sub.add_parser("figures", formatter_class=_formatter, help="draw the figures of a run",
                       description="Write every figure the stored results allow (PNG and PDF by default).",
                       epilog="examples:\n  ftcjax figures runs/default --out figs/\n"
                              "  ftcjax figures runs/a runs/b --groups depth=3 --no-caption --format pdf --size 7,4\n"
                              "  ftcjax figures runs/default --curves --instances ID,ID   # needs [train] history_every")
    f.add_argument("dir", nargs="+", metavar="DIR", help="run directories (several are merged)")
    f.add_argument("--out", metavar="DIR", help="output folder (default DIR/figures of the first DIR)")
    f.add_argument("--groups", action="append", default=[], metavar="AXIS=V1,V2",
                   help="draw only these axis values (repeatable), e.g. --groups d=2,10 --groups depth=3")
    f.add_argument("--no-caption", action="store_true", help="leave out the protocol line under each figure")
    f.add_argument("--format", default="png,pdf", metavar="FMT[,FMT]", help="png, pdf and/or svg (default png,pdf)")
    f.add_argument("--size", metavar="W,H", help="figure size in inches for every figure, e.g. 7,4")
    f.add_argument("--dpi", type=int, default=130, help="resolution of raster formats (default 130)")
    f.add_argument("--curves", action="store_true",
                   help="draw only the training curves (loss and max error per step, every probe and restart) "
                        "as curves.<format>; the run must have set history_every in [train]")
    f.add_argument("--instances", metavar="ID[,ID]",
                   help="with --curves: these instance ids (default: up to 6, censored, undecided, non-monotone and "
                        "outlier instances first)")
    return p


def _err(msg: str) -> int:
    print(f"ftcjax: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _setup_jax(args, out_dir: Path) -> None:
    """Devices, compilation cache: must happen before jax initialises its backends."""
    from ftcjax.sweep.distributed import configure_cpu_devices

    if args.cpu_devices is not None and args.cpu_devices < 1:
        raise FTCInputError(f"--cpu-devices: {args.cpu_devices} must be >= 1")
    configure_cpu_devices(args.cpu_devices)

    from ftcjax.sweep.compile_cache import configure_compilation_cache

    configure_compilation_cache(args.compilation_cache)  # user-level, private, per jax version


def _check_name(option: str, value: str | None) -> None:
    """Paths given on the command line: no control characters (newline, ESC) in names we create."""
    if value is not None and any(not c.isprintable() for c in str(value)):
        raise FTCInputError(f"{option}: {str(value)!r} contains control characters; choose a plain name")


def _cmd_run(args) -> int:
    from ftcjax.sweep.distributed import DistributedConfig, maybe_initialize, parse_shard, writer_share

    shard = parse_shard(args.shard)
    if args.max_chunks is not None and args.max_chunks < 0:
        raise FTCInputError(f"--max-chunks: {args.max_chunks} must be >= 0")
    _check_name("--out", args.out)
    spec = _load_spec_and_overrides(args.spec)  # validation before any work
    out_dir = Path(args.out) if args.out else Path("runs") / spec.name
    from ftcjax.sweep.store import RunDir

    RunDir(out_dir).check(spec)  # a different sweep in DIR: refuse before touching devices
    _setup_jax(args, out_dir)
    if args.until_converged:
        import tomllib

        from ftcjax.analysis.convergence import _run_spec_dir, format_until, until_converged

        from ftcjax.sweep.spec import apply_overrides

        data = apply_overrides(tomllib.loads(spec.text), spec.overrides)  # the spec as validated
        data.setdefault("name", spec.name)
        st = until_converged(data, str(out_dir), run=_run_spec_dir, max_factor=args.max_factor)
        print(format_until(st, args.max_factor))
        return 0
    process = maybe_initialize(DistributedConfig(args.distributed, args.coordinator, args.num_processes,
                                                 args.process_id))
    index, count = writer_share(shard, process)

    from ftcjax.sweep.progress import Progress
    from ftcjax.sweep.results import format_table
    from ftcjax.sweep.results import status
    from ftcjax.sweep.runner import run_sweep, writer_name

    progress = None
    if args.progress != "none":
        tty = {"bar": True, "log": False}.get(args.progress)
        label = writer_name(index, count) if count > 1 else ""
        progress = Progress(tty=tty, interval=args.log_interval, label=label)
    print(f"ftcjax: sweep {spec.name!r} ({spec.hash}) -> {out_dir}"
          + (f" as writer {index + 1} of {count}" if count > 1 else ""), file=sys.stderr)
    summary = run_sweep(spec, out_dir, shard_index=index, shard_count=count, progress=progress,
                        max_chunks=args.max_chunks)
    for note in summary.notes:
        print(_one_line(f"ftcjax: {note}"), file=sys.stderr)
    if process[1] > 1:
        from ftcjax.sweep.distributed import barrier

        try:
            waited = barrier("ftcjax-run-finished")  # process 0 reports on the union, once all are done
        except FTCEnvironmentError as e:
            # A peer died: the runtime's error poller aborts this process any moment now, so say
            # what is saved and leave at once (every finished chunk is already fsynced).
            print(_one_line(f"ftcjax: error: {e}"), file=sys.stderr, flush=True)
            os._exit(EXIT_ENVIRONMENT)
        if not waited:
            print(f"ftcjax: this process finished its share ({summary.chunks_run} chunks); the others "
                  f"could not be awaited: `ftcjax status {out_dir}` shows what is done", file=sys.stderr)
    st = status(out_dir)
    print(f"\n{st['instances_done']}/{st['instances_total']} instances done in {out_dir} "
          f"({summary.chunks_run} chunks computed now, {summary.chunks_skipped} already done); "
          f"censored {st['censored']}, unresolved {st['unresolved']}, trivial {st['trivial']}")
    print("minimal widths per cell (censored and unresolved instances are counted, not averaged):")
    print(format_table(st["summary"], st["summary_columns"]))
    if st["instances_pending"]:
        print(f"{st['instances_pending']} instances pending (other shards, or --max-chunks): rerun to "
              f"resume, then `ftcjax report {out_dir}`")
        return 0
    if args.no_report or process[0] != 0:
        return 0
    try:
        from ftcjax.analysis import write_default_outputs
    except ImportError as e:
        print(f"note: analysis outputs not written (ftcjax.analysis unavailable: {e}); results are in "
              f"{out_dir}", file=sys.stderr)
        return 0
    write_default_outputs(str(out_dir))
    print(f"report and figures written under {out_dir}")
    return 0


def _cmd_validate(args) -> int:
    from ftcjax.sweep.plan import cost_estimate, make_plan
    from ftcjax.sweep.spec import canonical_dict

    from ftcjax.sweep.guards import memory_problems

    spec = _load_spec_and_overrides(args.spec)
    _check_name("--out", args.out)
    too_big = memory_problems(spec)
    if too_big:
        raise FTCInputError("\n".join(too_big))
    plan = make_plan(spec)
    print(f"spec {spec.name!r} is valid; hash {spec.hash}")
    if spec.overrides:
        print(f"overrides: {' '.join(spec.overrides)}")
    print(f"cells {len(spec.cells())} x replicates {spec.replicates} = {spec.num_instances} instances "
          f"in {len(plan)} chunks of up to {spec.chunk_size}")
    w = list(spec.widths)
    steps = {b - a for a, b in zip(w, w[1:])}
    shown = f"{w[0]}..{w[-1]} step {steps.pop()}" if len(w) > 3 and len(steps) == 1 else str(w)
    print(f"widths {shown} ({len(w)} candidates, {spec.strategy}, rule {spec.search_rule})")
    canon = canonical_dict(spec)
    print("effective settings (every default filled in; a list is an axis of the grid):")
    for table in ("grid", "train"):
        parts = [f"{k} = {_toml_value(v[0] if len(v) == 1 else v)}" for k, v in canon[table].items()]
        print(textwrap.fill(", ".join(parts), width=100, initial_indent=f"  [{table}] ",
                            subsequent_indent=" " * (len(table) + 5)))
    out_dir = Path(args.out) if args.out else Path("runs") / spec.name
    cost = cost_estimate(spec, run_dir=out_dir)
    print(f"estimated cost: up to {cost['trainings']:,} trainings ({spec.num_instances} instances x up to "
          f"{cost['probes_per_instance']} probes x restarts) of up to {cost['max_steps']:,} steps each")
    if cost["seconds"] is not None:
        print(f"  about {_duration(cost['seconds'])} at {cost['seconds_per_training'] * 1e3:.3g} ms per training "
              f"(measured in {cost['measured_in']}); a first run also compiles each batch group")
    else:
        print("  time: no measured throughput yet (it is read from a run directory of this sweep: "
              "ftcjax validate SPEC --out DIR)")
    return 0


def _toml_value(v) -> str:
    import json

    return json.dumps(v)


def _duration(seconds: float) -> str:
    from ftcjax.sweep.progress import format_duration

    return format_duration(seconds)


def _cmd_status(args) -> int:
    from ftcjax.sweep.results import format_status, status, status_json

    _check_name("DIR", args.dir)
    print(status_json(args.dir) if args.json else format_status(status(args.dir)))
    return 0


def _cmd_export(args) -> int:
    from ftcjax.sweep.results import write_csv

    if args.csv == "-":
        n = write_csv(args.dir, sys.stdout)
    else:
        import io

        from ftcjax.sweep.files import atomic_write_bytes

        path = Path(args.csv)
        _check_name("--csv", args.csv)
        if path.is_dir():
            raise FTCInputError(f"--csv: {str(path)!r} is a directory; give a file name")
        buf = io.StringIO(newline="")
        n = write_csv(args.dir, buf)  # read everything first: a bad run directory writes nothing
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
        print(f"{n} rows written to {path}", file=sys.stderr)
    return 0


def _cmd_report(args) -> int:
    from ftcjax.analysis import FORMATS, report_text

    if args.format not in FORMATS:
        raise FTCInputError(f"--format: unknown format {args.format!r}; choose one of {', '.join(FORMATS)}")
    for d in args.dir:
        _check_name("DIR", d)
    if args.output not in (None, "-"):
        _check_name("--output", args.output)
        out = Path(args.output)
        if out.is_dir():
            raise FTCInputError(f"--output: {args.output!r} is a directory; give a file name")
        if not out.parent.is_dir():
            raise FTCInputError(f"--output: the directory {str(out.parent)!r} does not exist")
    text = report_text(args.dir if len(args.dir) > 1 else args.dir[0], fmt=args.format, over=args.over)
    if args.output is None or args.output == "-":
        sys.stdout.write(text)
    else:
        from ftcjax.sweep.files import atomic_write_bytes

        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
    return 0


def _cmd_figures(args) -> int:
    from ftcjax.analysis.convergence import _parse_subset as parse_subset
    from ftcjax.analysis.figures import write_all  # imports matplotlib: only for this subcommand

    size = None
    if args.size:
        try:
            size = tuple(float(v) for v in args.size.split(","))
        except ValueError:
            raise FTCInputError(f"--size: {args.size!r} must be WIDTH,HEIGHT in inches, e.g. 7,4") from None
    if args.dpi < 10:
        raise FTCInputError(f"--dpi: {args.dpi} must be at least 10")
    for item in args.groups:
        if "=" not in item:
            raise FTCInputError(f"--groups: {item!r} must look like AXIS=V1,V2")
    groups = parse_subset(args.groups)
    dirs = args.dir if len(args.dir) > 1 else args.dir[0]
    out = args.out or str(Path(args.dir[0]) / "figures")
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if args.instances is not None and not args.curves:
        raise FTCInputError("--instances: only with --curves")
    if args.curves:
        from ftcjax.analysis.figures import write_curves

        ids = None if args.instances is None else [i.strip() for i in args.instances.split(",") if i.strip()]
        for path in write_curves(dirs, out=out, instances=ids, groups=groups, caption=not args.no_caption,
                                 formats=formats, size=size, dpi=args.dpi):
            print(path)
        return 0
    written = write_all(dirs, out=out, groups=groups, caption=not args.no_caption,
                        formats=formats, size=size, dpi=args.dpi)
    for path in written:
        print(path)
    if not written:
        raise FTCInputError(f"DIR: no figure can be drawn from the results in {' '.join(args.dir)}")
    return 0


def _cmd_bracket(args) -> int:
    from ftcjax.analysis.bracket import write_brackets  # imports matplotlib: only for this subcommand

    _check_name("DIR", args.dir)
    paths = write_brackets(args.dir, out=args.out, over=args.over)
    sys.stdout.write(Path(paths[0]).read_text())
    for path in paths:
        print(path, file=sys.stderr)
    return 0


def _cmd_cache(args) -> int:
    import json

    from ftcjax.sweep import compile_cache as cc
    from ftcjax.sweep.guards import format_bytes as _size

    if args.all_versions and not args.clear:
        raise FTCInputError("--all-versions: only with --clear")
    _check_name("--compilation-cache", args.compilation_cache)
    root = cc.cache_root(args.compilation_cache)
    source = ("--compilation-cache" if args.compilation_cache is not None
              else f"${cc.ENV_VAR}" if os.environ.get(cc.ENV_VAR) is not None else "the default location")
    if root is None:
        if args.json:
            print(json.dumps({"root": None, "source": source, "versions": []}))
        else:
            print(f"compilation cache: off ({source})")
        return 0
    if args.clear:
        removed = cc.clear_cache(root, all_versions=args.all_versions)
        freed = sum(e["jax_bytes"] + e["executables_bytes"] for e in removed)
        if args.json:
            print(json.dumps({"root": str(root), "source": source, "removed": removed}))
        elif removed:
            print(f"removed {', '.join(e['version'] for e in removed)} from {root}: {_size(freed)} freed")
        else:
            print(f"nothing to remove: {root} holds no cache of "
                  f"{'any jax version' if args.all_versions else cc.version_key()}")
        return 0
    usage = cc.cache_usage(root)
    if args.json:
        print(json.dumps({"root": str(root), "source": source, "current": cc.version_key(), "versions": usage}))
        return 0
    print(f"compilation cache: {root} ({source})")
    if not usage:
        print(f"  empty: the first run compiles into {root / cc.version_key()}")
    for e in usage:
        mark = "  <- this jax" if e["current"] else ""
        print(f"  {e['version']}: {_size(e['jax_bytes'] + e['executables_bytes'])} "
              f"(jax entries {e['jax_entries']}, {_size(e['jax_bytes'])}; ftcjax executables "
              f"{e['executables']}, {_size(e['executables_bytes'])}){mark}")
    if len(usage) > 1:
        print(f"  total {_size(sum(e['jax_bytes'] + e['executables_bytes'] for e in usage))}")
    return 0


def _cmd_convergence(args) -> int:
    from ftcjax._convergence_cli import run_action

    if args.action is None:
        _parser().parse_args(["convergence", "--help"])  # prints the actions and exits 0
    return int(run_action(args))


_COMMANDS = {"run": _cmd_run, "validate": _cmd_validate, "status": _cmd_status, "export": _cmd_export,
             "report": _cmd_report, "figures": _cmd_figures, "convergence": _cmd_convergence,
             "bracket": _cmd_bracket, "cache": _cmd_cache}


def _one_line(msg: str) -> str:
    """Control characters (a newline or ESC in a planted name) escaped: one line, no terminal codes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)


def _saved(args) -> str:
    """What an environment error leaves behind, per command."""
    if args.command == "run":
        out = getattr(args, "out", None) or "the run directory"
        return (f"every chunk finished before the error is saved in {out}; fix the cause and rerun the "
                "same command to resume")
    return "the run directory was not changed"


def _os_message(e: OSError) -> str:
    from ftcjax.sweep.files import describe

    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{describe(e)}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ftcjax`` console script; returns the exit status.

    Exit statuses: 0 success, 2 bad input (spec, options, a different sweep in DIR), 3 environment or
    I/O (disk full, read-only or damaged files, links, memory, distributed peers), 130 interrupted.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT

    def env_err(msg: str) -> int:
        said = any(w in msg for w in ("saved", "nothing was computed"))
        print(_one_line(f"ftcjax: error: {msg}" + ("" if said else f"; {_saved(args)}")), file=sys.stderr)
        return EXIT_ENVIRONMENT

    try:
        return _COMMANDS[args.command](args)
    except FTCInputError as e:
        return _err(str(e))
    except FTCEnvironmentError as e:
        return env_err(str(e))
    except KeyboardInterrupt:
        print("\nftcjax: interrupted; finished chunks are saved: rerun the same command to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ftcjax export DIR --csv - | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as e:
        return env_err(_os_message(e))
    except MemoryError:
        return env_err("out of memory (lower batch.chunk_size, train.restarts or the widths)")
    except RuntimeError as e:
        # XLA's allocation failures (RESOURCE_EXHAUSTED) and distributed-runtime failures are the
        # machine's, not bugs: one line. Anything else is a bug and keeps its traceback.
        text = str(e)
        if type(e).__name__ == "XlaRuntimeError" and any(
                k in text for k in ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED")):
            return env_err(text.strip().splitlines()[0][:300])
        raise


if __name__ == "__main__":
    sys.exit(main())
