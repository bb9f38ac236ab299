"""benchmarks/search_cost.py: the columns it prints are computed as documented (a smoke run)."""
import importlib.util
import math
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "search_cost.py"


def _module():
    spec = importlib.util.spec_from_file_location("search_cost", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_interval_steps_counts_candidates_in_the_stored_interval():
    sc = _module()
    unit, fig9 = list(range(1, 49)), list(range(6, 49, 6))
    assert sc._interval_steps((3, 5), unit) == 2  # (3, 5] holds 4 and 5
    assert sc._interval_steps((0, 6), fig9) == 1
    assert sc._interval_steps((12, 48), fig9) == 6
    assert math.isinf(sc._interval_steps((7, None), unit)) and math.isinf(sc._interval_steps(None, unit))


@pytest.mark.slow
def test_quick_run_prints_v1_beside_the_current_rule(capsys):
    sc = _module()
    assert sc.main(["--quick", "--restarts", "1"]) == 0
    out = capsys.readouterr().out
    assert "v1 rec" in out and "interval steps" in out
    rows = [line for line in out.splitlines() if "logistic" in line]
    assert len(rows) == len(sc.DESIGNS)
