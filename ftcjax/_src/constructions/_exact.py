"""Shared machinery for the explicit constructions: input checks, exact projection, forward passes
in numpy float64 and in exact rationals, float64 export with a rigorous error bound.

Network format (shared with trained nets, see ``ftcjax._src.networks``): a tuple of layers
``((W1, b1), ..., (WL, bL))``, ``W (out, in)``, ``b (out,)``, ReLU after every layer but the last,
``out = 1`` for the last. Exact layers hold ``fractions.Fraction`` objects in numpy ``object`` arrays.

Floats are dyadic rationals, so ``Fraction(float)`` is exact: every exact construction here is an
exact statement about the float64 inputs the caller passed.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from ftcjax._src.errors import FTCInputError

_ZERO = Fraction(0)
_U = 2.0 ** -53  # unit roundoff of float64


class Construction(NamedTuple):
    """An explicit network that fits a fine-tuning instance.

    Attributes:
      name: which construction (e.g. ``"thm44"``, ``"tooth"``).
      layers: float64 layers ``((W (out, in), b (out,)), ...)`` in the shared network format.
      exact_layers: the same network in exact rationals (object arrays of ``Fraction``), or ``None``
        for the float64-only 2-layer constructions.
      neurons: hidden ReLU count (all hidden layers; gadgets expanded; zero-output neurons pruned).
      widths: hidden layer widths ``(d_1, ..., d_{L-1})``, ``sum(widths) == neurons``.
      bound: the proven neuron bound this construction meets on this instance (an int).
      float_error: max over the K samples of ``|g_float64(x_i) - z_i|``.
      float_error_bound: rigorous bound on ``|g_float64 - g_exact|`` over the samples, from the
        weight magnitudes (``None`` when there is no exact version).
      info: construction-specific details (projection, groups, lambda, weight magnitudes, ...).
    """
    name: str
    layers: tuple
    exact_layers: tuple | None
    neurons: int
    widths: tuple
    bound: int
    float_error: float
    float_error_bound: float | None
    info: dict


# ----------------------------------------------------------------------------- conversions

def to_fractions(a) -> np.ndarray:
    """Elementwise exact conversion to an object array of ``Fraction`` (same shape)."""
    arr = np.asarray(a)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(arr.reshape(-1)):
        flat[i] = Fraction(float(v)) if isinstance(v, (float, np.floating)) else Fraction(v)
    return out


def to_float(a) -> np.ndarray:
    """Round an exact (object) array to float64 (correctly rounded per entry)."""
    arr = np.asarray(a, dtype=object)
    return np.asarray([float(v) for v in arr.reshape(-1)], dtype=np.float64).reshape(arr.shape)


def export_float(exact_layers) -> tuple:
    """Exact layers -> float64 layers (each weight rounded to nearest)."""
    return tuple((to_float(W), to_float(b)) for W, b in exact_layers)


# ----------------------------------------------------------------------------- forward passes

def forward(layers, x) -> np.ndarray:
    """Plain float64 forward pass of the shared format.

    Args:
      layers: ``((W (out, in), b (out,)), ...)`` float arrays.
      x: (K, d) inputs.

    Returns:
      (K,) outputs.
    """
    h = np.asarray(x, dtype=np.float64)
    for li, (W, b) in enumerate(layers):
        h = h @ np.asarray(W, dtype=np.float64).T + np.asarray(b, dtype=np.float64)
        if li < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h[:, 0]


def _relu_exact(h: np.ndarray) -> np.ndarray:
    return np.where(h > 0, h, _ZERO)


def _as_fraction_array(a) -> np.ndarray:
    return a if (isinstance(a, np.ndarray) and a.dtype == object) else to_fractions(a)


def _exact_pass(layers, x):
    """Exact forward pass; returns (activations entering each layer, (K, 1) output), Fractions.
    (Integer numerators over a common denominator were tried: slower, the common denominators of
    the U2 / 4N+4 weights become huge.)"""
    h = _as_fraction_array(x)
    acts = []
    for li, (W, b) in enumerate(layers):
        acts.append(h)
        h = h.dot(_as_fraction_array(W).T) + _as_fraction_array(b)[None, :]
        if li < len(layers) - 1:
            h = _relu_exact(h)
    return acts, h


def forward_exact(layers, x) -> np.ndarray:
    """Exact forward pass in rationals.

    Args:
      layers: exact layers ``((W (out, in), b (out,)), ...)`` (object arrays of Fractions; float or
        int arrays are converted exactly).
      x: (K, d) inputs (floats are converted exactly).

    Returns:
      (K,) object array of ``Fraction``.
    """
    _, h = _exact_pass(layers, x)
    return h[:, 0]


def _bound_from_pass(exact_layers, acts) -> np.ndarray:
    K = acts[0].shape[0]
    e = np.zeros((K, acts[0].shape[1]))     # inputs are exact floats
    for (W, b), h in zip(exact_layers, acts):
        absW = np.abs(to_float(W))
        absb = np.abs(to_float(b))
        absh = np.abs(to_float(h))
        n = W.shape[1]
        gamma = (n + 3) * _U / (1 - (n + 3) * _U)
        mag = absh @ absW.T + absb[None, :]
        e = e @ absW.T * (1 + _U) + gamma * mag * 1.01 + (e @ absW.T) * gamma
    return e[:, 0] * (1 + 1e-6)


def float_error_bound(exact_layers, x) -> np.ndarray:
    """Rigorous per-sample bound on ``|forward(export_float(L), x) - forward_exact(L, x)|``.

    Standard floating-point model: rounding every weight costs ``u |W|`` (u = 2^-53) and a length-n
    dot product plus bias costs ``gamma_{n+1} (|W||h| + |b|)``; an input error ``e`` passes through
    as ``|W| e`` (ReLU is 1-Lipschitz). The bound therefore scales with the weight magnitudes times
    the activation magnitudes, which is what makes the 3-layer constructions fragile in float64.
    Magnitudes are evaluated in float64 from the exact activations with a safety factor.

    Args:
      exact_layers: exact layers in the shared format.
      x: (K, d) inputs.

    Returns:
      (K,) float64 bounds.
    """
    acts, _ = _exact_pass(exact_layers, x)
    return _bound_from_pass(exact_layers, acts)


# ----------------------------------------------------------------------------- input checks

class Instance(NamedTuple):
    """Validated instance. x (K, d) float64, z (K,) float64, changed (K,) bool."""
    x: np.ndarray
    z: np.ndarray
    changed: np.ndarray


def check_instance(x, z, changed, *, need_unit_z: bool = False, rescale: bool = False
                   ) -> tuple[Instance, float]:
    """Validate ``(x, z, changed)``; return the instance and the output scale.

    ``z`` must be 0 off ``changed`` (the residual of an unchanged sample is 0 by definition).
    With ``need_unit_z`` (3-layer theory, |z| <= 1): raises unless ``rescale`` is set, in which case
    the construction is built for ``z / scale`` with ``scale = max |z|`` and the output layer is
    multiplied back by ``scale`` (exact in rationals).

    Raises:
      FTCInputError: naming the argument (shapes, non-finite values, duplicate x, z off changed,
        |z| > 1 without rescale).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise FTCInputError(f"x must have shape (K, d), got shape {x.shape}")
    K, d = x.shape
    if K < 1 or d < 1:
        raise FTCInputError(f"x must have K >= 1 rows and d >= 1 columns, got shape {x.shape}")
    z = np.asarray(z)
    if z.shape != (K,):
        raise FTCInputError(f"z must have shape (K,) = ({K},), got shape {z.shape}")
    changed = np.asarray(changed)
    if changed.shape != (K,):
        raise FTCInputError(f"changed must have shape (K,) = ({K},), got shape {changed.shape}")
    if changed.dtype != bool:
        raise FTCInputError(f"changed must be a bool array, got dtype {changed.dtype}")
    x = x.astype(np.float64)
    z = z.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise FTCInputError("x must be finite, got NaN or inf")
    if not np.all(np.isfinite(z)):
        raise FTCInputError("z must be finite, got NaN or inf")
    if np.any(z[~changed] != 0):
        i = int(np.flatnonzero((z != 0) & ~changed)[0])
        raise FTCInputError(f"z must be 0 where changed is False, got z[{i}] = {z[i]}")
    if K > 1:
        uniq = np.unique(x, axis=0)
        if uniq.shape[0] < K:
            raise FTCInputError(f"x must have pairwise distinct rows, got {K - uniq.shape[0]} duplicate(s)")
    scale = 1.0
    zmax = float(np.max(np.abs(z))) if K else 0.0
    if need_unit_z and zmax > 1:
        if not rescale:
            raise FTCInputError(
                f"z: the 3-layer constructions need |z| <= 1, got max |z| = {zmax}; pass rescale=True "
                "to build for z / max|z| and scale the output layer back")
        scale = zmax
    return Instance(x, z, changed), scale


def check_rng(rng) -> np.random.Generator:
    """An explicit ``np.random.Generator`` or an int seed (no global state)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise FTCInputError(f"rng must be a numpy Generator or an int seed, got {rng!r}")


# ----------------------------------------------------------------------------- projection

class Projection(NamedTuple):
    """a (d,) float64 direction; t (K,) exact projections a.x_i; order (K,) sort permutation;
    min_gap the smallest gap between sorted t (exact)."""
    a: np.ndarray
    t: np.ndarray
    order: np.ndarray
    min_gap: Fraction


def project_exact(x: np.ndarray, rng: np.random.Generator, *, draws: int = 1,
                  max_redraws: int = 20) -> Projection:
    """Draw Gaussian directions, project exactly, keep the one with the largest relative min gap.

    Ties (two samples with equal exact projection) force a redraw; after ``max_redraws`` tied
    draws this raises (for distinct x a Gaussian direction ties with probability 0, so a raise
    means degenerate input or an adversarial rng).
    """
    K, d = x.shape
    xq = to_fractions(x)
    best, tries, good = None, 0, 0
    while good < draws:
        if tries >= max_redraws + draws:
            if best is not None:
                break
            raise FTCInputError(
                f"x: projections tie (two samples share a.x) after {tries} random directions; "
                "the samples are not separable by a random projection")
        tries += 1
        a = rng.standard_normal(d)
        t = xq.dot(to_fractions(a))
        order = np.asarray(sorted(range(K), key=lambda i: t[i]), dtype=np.int64)
        ts = t[order]
        gaps = [ts[i + 1] - ts[i] for i in range(K - 1)]
        if any(g == 0 for g in gaps):
            continue
        good += 1
        gap = min(gaps) if gaps else Fraction(1)
        span = (ts[-1] - ts[0]) if K > 1 else Fraction(1)
        score = gap / span
        if best is None or score > best[0]:
            best = (score, Projection(a, t, order, gap))
    return best[1]


def prune(exact_layers):
    """Drop hidden neurons that do not need a ReLU: zero outgoing weights (iterated from the top),
    and constant neurons (all-zero incoming weights), whose constant output relu(b) is folded into
    the next layer's bias. The function computed is unchanged everywhere."""
    layers = [(np.array(W, dtype=object), np.array(b, dtype=object)) for W, b in exact_layers]
    changed = True
    while changed:
        changed = False
        for li in range(len(layers) - 1):
            W, b = layers[li]
            Wn, bn = layers[li + 1]
            dead_out = np.all(Wn == 0, axis=0)
            const = np.all(W == 0, axis=1)
            keep = ~(dead_out | const)
            if keep.sum() < len(keep):
                for k in np.flatnonzero(const & ~dead_out):
                    bn = bn + Wn[:, k] * max(b[k], _ZERO)
                layers[li] = (W[keep], b[keep])
                layers[li + 1] = (Wn[:, keep], bn)
                changed = True
    return tuple(layers)


def widths_of(layers) -> tuple:
    return tuple(int(W.shape[0]) for W, _ in layers[:-1])


def finish(name: str, exact_layers, inst: Instance, bound: int, info: dict,
           *, check_exact: bool = True) -> Construction:
    """Prune, export to float64, measure the float error and its bound, verify exactly."""
    exact_layers = prune(exact_layers)
    layers = export_float(exact_layers)
    g_float = forward(layers, inst.x)
    float_err = float(np.max(np.abs(g_float - inst.z))) if len(inst.z) else 0.0
    acts, out = _exact_pass(exact_layers, inst.x)     # one exact pass: bound and verification
    err_bound = float(np.max(_bound_from_pass(exact_layers, acts)))
    mags = [max((abs(v) for v in W.reshape(-1)), default=_ZERO) for W, _ in exact_layers]
    info = dict(info, max_abs_weight=[float(m) for m in mags])
    if check_exact:
        bad = [i for i in range(len(inst.z)) if out[i, 0] != Fraction(float(inst.z[i]))]
        if bad:   # a bug, never a user error: the proofs say this cannot happen
            raise AssertionError(f"{name}: exact output misses z at samples {bad[:5]}")
    w = widths_of(exact_layers)
    return Construction(name, layers, exact_layers, int(sum(w)), w, int(bound), float_err,
                        err_bound, info)


def _as_obj(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=object)
