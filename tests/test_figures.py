"""Figures: every figure command writes non-empty PNG and PDF with the expected axes (figure objects)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ftcjax.cli import main
from ftcjax.analysis.synthetic import synthetic_records

pytest.importorskip("matplotlib")
from ftcjax.analysis import figures as F  # noqa: E402
from ftcjax.sweep.integrity import seal
from ftcjax.sweep.plan import instance_id


@pytest.fixture(scope="module")
def records():
    recs = []
    for crit in ("paper", "strict", "relative"):  # Fig. 9 setup: depth 3, d = 10, K = 1000, grid probes
        recs += synthetic_records(Ns=[10, 60, 110, 160, 210], criterion=crit, replicates=2,
                                  widths=range(6, 49, 6), seed=1)
    recs += synthetic_records(Ns=[4, 8, 16, 32], depth=2, alpha=1.0, c=1.0, K=200, replicates=3,
                              widths=range(1, 41), seed=2, non_monotone_rate=0.5)
    for K in (100, 300, 1000):  # fixed N, K over a decade
        recs += synthetic_records(Ns=[30], depth=3, K=K, replicates=3, widths=range(6, 49, 6), seed=K)
    return recs


def _run_dir(tmp_path, recs, name="run"):
    d = tmp_path / name
    (d / "results").mkdir(parents=True)
    with open(d / "results" / "w0.jsonl", "w") as fh:
        fh.writelines(json.dumps(seal(dict(r, instance_id=instance_id(r["cell"], r["replicate"])))) + "\n"
                      for r in recs)  # as the store writes them: the id of its cell, sealed
    return str(d)


def test_figures_command_writes_png_and_pdf(tmp_path, records, capsys):
    run = _run_dir(tmp_path, records)
    out = tmp_path / "figs"
    assert main(["figures", run, "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    for name in ("fig9_paper", "width_vs_N", "width_vs_K", "distribution"):
        png, pdf = out / f"{name}.png", out / f"{name}.pdf"
        assert str(png) in printed and str(pdf) in printed
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5_000
    assert main(["figures", str(tmp_path / "nope"), "--out", str(out)]) == 2


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_xlabel()]


def _legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def _caption(fig):
    return [t.get_text() for t in fig.texts if t.get_text().startswith("protocol:")]


def test_fig9_axes_curves_and_caption(records):
    fig = F.fig_paper9(records)
    heat = [ax for ax in fig.axes if ax.get_xlabel() == F.LABEL_N]
    assert len(heat) == 3  # paper, strict, relative side by side
    assert all(ax.get_ylabel() == F.LABEL_HEAT_M for ax in heat)
    assert [ax.get_title() for ax in heat] == ["paper criterion (l_FT <= 0.04)", "strict criterion",
                                              "relative criterion"]
    leg = _legend_texts(heat[0])
    assert "smallest m with l_FT <= 0.04" in leg
    assert any(t.startswith("fit ") and t.endswith("sqrt(N)") for t in leg)
    assert "g = 0 already passes (trivial)" in leg  # N = 10 (loss of g = 0 ~ 0.007) is trivial
    assert heat[0].collections[0].get_cmap().name == "viridis"
    assert "d = 10, K = 1000" in fig._suptitle.get_text()
    cap = _caption(fig)
    assert cap and "steps=100" in cap[0] and "restarts=2" in cap[0]
    # the step curve is the smallest width whose median best-restart loss is <= 0.04
    step = [ln for ln in heat[0].lines if ln.get_label() == "smallest m with l_FT <= 0.04"][0]
    assert np.all(np.diff(step.get_xdata()) > 0)


def test_fig9_absent_without_depth3_grid_records(records):
    two = [r for r in records if r["cell"]["depth"] == 2]
    assert F.fig_paper9(two) is None


def test_width_vs_N_axes_fits_and_references(records):
    fig = F.fig_width_vs_N(records)
    axes = [ax for ax in fig.axes if ax.get_xlabel()]
    assert _labels(fig) == [(F.LABEL_N, F.LABEL_M)] * 2
    assert [ax.get_xscale() for ax in axes] == ["log", "log"] and [ax.get_yscale() for ax in axes] == ["log"] * 2
    leg2, leg3 = _legend_texts(axes[0]), _legend_texts(axes[1])
    assert any("slope" in t for t in leg2)
    assert any("lower bound" in t for t in leg2) and any("construction" in t for t in leg2)
    assert any("U3" in t for t in leg3) and any("tooth" in t for t in leg3)
    assert "2-layer" in axes[0].get_title() and "3-layer" in axes[1].get_title()
    assert _caption(fig)


def test_width_vs_K_and_distribution(records):
    fig = F.fig_width_vs_K(records)
    assert _labels(fig) == [(F.LABEL_K, F.LABEL_M)]
    assert any("N = 30" in t for t in _legend_texts(fig.axes[0]))
    assert _caption(fig)
    fig = F.fig_distribution(records)
    labs = _labels(fig)
    assert labs and all(lab == (F.LABEL_N, F.LABEL_M_INST) for lab in labs)
    texts = [t for ax in fig.axes for t in _legend_texts(ax)]
    assert "trivial (g = 0 passes)" in texts and "censored (> ceiling)" in texts
    assert "non-monotone (wider net failed)" in texts
    assert _caption(fig)


def test_reference_curves_match_hand_values():
    N = np.array([1.0, 10.0, 100.0])
    two = dict((lab.split(",")[0], v) for lab, v, _ in F.reference_curves(2, N, K=1000, d=10))
    assert list(two["worst-case lower bound min(3N"]) == [3, 30, 300]
    assert list(two["slab construction 4 ceil(N/d)"]) == [4, 4, 40]
    three = {lab: v for lab, v, _ in F.reference_curves(3, N, K=1000, d=10)}
    assert np.isnan(F.reference_curves(2, np.array([20.0]), K=10, d=2)[0][1][0])  # N > K: no value
    assert three["U3 = 6 sqrt(3N+2) (Thm 5.1)"][1] == pytest.approx(6 * np.sqrt(32))
    # tooth: min over p q >= N of (2p+1) + 4q: N = 10 -> p = 5, q = 2 gives 19 (p=4,q=3: 21)
    assert three["tooth construction (2p+1)+4q, pq >= N"][1] == 19
    # 3-layer worst-case lower bound sqrt(2 * 3N + 1/4) - 1/2 at N = 1: 2
    assert three["worst-case lower bound (Thm 5.1)"][0] == pytest.approx(2.0)


def test_package_import_does_not_import_matplotlib():
    code = "import sys, ftcjax.analysis; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "False"


def test_constructions_on_the_same_instances(tmp_path):
    # a real (tiny) run: regenerate its instances from the stored keys and count the Thm 4.4
    # construction's neurons on them; a tampered record (other instance) is detected
    pytest.importorskip("ftcjax.sweep.runner")
    from ftcjax.analysis.instances import construction_counts
    from ftcjax.sweep.runner import run_sweep
    from ftcjax.sweep.spec import parse_spec

    spec = parse_spec("""name = "t"
seed = 5
replicates = 2
[grid]
depth = 2
N = [1, 3]
K = 12
d = 2
criterion = "paper"
[train]
steps = 20
restarts = 1
[width]
values = [2, 4]
strategy = "grid"
""")
    out = tmp_path / "run"
    run_sweep(spec, out)
    from ftcjax.analysis import load_records

    recs = load_records(str(out))
    counts = construction_counts(recs, str(out))
    assert counts is not None and set(counts) == {r["instance_id"] for r in recs}
    for r in recs:
        N, K = r["cell"]["N"], r["cell"]["K"]
        # Thm 4.4: |J| - 1 <= min(3N + 1, K - 1), and at least N neurons for N changed samples
        assert N <= counts[r["instance_id"]]["thm44"] <= min(3 * N + 1, K - 1)
    bad = [dict(r, problem=dict(r["problem"], mse_zero=r["problem"]["mse_zero"] + 0.1)) for r in recs]
    assert construction_counts(bad, str(out)) is None
    fig = F.fig_width_vs_N(recs, constructions=counts)
    assert any("on these instances" in t for t in _legend_texts(fig.axes[0]))


def test_fig9_step_curve_is_the_smallest_width_below_threshold(records):
    # recompute the paper's curve independently from the stored probes
    paper = [r for r in records if r["cell"]["criterion"] == "paper" and r["cell"]["depth"] == 3
             and r["cell"]["K"] == 1000]
    Ns = sorted({r["cell"]["N"] for r in paper})
    expect = []
    for n in Ns:
        rs = [r for r in paper if r["cell"]["N"] == n]
        widths = sorted(p["width"] for p in rs[0]["probes"])
        med = [np.median([min(p["mse"]) for r in rs for p in r["probes"] if p["width"] == w]) for w in widths]
        ok = [w for w, m in zip(widths, med) if m <= 0.04]
        expect.append(ok[0] if ok else np.nan)
    fig = F.fig_paper9(records)
    step = [ln for ln in fig.axes[0].lines if ln.get_label() == "smallest m with l_FT <= 0.04"][0]
    got = np.asarray(step.get_ydata(), dtype=float)
    np.testing.assert_array_equal(np.asarray(step.get_xdata(), dtype=float), np.asarray(Ns, dtype=float))
    np.testing.assert_array_equal(got, np.asarray(expect, dtype=float))


def test_write_default_outputs(tmp_path, records):
    from ftcjax.analysis import write_default_outputs

    run = _run_dir(tmp_path, records)
    write_default_outputs(run)
    for name in ("report.txt", "report.md", "report.csv"):
        assert os.path.getsize(os.path.join(run, name)) > 500
    assert os.path.getsize(os.path.join(run, "figures", "width_vs_N.pdf")) > 5_000


def test_figures_over_two_directories_equal_one_holding_both(tmp_path, records, capsys):
    half = len(records) // 2
    both = _run_dir(tmp_path, records, "both")
    a, b = _run_dir(tmp_path, records[:half], "a"), _run_dir(tmp_path, records[half:], "b")
    assert main(["figures", both, "--out", str(tmp_path / "f1"), "--format", "png"]) == 0
    assert main(["figures", a, b, "--out", str(tmp_path / "f2"), "--format", "png"]) == 0
    one, two = sorted((tmp_path / "f1").iterdir()), sorted((tmp_path / "f2").iterdir())
    assert [p.name for p in one] == [p.name for p in two] and one
    for p, q in zip(one, two):
        assert p.read_bytes() == q.read_bytes(), p.name


def _exponent_like():
    # the exponents sweep's shape: two depths x four d values, censoring at the top
    recs = []
    for depth, alpha in ((2, 1.0), (3, 0.5)):
        for d in (1, 2, 4, 10):
            recs += synthetic_records(Ns=[1, 2, 4, 8, 16, 32], depth=depth, alpha=alpha, c=2.0, K=100, d=d,
                                      criterion="relative", replicates=3, widths=range(1, 40), seed=d + depth)
    return recs


def _texts(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    r = fig.canvas.get_renderer()
    out = [("figure", t) for t in fig.texts if t is not fig._suptitle]
    if fig._suptitle is not None:
        out.append(("suptitle", fig._suptitle))
    for i, ax in enumerate(fig.axes):
        if not ax.axison:
            continue
        out += [(f"ax{i}.title", ax.title), (f"ax{i}.xlabel", ax.xaxis.label), (f"ax{i}.ylabel", ax.yaxis.label)]
        out += [(f"ax{i}.tick", t) for t in ax.get_xticklabels() + ax.get_yticklabels()]
        leg = ax.get_legend()
        if leg is not None:
            out += [(f"ax{i}.legend", t) for t in leg.get_texts()]
    return [(name, t.get_window_extent(r)) for name, t in out if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("which", ["width_vs_N", "distribution", "width_vs_K", "fig9_paper"])
def test_figures_are_publishable(records, which):
    recs = _exponent_like() if which in ("width_vs_N", "distribution") else records
    fig = dict(F.FIGURES)[which](recs)
    assert fig is not None
    texts = _texts(fig)
    # no text overlaps another, except within one legend or one axis' tick labels
    for i, (na, a) in enumerate(texts):
        for nb, b in texts[i + 1:]:
            same_group = na == nb and (na.endswith(".legend") or na.endswith(".tick"))
            if not same_group and a.overlaps(b) and a.width > 0 and b.width > 0:
                inter = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)
                assert min(inter) < 1.0, f"{which}: {na} overlaps {nb}"
    for ax in fig.axes:
        if not ax.axison or ax.get_label() == "<colorbar>":
            continue
        # width ticks are integers, N/K ticks sit at the data's values on log axes
        yt = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert yt and all(float(t).is_integer() for t in yt), (which, yt)
        if ax.get_xscale() == "log":
            over = "K" if which == "width_vs_K" else "N"
            data_x = {float(r["cell"][over]) for r in recs}
            assert set(ax.get_xticks()) <= data_x and len(ax.get_xticks()) >= min(3, len(data_x)), (
                which, ax.get_xticks(), data_x)
            assert len(ax.xaxis.get_minor_ticks()) == 0 or not any(
                t.label1.get_text() for t in ax.xaxis.get_minor_ticks())
        leg = ax.get_legend()
        if leg is not None:
            assert len(leg.get_texts()) <= 12, (which, [t.get_text() for t in leg.get_texts()])
        import re

        assert not re.search(r"\w=\w", ax.get_title()), ax.get_title()  # 'd = 2', never 'depth=3 K=24 ...'


def test_figure_options(tmp_path, records, capsys):
    run = _run_dir(tmp_path, records)
    out = tmp_path / "opts"
    assert main(["figures", run, "--out", str(out), "--groups", "depth=2", "--no-caption", "--format", "pdf",
                 "--size", "7,4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names and all(n.endswith(".pdf") for n in names) and "fig9_paper.pdf" not in names  # depth 3 only
    figs = F.write_all(None, out=str(tmp_path / "x"), records=records, caption=False, size=(7, 4), formats=("png",))
    assert figs
    for bad, needle in ((["--format", "gif"], "--format"), (["--size", "7"], "--size"),
                        (["--groups", "nope=1"], "--groups: no record has the axis 'nope'"),
                        (["--groups", "depth"], "--groups")):
        assert main(["figures", run, "--out", str(out), *bad]) == 2
        assert needle in capsys.readouterr().err
