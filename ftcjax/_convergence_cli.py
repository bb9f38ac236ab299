"""The ``ftcjax convergence ACTION ...`` subcommands: their arguments and what each one does.

The actions are subcommands of the ONE ``ftcjax`` parser (:mod:`ftcjax.cli` calls :func:`add_actions`
on its ``convergence`` subparser); ``python -m ftcjax.analysis ...`` is a thin alias of
``ftcjax convergence ...``. Building the parser imports argparse only (so it lives outside the
analysis package: ``ftcjax --help`` stays free of jax and numpy); :func:`run_action` imports the
analysis when an action runs. Actions raise
:class:`ftcjax.FTCInputError` for bad input; only the CLI prints errors.
"""
from __future__ import annotations

import argparse
import textwrap

__all__ = ["ACTIONS", "add_actions", "run_action"]

ACTIONS = ("double", "reseed", "budget", "verdict", "until", "compare")


def add_actions(sub, formatter=argparse.HelpFormatter) -> None:
    """Add every convergence action to ``sub`` (the ``convergence`` subparser's subparsers)."""

    def action(name: str, help: str, examples: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=formatter, help=help, description=help[0].upper() + help[1:] + ".",
                              epilog="examples:\n" + textwrap.indent(textwrap.dedent(examples), "  "))

    d = action("double", "write SPEC with steps and restarts doubled to OUT (same instances)", """\
        ftcjax convergence double sweeps/default.toml runs/default-x2.toml
        ftcjax convergence double sweeps/exponents.toml runs/exponents-x2.toml --only d=2
        """)
    d.add_argument("spec", metavar="SPEC")
    d.add_argument("out", metavar="OUT")
    d.add_argument("--factor", type=int, default=2, help="budget factor (default 2)")
    d.add_argument("--only", action="append", default=[], metavar="AXIS=V1,V2",
                   help="re-search only these grid values (repeatable), e.g. --only d=2")
    rs = action("reseed", "write SPEC with new training seeds (the noise floor) to OUT", """\
        ftcjax convergence reseed sweeps/default.toml runs/default-reseed1.toml
        ftcjax convergence reseed sweeps/default.toml runs/default-reseed2.toml --train-seed 2
        """)
    rs.add_argument("spec", metavar="SPEC")
    rs.add_argument("out", metavar="OUT")
    rs.add_argument("--train-seed", type=int, default=1, help="folded into every training key (default 1)")
    bu = action("budget", "write SPEC with only steps (or only restarts) multiplied to OUT", """\
        ftcjax convergence budget sweeps/default.toml runs/default-steps2.toml --axis steps
        ftcjax convergence budget sweeps/default.toml runs/default-restarts4.toml --axis restarts --factor 4
        """)
    bu.add_argument("spec", metavar="SPEC")
    bu.add_argument("out", metavar="OUT")
    bu.add_argument("--axis", choices=("steps", "restarts"), required=True)
    bu.add_argument("--factor", type=int, default=2, help="budget factor (default 2)")
    vd = action("verdict", "budget shift vs noise floor per group: BASE RESEED BUDGET run directories", """\
        ftcjax convergence verdict runs/default runs/default-reseed1 runs/default-steps2
        """)
    vd.add_argument("base", metavar="BASE")
    vd.add_argument("reseed", metavar="RESEED")
    vd.add_argument("budget", metavar="BUDGET")
    un = action("until", "run SPEC into OUT, doubling the budget of moving groups until converged", """\
        ftcjax convergence until sweeps/exponents.toml runs/exponents --max-factor 8
        ftcjax run sweeps/exponents.toml --until-converged      # the same, from ftcjax run
        """)
    un.add_argument("spec", metavar="SPEC")
    un.add_argument("out", metavar="OUT")
    un.add_argument("--max-factor", type=int, default=8, help="largest budget factor (default 8)")
    c = action("compare", "count minimal widths that moved between DIR_A and DIR_B", """\
        ftcjax convergence compare runs/default runs/default-x2
        ftcjax convergence compare runs/default runs/default-x2 --json
        """)
    c.add_argument("dir_a", metavar="DIR_A")
    c.add_argument("dir_b", metavar="DIR_B")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _read(path: str) -> str:
    from ftcjax._src.errors import FTCInputError

    try:
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, UnicodeDecodeError) as e:
        raise FTCInputError(f"SPEC: {path!r} cannot be read ({type(e).__name__}: {e})") from None


def _toml(path: str) -> dict:
    import tomllib

    from ftcjax._src.errors import FTCInputError

    try:
        return tomllib.loads(_read(path))
    except tomllib.TOMLDecodeError as e:
        raise FTCInputError(f"spec: TOML syntax error: {e}") from None


def _write(path: str, text: str) -> None:
    from pathlib import Path

    from ftcjax.sweep.files import atomic_write_bytes

    atomic_write_bytes(Path(path), text.encode("utf-8"))
    print(f"wrote {path}")


def run_action(args) -> int:
    """Perform the parsed convergence action ``args.action``; returns the exit status (0)."""
    import json

    from ftcjax.analysis import convergence as cv

    if args.action == "double":
        _write(args.out, cv.doubled_spec_text(_read(args.spec), factor=args.factor,
                                              subset=cv._parse_subset(args.only)))
    elif args.action in ("reseed", "budget"):
        data = _toml(args.spec)
        out = (cv.reseeded_spec_dict(data, train_seed=args.train_seed) if args.action == "reseed"
               else cv.budget_spec_dict(data, args.axis, factor=args.factor))
        _write(args.out, cv.dump_toml(out))
    elif args.action == "verdict":
        from ftcjax.analysis.records import load_records

        print(cv.format_verdicts(cv.noise_floor_verdicts(load_records(args.base), load_records(args.reseed),
                                                         load_records(args.budget))))
    elif args.action == "until":
        st = cv.until_converged(_toml(args.spec), args.out, run=cv._run_spec_dir, max_factor=args.max_factor)
        print(cv.format_until(st, args.max_factor))
    else:  # compare
        comp = cv.compare_runs(args.dir_a, args.dir_b)
        if args.json:
            print(json.dumps({"n_paired": comp.n_paired, "n_moved": comp.n_moved, "n_down": comp.n_down,
                              "n_up": comp.n_up, "n_censoring_changed": comp.n_censoring_changed,
                              "per_group": comp.per_group}, indent=2))
        else:
            print("\n".join(comp.summary_lines()))
    return 0
