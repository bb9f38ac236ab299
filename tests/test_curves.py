"""Training curves: ``history_every`` histories drawn by ``ftcjax figures DIR --curves``."""
from __future__ import annotations

import numpy as np
import pytest

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import figures as F
from ftcjax.analysis.records import load_records
from sweep_helpers import TINY_SPEC, run_cli


def _spec(history_every: int, **replace) -> str:
    spec = TINY_SPEC.replace('N = "1:3"', 'N = [1, 2]').replace("K = [6, 8]", "K = 6")
    spec = spec.replace("steps = 60", "steps = 40")
    for old, new in replace.items():
        spec = spec.replace(old, new)
    return spec.replace("unroll = 1 ", f"history_every = {history_every}\nunroll = 1 ")


def _run(base, name: str, spec_text: str):
    spec = base / f"{name}.toml"
    spec.write_text(spec_text)
    out = base / name
    res = run_cli("run", str(spec), "--out", str(out), "--no-report", "--progress", "none", "--cpu-devices", "1",
                  "--compilation-cache", str(base / "xla-cache"))
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("curves"), "with_history", _spec(10))


def _lines(fig):
    """gid -> (x, y) of every run's line in the figure."""
    return {ln.get_gid(): (np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float))
            for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("curve|")}


def test_curves_plot_exactly_the_stored_histories(curve_run):
    records = load_records(curve_run)
    assert all(F.has_history(r) for r in records)
    ids = [r["instance_id"] for r in records]
    fig = F.fig_curves(records, instances=ids)
    lines = _lines(fig)
    expected = set()
    for rec in records:
        for j, p in enumerate(rec["probes"]):
            h = p["history"]
            assert h["every"] == 10 and len(h["mse"]) == p["restarts"]
            for r in range(p["restarts"]):
                for what in ("mse", "max_err"):
                    gid = f"curve|{rec['instance_id']}|{j}|{r}|{what}"
                    expected.add(gid)
                    x, y = lines[gid]
                    np.testing.assert_array_equal(y, np.asarray(h[what][r], float))
                    np.testing.assert_array_equal(x, 10 * np.arange(len(h[what][r])))
                # row 0 is the untrained net: its loss is above what training reached at the stop
                assert h["mse"][r][0] >= p["mse"][r] * (1 - 1e-12)
    assert set(lines) == expected  # every probe and restart, nothing else
    # the loss panel of each instance carries the relative criterion's threshold rel_eps * loss(g = 0)
    thresholds = sorted(ln.get_ydata()[0] for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "threshold")
    want = sorted(r["protocol"]["rel_eps"] * r["problem"]["mse_zero"] for r in records)
    np.testing.assert_allclose(thresholds, want, rtol=1e-12)
    # the reported width is drawn thick
    for rec in records:
        if rec.get("min_width") is None:
            continue
        for j, p in enumerate(rec["probes"]):
            x, _ = lines[f"curve|{rec['instance_id']}|{j}|0|mse"]
            ln = next(ln for ax in fig.axes for ln in ax.get_lines()
                      if ln.get_gid() == f"curve|{rec['instance_id']}|{j}|0|mse")
            assert (ln.get_linewidth() > 1.5) == (p["width"] == rec["min_width"])


def test_default_choice_puts_undecided_instances_first_and_caps():
    def rec(iid, w, censored=False, nonmono=False, N=1):
        return {"instance_id": iid, "min_width": w, "censored": censored, "non_monotone": nonmono,
                "trivial": False, "cell": {"N": N, "depth": 2, "K": 6, "d": 2}, "replicate": 0,
                "probes": [{"width": 2, "history": {"every": 1, "mse": [[1.0]], "max_err": [[1.0]]}}]}

    records = [rec("a", 2), rec("b", 2), rec("c", 2), rec("big", 20), rec("nm", 2, nonmono=True),
               rec("cens", None, censored=True), {**rec("bare", None, censored=True), "probes": [{"width": 2}]}]
    assert F.curve_instances(records) == ["cens", "nm", "big", "a", "b", "c"]
    assert F.curve_instances(records, most=2) == ["cens", "nm"]
    with pytest.raises(FTCInputError, match="'bare' stored no training curves"):
        F.fig_curves(records, instances=["bare"])
    with pytest.raises(FTCInputError, match="no instance 'zz'"):
        F.fig_curves(records, instances=["a", "zz"])


def test_cli_curves_writes_the_figure_for_chosen_instances(curve_run, tmp_path):
    iid = load_records(curve_run)[-1]["instance_id"]
    res = run_cli("figures", str(curve_run), "--curves", "--instances", iid, "--out", str(tmp_path / "f"),
                  "--format", "png")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(tmp_path / "f" / "curves.png")]
    assert (tmp_path / "f" / "curves.png").stat().st_size > 10_000
    bad = run_cli("figures", str(curve_run), "--curves", "--instances", "nope", "--out", str(tmp_path / "g"))
    assert bad.returncode == 2 and "no instance 'nope'" in bad.stderr
    alone = run_cli("figures", str(curve_run), "--instances", iid, "--out", str(tmp_path / "g"))
    assert alone.returncode == 2 and "only with --curves" in alone.stderr


def test_a_run_without_histories_gives_a_one_line_error(tmp_path):
    run = _run(tmp_path, "no_history", _spec(0, **{"replicates = 2": "replicates = 1", "upper = 8": "upper = 2",
                                                     "N = [1, 2]": "N = 1"}))
    assert not any(F.has_history(r) for r in load_records(run))
    res = run_cli("figures", str(run), "--curves", "--out", str(tmp_path / "f"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "history_every" in lines[0] and "[train]" in lines[0], res.stderr
    assert not (tmp_path / "f" / "curves.png").exists()
