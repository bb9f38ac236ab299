"""Smoke tests of the benchmark suite (benchmarks/): it runs, and it compares equal computations.

The PyTorch references must train exactly what ftcjax trains: from the same initial parameters
(exported from ftcjax's init in the shared network format) both reach the same final loss and the
same parameters. torch is a benchmark-only dependency: those tests skip without it.
"""
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import ftcjax  # noqa: E402
from benchmarks import harness  # noqa: E402



def _torch():
    return pytest.importorskip("torch")


def _problems(num, K, d, N, dtype):
    return ftcjax.make_problems(jax.random.key(3), num=num, K=K, d=d, N=N, dtype=dtype)


def _ftc_and_init(probs, width, depth, steps, schedule, dtype):
    """Train with ftcjax (no early stop) and return (FitResult, initial layers per instance)."""
    num, K, d = probs.x.shape
    keys = jax.random.split(jax.random.key(11), num)
    protocol = ftcjax.Protocol(depth=depth, learning_rate=2e-2, schedule=schedule, steps=steps,
                               segment=max(1, steps // 2), restarts=1, criterion="strict",
                               tol=1e-12, dtype=dtype)
    res = ftcjax.fit_batch(probs, np.full((num,), width), keys=keys, protocol=protocol)
    with jax.enable_x64(dtype == "float64"):
        inits = [ftcjax.to_layers(ftcjax.init_mlp(keys[i], width, in_dim=d, depth=depth, bucket=width,
                                                  dtype=jnp.dtype(dtype)), width, depth=depth)
                 for i in range(num)]
    return res, inits


# Each (depth, schedule, dtype) is a new compilation: two cases cover both depths and schedules.
@pytest.mark.parametrize("depth,width,schedule", [(2, 6, "constant"), (3, 8, "cosine")])
def test_torch_eager_matches_ftcjax_float64(depth, width, schedule):
    torch = _torch()
    from benchmarks import torch_reference as tref

    steps, num = 12, 2
    probs = _problems(num, K=40, d=3, N=6, dtype="float64")
    res, inits = _ftc_and_init(probs, width, depth, steps, schedule, "float64")
    assert np.all(np.asarray(res.steps) == steps)  # nobody stopped early: equal work
    sizes = harness.mlp_sizes(depth, width, 3)
    x, z = np.array(probs.x), np.array(probs.z)  # writable copies for torch
    for i in range(num):
        model = tref.make_mlp(sizes, dtype=torch.float64)
        tref.load_layers(model, inits[i])
        loss = tref.train_eager(x[i], z[i], sizes=sizes, steps=steps, learning_rate=2e-2,
                                schedule=schedule, init_layers=inits[i], dtype=torch.float64)
        np.testing.assert_allclose(loss, float(res.mse[i]), rtol=1e-9)
        # The initial loss differs from the final one, so the comparison above saw real training.
        with torch.no_grad():
            init_loss = float(((model(torch.as_tensor(x[i])).squeeze(-1) - torch.as_tensor(z[i])) ** 2).mean())
        assert abs(init_loss - loss) > 1e-6 * max(1.0, init_loss)


def test_torch_float32_and_ensemble_match_ftcjax():
    torch = _torch()
    from benchmarks import torch_reference as tref

    steps, num, width, depth = 15, 3, 8, 3
    probs = _problems(num, K=50, d=4, N=8, dtype="float32")
    res, inits = _ftc_and_init(probs, width, depth, steps, "cosine", "float32")
    sizes = harness.mlp_sizes(depth, width, 4)
    x, z = np.array(probs.x), np.array(probs.z)  # writable copies for torch
    eager = np.array([tref.train_eager(x[i], z[i], sizes=sizes, steps=steps, learning_rate=2e-2,
                                       schedule="cosine", init_layers=inits[i]) for i in range(num)])
    stacked = [(np.stack([inits[i][l][0] for i in range(num)]), np.stack([inits[i][l][1] for i in range(num)]))
               for l in range(depth)]
    ens = tref.train_ensemble(x, z, sizes=sizes, steps=steps, learning_rate=2e-2, schedule="cosine",
                              init_layers=stacked)
    np.testing.assert_allclose(eager, np.asarray(res.mse), rtol=2e-4)
    np.testing.assert_allclose(ens, eager, rtol=2e-4)
    assert torch.get_num_threads() >= 1


def test_harness_flops_sizes_and_compile_counter():
    # W1: 10 -> 12 -> 12 -> 1 at K = 1000: forward 2 K (120 + 144 + 12) per step, x3 with backward.
    assert harness.mlp_sizes(3, 24, 10) == (10, 12, 12, 1)
    assert harness.mlp_sizes(3, 25, 10) == (10, 12, 13, 1)  # d2 = ceil(m/2), as ftcjax's split
    assert ftcjax.hidden_widths(25, 3) == (12, 13)
    assert harness.mlp_sizes(2, 16, 2) == (2, 16, 1)
    assert harness.train_flops((10, 12, 12, 1), 1000, 1000) == pytest.approx(1.656e9)
    with pytest.raises(ValueError, match="depth"):
        harness.mlp_sizes(4, 8, 2)

    f = jax.jit(lambda a: jnp.sin(a) * 3.0 + 1.0)
    with harness.CompileCounter() as cc:
        f(jnp.ones((7, 5))).block_until_ready()
    assert cc.count >= 1 and cc.seconds > 0
    with harness.CompileCounter() as cc2:
        f(jnp.ones((7, 5))).block_until_ready()  # cached: no compile
    assert cc2.count == 0

    t = harness.time_fn(lambda: sum(range(1000)), reps=3)
    assert len(t.times) == 3 and t.best <= t.median
    mem = harness.rss_peak_delta(lambda: np.ones(4_000_000).sum())  # 32 MB touched
    if mem["rss_delta_bytes"] is not None:
        assert mem["rss_delta_bytes"] >= 16_000_000


@pytest.mark.slow  # ~45 s; run once in CI, in the benchmark step with torch (.ci/run)
def test_run_quick_writes_table_and_json(tmp_path, capsys, monkeypatch):
    from benchmarks import run

    # Smaller than --quick (which a person runs by hand): one B per row kind, W1 shrunk for the
    # recompile check; every section's code path still runs end to end.
    tiny = dict(run.QUICK, steps=10, recompile_default_bucket=False)
    tiny["W2"] = dict(run.QUICK["W2"], B=[4], loop=2, func_B=[4], proto_B=[8])
    tiny["W1"] = dict(run.QUICK["W1"], K=32, d=2, N=4)
    monkeypatch.setattr(run, "QUICK", tiny)
    out = tmp_path / "quick.json"
    res = run.main(["--quick", "--only", "W2,recompile", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "W2:" in printed and "ftcjax is" in printed and "Targets" in printed
    data = json.loads(out.read_text())
    impls = {r["impl"] for r in data["W2"]}
    assert "ftcjax fit_batch" in impls and "JAX yardstick (no masks/criteria)" in impls
    assert "ftcjax check_every=10 (judged every 10 steps)" in impls  # beside the default, not as it
    for r in data["W2"]:
        assert r["trainings_per_s"] > 0 and r["ms_per_training"] > 0
    ftc_rows = [r for r in data["W2"] if r["impl"] == "ftcjax fit_batch"]
    assert all(r["steps_min"] == r["steps_max"] == tiny["steps"] for r in ftc_rows)
    rc = data["recompile"]
    for case in ("new widths, same bucket", "new N", "new learning rate"):
        assert rc[case]["recompiled_kernel"] is False, (case, rc[case])
    if data["torch_available"]:
        assert any(i.startswith("PyTorch torch.func vmap ensemble") for i in impls)
        assert any(i.startswith("PyTorch eager") for i in impls)
        goals = {t["target"] for t in data["target_summary"]}
        assert {"W2 speed-up over eager", "W2 speed-up over eager (check_every = 10)"} <= goals, goals
    else:
        assert "PyTorch is not installed" in printed
    assert res["config"]["mode"] == "quick"


@pytest.mark.slow
def test_trainer_benchmark_quick_run_prints_its_tables(capsys):
    from benchmarks import trainers

    trainers.main(["--quick", "--reps", "1"])
    out = capsys.readouterr().out
    assert "| W1 |" in out and "| W2 |" in out and "| T64 |" in out and "speed-up" in out
    solve = [ln for ln in out.splitlines() if ln.startswith("| 65 | 3 |") or ln.startswith("| 193 | 4 |")]
    assert len(solve) == 2, out  # the solve table: P, its block count by the size rule


@pytest.mark.slow  # compiles four W1-like kernels (~45 s on 2 cores): the ladder must not rot
def test_segment_profile_ladder_runs_and_accounts_for_the_whole_product(tmp_path):
    from benchmarks import segment_profile

    out = tmp_path / "profile.json"
    result = segment_profile.main(["--quick", "--rounds", "1", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    rows = result["rows"]
    assert [r["rung"].split()[0] for r in rows] == ["matmuls", "+", "+", "+"] and len(rows) == 4
    assert all(np.isfinite(r["ms_per_training"]) and r["ms_per_training"] > 0 for r in rows)
    # the rungs' increments add up to the product (the last rung) exactly: no time is unaccounted
    np.testing.assert_allclose(sum(r["added_ms"] for r in rows), rows[-1]["ms_per_training"], rtol=1e-12)
    np.testing.assert_allclose(sum(r["share_of_product"] for r in rows), 1.0, rtol=1e-12)
    assert all(0 < r["fraction_of_peak"] < 2 for r in rows)  # a FLOP count or a peak off by 10x shows here
