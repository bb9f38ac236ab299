"""Construction neuron counts on the very instances a sweep trained on (regenerated from their keys).

A stored record holds the minimal width found by training, not the data. The data are a pure
function of the sweep seed and the instance coordinates (``ftcjax.sweep.plan.instance_keys``), so the
same ``x, z, changed`` are regenerated here exactly as the runner drew them, and the constructions'
neuron counts are computed on them: "what provably exists" on the same instances as "what training
found". Counts used (all from :mod:`ftcjax._src.bounds`, the single source of the formulas):

* 2-layer: the Thm 4.4 construction (``|J| - 1`` neurons for the samples sorted by a random
  projection, minus zero-weight ones) and the slab construction (``4 ceil(N/d)``, general position),
  both built on the instance;
* 3-layer: the tooth construction ``(2p+1) + 4q``, built and verified exactly on every instance
  (about 0.1 s at K = 1000).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["construction_counts", "regenerated"]


def construction_counts(records: Sequence[dict], run_dir: str, *, max_instances: int = 2000,
                        projection_seed: int = 0) -> Optional[dict]:
    """{instance_id: {"thm44": int, "slab": int} (2-layer) or {"tooth": int} (3-layer)}.

    Counts are the hidden ReLUs of the constructions of :mod:`ftcjax.constructions` built on the
    regenerated instance (zero-weight neurons pruned); None where a construction cannot be built.

    Returns None when the run's spec or the kernels are unavailable (e.g. records copied without
    their manifest), or when there are more than ``max_instances`` records (regeneration cost).
    ``projection_seed`` fixes the random projection of the Thm 4.4 count (any projection with
    distinct values is valid; the count depends on it, which is part of the construction).
    """
    if len(records) > max_instances:
        return None
    inst = regenerated(records, run_dir)  # the runner's own instances, checked against the records
    if inst is None:
        return None
    from ftcjax import constructions as C

    out = {}
    for rec, x, z, changed in inst:
        counts: dict = {}
        if int(rec["cell"]["depth"]) == 2:
            counts["thm44"] = _count(C.two_layer_thm44, x, z, changed, projection_seed)
            counts["slab"] = _count(C.two_layer_slab, x, z, changed, projection_seed)
        else:
            counts["tooth"] = _count(C.tooth, x, z, changed, projection_seed, rescale=True)
        out[rec["instance_id"]] = counts
    return out


def _count(build, x, z, changed, seed, **kw) -> Optional[int]:
    """Hidden ReLU count of a construction on one instance; None when it cannot be built there
    (e.g. projections that tie, or data not in general position for the slab construction)."""
    try:
        return int(build(x, z, changed, rng=seed, **kw).neurons)
    except ValueError:  # FTCInputError is a ValueError
        return None


def regenerated(records: Sequence[dict], run_dir: str) -> Optional[list]:
    """``[(record, x (K, d), z (K,), changed (K,))]`` for the records of depth 2 or 3 with N >= 1: the
    instances regenerated from the run's seed exactly as the runner drew them (float64 arrays).

    None when the run's manifest is missing (records copied alone) or a regenerated instance does not
    reproduce the loss of g = 0 its record stored (a foreign or damaged record).
    """
    from ftcjax.sweep.cells import instance_problems
    from ftcjax.sweep.plan import Instance
    from ftcjax.sweep.store import RunDir

    try:
        seed = int(RunDir(run_dir).read_manifest()["spec"]["seed"])
    except (ValueError, KeyError, OSError):
        return None
    kept = [r for r in records if int(r["cell"]["depth"]) in (2, 3) and int(r["cell"]["N"]) >= 1]
    insts = [Instance(dict(r["cell"]), int(r.get("replicate", 0))) for r in kept]
    try:
        problems = instance_problems(seed, insts)  # the runner's own mapping from cell to problem
    except (KeyError, ValueError):  # records of another schema: the instances cannot be rebuilt
        return None
    out = []
    for rec, prob in zip(kept, problems):
        x = np.asarray(prob.x, dtype=np.float64)
        z = np.asarray(prob.z, dtype=np.float64)
        stored = (rec.get("problem") or {}).get("mse_zero")
        if stored is not None and not np.isclose(float(np.mean(z ** 2)), stored, rtol=1e-5, atol=1e-9):
            return None
        out.append((rec, x, z, np.asarray(prob.changed, dtype=bool)))
    return out
