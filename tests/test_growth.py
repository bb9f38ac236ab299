"""Growing a finished sweep (more N, K or replicates in the same directory) computes only the new
instances and gives exactly the results of a fresh run of the grown spec."""
import json

from sweep_helpers import DEVICES, TINY_SPEC, reference_run, results_without_timing, run_cli, shared_cache

from ftcjax.sweep.plan import make_plan
from ftcjax.sweep.spec import parse_spec

# TINY_SPEC has N = 1..3, K = [6, 8], replicates = 2, chunk_size = 2: start from a sub-grid of it
SMALL = (TINY_SPEC.replace('N = "1:3"', "N = [1, 3]").replace("K = [6, 8]", "K = 6")
         .replace("replicates = 2", "replicates = 1"))


def test_plan_layout_is_stable_under_growth():
    small, full = make_plan(parse_spec(SMALL)), make_plan(parse_spec(TINY_SPEC))
    assert sum(len(c) for c in full) == parse_spec(TINY_SPEC).num_instances
    blocks = {c.key: c.ids for c in full}
    for chunk in small:  # every small chunk is the head of the grown spec's chunk with the same key
        assert blocks[chunk.key][:len(chunk)] == chunk.ids
    grown = make_plan(parse_spec(TINY_SPEC.replace("replicates = 2", "replicates = 5")))
    grown_blocks = {c.key: c.ids for c in grown}
    for key, ids in blocks.items():  # full chunks never change when replicates grow
        assert grown_blocks[key] == ids


def test_growing_computes_only_new_instances_and_equals_a_fresh_run(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "sweep-reference"
    fresh = results_without_timing(reference_run(base))
    small, full = tmp_path / "small.toml", tmp_path / "full.toml"
    small.write_text(SMALL)
    full.write_text(TINY_SPEC)
    out = tmp_path / "grown"
    args = ("--out", str(out), "--no-report", "--progress", "none", *DEVICES, "--compilation-cache",
            shared_cache(base))
    first = run_cli("run", str(small), *args)
    assert first.returncode == 0, first.stderr
    before = {r["instance_id"]: r for r in _lines(out)}
    assert len(before) == parse_spec(SMALL).num_instances == 2
    grown = run_cli("run", str(full), *args)
    assert grown.returncode == 0, grown.stderr
    after = _lines(out)
    # nothing recomputed: the old lines are untouched and every new line is a new instance
    assert [r for r in after if r["instance_id"] in before] == list(before.values())
    assert len(after) == len(fresh) == parse_spec(TINY_SPEC).num_instances
    assert results_without_timing(out) == fresh  # bit for bit, old and new instances alike
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"]["grid"]["K"] == [6, 8] and manifest["grown_from"][0]["replicates"] == 1
    # shrinking back is refused, naming the fields
    back = run_cli("run", str(small), *args)
    assert back.returncode == 2
    assert "grid.K: [8] in the run directory but not in the new spec" in back.stderr
    assert "replicates: 2 in the run directory, 1 in the new spec" in back.stderr


def test_overrides_round_trip_into_the_run_directory(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp() / "sweep-reference"
    spec = tmp_path / "small.toml"
    spec.write_text(SMALL)
    out = tmp_path / "over"
    res = run_cli("run", str(spec), "grid.N=[2]", "train.steps=40", "--out", str(out), "--no-report",
                  "--progress", "none", *DEVICES, "--compilation-cache", shared_cache(base))
    assert res.returncode == 0, res.stderr
    from ftcjax.sweep.store import RunDir

    stored = RunDir(out).spec()
    assert stored.axis_dict["N"] == (2,) and stored.axis_dict["steps"] == (40,)
    assert stored.overrides == ("grid.N=[2]", "train.steps=40")
    assert "#   grid.N=[2]" in (out / "spec.toml").read_text()
    assert {r["cell"]["steps"] for r in _lines(out)} == {40}
    bad = run_cli("run", str(spec), "train.steps=0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "train.steps: 0 must be an integer >= 1" in bad.stderr
    assert not (tmp_path / "bad").exists()


def _lines(run_dir):
    out = []
    for p in sorted((run_dir / "results").glob("*.jsonl")):
        out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return out
