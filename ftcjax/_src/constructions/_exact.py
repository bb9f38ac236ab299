"""Shared machinery for the explicit constructions: input checks, exact projection, forward passes
in numpy float64 and in exact rationals, float64 export with a rigorous error bound.

Network format (shared with trained nets, see ``ftcjax._src.networks``): a tuple of layers
``((W1, b1), ..., (WL, bL))``, ``W (out, in)``, ``b (out,)``, ReLU after every layer but the last,
``out = 1`` for the last. Exact layers hold ``fractions.Fraction`` objects in numpy ``object`` arrays.

Floats are dyadic rationals, so ``Fraction(float)`` is exact: every exact construction here is an
exact statement about the float64 inputs the caller passed.
"""
from __future__ import annotations

import math
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

def forward_float(layers, x) -> np.ndarray:
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


def _as_fraction_array(a) -> np.ndarray:
    return a if (isinstance(a, np.ndarray) and a.dtype == object) else to_fractions(a)


class _IntColumns(NamedTuple):
    """Exact activations as integers over one denominator per column (neuron):
    value[k, j] = num[k, j] / den[j]. num (K, n) object array of Python ints, den (n,) ints > 0."""
    num: np.ndarray
    den: np.ndarray

    def as_fractions(self) -> np.ndarray:
        out = np.empty(self.num.shape, dtype=object)
        for j, dj in enumerate(self.den):
            out[:, j] = [Fraction(int(v), dj) for v in self.num[:, j]]
        return out

    def as_float(self) -> np.ndarray:
        """Correctly rounded float64 values (Python's int / int true division rounds correctly)."""
        out = np.empty(self.num.shape, dtype=np.float64)
        for j, dj in enumerate(self.den):
            out[:, j] = [v / dj for v in self.num[:, j]]
        return out


def _int_columns(a) -> _IntColumns:
    """(K, n) floats, ints or Fractions -> exact integer columns over a common denominator each."""
    arr = np.asarray(a)
    K, n = arr.shape
    num = np.empty((K, n), dtype=object)
    den = np.empty(n, dtype=object)
    if arr.dtype.kind == "f":      # floats are dyadic: p / 2^k, so the common denominator is the max
        ratios = [[float(v).as_integer_ratio() for v in arr[:, j]] for j in range(n)]
    else:
        fr = _as_fraction_array(arr)
        ratios = [[(v.numerator, v.denominator) for v in fr[:, j]] for j in range(n)]
    for j, col in enumerate(ratios):
        D = math.lcm(*(q for _, q in col)) if K else 1
        den[j] = D
        num[:, j] = [p * (D // q) for p, q in col]
    return _IntColumns(num, den)


def _merge_terms(terms: list, K: int) -> tuple:
    """Exact sum of terms ``(num (K,) ints, den int)`` (value num / den): (num (K,), den).

    Used where the terms' denominators share no factors: over one common denominator every term
    would be multiplied by a number as long as all denominators together. The sum is taken per
    sample in reduced fractions instead, which is cheap because per sample most terms are simple
    (0, or a saturated ReLU pair whose long parts cancel: 3-layer output layers, 64 terms of
    ~3000-bit denominators, 25 s -> 0.12 s at K = 1000); the column's denominator is then the lcm
    of the samples' reduced denominators."""
    vals = [_ZERO] * K
    for n, d in terms:
        for k, v in enumerate(n):
            if v:
                vals[k] += Fraction(int(v), d)
    D = math.lcm(*(v.denominator for v in vals)) if K else 1
    col = np.empty(K, dtype=object)
    col[:] = [v.numerator * (D // v.denominator) for v in vals]
    return col, D


def _int_layer(h: _IntColumns, W: np.ndarray, b: np.ndarray, relu: bool) -> _IntColumns:
    """One exact layer on integer columns.

    The K x in x out multiply-adds are on Python ints (no gcd per operation, which is what makes
    ``Fraction`` arithmetic slow); only the (out, in) coefficients ``W[i, j] / den[j]`` are
    Fractions. Rows equal up to sign (the ReLUs that expand one activation, e.g. sigma_L's four)
    share one dot product. A row is summed over a common denominator L of its coefficients: when L
    is not much longer than the longest coefficient denominator (they share factors, e.g. the
    nested denominators of the alternating hard-tanh fits), all such rows form one integer matrix
    product; otherwise (denominators without common factors: every term would be multiplied by a
    number as long as all of them together) the row is summed per denominator and merged in a
    tree (``_merge_terms``). Each output column is then reduced by the gcd of its entries and
    denominator, so the integers do not grow over the layers more than the values need."""
    W = _as_fraction_array(W)
    b = _as_fraction_array(b)
    n_out, n_in = W.shape
    K = h.num.shape[0]
    uniq: dict = {}              # sign-normalised coefficient row -> index into `rows`
    rows, row_of = [], []        # unique coefficient rows; (unique index, sign) per output
    for i in range(n_out):
        coef = tuple(W[i, j] / h.den[j] for j in range(n_in))
        lead = next((c for c in coef if c != 0), _ZERO)
        sign = -1 if lead < 0 else 1
        key = tuple(-c for c in coef) if sign < 0 else coef
        if key not in uniq:
            uniq[key] = len(rows)
            rows.append(key)
        row_of.append((uniq[key], sign))

    sums: list = [None] * len(rows)      # (num (K,), den) of each unique row's dot product
    flat = []
    for r, coef in enumerate(rows):
        dens = [c.denominator for c in coef if c != 0]
        L = math.lcm(*dens) if dens else 1
        longest = max((d.bit_length() for d in dens), default=0)
        if L.bit_length() <= 2 * longest + 64:
            flat.append((r, L))
            continue
        # one integer dot per input denominator (columns that share a denominator come from rows
        # that shared a dot product in the layer below: summed in integers, their long parts cancel)
        by_den: dict = {}
        for j, c in enumerate(coef):
            if c != 0:
                by_den.setdefault(int(h.den[j]), []).append(j)
        terms = []
        for E, cols in by_den.items():
            w = [coef[j] * E for j in cols]           # the weights W[i, j] themselves
            Q = math.lcm(*(v.denominator for v in w))
            wint = np.asarray([v.numerator * (Q // v.denominator) for v in w], dtype=object)
            terms.append((h.num[:, cols].dot(wint), Q * E))
        sums[r] = _merge_terms(terms, K)
    if flat:
        Wf = np.empty((n_in, len(flat)), dtype=object)
        for k, (r, L) in enumerate(flat):
            Wf[:, k] = [c.numerator * (L // c.denominator) for c in rows[r]]
        prod = h.num.dot(Wf) if n_in else np.zeros((K, len(flat)), dtype=object)
        for k, (r, L) in enumerate(flat):
            sums[r] = (prod[:, k], L)

    # rows sharing a dot product keep one denominator (reduced by one common gcd), so the next
    # layer sums them in integers, where their long parts cancel (bumps, saturated ramps)
    num = np.empty((K, n_out), dtype=object)
    den = np.empty(n_out, dtype=object)
    members: dict = {}
    for i, (r, _) in enumerate(row_of):
        members.setdefault(r, []).append(i)
    for r, outs in members.items():
        P, L = sums[r]
        D = math.lcm(L, *(b[i].denominator for i in outs))
        cols = []
        for i in outs:
            col = P * (row_of[i][1] * (D // L)) + b[i].numerator * (D // b[i].denominator)
            cols.append(np.where(col > 0, col, 0) if relu else col)
        g = math.gcd(D, *(v for col in cols for v in col))
        if g > 1:
            D //= g
            cols = [np.asarray([v // g for v in col], dtype=object) for col in cols]
        for i, col in zip(outs, cols):
            num[:, i] = col
            den[i] = D
    return _IntColumns(num, den)


def _exact_pass(layers, x) -> tuple[list, _IntColumns]:
    """Exact forward pass; returns (activations entering each layer, (K, 1) output), both as
    integer columns over per-neuron denominators (exact; see ``_IntColumns``)."""
    h = x if isinstance(x, _IntColumns) else _int_columns(x)
    acts = []
    for li, (W, b) in enumerate(layers):
        acts.append(h)
        h = _int_layer(h, W, b, relu=li < len(layers) - 1)
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
    return h.as_fractions()[:, 0]


def _bound_from_pass(exact_layers, acts) -> np.ndarray:
    K = acts[0].num.shape[0]
    e = np.zeros((K, acts[0].num.shape[1]))     # inputs are exact floats
    for (W, b), h in zip(exact_layers, acts):
        absW = np.abs(to_float(W))
        absb = np.abs(to_float(b))
        absh = np.abs(h.as_float())
        n = W.shape[1]
        gamma = (n + 3) * _U / (1 - (n + 3) * _U)
        mag = absh @ absW.T + absb[None, :]
        e = e @ absW.T * (1 + _U) + gamma * mag * 1.01 + (e @ absW.T) * gamma
    return e[:, 0] * (1 + 1e-6)


def float_error_bound(exact_layers, x) -> np.ndarray:
    """Rigorous per-sample bound on ``|forward_float(export_float(L), x) - forward_exact(L, x)|``.

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

class CheckedInstance(NamedTuple):
    """Validated instance. x (K, d) float64, z (K,) float64, changed (K,) bool."""
    x: np.ndarray
    z: np.ndarray
    changed: np.ndarray


def check_instance(x, z, changed, *, need_unit_z: bool = False, rescale: bool = False
                   ) -> tuple[CheckedInstance, float]:
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
    return CheckedInstance(x, z, changed), scale


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
    means degenerate input or an adversarial rng). The projections are computed as integers over
    one power-of-two denominator (floats are dyadic), so sorting and gaps are integer operations.
    """
    K, d = x.shape
    xq = _int_columns(np.asarray(x, dtype=np.float64))
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
        ratios = [float(v).as_integer_ratio() for v in a]
        dens = [q * int(xq.den[k]) for k, (_, q) in enumerate(ratios)]
        S = max(dens)                                   # all powers of two: the lcm is the max
        coef = np.asarray([p * (S // dk) for (p, _), dk in zip(ratios, dens)], dtype=object)
        T = xq.num.dot(coef)                            # (K,) ints: t = T / S exactly
        order = np.asarray(sorted(range(K), key=T.__getitem__), dtype=np.int64)
        Ts = T[order]
        gaps = [Ts[i + 1] - Ts[i] for i in range(K - 1)]
        if any(g == 0 for g in gaps):
            continue
        good += 1
        gap = min(gaps) if gaps else S
        span = (Ts[-1] - Ts[0]) if K > 1 else S
        score = Fraction(gap, span)
        if best is None or score > best[0]:
            best = (score, a, T, S, order, gap)
    _, a, T, S, order, gap = best
    t = np.empty(K, dtype=object)
    t[:] = [Fraction(int(v), S) for v in T]
    return Projection(a, t, order, Fraction(int(gap), S))


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


def finish(name: str, exact_layers, inst: CheckedInstance, bound: int, info: dict,
           *, check_exact: bool = True) -> Construction:
    """Prune, export to float64, measure the float error and its bound, verify exactly."""
    exact_layers = prune(exact_layers)
    layers = export_float(exact_layers)
    g_float = forward_float(layers, inst.x)
    float_err = float(np.max(np.abs(g_float - inst.z))) if len(inst.z) else 0.0
    acts, out = _exact_pass(exact_layers, inst.x)     # one exact pass: bound and verification
    err_bound = float(np.max(_bound_from_pass(exact_layers, acts)))
    mags = [max((abs(v) for v in W.reshape(-1)), default=_ZERO) for W, _ in exact_layers]
    info = dict(info, max_abs_weight=[float(m) for m in mags])
    if check_exact:
        D = out.den[0]
        ratios = [float(zi).as_integer_ratio() for zi in inst.z]
        bad = [i for i, (v, (p, q)) in enumerate(zip(out.num[:, 0], ratios)) if v * q != p * D]
        if bad:   # a bug, never a user error: the proofs say this cannot happen
            raise AssertionError(f"{name}: exact output misses z at samples {bad[:5]}")
    w = widths_of(exact_layers)
    return Construction(name, layers, exact_layers, int(sum(w)), w, int(bound), float_err,
                        err_bound, info)


def _as_obj(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=object)
