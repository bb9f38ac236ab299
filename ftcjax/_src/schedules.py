"""Learning-rate schedules as pure functions of traced step counts.

Written here rather than taken from optax so that the peak rate and the step budget stay per-lane
arrays (no recompilation when they change) and so that every operation is dtype-explicit.
"""
from __future__ import annotations

import jax.numpy as jnp

SCHEDULES = ("constant", "cosine", "warmup_cosine")
_WARMUP = 0.05  # fraction of the budget spent warming up in "warmup_cosine"


def lr_multiplier(kind: str, t, total, dtype):
    """Multiplier of the peak learning rate at step ``t`` of ``total`` (integers, possibly traced)."""
    frac = jnp.clip(jnp.asarray(t).astype(dtype) / jnp.maximum(total, 1).astype(dtype), 0.0, 1.0)
    if kind == "constant":
        return jnp.ones_like(frac)
    if kind == "cosine":
        return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    if kind == "warmup_cosine":
        decay = 0.5 * (1.0 + jnp.cos(jnp.pi * (frac - _WARMUP) / (1.0 - _WARMUP)))
        return jnp.where(frac < _WARMUP, frac / _WARMUP, decay)
    raise ValueError(kind)
