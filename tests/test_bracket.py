"""Capacity brackets per instance (lower <= best known <= trained) and the faithful Fig. 9 comparison."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from ftcjax import constructions as C
from ftcjax.analysis import bracket as B
from ftcjax.analysis import fig9 as F9
from ftcjax.analysis.synthetic import synthetic_records

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- lower bounds

def test_lower_bound_on_a_line_is_the_oracle_and_elsewhere_the_parameter_count():
    x, z, ch = C.worst_case_two_layer(4, 20)
    two = B.lower_bound(x, z, depth=2, eps=1e-3)
    assert (two.value, two.name) == (12, "1-D breakpoint oracle") and "eps" in two.assumes
    three = B.lower_bound(x, z, depth=3, eps=0.0)
    # 12 breakpoints need 2 d1 d2 + d2 >= 12: m = 5 (d1 = 2, d2 = 3 gives 15; no split of 4 reaches 12)
    assert (three.value, three.assumes) == (5, "exact fits")
    rng = np.random.default_rng(0)
    xg = rng.normal(size=(50, 10))
    zg = np.zeros(50)
    zg[:23] = rng.uniform(-1, 1, 23)
    pc = B.lower_bound(xg, zg, depth=2, eps=0.0)
    assert (pc.value, pc.name) == (2, "parameter count") and "not a theorem" in pc.assumes  # ceil(22/11)
    assert B.lower_bound(xg, zg * 1e-6, depth=2, eps=1e-3).value == 0  # g = 0 fits within eps


def test_constructions_on_the_worst_case_meet_the_capacity_exactly():
    N = 3
    x, z, ch = C.worst_case_two_layer(N, 3 * N + 2)
    two = B.constructions_on(x, z, ch, depth=2)
    assert two["oracle"] == two["thm44"] == 3 * N
    three = B.constructions_on(x, z, ch, depth=3)
    assert three["lifted"] == 3 * N + 1 and three["tooth"] >= 1


def _strict_record(cell, replicate, *, typical, existence, dtype="float64", censored=False, top=16):
    probes = [{"width": w, "passed": {"strict": [w >= (typical or 10 ** 9)]}} for w in range(1, top + 1)]
    return {"cell": dict(cell, criterion="strict", tol=1e-3, dtype=dtype, member="lm"), "replicate": replicate,
            "instance_id": f"i{replicate}", "search_rule": "adaptive-v1", "w50": typical, "min_width": typical,
            "existence_width": existence, "censored": censored, "min_width_is": "w50",
            "w50_bracket": None if typical is None else [typical - 1, typical], "probes": probes}


def test_bracket_rows_take_the_smallest_certified_network_and_flag_an_impossible_fit():
    N = 2
    x, z, ch = C.worst_case_two_layer(N, 3 * N + 2)
    cell = {"depth": 2, "N": N, "K": 3 * N + 2, "d": 1, "data": "worst_case", "labels": "uniform",
            "frozen": "interpolant"}
    ok = _strict_record(cell, 0, typical=7, existence=6)
    f32 = _strict_record(dict(cell), 0, typical=2, existence=2, dtype="float32")  # never certifies
    rows = B.instance_brackets([ok, f32], [(ok, x, z, ch), (f32, x, z, ch)])
    assert len(rows) == 1  # two protocols, one problem instance
    row = rows[0]
    assert row["lower"].value == 6 and row["best_known"] == 6
    assert set(row["best_by"]) == {"oracle", "thm44", "trained: lm, dtype=float64"}  # dtype varies here
    text = B.format_brackets(rows)
    assert "Consistency: proven lower <= best known on 1 of 1 instances." in text
    # a float64 strict "fit" below the proven bound is reported, never silently used
    bad = _strict_record(cell, 1, typical=3, existence=3)
    rows = B.instance_brackets([bad], [(bad, x, z, ch)])
    assert rows[0]["best_known"] == 3 and "VIOLATED" in B.format_brackets(rows)


def test_gap_fit_recovers_a_known_exponent_of_the_gap():
    """Typical widths 2 N^0.5 against a best known of N^0 = const: the gap's exponent is 0.5."""
    rows = []
    rng = np.random.default_rng(1)
    for N in (4, 8, 16, 32, 64):
        for r in range(6):
            w = max(2, int(round(2 * math.sqrt(N) * math.exp(0.1 * rng.standard_normal()))))
            rows.append({"problem": {"depth": 2, "N": N, "K": 400, "d": 2, "data": "gaussian", "labels": "uniform",
                                     "frozen": "interpolant"}, "best_known": 2, "trained": [
                {"protocol": "adam", "criterion": "strict", "typical": w, "censored": False,
                 "interval": (w - 1, w), "existence": w}]})
    (fit,) = B.gap_fits(rows, over="N")
    assert fit["fit"] is not None and fit["fit"].ci[0] <= 0.5 <= fit["fit"].ci[1]
    assert abs(fit["fit"].slope - 0.5) < 0.1


def test_bracket_figure_names_the_three_parts():
    x, z, ch = C.worst_case_two_layer(2, 8)
    recs = []
    for N in (1, 2):
        xx, zz, cc = C.worst_case_two_layer(N, 8)
        cell = {"depth": 2, "N": N, "K": 8, "d": 1, "data": "worst_case", "labels": "uniform", "frozen": "interpolant"}
        recs.append((_strict_record(cell, 0, typical=3 * N + 1, existence=3 * N + 1), xx, zz, cc))
    rows = B.instance_brackets([r[0] for r in recs], recs)
    fig = B.fig_brackets(rows)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(s.startswith("lower bound") for s in labels)
    assert any(s.startswith("best known") for s in labels)
    assert any(s.startswith("trained") for s in labels)
    caption = " ".join(t.get_text() for t in fig.texts)
    assert all(w in caption for w in ("lower bound", "best known", "trained"))
    assert ax.get_ylabel() == "hidden neurons m" and ax.get_xlabel() == "N"


# ----------------------------------------------------------------------------- Fig. 9 as drawn

def test_paper_steps_match_the_committed_reading_of_the_figure():
    text = (REPO / "docs" / "paper-fig9.md").read_text()
    rows = re.findall(r"^\| ([\d, -]+) \| (\d+) \|$", text, flags=re.M)
    assert len(rows) == 10
    seen = 0
    for ns, m in rows:
        for part in ns.split(","):
            lo, _, hi = part.strip().partition("-")
            for N in range(int(lo), int(hi or lo) + 1, 10):
                assert F9.paper_min_m(N) == int(m), N
                seen += 1
    assert seen == 50  # N = 1:10:491, every grid point of the figure
    assert F9.paper_min_m(0) is None and F9.paper_min_m(500) is None


@pytest.fixture(scope="module")
def fig9_run(tmp_path_factory):
    from ftcjax.sweep.integrity import seal
    from ftcjax.sweep.plan import instance_id

    recs = synthetic_records(Ns=[1, 61, 121, 181, 241], criterion="paper", replicates=3,
                             widths=range(6, 49, 6), seed=4)
    d = tmp_path_factory.mktemp("fig9") / "run"
    (d / "results").mkdir(parents=True)
    with open(d / "results" / "w0.jsonl", "w") as fh:
        for r in recs:
            r["cell"]["stop_on_success"] = False
            r["search_rule"] = "grid-v1"
            r["instance_id"] = instance_id(r["cell"], r["replicate"])  # the store keys a record by its cell
            fh.write(json.dumps(seal(r)) + "\n")
    return d


def test_fig9_comparison_is_recomputed_from_the_stored_probes(fig9_run):
    """The table from load_records must equal a computation straight from the raw JSON lines."""
    from ftcjax.analysis.records import load_records

    rows = F9.comparison_table(load_records(str(fig9_run)))
    raw = [json.loads(line) for line in (fig9_run / "results" / "w0.jsonl").read_text().splitlines()]
    by_n: dict = {}
    for r in raw:
        passing = sorted(p["width"] for p in r["probes"] if min(p.get("mse_end", p["mse"])) <= 0.04)
        by_n.setdefault(r["cell"]["N"], []).append(passing[0] if passing else math.inf)
    assert [r["N"] for r in rows] == sorted(by_n)
    for row in rows:
        assert row["ours"] == float(np.median(by_n[row["N"]]))
        paper = {1: 6, 61: 6, 121: 30, 181: 36, 241: 42}[row["N"]]
        assert row["paper"] == paper
        assert row["diff_steps"] == (None if math.isinf(row["ours"]) else (row["ours"] - paper) / 6)
    text = F9.format_comparison(rows)
    within = sum(1 for r in rows if r["diff_steps"] is not None and abs(r["diff_steps"]) <= 1)
    assert f"{within}/{len(rows)}" in text


def test_fig9_figure_is_linear_with_the_paper_line(fig9_run):
    from ftcjax.analysis.figures import fig_paper9
    from ftcjax.analysis.records import load_records

    recs = [dict(r, cell=dict(r["cell"], K=1000, d=10)) for r in load_records(str(fig9_run))]
    fig = fig_paper9(recs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "the paper's step line (as drawn)" in labels and any("sqrt(N)" in s for s in labels)
    mesh = ax.collections[0]
    assert type(mesh.norm).__name__ == "Normalize" and mesh.norm.vmin == 0.0  # linear, from 0, as the paper
    assert any("at the end of the budget" in a.get_ylabel() for a in fig.axes)  # stop_on_success = false
    paper = [ln for ln in ax.lines if ln.get_label() == "the paper's step line (as drawn)"][0]
    assert [F9.paper_min_m(int(n)) for n in paper.get_xdata()] == list(paper.get_ydata())
