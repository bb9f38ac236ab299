"""Analysis of stored sweep results: exponent fits with honest intervals, reports, figures.

Orchestration layer (plain Python + numpy). Importing this package never imports matplotlib;
:func:`figures_command` imports :mod:`ftcjax.analysis.figures` (and with it matplotlib) lazily.

Entry points used by the CLI (``ftcjax report DIR``, ``ftcjax figures DIR``) and by ``ftcjax run``:
:func:`report_command`, :func:`figures_command`, :func:`write_default_outputs`.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis.convergence import (Comparison, GroupVerdict, compare_records, compare_runs, doubled_spec_text,
                                         noise_floor_verdicts, until_converged)
from ftcjax.analysis.records import (InstanceArrays, group_label, group_records, instance_arrays,
                                     load_records, protocol_summary)
from ftcjax.analysis.report import FORMATS, GroupReport, Report, build_report, format_report
from ftcjax.analysis.stats import (CellSummary, CensoredFit, ExponentFit, ModelFit, SqrtFit, cell_summaries,
                                   fit_censored, fit_exponent, fit_sqrt, local_slopes, median_width, ols_slope,
                                   outliers, theil_sen, theory_exponent)

__all__ = [
    "load_records", "group_records", "group_label", "instance_arrays", "InstanceArrays", "protocol_summary",
    "fit_exponent", "fit_sqrt", "ExponentFit", "SqrtFit", "CellSummary", "cell_summaries", "local_slopes",
    "ols_slope", "theil_sen", "theory_exponent", "fit_censored", "CensoredFit", "ModelFit", "median_width",
    "outliers", "noise_floor_verdicts", "GroupVerdict", "until_converged",
    "build_report", "format_report", "Report", "GroupReport", "FORMATS",
    "compare_runs", "compare_records", "Comparison", "doubled_spec_text", "find_convergence_partner",
    "report_command", "figures_command", "write_default_outputs",
]


def find_convergence_partner(run_dir: str) -> Optional[str]:
    """The run directory holding the 2x re-search of ``run_dir``, if present.

    Convention: the doubled spec's name is ``<name>-x2`` (see :mod:`ftcjax.analysis.convergence`),
    so its default output directory is the sibling ``<run_dir>-x2``.
    """
    cand = os.path.normpath(os.fspath(run_dir)) + "-x2"
    return cand if os.path.isdir(cand) else None


def _report_text(run_dir: str, fmt: str, compare: Optional[str], n_boot: int, seed: int) -> str:
    records = load_records(run_dir)
    if not records:
        raise FTCInputError(f"run_dir: no finished instances in {run_dir!r}")
    comp = None
    partner = compare if compare is not None else find_convergence_partner(run_dir)
    if partner is not None:
        comp = compare_runs(run_dir, partner)
    return format_report(build_report(records, n_boot=n_boot, seed=seed, convergence=comp), fmt)


def report_command(run_dir: str, *, fmt: str = "table", output: Optional[str] = None,
                   compare: Optional[str] = None, n_boot: int = 1000, seed: int = 0) -> int:
    """``ftcjax report DIR``: print (or write to ``output``) the exponent report; returns an exit code.

    ``fmt``: 'table', 'markdown' or 'csv'. ``compare``: run directory of the 2x convergence re-search
    (default: the sibling ``DIR-x2`` if it exists). Bad input: message on stderr, exit code 2.
    """
    try:
        if fmt not in FORMATS:
            raise FTCInputError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        text = _report_text(run_dir, fmt, compare, n_boot, seed)
    except FTCInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


def figures_command(run_dir: str, *, out: Optional[str] = None) -> int:
    """``ftcjax figures DIR``: write every figure the stored results allow (PNG and PDF) to ``out``.

    Default ``out``: ``DIR/figures``. Figures that the data cannot support (e.g. Fig. 9 without grid
    records at d = 10) are skipped with a note on stderr. Returns 0 when at least one figure was
    written, 2 on bad input or when no figure could be made.
    """
    try:
        from ftcjax.analysis import figures as _fig  # imports matplotlib (never at package import)

        written = _fig.write_all(run_dir, out=out)
    except FTCInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0 if written else 2


def write_default_outputs(run_dir: str) -> None:
    """Called at the end of ``ftcjax run``: ``report.txt``, ``report.md``, ``report.csv`` and ``figures/``.

    Never raises for an analysis problem (the results are already stored and the analysis can be
    re-run with ``ftcjax report``/``ftcjax figures``); it says what failed on stderr.
    """
    for fmt, name in (("table", "report.txt"), ("markdown", "report.md"), ("csv", "report.csv")):
        rc = report_command(run_dir, fmt=fmt, output=os.path.join(run_dir, name))
        if rc != 0:
            print(f"warning: could not write {name} in {run_dir}", file=sys.stderr)
            return
    try:
        from ftcjax.analysis import figures as _fig

        _fig.write_all(run_dir, out=os.path.join(run_dir, "figures"))
    except Exception as e:  # noqa: BLE001 -- a plotting failure must not fail a finished sweep
        print(f"warning: figures not written ({type(e).__name__}: {e}); retry with `ftcjax figures {run_dir}`",
              file=sys.stderr)
