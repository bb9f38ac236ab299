"""Sweep specs: parsing, defaults, canonical hash, and validation that reports every problem at once."""
import math

import pytest

from ftcjax._src.errors import FTCInputError
from ftcjax.cli import main
from sweep_helpers import TINY_SPEC, run_cli
from ftcjax.sweep.spec import SpecError, canonical_dict, diff_specs, parse_spec, spec_hash

BASE = """
[grid]
N = [2, 4]
K = 20
d = 2
[width]
upper = 10
"""


def test_ranges_are_inclusive_and_defaults_filled():
    s = parse_spec('[grid]\nN = "2:10:4"\nK = "20:30:10"\n[width]\nvalues = [8, 2, 4]\n')
    ax = s.axis_dict
    assert ax["N"] == (2, 6, 10)
    assert ax["K"] == (20, 30)
    assert s.widths == (2, 4, 8)  # sorted
    # every protocol field is filled: from sweeps/default.toml where it sets one, else the Protocol's
    from ftcjax._src.protocol import Protocol

    assert ax["steps"] == (Protocol.steps,)
    assert ax["criterion"] == ("relative",) and ax["rel_eps"] == (0.01,) and ax["restarts"] == (2,)
    assert len(s.cells()) == 3 * 2


def test_builtin_defaults_are_the_default_spec():
    # Deleting any single-valued line from a copy of default.toml must not change what it means.
    import tomllib

    from ftcjax.cli import default_spec_path
    from ftcjax.sweep.spec import spec_from_dict

    data = tomllib.loads(default_spec_path().read_text())
    full = canonical_dict(spec_from_dict(data))
    removable = [(t, k) for t in ("grid", "train", "width", "batch") for k, v in data[t].items()
                 if not isinstance(v, list) and k not in ("N", "K", "strategy")]  # strategy: the search's default
    removable += [(None, "seed"), (None, "replicates")]
    assert len(removable) >= 15
    for table, key in removable:
        cut = {t: (dict(v) if isinstance(v, dict) else v) for t, v in data.items()}
        (cut[table] if table else cut).pop(key)
        assert canonical_dict(spec_from_dict(cut)) == full, f"{table}.{key}"


def test_cells_drop_n_above_k_per_cell():
    s = parse_spec("[grid]\nN = [5, 15]\nK = [10, 20]\n[width]\nupper = 4\n")
    cells = {(c["N"], c["K"]) for c in s.cells()}
    assert cells == {(5, 10), (5, 20), (15, 20)}


def test_hash_ignores_formatting_labels_and_axis_values_not_identity():
    a = parse_spec(BASE)
    b = parse_spec('name = "other"\ndescription = "x"\n[width]\nupper = 10\n[grid]\nd = 2\nK = 20\nN = "2:4:2"\n')
    assert spec_hash(a) == spec_hash(b) and canonical_dict(a) == canonical_dict(b)
    c = parse_spec(BASE.replace("K = 20", "K = 21"))
    diffs = diff_specs(canonical_dict(a), canonical_dict(c))
    assert len(diffs) == 1 and diffs[0].startswith("grid.K: [20]")
    # axis values are not covered (records name their cell: a sweep may grow), everything shared is
    assert spec_hash(c) == spec_hash(a)
    for changed in ("seed = 3\n" + BASE, BASE.replace("upper = 10", "upper = 12"),
                    BASE + "[batch]\nchunk_size = 3\n", BASE.replace("upper = 10", "upper = 10\nstrategy = 'grid'")):
        assert spec_hash(parse_spec(changed)) != spec_hash(a), changed


def test_growth_rules_name_the_fields():
    from ftcjax.sweep.spec import growth_problems

    old = canonical_dict(parse_spec(BASE))
    grown = canonical_dict(parse_spec("replicates = 9\n" + BASE.replace("N = [2, 4]", "N = [1, 2, 3, 4]")
                                      .replace("K = 20", "K = [20, 30]") + "[train]\nsteps = [2000, 4000]\n"))
    assert growth_problems(old, grown) == []
    assert growth_problems(grown, old) != []
    probs = "\n".join(growth_problems(old, canonical_dict(parse_spec(
        "seed = 5\nreplicates = 1\n" + BASE.replace("N = [2, 4]", "N = [2]") + "[train]\nsteps = 500\n"))))
    for needle in ("seed: 0 in the run directory, 5", "grid.N: [4] in the run directory but not in the new spec",
                   "train.steps: [2000]", "replicates: 6 in the run directory, 1"):
        assert needle in probs, probs


def test_overrides_are_validated_like_the_file():
    from ftcjax.sweep.spec import parse_override

    s = parse_spec(BASE, overrides=["train.steps=500", "grid.N=[1,2,4]", "grid.data=sphere", "seed=7"])
    ax = s.axis_dict
    assert ax["steps"] == (500,) and ax["N"] == (1, 2, 4) and ax["data"] == ("sphere",) and s.seed == 7
    assert s.overrides == ("train.steps=500", "grid.N=[1,2,4]", "grid.data=sphere", "seed=7")
    assert parse_override("train.learning_rate=3e-2") == (["train", "learning_rate"], 0.03)
    with pytest.raises(SpecError) as e:
        parse_spec(BASE, overrides=["train.stepz=5", "train.steps=0", "grid.N=[1,99]"])
    joined = "\n".join(e.value.problems)
    assert "train.stepz: unknown key" in joined and "train.steps: 0" in joined and "grid.N: 99 exceeds" in joined
    for bad in ("steps", "=3", "grid.N=[1,"):
        with pytest.raises(SpecError, match="override"):
            parse_spec(BASE, overrides=[bad])
    with pytest.raises(SpecError, match="grid.N is not a table"):
        parse_spec(BASE, overrides=["grid.N.x=1"])


def test_all_problems_reported_at_once():
    text = """
    seed = -1
    [grid]
    N = [2, 1200]
    K = 1000
    depth = 1
    data = "cube"
    [width]
    lower = 5
    upper = 3
    """
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    probs = e.value.problems
    joined = "\n".join(probs)
    assert "seed: -1" in joined
    assert "grid.N: 1200 exceeds grid.K = 1000" in joined
    assert "grid.depth: 1" in joined
    assert "grid.data: unknown value 'cube'" in joined
    assert "width.lower: 5 exceeds width.upper = 3" in joined
    assert len(probs) == 5
    assert isinstance(e.value, FTCInputError)


# (spec text, the field path the message must name)
MALFORMED = [
    ("[grid\nN = 2", "TOML syntax error"),
    (BASE + "colour = 'red'\n", "width.colour"),
    ("bogus = 1\n" + BASE, "bogus"),
    (BASE.replace("K = 20", 'K = "twenty"'), "grid.K"),
    (BASE.replace("N = [2, 4]", "N = [2, 40]"), "grid.N: 40 exceeds grid.K = 20"),
    (BASE.replace("upper = 10", "upper = -3"), "width.upper: -3"),
    (BASE.replace("upper = 10", "values = [4, -2]"), "width.values: -2"),
    (BASE + "[train]\nlearning_rate = nan\n", "train.learning_rate: nan"),
    (BASE + "[train]\nlearning_rate = inf\n", "train.learning_rate: inf"),
    (BASE.replace("N = [2, 4]", "N = []"), "grid.N: empty list"),
    (BASE.replace("d = 2", 'criterion = "loose"'), "grid.criterion: unknown value 'loose'"),
    (BASE.replace("K = 20", "K = 0"), "grid.K: 0"),
    (BASE.replace("N = [2, 4]", 'N = "10:2"'), "grid.N: range '10:2' is empty"),
    (BASE.replace("N = [2, 4]", 'N = "1:x"'), "grid.N"),
    (BASE.replace("N = [2, 4]", "N = [2, 2]"), "grid.N: duplicate"),
    (BASE.replace("N = [2, 4]", "N = [2, 4.5]"), "grid.N[1]: 4.5"),
    (BASE.replace("d = 2", "depth = true"), "grid.depth"),
    (BASE + "[train]\noptimizer = 'rmsprop'\n", "train.optimizer: unknown value 'rmsprop'"),
    (BASE + "[train]\nsteps = 0\n", "train.steps: 0"),
    (BASE + "[train]\nN = 3\n", "train.N"),
    (BASE + "[batch]\nchunk_size = 0\n", "batch.chunk_size: 0"),
    ("replicates = 0\n" + BASE, "replicates: 0"),
    (BASE.replace("N = [2, 4]", ""), "grid.N: missing"),
    (BASE.replace("upper = 10", "lower = 50"), "width.lower: 50 exceeds width.upper = 48"),  # the default
    (BASE + "[train]\nsuccess_fraction = 2.0\n", "success_fraction: 2.0"),
    ("grid = 3\n", "grid: expected a table"),
    (BASE.replace("upper = 10", "upper = 10\nstrategy = 'golden'"), "width.strategy"),
]


@pytest.mark.parametrize("text,needle", MALFORMED, ids=[m[1][:30] for m in MALFORMED])
def test_malformed_spec_exits_2_naming_the_field(tmp_path, capsys, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    rc = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err, err
    assert "Traceback" not in err


def test_cli_run_bad_spec_no_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace("N = [2, 4]", "N = [2, 1200]") + "[train]\ntol = -1\n")
    proc = run_cli("run", str(path), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2
    assert "grid.N: 1200 exceeds grid.K = 20" in proc.stderr
    assert "train.tol" in proc.stderr  # tol lives in [grid]: misplaced key named
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # validation happens before any work


def test_tiny_and_default_specs_are_valid():
    from ftcjax.cli import default_spec_path
    from ftcjax.sweep.spec import load_spec

    assert parse_spec(TINY_SPEC).num_instances == 3 * 2 * 2
    s = load_spec(default_spec_path())
    assert s.name == "default"
    assert {c["depth"] for c in s.cells()} == {2, 3}
    assert s.replicates >= 3 and len(s.axis_dict["N"]) >= 3
    assert all(math.isfinite(v) for v in s.axis_dict["tol"])


def test_width_report_field_is_validated_and_keeps_old_hashes():
    from ftcjax.sweep.spec import parse_spec

    base = parse_spec(BASE)
    assert base.report == "typical" and "report" not in base.to_dict()["width"]
    ex = parse_spec(BASE.replace("upper = 10", "upper = 10\nreport = 'existence'"))
    assert ex.report == "existence" and ex.hash != base.hash
    with pytest.raises(FTCInputError, match="width.report"):
        parse_spec(BASE.replace("upper = 10", "upper = 10\nreport = 'mean'"))


def test_width_rule_pins_a_version_outside_the_hash_and_is_validated():
    # A spec written before rules had versions pins the one its records used and keeps its hash.
    from ftcjax._src.search import RULES
    from ftcjax.sweep.spec import growth_problems, parse_spec, spec_from_dict

    base = parse_spec(BASE.replace("upper = 10", "upper = 10\nstrategy = 'adaptive'"))
    v1 = parse_spec(BASE.replace("upper = 10", "upper = 10\nstrategy = 'adaptive'\nrule = 'adaptive-v1'"))
    assert base.rule == "" and base.search_rule == RULES["adaptive"] and "rule" not in base.to_dict()["width"]
    assert v1.search_rule == "adaptive-v1" and v1.to_dict()["width"]["rule"] == "adaptive-v1"
    assert v1.hash == base.hash
    assert spec_from_dict(v1.to_dict()) == v1  # a manifest's canonical spec re-parses to the pinned one
    assert growth_problems(base.to_dict(), v1.to_dict()) == []  # unpinned -> pinned: the records decide
    v2 = parse_spec(BASE.replace("upper = 10", "upper = 10\nstrategy = 'adaptive'\nrule = 'adaptive-v2'"))
    (why,) = growth_problems(v1.to_dict(), v2.to_dict())
    assert why.startswith("width.rule: adaptive-v1 in the run directory, adaptive-v2")
    for bad, strategy in (("adaptive-v7", "adaptive"), ("adaptive-v1", "bisect")):
        with pytest.raises(FTCInputError, match=r"width.rule: .* is not a version of strategy"):
            parse_spec(BASE.replace("upper = 10", f"upper = 10\nstrategy = '{strategy}'\nrule = '{bad}'"))


def test_check_every_enters_the_hash_only_when_set_and_is_checked_per_cell():
    # A training axis added after sweeps were stored: at its default it is not in the canonical spec,
    # so every spec written before it keeps its hash (and its run directory its records).
    from ftcjax.sweep.spec import parse_spec, spec_from_dict

    base = parse_spec(BASE)
    pinned = parse_spec(BASE + "[train]\ncheck_every = 1\n")
    assert "check_every" not in base.to_dict()["train"] and pinned.hash == base.hash
    assert base.axis_dict["check_every"] == (1,)
    ten = parse_spec(BASE + "[train]\ncheck_every = 10\n")
    assert ten.to_dict()["train"]["check_every"] == [10] and ten.hash != base.hash
    assert spec_from_dict(ten.to_dict()) == ten
    # 3 does not divide the default budget of 2000 steps: one line naming the fields, not a traceback
    with pytest.raises(SpecError, match="steps: 2000 must be a multiple of check_every = 3"):
        parse_spec(BASE + "[train]\ncheck_every = 3\n")
    assert parse_spec(BASE + "[train]\ncheck_every = 3\nsteps = 1500\nsegment = 300\n").axis_dict["check_every"] == (3,)
    with pytest.raises(SpecError, match="train.check_every"):
        parse_spec(BASE + "[train]\ncheck_every = 0\n")
