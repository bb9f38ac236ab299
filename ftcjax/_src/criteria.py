"""Success criteria: when does a trained ``g`` count as fitting the problem?

All three are computed for every run (and stored); one of them, named in the protocol, decides.

* ``paper``: mean over all K of the squared error ``<= paper_threshold`` (0.04 in Sohn et al., Sec. 7).
  Satisfied by ``g = 0`` whenever ``mean(z**2) <= threshold`` (N/K small): see :func:`trivially_satisfied`.
* ``strict``: ``max_i |g(x_i) - z_i| <= tol * max(1, max_i |z_i|)``: every one of the K constraints,
  including the exact zeros off the changed set, holds to a relative tolerance.
* ``relative``: ``mse / mean(z**2) <= rel_eps``: the error relative to that of ``g = 0``, so its
  strictness does not drift with N/K.
"""
from __future__ import annotations

import jax.numpy as jnp

CRITERIA = ("paper", "strict", "relative")


def criterion_index(name: str) -> int:
    """Position of a criterion name in :data:`CRITERIA` (validated by the protocol)."""
    return CRITERIA.index(name)


def residual_stats(z):
    """``(z_scale, mse_zero)`` of a residual vector ``z (..., K)``: ``max(1, max|z|)`` and ``mean(z**2)``."""
    z_scale = jnp.maximum(jnp.max(jnp.abs(z), axis=-1), 1.0)
    return z_scale, jnp.mean(z * z, axis=-1)


def passed(mse, max_err, z_scale, mse_zero, paper_threshold, tol, rel_eps):
    """Pass flags ``(..., 3)`` for (paper, strict, relative), broadcasting over leading axes."""
    return jnp.stack([
        mse <= paper_threshold,
        max_err <= tol * z_scale,
        mse <= rel_eps * mse_zero,
    ], axis=-1)


def trivially_satisfied(z, paper_threshold, tol, rel_eps):
    """Pass flags ``(..., 3)`` of ``g = 0``: a cell where the decision criterion holds here is trivial."""
    z_scale, mse_zero = residual_stats(z)
    return passed(mse_zero, jnp.max(jnp.abs(z), axis=-1), z_scale, mse_zero, paper_threshold, tol, rel_eps)
