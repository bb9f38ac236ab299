"""Regenerate ``additive_reference.npz``: outputs of the fit kernel BEFORE fine-tuning forms existed.

The stored arrays pin the additive path: ``tests/test_lora.py`` checks that the kernel, now dispatching
on the form, still returns the same bits. Regenerate only from a commit whose kernel is the reference
(record it below), never to make a failing check pass.

Generated from commit 11cb91a (the trainers' kernel, the last one before the form hook); the first
version came from a966d23 and differed from 11cb91a only in the last bits of the Adam path (their
per-lane Adam hyperparameters), which is why it was regenerated, from a checkout of 11cb91a.

    PYTHONPATH=$PWD python3 tests/data/make_additive_reference.py

XLA:CPU compiles for the host's instruction set, so the bits are per ISA as well as per jax version
and backend: the file is named after the host ISA (``additive_reference-avx2.npz``) and records it in
``meta/isa``. ``additive_reference.npz`` (no ISA recorded) came from the CI machine of 2026-11; the
AVX2 file was made on 2026-12-02 from commit c43a992 on an AVX2-only EPYC, where 11cb91a is no
longer in the history (c43a992 gave the bits of additive_reference.npz on the CI machine, the last
CI run before this file).
"""
import platform
from pathlib import Path

import jax
import numpy as np

import ftcjax

CASES = {  # name -> (depth, optimizer, widths, bucket)
    "d2_adam": (2, "adam", [1, 3, 5, 8], 8),
    "d3_adam": (3, "adam", [2, 4, 7, 9], 10),
    "d2_lbfgs": (2, "lbfgs", [2, 4, 6, 6], 6),
}


def run_case(depth, optimizer, widths, bucket):
    protocol = ftcjax.Protocol(depth=depth, optimizer=optimizer, steps=40, segment=20, restarts=1,
                               learning_rate=5e-2, criterion="strict", tol=1e-9, unroll=1)
    probs = ftcjax.make_problems(jax.random.key(11), num=4, K=16, d=2, N=np.array([1, 2, 3, 4]))
    keys = jax.random.split(jax.random.key(12), 4)
    return ftcjax.fit_batch(probs, np.array(widths), keys=keys, protocol=protocol, bucket=bucket)


def host_isa() -> str:
    """``avx512``, ``avx2`` or the machine name: what XLA:CPU's code generation depends on."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else platform.machine()


def main():
    out = {}
    for name, case in CASES.items():
        res = run_case(*case)
        out[f"{name}/mse"] = np.asarray(res.mse)
        out[f"{name}/max_err"] = np.asarray(res.max_err)
        out[f"{name}/steps"] = np.asarray(res.steps)
        for i, leaf in enumerate(jax.tree.leaves(res.params)):
            out[f"{name}/param{i}"] = np.asarray(leaf)
    out["meta/jax"] = np.array(jax.__version__)
    out["meta/backend"] = np.array(jax.default_backend())
    out["meta/isa"] = np.array(host_isa())
    np.savez(Path(__file__).with_name(f"additive_reference-{host_isa()}.npz"), **out)


if __name__ == "__main__":
    main()
