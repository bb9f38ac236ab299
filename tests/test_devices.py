"""Results do not depend on the device count.

8 fake CPU devices must give the bits of 2 (the reference); 1 device must give the same decisions
(every width found, every probe's success and step count) and the same losses to rounding. The core's
one-device program currently differs from the multi-device one in the last bits of the losses
(about 1e-15 relative, measured); the bit-for-bit check is an expected failure until that is fixed.
"""
import json
import math

import pytest

from ftcjax.sweep._testing import (TINY_SPEC, reference_run, results_without_timing, run_cli,
                                   shared_cache)

FLOAT_KEYS = ("mse", "max_err")


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


def _strip_floats(rec):
    rec = json.loads(json.dumps(rec))
    for p in rec["probes"]:
        for k in FLOAT_KEYS:
            p[k] = None
    return rec


def test_one_device_same_decisions_and_losses_to_rounding(runs):
    one, two = runs[1][1], runs[2][1]
    assert one.keys() == two.keys()
    for iid in two:
        assert _strip_floats(one[iid]) == _strip_floats(two[iid]), iid
        for p1, p2 in zip(one[iid]["probes"], two[iid]["probes"]):
            for k in FLOAT_KEYS:
                for a, b in zip(p1[k], p2[k]):
                    assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), (iid, k, a, b)


@pytest.mark.xfail(strict=True, reason="core: the 1-device fit program differs from the multi-device one "
                                        "in the last bits (~1e-15 relative); decisions are identical")
def test_one_device_matches_bit_for_bit(runs):
    assert runs[1][1] == runs[2][1]
