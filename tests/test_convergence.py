"""Convergence against the noise floor: a budget shift counts only when it exceeds what new seeds do."""
import numpy as np
import pytest

from ftcjax._src.errors import FTCInputError
from ftcjax.analysis import convergence as conv
from ftcjax.analysis import synthetic as syn

WIDTHS = list(range(1, 49))


def _instances(n=30, seed=0, shrink=1.0):
    rng = np.random.default_rng(seed)
    Ns = np.repeat([2, 4, 8], n // 3)
    w50 = 3.0 * np.sqrt(Ns) * np.exp(0.2 * rng.standard_normal(Ns.size))
    return Ns, [syn.logistic_p(w * shrink, scale=0.15) for w in w50]


def test_reseed_is_converged_and_a_budget_dependent_trainer_is_moving():
    Ns, ps = _instances()
    base = syn.search_records(ps, Ns=Ns, widths=WIDTHS, seed=0)
    reseed = syn.search_records(ps, Ns=Ns, widths=WIDTHS, seed=1)
    # the 2x run of a converged measurement is one more draw of the same p(w)
    same = syn.search_records(ps, Ns=Ns, widths=WIDTHS, seed=2, steps=200)
    v = conv.noise_floor_verdicts(base, reseed, same)
    assert len(v) == 1 and v[0].n == 30 and v[0].verdict == "converged", v
    assert v[0].moved_reseed > 0  # the noise floor is real: widths move under new seeds alone
    # a trainer whose widths shrink by 35% with twice the steps
    _, ps_more = _instances(shrink=0.65)
    moving = syn.search_records(ps_more, Ns=Ns, widths=WIDTHS, seed=2, steps=200)
    v = conv.noise_floor_verdicts(base, reseed, moving)
    assert v[0].verdict == "moving" and v[0].p_value < 1e-3
    assert v[0].ratio_ci[1] < 1.0 and abs(v[0].median_ratio - 0.65) < 0.15
    assert "moving" in conv.format_verdicts(v)


def test_records_of_different_rules_are_not_compared():
    Ns, ps = _instances(n=9)
    base = syn.search_records(ps, Ns=Ns, widths=WIDTHS, seed=0)
    other = syn.search_records(ps, Ns=Ns, widths=WIDTHS, seed=1, strategy="bisect")
    with pytest.raises(FTCInputError, match="different rules"):
        conv.noise_floor_verdicts(base, base, other)
    with pytest.raises(FTCInputError, match="different rules"):
        conv.compare_records(base, other)


def test_budget_and_reseed_specs_change_only_their_axis():
    data = {"name": "s", "seed": 3, "grid": {"N": [1, 2], "K": 10}, "train": {"steps": 100, "restarts": 2}}
    st = conv.budget_spec_dict(data, "steps")
    assert st["train"] == {"steps": 200, "restarts": 2} and st["seed"] == 3 and st["name"] == "s-steps-x2"
    rs = conv.reseeded_spec_dict(data)
    assert rs["train"] == {"steps": 100, "restarts": 2, "train_seed": 1} and rs["grid"] == data["grid"]
    with pytest.raises(FTCInputError, match="axis"):
        conv.budget_spec_dict(data, "lr")
    nb = conv.next_budgets({"steps": [conv.GroupVerdict("g", 9, 5, 2, 0.01, 0.7, (0.6, 0.8), 1.0, "moving")],
                            "restarts": [conv.GroupVerdict("g", 9, 1, 2, 0.6, 1.0, (0.9, 1.1), 1.0, "converged")]},
                           {"g": {"steps": 4, "restarts": 1}}, max_factor=8)
    assert nb == {"g": {"steps": 8, "restarts": 1}}
    assert conv.next_budgets({"steps": [conv.GroupVerdict("g", 9, 5, 2, 0.01, 0.7, None, 1.0, "moving")]},
                             {"g": {"steps": 8, "restarts": 1}}, max_factor=8) == {}


def test_until_converged_doubles_only_moving_groups_and_states_where_each_converged():
    # Two groups (depth 2 and 3); depth 3's widths shrink with every doubling up to 4x, depth 2 never moves.
    rng = np.random.default_rng(0)
    Ns = np.repeat([2, 4, 8], 8)
    w50 = 3.0 * np.sqrt(Ns) * np.exp(0.2 * rng.standard_normal(Ns.size))
    calls = []

    def run(spec, run_dir):
        steps = spec["train"]["steps"]
        level = steps // 100
        seed = spec["train"].get("train_seed", 0) + 7 * spec["train"]["restarts"]
        depths = spec["grid"]["depth"]
        calls.append((run_dir, steps, spec["train"]["restarts"], tuple(depths)))
        out = []
        for depth in depths:
            shrink = 1.0 if depth == 2 else 0.6 ** np.log2(min(max(level, 1), 4))
            ps = [syn.logistic_p(w * shrink, scale=0.15) for w in w50]
            out += syn.search_records(ps, Ns=Ns, widths=WIDTHS, seed=seed + depth, steps=steps, depth=depth,
                                      restarts=spec["train"]["restarts"])
        return out

    data = {"name": "s", "grid": {"depth": [2, 3], "N": [2, 4, 8], "K": 100}, "train": {"steps": 100, "restarts": 2}}
    st = conv.until_converged(data, "runs/s", run=run, max_factor=8)
    by_depth = {label.split()[0]: e for label, e in st.items()}
    assert by_depth["depth=2"]["converged_at"] == 1
    assert by_depth["depth=3"]["converged_at"] == 4  # moving at x1 and x2 (steps shrink widths), not at x4
    # after level 1 only the moving group (depth 3) is re-run
    assert all(c[3] == (3,) for c in calls if "-b" in c[0])
    assert "converged at budget x4" in conv.format_until(st, 8)


@pytest.mark.slow
def test_cli_run_until_converged_on_a_tiny_sweep(tmp_path, capsys):
    from ftcjax import cli

    spec = tmp_path / "tiny.toml"
    spec.write_text('name = "tiny"\nseed = 1\nreplicates = 3\n[grid]\ndepth = 2\nN = [1, 2]\nK = 6\nd = 1\n'
                    'criterion = "relative"\n[train]\nsteps = 40\nsegment = 20\nrestarts = 1\nunroll = 1\n'
                    '[width]\nlower = 1\nupper = 6\n')
    out = tmp_path / "runs" / "tiny"
    assert cli.main(["run", str(spec), "--out", str(out), "--until-converged", "--max-factor", "2",
                     "--progress", "none", "--cpu-devices", "1"]) == 0
    text = capsys.readouterr().out
    assert "depth=2" in text and ("converged at budget x1" in text or "NOT converged by budget x2" in text)
    for suffix in ("", "-reseed", "-steps-x2", "-restarts-x2"):
        assert (tmp_path / "runs" / f"tiny{suffix}").is_dir()


def test_budget_twin_of_a_portfolio_doubles_each_members_own_budget_and_stays_a_valid_spec():
    import tomllib

    from ftcjax.analysis.convergence import budget_spec_dict, dump_toml, reseeded_spec_dict
    from sweep_helpers import TINY_SPEC
    from ftcjax.sweep.spec import parse_spec

    text = TINY_SPEC + '\n[[portfolio.member]]\nname = "a"\n\n[[portfolio.member]]\nname = "b"\nsteps = 90\n'
    data = tomllib.loads(text)
    twin = budget_spec_dict(data, "steps")
    assert twin["train"]["steps"] == 120 and twin["portfolio"]["member"][1]["steps"] == 180
    assert data["portfolio"]["member"][1]["steps"] == 90  # the input is not modified
    for d in (twin, reseeded_spec_dict(data)):
        spec = parse_spec(dump_toml(d))  # [[portfolio.member]] tables are written back as such
        assert spec.axis_dict["member"] == ("a", "b")


def test_until_converged_does_not_call_a_group_with_too_few_pairs_moving():
    # depth 2 has 3 instances (no paired test possible), depth 3 has 9 that never move
    rng = np.random.default_rng(1)
    calls = []

    def run(spec, run_dir):
        calls.append(run_dir)
        seed = spec["train"].get("train_seed", 0) + 7 * spec["train"]["restarts"]
        out = []
        for depth in spec["grid"]["depth"]:
            Ns = np.repeat([2, 4, 8], 1 if depth == 2 else 3)
            w50 = 3.0 * np.sqrt(Ns) * np.exp(0.2 * np.random.default_rng(depth).standard_normal(Ns.size))
            out += syn.search_records([syn.logistic_p(w, scale=0.15) for w in w50], Ns=Ns, widths=WIDTHS,
                                      seed=seed + depth, steps=spec["train"]["steps"], depth=depth,
                                      restarts=spec["train"]["restarts"])
        return out

    data = {"name": "s", "grid": {"depth": [2, 3], "N": [2, 4, 8], "K": 100}, "train": {"steps": 100, "restarts": 2}}
    st = conv.until_converged(data, "runs/s", run=run, max_factor=8)
    by_depth = {label.split()[0]: e for label, e in st.items()}
    assert by_depth["depth=2"]["too_few"] and by_depth["depth=2"]["converged_at"] is None
    assert {v.verdict for v in by_depth["depth=2"]["verdicts"]} == {"too few"}
    assert by_depth["depth=3"]["converged_at"] == 1 and not by_depth["depth=3"]["too_few"]
    assert not any("-b2" in c for c in calls)  # nothing re-run at a larger budget: no group moved
    text = conv.format_until(st, 8)
    assert "depth=2" in text and "NOT judged: fewer than 6" in text and "widths still move" not in text
