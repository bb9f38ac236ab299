"""Report: flags trivial and censored cells, theory beside the estimate, formats, convergence check."""
import csv
import io
import json
import tomllib

import pytest

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import build_report, compare_records, doubled_spec_text, format_report, load_records
from ftcjax.cli import main
from ftcjax.analysis.synthetic import synthetic_records
from ftcjax.sweep.integrity import seal
from ftcjax.sweep.plan import instance_id


def _write_run(tmp_path, recs, name="run"):
    d = tmp_path / name
    (d / "results").mkdir(parents=True)
    with open(d / "results" / "w0.jsonl", "w") as fh:
        for r in recs:
            # as the store writes them: the id of its (possibly edited) cell, sealed
            fh.write(json.dumps(seal(dict(r, instance_id=instance_id(r["cell"], r["replicate"])))) + "\n")
    return str(d)


@pytest.fixture(scope="module")
def records():
    # paper criterion: g = 0 passes (loss (N/K)(2/3) <= 0.04) at N = 10, 40 with K = 1000
    paper = synthetic_records(Ns=[10, 40, 100, 160, 250], criterion="paper", replicates=4, seed=1)
    strict3 = synthetic_records(Ns=[10, 20, 40, 80, 160], criterion="strict", replicates=6, alpha=0.5, seed=2)
    strict2 = synthetic_records(Ns=[4, 8, 16, 32], depth=2, criterion="strict", replicates=6, alpha=1.0,
                                c=1.0, widths=range(1, 41), seed=3)
    return paper + strict3 + strict2


def _group(rep, **cell):
    gs = [g for g in rep.groups if all(dict(g.key).get(k) == v for k, v in cell.items())]
    assert len(gs) == 1
    return gs[0]


def test_report_flags_trivial_cells(records):
    rep = build_report(records, n_boot=200)
    g = _group(rep, criterion="paper")
    assert g.trivial_cells == (10.0, 40.0)
    assert g.n_trivial == 8
    assert any("trivial" in f and "N=10,40" in f for f in g.flags)
    # the trivial instances never enter the fit
    assert g.fit.n_used == g.n_instances - g.n_trivial - g.n_censored
    strict = _group(rep, criterion="strict", depth=3)
    assert strict.trivial_cells == () and not any("trivial" in f for f in strict.flags)
    for fmt in ("table", "markdown"):
        text = format_report(rep, fmt)
        assert "TRIVIAL" in text and "trivial (g=0 passes) at N=10,40" in text
    rows = list(csv.DictReader(io.StringIO(format_report(rep, "csv"))))
    paper_row = [r for r in rows if r["criterion"] == "paper"][0]
    assert paper_row["trivial"] == "8" and "trivial" in paper_row["flags"]


def test_theory_beside_estimate_and_coverage(records):
    rep = build_report(records, n_boot=500)
    g3 = _group(rep, criterion="strict", depth=3)
    g2 = _group(rep, criterion="strict", depth=2)
    assert g3.theory == 0.5 and g2.theory == 1.0
    assert abs(g3.fit.slope - 0.5) < 0.1 and g3.covers_theory is True
    assert abs(g2.fit.slope - 1.0) < 0.1 and g2.covers_theory is True
    assert g3.sqrt_fit is not None and g2.sqrt_fit is None  # a sqrt(N) + b only for depth >= 3
    rows = list(csv.DictReader(io.StringIO(format_report(rep, "csv"))))
    r3 = [r for r in rows if r["criterion"] == "strict" and r["depth"] == "3"][0]
    assert r3["theory"] == "0.5" and r3["covers_theory"] == "True"
    assert float(r3["ci_low"]) <= float(r3["slope"]) <= float(r3["ci_high"])
    assert r3["instances"] == "30"


def test_theory_not_covered_is_reported_as_no():
    recs = synthetic_records(Ns=[10, 20, 40, 80], depth=3, alpha=1.0, c=0.5, sigma=0.05, replicates=5,
                             widths=range(1, 60))
    rep = build_report(recs, n_boot=300)
    assert rep.groups[0].covers_theory is False
    line = [ln for ln in format_report(rep).splitlines() if ln.startswith("depth=3")][0]
    assert " NO " in line


def test_censored_counted_and_flagged():
    recs = synthetic_records(Ns=[10, 40, 160, 640], criterion="strict", replicates=4, widths=range(1, 49))
    rep = build_report(recs, n_boot=100)
    g = rep.groups[0]
    assert g.n_censored == 4 and g.censored_cells == (640.0,)
    assert g.fit.n_used == 12
    text = format_report(rep)
    assert "4 censored" in text and "biased LOW" in text and ">=48" in text


def test_protocol_and_convergence_printed(records):
    text = format_report(build_report(records, n_boot=50))
    assert "protocol (shared by all" in text and "optimizer=\"adam\"" in text
    assert "bootstrap" in text and "convergence: NOT CHECKED" in text


def test_unfittable_group_is_reported_not_raised():
    recs = synthetic_records(Ns=[50], replicates=3)
    rep = build_report(recs, n_boot=10)
    assert rep.groups[0].fit is None and "2 distinct N" in rep.groups[0].fit_error
    assert "not fitted" in format_report(rep)
    with pytest.raises(FTCInputError, match="records"):
        build_report([])
    with pytest.raises(FTCInputError, match="fmt"):
        format_report(rep, "html")


def test_report_command_on_stored_run(tmp_path, records, capsys):
    run = _write_run(tmp_path, records)
    assert len(load_records(run)) == len(records)
    out = tmp_path / "r.md"
    assert main(["report", run, "--format", "markdown", "--output", str(out)]) == 0
    assert out.read_text().startswith("## Minimal-width exponents")
    assert main(["report", run, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("group,")
    assert main(["report", run, "--format", "xml"]) == 2
    assert capsys.readouterr().err.startswith("ftcjax: error: --format")
    assert main(["report", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert capsys.readouterr().err.startswith("ftcjax: error: ")


def test_report_over_two_directories_equals_one_holding_both(tmp_path, records, capsys):
    half = len(records) // 2
    both = _write_run(tmp_path, records, "both")
    a = _write_run(tmp_path, records[:half], "a")
    b = _write_run(tmp_path, records[half:], "b")
    overlap = _write_run(tmp_path, records[half - 3:], "b2")  # a record in both directories counts once
    outs = []
    for dirs in ([both], [a, b], [a, overlap]):
        assert main(["report", *dirs, "--format", "json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] == outs[2]
    assert outs[0]["groups"] and {"slope", "flags", "cells"} <= set(outs[0]["groups"][0])


def test_convergence_comparison_counts_moved_widths(tmp_path):
    a = synthetic_records(Ns=[10, 40], replicates=4, seed=0)
    b = json.loads(json.dumps(a))
    for r in b:  # the 2x run: other steps/restarts in the cell and protocol, same instances
        r["cell"]["steps"] = 4000
        r["cell"]["restarts"] = 8
        r["protocol"] = dict(r.get("protocol", {}), steps=4000, restarts=8)
    a = [dict(r, cell=dict(r["cell"], steps=2000, restarts=4),
              protocol=dict(r.get("protocol", {}), steps=2000, restarts=4)) for r in a]
    b_unmoved = json.loads(json.dumps(b))
    b[0]["min_width"] -= 3                      # moved down
    b[1]["min_width"], b[1]["censored"] = None, True  # became censored
    comp = compare_records(a, b)
    assert comp.n_paired == 8 and comp.n_moved == 2 and comp.n_down == 1 and comp.n_censoring_changed == 1
    assert "2/8 minimal widths moved" in comp.summary_lines()[0]
    assert comp.median_ratio == 1.0  # 6 of the 7 pairs measured in both runs did not move
    assert "not yet measurements of capacity" in comp.summary_lines()[0]
    # the report picks up the sibling DIR-x2 automatically and prints the comparison
    run = _write_run(tmp_path, a, "conv")
    _write_run(tmp_path, b, "conv-x2")
    buf = tmp_path / "rep.txt"
    assert main(["report", run, "--output", str(buf)]) == 0
    assert "2/8 minimal widths moved" in buf.read_text()
    assert "steps x2, restarts x2" in comp.summary_lines()[0]
    for ra, rb in zip(a, b_unmoved):
        rb["min_width"], rb["censored"] = ra["min_width"], ra["censored"]
    unmoved = compare_records(a, b_unmoved)
    assert unmoved.n_moved == 0 and "converged" in unmoved.summary_lines()[0]
    # a run compared with itself is a repeatability check, never reported as converged
    same = compare_records(a, a)
    assert same.n_moved == 0 and "not a convergence check" in same.summary_lines()[0]


def test_doubled_spec_doubles_steps_and_restarts_only():
    text = """name = "demo"
seed = 3
replicates = 2
[grid]
depth = [2, 3]
N = "2:8:2"
K = 32
[train]
steps = [300, 600]
restarts = 2
learning_rate = 0.01
[width]
upper = 24
"""
    new = tomllib.loads(doubled_spec_text(text))
    old = tomllib.loads(text)
    assert new["train"]["steps"] == [600, 1200] and new["train"]["restarts"] == 4
    assert new["name"] == "demo-x2"
    for k in ("seed", "replicates", "grid", "width"):
        assert new[k] == old[k]
    assert new["train"]["learning_rate"] == 0.01
    try:
        from ftcjax.sweep.spec import parse_spec
    except ImportError:
        return
    spec = parse_spec(doubled_spec_text(text))
    assert dict(spec.axes)["steps"] == (600, 1200)


def test_doubled_spec_subset_and_cli(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "e"\n[grid]\ndepth = [2, 3]\nN = [1, 2]\nK = 10\nd = [1, 2, 10]\n[train]\nsteps = 100\n'
                    '[width]\nupper = 8\n')
    out = tmp_path / "e-x2.toml"
    assert main(["convergence", "double", str(spec), str(out), "--only", "d=2,10"]) == 0
    new = tomllib.loads(out.read_text())
    assert new["grid"]["d"] == [2, 10] and new["grid"]["depth"] == [2, 3]
    assert new["train"]["steps"] == 200 and new["train"]["restarts"] >= 2
    assert main(["convergence", "double", str(spec), str(out), "--only", "d=7"]) == 2
    assert "d=7" not in capsys.readouterr().out
    with pytest.raises(FTCInputError, match="grid.lr is not set"):
        doubled_spec_text(spec.read_text(), subset={"lr": [1]})


def test_k_dependence_report_fits_against_K():
    # N fixed, K over a decade; widths independent of K -> slope ~ 0 (theory 0 once K >= 3N + 2),
    # and the paper criterion becomes trivial at large K (loss of g = 0 ~ (N/K)(2/3) <= 0.04)
    recs = []
    for K in (16, 32, 64, 128, 256):
        recs += synthetic_records(Ns=[4], K=K, depth=3, criterion="strict", replicates=5, seed=K)
        recs += synthetic_records(Ns=[4], K=K, depth=3, criterion="paper", replicates=5, seed=K + 1)
    rep = build_report(recs, n_boot=300)
    assert rep.over == "K"
    strict = _group(rep, criterion="strict")
    assert strict.theory == 0.0 and strict.covers_theory is True and abs(strict.fit.slope) < 0.1
    paper = _group(rep, criterion="paper")
    assert 128.0 in paper.trivial_cells and 256.0 in paper.trivial_cells and 16.0 not in paper.trivial_cells
    text = format_report(rep)
    assert "against K at fixed N" in text and "trivial (g=0 passes) at K=" in text
    assert "theory: 0" in text
    # K < 3N + 2 somewhere: the theory makes no K-independence claim there
    small = synthetic_records(Ns=[4], K=10, depth=3, replicates=3) + synthetic_records(Ns=[4], K=40, depth=3,
                                                                                      replicates=3)
    assert build_report(small, n_boot=10).groups[0].theory is None


def test_cells_outside_the_theory_regime_are_flagged():
    recs = synthetic_records(Ns=[2, 8, 32], K=40, depth=2, alpha=1.0, c=1.0, replicates=3, widths=range(1, 60))
    g = build_report(recs, n_boot=50).groups[0]
    assert g.saturated_cells == (32.0,)  # 3 * 32 + 2 > 40
    assert any("K < 3N+2 at N=32" in f for f in g.flags)


def test_heavily_censored_fit_is_marked_unreliable():
    recs = synthetic_records(Ns=[10, 40, 160, 640], criterion="strict", replicates=4, widths=range(1, 49))
    rep = build_report(recs, n_boot=20)
    assert rep.groups[0].unreliable is False  # 4/16 censored: exactly a quarter
    recs2 = synthetic_records(Ns=[10, 40, 160, 640], criterion="strict", replicates=4, widths=range(1, 30))
    rep2 = build_report(recs2, n_boot=20)
    g = rep2.groups[0]
    assert g.n_censored > 4 and g.unreliable and any(f.startswith("UNRELIABLE") for f in g.flags)
    assert "(!)" in format_report(rep2)


def test_one_median_definition_for_status_report_and_figures():
    from ftcjax.analysis import figures, records as rec_mod, stats
    from ftcjax.analysis.synthetic import synthetic_records
    from ftcjax.sweep.results import summary_rows

    recs = synthetic_records(Ns=[2], replicates=4, widths=range(1, 49), criterion="strict", seed=0)
    ws = [10, 12, 15, None]
    for r, w in zip(recs, ws):
        r["min_width"], r["censored"], r["trivial"] = w, w is None, False
    # censored above everything: sorted (10, 12, 15, cens) -> midpoint of 12 and 15
    assert stats.median_width(ws, censored=[w is None for w in ws]) == 13.5
    assert summary_rows(recs, ["N"])[0]["median"] == 13.5
    arr = rec_mod.instance_arrays(recs)
    rep = build_report(recs, n_boot=0)
    assert rep.groups[0].cells[0].median == 13.5
    assert figures._median_iqr(arr.widths, arr.censored)[1] == 13.5
    # a trivial instance counts as width 0 everywhere
    recs[3]["censored"], recs[3]["min_width"], recs[3]["trivial"] = False, 1, True
    assert summary_rows(recs, ["N"])[0]["median"] == 11.0 == build_report(recs, n_boot=0).groups[0].cells[0].median


def test_outliers_and_near_trivial_cells_are_flagged():
    from ftcjax.analysis import stats
    from ftcjax.analysis.synthetic import synthetic_records

    out = stats.outliers([4, 4, 4, 4, 8, 8], [4, 5, 5, 20, 9, 9], ids=list("abcdef"))
    assert out == ((4.0, "d", 20.0, 5.0),)
    # paper criterion at K = 1000: g = 0 has loss ~ (N / K) 2/3, i.e. ~0.053 at N = 80 (< 2 x 0.04)
    recs = synthetic_records(Ns=[80, 400], replicates=4, K=1000, criterion="paper", seed=1)
    g = build_report(recs, n_boot=0).groups[0]
    assert g.near_trivial_cells == (80.0,)
    assert any("near-trivial at N=80" in f for f in g.flags)
    recs[0]["min_width"] = 10 * max(r["min_width"] for r in recs[1:4])
    g = build_report(recs, n_boot=0).groups[0]
    assert any(f.startswith("outlier at N=80: instance " + recs[0]["instance_id"]) for f in g.flags)


def test_unresolved_instances_are_counted_apart_from_censored_everywhere():
    # A real adaptive search on known p(w): instances trainable only at the top width with p = 0.4
    # end either censored (p(top) < 1/2 decided) or unresolved (budget spent, nothing decided).
    import numpy as np

    from ftcjax.analysis import records as rec_mod, stats
    from ftcjax.analysis.synthetic import logistic_p, search_records, step_p

    never = lambda w: np.zeros(np.shape(w))
    ps = [logistic_p(8.0, scale=0.1)] * 4 + [step_p(32, level=0.4)] * 4 + [never] * 4
    Ns = [2] * 4 + [4] * 6 + [8] * 2
    recs = search_records(ps, Ns=Ns, widths=range(1, 33), seed=0)
    status = [r["status"] for r in recs]
    unres = [r["min_width"] is None and not r["censored"] for r in recs]
    assert sum(unres) >= 1 and all(s == "unresolved" for s, u in zip(status, unres) if u), status
    n_cens = sum(bool(r["censored"]) for r in recs)
    arr = rec_mod.instance_arrays(recs)
    assert arr.unresolved.tolist() == unres
    assert arr.censored[arr.unresolved].all()  # no width: the statistics place it above every measured one
    g = build_report(recs, n_boot=0).groups[0]
    assert g.n_unresolved == sum(unres) and g.n_censored == n_cens  # never merged into the censored count
    assert g.n_censored + g.n_unresolved + int((~arr.censored).sum()) == len(recs)  # none dropped
    assert g.unresolved_cells == (4.0,)
    cell4 = [c for c in g.cells if c.N == 4.0][0]
    assert cell4.n_unresolved == sum(unres) and cell4.n_censored == sum(bool(r["censored"]) for r in recs[4:10])
    assert any(f.startswith("unresolved at N=4 (") for f in g.flags)
    assert not any("censored at N=" in f and f"({n_cens + sum(unres)} instances)" in f for f in g.flags)
    text = format_report(build_report(recs, n_boot=0))
    assert f"{sum(unres)} unresolved" in text and "unres" in text
    row = next(csv.DictReader(io.StringIO(format_report(build_report(recs, n_boot=0), "csv"))))
    assert int(row["unresolved"]) == sum(unres) and int(row["censored"]) == n_cens
    # the MLE sees an unresolved instance as right-censored below the top, not as dropped
    i = unres.index(True)
    assert arr.upper[i] == float("inf") and arr.lower[i] < 32
    # one median definition: the cell median counts it above every measured width
    from ftcjax.sweep.results import summary_rows

    w4 = [r["min_width"] for r in recs if r["cell"]["N"] == 4]
    assert stats.median_width(w4) == cell4.median == summary_rows(recs[4:10], ["N"])[0]["median"]


@pytest.mark.slow  # every group of every committed sweep (~30 s): beside test_committed_results.py
def test_one_median_on_every_committed_sweep():
    # status/run summary (summary_rows), report cells and the width-vs-N figure agree on every cell
    import gzip
    from pathlib import Path

    import numpy as np

    from ftcjax.analysis import figures, records as rec_mod
    from ftcjax.sweep.results import summary_rows

    srcs = sorted((Path(__file__).resolve().parents[1] / "figures").glob("*/records.jsonl.gz"))
    assert srcs
    checked = 0
    for src in srcs:
        recs = [json.loads(line) for line in gzip.open(src, "rt")]
        for key, grp in rec_mod.group_records(recs).items():
            rep = build_report(grp, n_boot=0, over="N")
            (g,) = rep.groups
            arr = rec_mod.instance_arrays(grp)
            summ = {float(r["N"]): r["median"] for r in summary_rows(grp, ["N"])}
            for c in g.cells:
                s = arr.N == c.N
                ws = np.where(arr.trivial[s] & ~arr.censored[s], 0.0, arr.widths[s])
                fig = figures._median_iqr(ws, arr.censored[s])[1]
                assert c.median == summ[c.N] == fig, (src.parent.name, key, c.N, c.median, summ[c.N], fig)
                checked += 1
    assert checked > 20


def test_records_of_different_search_rules_are_fitted_apart():
    # the same instances searched by two rules (and an adaptive-v1 record) never share a fit
    import numpy as np

    from ftcjax.analysis.synthetic import logistic_p, search_records

    Ns = np.repeat([2, 4, 8], 3)
    ps = [logistic_p(3.0 * np.sqrt(n), scale=0.15) for n in Ns]
    ada = search_records(ps, Ns=Ns, widths=range(1, 33), seed=0)
    bis = search_records(ps, Ns=Ns, widths=range(1, 33), seed=0, strategy="bisect")
    old = [dict(r, search_rule="adaptive-v1") for r in ada[:3]]
    rep = build_report(ada + bis + old, n_boot=0)
    rules = sorted(dict(g.key)["search_rule"] for g in rep.groups)
    assert rules == ["adaptive-v1", "adaptive-v2", "bisect-v1"]
    assert sorted(g.n_instances for g in rep.groups) == [3, 9, 9]
    assert all(f"search_rule={dict(g.key)['search_rule']}" in g.label for g in rep.groups)


def test_non_monotone_flag_says_what_the_rule_tested():
    import numpy as np

    from ftcjax.analysis.synthetic import logistic_p, search_records

    recs = search_records([logistic_p(6.0)] * 6, Ns=[2, 2, 4, 4, 8, 8], widths=range(1, 33), seed=0)
    for r in recs[:2]:
        r["non_monotone"] = True
    (g,) = build_report(recs, n_boot=0).groups
    assert "2 non-monotone instances (a wider width succeeded significantly less often than a narrower one " \
           "(Fisher test))" in g.flags
    (g2,) = build_report([dict(r, search_rule="grid-v1") for r in recs], n_boot=0).groups
    assert "2 non-monotone instances (a wider net failed after a narrower passed)" in g2.flags
    assert np.sum([r["non_monotone"] for r in recs]) == 2
