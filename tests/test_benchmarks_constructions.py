"""Smoke test of benchmarks/constructions.py: every row it prints is a real, verified build.

No timing is asserted (targets live in the benchmark's table): the rows must exist, come from
builds that succeeded with exact verification on, and meet their proven neuron bounds.
"""
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from benchmarks import constructions as bench  # noqa: E402


def test_quick_rows_are_verified_builds(tmp_path):
    out = tmp_path / "c.json"
    rows = bench.main(["--quick", "--only", "tooth,4n4,thm44_exact,slab", "--out", str(out)])
    assert out.exists()
    assert [(r["name"], r["K"]) for r in rows] == [
        (n, K) for K, _, _, _ in bench.QUICK_SIZES for n in ("tooth", "4n4", "thm44_exact", "slab")]
    for r in rows:
        assert not r["status"].startswith(("failed", "over")), r
        assert r["neurons"] <= r["bound"], r
        assert r["exact"] == (r["name"] != "slab"), r
    assert "| tooth |" in bench.render(rows)


def test_unknown_name_is_refused(capsys):
    import pytest
    with pytest.raises(SystemExit):
        bench.main(["--only", "nope"])
    assert "unknown construction" in capsys.readouterr().err
