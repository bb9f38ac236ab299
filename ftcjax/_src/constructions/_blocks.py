"""Exact 3-layer building blocks on a scalar projection t = a.x (paper-notes section 3.3-3.4).

A ``Block`` is a 3-layer net of the scalar t, in exact rationals:

    h1 = relu(alpha * t + beta)            alpha, beta (d1,)
    h2 = relu(V @ h1 + c)                   V (d2, d1), c (d2,)
    out = u @ h2 + u0                       u (d2,), u0 scalar

Layer-1 *features* (hard-tanh, tooth) are linear maps of h1: feature = F @ h1 + f0, so layer-2
pre-activations ``w @ feature + w0`` become rows of V. Layer-2 *activations* (sigma_L, sigma_T) are
expanded into ReLUs: sigma(p) = sum_r gamma_r relu(kappa_r p + rho_r).
"""
from __future__ import annotations

import bisect
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from ftcjax._src.errors import FTCInputError

_ZERO = Fraction(0)
_ONE = Fraction(1)


class Block(NamedTuple):
    alpha: np.ndarray   # (d1,) object
    beta: np.ndarray    # (d1,) object
    V: np.ndarray       # (d2, d1) object
    c: np.ndarray       # (d2,) object
    u: np.ndarray       # (d2,) object
    u0: Fraction


def obj(v) -> np.ndarray:
    out = np.empty(len(v), dtype=object)
    for i, e in enumerate(v):
        out[i] = e
    return out


def obj2(rows, ncols: int) -> np.ndarray:
    out = np.empty((len(rows), ncols), dtype=object)
    out[...] = _ZERO
    for i, r in enumerate(rows):
        for j, e in enumerate(r):
            out[i, j] = e
    return out


def sigma_L_terms(delta: Fraction):
    """sigma_L(p) = p on [-1, 1], 0 outside [-1-delta, 1+delta], linear ramps: 4 ReLUs.
    Returns [(kappa, rho, gamma)] with sigma_L(p) = sum gamma relu(kappa p + rho)."""
    inv = 1 / delta
    return [(_ONE, 1 + delta, -inv), (_ONE, _ONE, 1 + inv), (_ONE, -_ONE, -(1 + inv)),
            (_ONE, -1 - delta, inv)]


def sigma_T_terms(delta: Fraction):
    """sigma_T(p) = p for p <= 1, linear down to 0 on [1, 1+delta], 0 after: 2 ReLUs."""
    inv = 1 / delta
    return [(-_ONE, _ONE, -(1 + inv)), (-_ONE, 1 + delta, inv)]


def sigma_L(p: Fraction, delta: Fraction) -> Fraction:
    return sum((g * max(k * p + r, _ZERO) for k, r, g in sigma_L_terms(delta)), _ZERO)


def sigma_T(p: Fraction, delta: Fraction) -> Fraction:
    return sum((g * max(k * p + r, _ZERO) for k, r, g in sigma_T_terms(delta)), _ZERO)


def expand_layer2(F: np.ndarray, f0: np.ndarray, pre: list, terms) -> tuple:
    """Layer-2 ReLU rows for units ``act(w @ feature + w0)``.

    Args:
      F (nf, d1), f0 (nf,): feature = F @ h1 + f0.
      pre: list of (w (nf,), w0) per unit.
      terms: activation expansion [(kappa, rho, gamma)].

    Returns:
      V (d2, d1), c (d2,), u (d2,) with d2 = len(pre) * len(terms).
    """
    rows, cs, us = [], [], []
    # F is sparse (each feature reads 2-3 ReLUs): multiply only its nonzeros, since w's entries
    # are long rationals and a Fraction product costs a gcd even when one factor is 0
    nz = [[(j, F[j, k]) for j in range(F.shape[0]) if F[j, k] != 0] for k in range(F.shape[1])]
    f0_nz = [(j, f0[j]) for j in range(len(f0)) if f0[j] != 0]
    for w, w0 in pre:
        P = np.empty(F.shape[1], dtype=object)      # (d1,) = w @ F
        P[:] = [sum((w[j] * f for j, f in col), _ZERO) for col in nz]
        p0 = sum((w[j] * f for j, f in f0_nz), _ZERO) + w0
        for k, r, g in terms:
            # kappa is +-1 for every activation here; a Fraction product of P's long entries
            # would still pay a gcd each (U1 at K = 20000: 80k of them, 3.5 s)
            kP = P.copy() if k == 1 else (-P if k == -1 else k * P)
            rows.append(kP)
            cs.append((p0 if k == 1 else -p0 if k == -1 else k * p0) + r)
            us.append(g)
    d1 = F.shape[1]
    V = np.empty((len(rows), d1), dtype=object)
    for i, r in enumerate(rows):
        V[i] = r
    return V, obj(cs), obj(us)


def hardtanh_features(groups_AB: list, signs: list) -> tuple:
    """Alternating hard-tanh layer: alpha_j(t) = h(s_j (2t - A_j - B_j) / (B_j - A_j)).

    h(y) = relu(y + 1) - relu(y - 1) - 1 (2 ReLUs). Returns alpha, beta (2g,), F (g, 2g), f0 (g,).
    """
    g = len(groups_AB)
    alpha, beta = [], []
    F = obj2([], 2 * g) if g == 0 else obj2([[_ZERO] * (2 * g)] * g, 2 * g)
    f0 = obj([-_ONE] * g)
    for j, ((A, B), s) in enumerate(zip(groups_AB, signs)):
        k = s * 2 / (B - A)
        m = -s * (A + B) / (B - A)
        alpha += [k, k]
        beta += [m + 1, m - 1]
        F[j, 2 * j] = _ONE
        F[j, 2 * j + 1] = -_ONE
    return obj(alpha), obj(beta), F, f0


def hardtanh_value(t: Fraction, A: Fraction, B: Fraction, s: int) -> Fraction:
    y = s * (2 * t - A - B) / (B - A)
    return max(-_ONE, min(_ONE, y))


def cut_between(ts_sorted: list, lo: int, hi: int) -> Fraction:
    """Midpoint of the largest gap between consecutive sorted values in positions lo..hi
    (inclusive, lo < hi): a group boundary that stays as far from the samples as possible."""
    best, arg = None, lo
    for i in range(lo, hi):
        gap = ts_sorted[i + 1] - ts_sorted[i]
        if best is None or gap > best:
            best, arg = gap, i
    return (ts_sorted[arg] + ts_sorted[arg + 1]) / 2


def nearest_gap(vals_sorted: list, v: Fraction, skip: int | None = None) -> Fraction | None:
    """min |vals_sorted[i] - v| over i != skip (None when no other value is left).

    ``vals_sorted`` is increasing, so the nearest values are the neighbours of v's insertion point:
    O(log n) instead of a pass over the group (U1 at K = 20000: q x K = 2.8M Fraction subtractions).
    """
    n = len(vals_sorted)
    if skip is not None:     # the representative itself sits at position skip
        cands = [k for k in (skip - 1, skip + 1) if 0 <= k < n]
    else:
        k = bisect.bisect_left(vals_sorted, v)
        cands = [c for c in (k - 1, k) if 0 <= c < n]
    return min((abs(vals_sorted[k] - v) for k in cands), default=None)


def alternating_fit(b: list, zs: list, signs: list) -> tuple[list, Fraction, list, Fraction]:
    """Solve [beta(rep_j), 1] w = z_j for the alternating hard-tanh layer in closed form.

    Pre-activation at a sample of region j: sum_{i<j} w_i s_i + w_j alpha_j - sum_{i>j} w_i s_i + w0.
    Subtracting consecutive equations gives w_{k+1} (b_{k+1} + s_{k+1}) = w_k (b_k - s_k)
    + (z_{k+1} - z_k), whose homogeneous solution nu is POSITIVE because s alternates and
    |b| < 1 (paper-notes 3.3). Returns (mu, mu0, nu, nu0): every solution is mu + lambda nu.
    """
    g = len(b)
    mu, nu = [_ZERO] * g, [_ZERO] * g
    nu[0] = _ONE
    for k in range(g - 1):
        den = b[k + 1] + signs[k + 1]
        if den == 0 or b[k] - signs[k] == 0:
            raise AssertionError("representative on a saturated end of its hard-tanh")
        nu[k + 1] = nu[k] * (b[k] - signs[k]) / den
        mu[k + 1] = (mu[k] * (b[k] - signs[k]) + zs[k + 1] - zs[k]) / den
    tail_nu = sum((nu[i] * signs[i] for i in range(1, g)), _ZERO)
    tail_mu = sum((mu[i] * signs[i] for i in range(1, g)), _ZERO)
    nu0 = -(nu[0] * b[0] - tail_nu)
    mu0 = zs[0] - (mu[0] * b[0] - tail_mu)
    return mu, mu0, nu, nu0


def pre_activation(w: list, w0: Fraction, region: int, a_val: Fraction, signs: list) -> Fraction:
    """sum_{i<j} w_i s_i + w_j alpha + (- sum_{i>j} w_i s_i) + w0 for a sample in region j."""
    left = sum((w[i] * signs[i] for i in range(region)), _ZERO)
    right = sum((w[i] * signs[i] for i in range(region + 1, len(w))), _ZERO)
    return left + w[region] * a_val - right + w0


def check_delta(delta) -> Fraction:
    try:
        d = Fraction(delta)
    except (TypeError, ValueError):
        raise FTCInputError(f"delta must be a positive number, got {delta!r}") from None
    if d <= 0:
        raise FTCInputError(f"delta must be > 0, got {delta!r}")
    return d
