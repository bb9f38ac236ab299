"""Analysis of stored sweep results: exponent fits with honest intervals, reports, figures.

Orchestration layer (plain Python + numpy). Importing this package never imports matplotlib;
only :mod:`ftcjax.analysis.figures` does, and nothing here imports it.

Used by the CLI (``ftcjax report DIR``) and by ``ftcjax run``: :func:`report_text`,
:func:`write_default_outputs`; errors are raised as :class:`FTCInputError`, which only the CLI prints.
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
    "report_text", "write_default_outputs",
]


def find_convergence_partner(run_dir: str) -> Optional[str]:
    """The run directory holding the 2x re-search of ``run_dir``, if present.

    Convention: the doubled spec's name is ``<name>-x2`` (see :mod:`ftcjax.analysis.convergence`),
    so its default output directory is the sibling ``<run_dir>-x2``.
    """
    cand = os.path.normpath(os.fspath(run_dir)) + "-x2"
    return cand if os.path.isdir(cand) else None


def report_text(run_dir, *, fmt: str = "table", compare: Optional[str] = None, n_boot: int = 1000,
                seed: int = 0, over: Optional[str] = None) -> str:
    """The exponent report of a run directory, or of several merged, as text (``ftcjax report DIR...``).

    ``fmt``: one of :data:`FORMATS`. ``compare``: run directory of the 2x convergence re-search
    (default: the sibling ``DIR-x2`` if it exists). ``over``: the fit axis, "N" or "K" (default: the
    one with more values, :func:`ftcjax.analysis.report.choose_axis`).
    Raises:
      FTCInputError: unknown format, or no finished instances in ``run_dir``.
    """
    if fmt not in FORMATS:
        raise FTCInputError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    records = load_records(run_dir)
    if not records:
        raise FTCInputError(f"run_dir: no finished instances in {run_dir!r}")
    comp = None
    single = isinstance(run_dir, (str, os.PathLike))
    partner = compare if compare is not None else find_convergence_partner(run_dir) if single else None
    if partner is not None:
        comp = compare_runs(run_dir, partner)
    from ftcjax.analysis.portfolio import best_member_records

    # a portfolio also gets its best member as a group of its own: the smallest typical width per instance
    text = format_report(build_report(list(records) + best_member_records(records), n_boot=n_boot, seed=seed,
                                      convergence=comp, over=over), fmt)
    from ftcjax.analysis import fig9

    paper = fig9.paper_setting_records(records)
    if paper and fmt in ("table", "markdown"):  # the paper's own setting: compare with its figure, per N
        text += "\n" + fig9.format_comparison(fig9.comparison_table(paper))
    return text


def write_default_outputs(run_dir: str) -> None:
    """Called at the end of ``ftcjax run``: ``report.txt``, ``report.md``, ``report.csv`` and ``figures/``.

    Never raises for an analysis problem (the results are already stored and the analysis can be
    re-run with ``ftcjax report``/``ftcjax figures``); it says what failed on stderr.
    """
    for fmt, name in (("table", "report.txt"), ("markdown", "report.md"), ("csv", "report.csv")):
        try:
            text = report_text(run_dir, fmt=fmt)
        except FTCInputError as e:
            print(f"ftcjax: warning: {name} not written in {run_dir}: {e}", file=sys.stderr)
            return
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    try:
        from ftcjax.analysis import figures as _fig

        _fig.write_all(run_dir, out=os.path.join(run_dir, "figures"))
    except Exception as e:  # noqa: BLE001 -- a plotting failure must not fail a finished sweep
        print(f"ftcjax: warning: figures not written ({type(e).__name__}: {e}); retry with "
              f"`ftcjax figures {run_dir}`", file=sys.stderr)
