"""Results do not depend on the device count.

8 fake CPU devices and 1 device must both give the bits of 2 (the reference): every device runs the
same single-device program over fixed-size chunks of lanes (see ftcjax/_src/fit.py).
"""
import json

import pytest

from sweep_helpers import (TINY_SPEC, reference_run, results_without_timing, run_cli,
                                   shared_cache)


def _run(tmp_path_factory, name, *args, env=None):
    base = tmp_path_factory.getbasetemp() / "sweep-reference"
    out = tmp_path_factory.getbasetemp() / name
    if not (out / "manifest.json").exists() or len(results_without_timing(out)) < 12:
        spec = tmp_path_factory.getbasetemp() / f"{name}.toml"
        spec.write_text(TINY_SPEC)
        res = run_cli("run", str(spec), "--out", str(out), "--no-report", "--progress", "none",
                      "--compilation-cache", shared_cache(base), *args, env=env)
        assert res.returncode == 0, res.stderr
    return out


# Several full CLI runs in fresh processes (~2 min on 2 cores): the slow CI step runs them, so the
# default suite stays under 10 minutes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ref = reference_run(tmp_path_factory.getbasetemp() / "sweep-reference")  # --cpu-devices 2
    eight = _run(tmp_path_factory, "devices-8", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    one = _run(tmp_path_factory, "devices-1", "--cpu-devices", "1")
    return {n: (d, results_without_timing(d)) for n, d in ((2, ref), (8, eight), (1, one))}


def _device_count(run_dir):
    return json.loads((run_dir / "env" / "shard-0000-of-0001.json").read_text())["local_device_count"]


def test_device_counts_are_what_was_asked(runs):
    # --cpu-devices applies, and the user's XLA_FLAGS is left alone (8 fake devices, not 2)
    assert {n: _device_count(d) for n, (d, _) in runs.items()} == {2: 2, 8: 8, 1: 1}


def test_eight_devices_match_two_bit_for_bit(runs):
    assert runs[8][1].keys() == runs[2][1].keys()
    assert runs[8][1] == runs[2][1]


def test_one_device_matches_bit_for_bit(runs):
    assert runs[1][1].keys() == runs[2][1].keys()
    assert runs[1][1] == runs[2][1]


# The plan picks lanes_per_step from the spec (chunk_size x restarts, the problem size), never from the
# device count: with chunk_size = 8 it picks 8 lanes per lax.map step, and 1, 2 and 8 devices (which pad
# the rounds differently) still give the same bits.
WIDE_SPEC = TINY_SPEC.replace("chunk_size = 2", "chunk_size = 8")


@pytest.fixture(scope="module")
def wide_runs(tmp_path_factory):
    base = tmp_path_factory.getbasetemp() / "sweep-reference"
    ref = reference_run(tmp_path_factory.getbasetemp() / "sweep-wide", WIDE_SPEC)
    out = {2: ref}
    for n, args, env in ((1, ("--cpu-devices", "1"), None),
                         (8, (), {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})):
        d = tmp_path_factory.getbasetemp() / f"wide-{n}"
        spec = tmp_path_factory.getbasetemp() / f"wide-{n}.toml"
        spec.write_text(WIDE_SPEC)
        res = run_cli("run", str(spec), "--out", str(d), "--no-report", "--progress", "none",
                      "--compilation-cache", shared_cache(base), *args, env=env)
        assert res.returncode == 0, res.stderr
        out[n] = d
    return {n: results_without_timing(d) for n, d in out.items()}


def test_plan_chosen_lanes_per_step_gives_the_same_bits_on_1_2_and_8_devices(wide_runs):
    lanes = {rec["protocol"]["lanes_per_step"] for rec in wide_runs[2].values()}
    assert lanes == {8}, lanes  # the plan's choice, not the old fixed 4
    assert all(rec["cell"]["lanes_per_step"] == 0 for rec in wide_runs[2].values())
    assert len(wide_runs[2]) == 12
    for n in (1, 8):
        assert wide_runs[n] == wide_runs[2], n
