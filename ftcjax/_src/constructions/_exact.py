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


def _rows_up_to_sign(rows: list) -> tuple[list, list]:
    """Distinct rows up to sign: (unique rows, (unique index, sign) per row), where
    ``rows[i] == sign * unique[index]`` and each unique row's leading nonzero is positive; a
    ``None`` row (one that is not needed) maps to ``None``."""
    uniq: dict = {}
    unique, row_of = [], []
    for row in rows:
        if row is None:
            row_of.append(None)
            continue
        lead = next((v for v in row if v != 0), _ZERO)
        sign = -1 if lead < 0 else 1
        key = tuple(-v for v in row) if sign < 0 else row
        if key not in uniq:
            uniq[key] = len(unique)
            unique.append(key)
        row_of.append((uniq[key], sign))
    return unique, row_of


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
    rows, row_of = _rows_up_to_sign([tuple(W[i, j] / h.den[j] for j in range(n_in)) for i in range(n_out)])

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

    A 3-layer network whose first layer has rank one (every 3-layer construction: g = phi(a . x))
    is evaluated by a sweep along its line (``_line_pass``, O(d1 d2 + K) rational operations); any
    other network layer by layer on integer columns (``_exact_pass``, K x in x out products).

    Args:
      layers: exact layers ``((W (out, in), b (out,)), ...)`` (object arrays of Fractions; float or
        int arrays are converted exactly).
      x: (K, d) inputs (floats are converted exactly).

    Returns:
      (K,) object array of ``Fraction``.
    """
    line = _line_pass(layers, x if isinstance(x, _IntColumns) else np.asarray(x))
    if line is not None:
        return line
    _, h = _exact_pass(layers, x)
    return h.as_fractions()[:, 0]


def _rank_one(W1: np.ndarray):
    """W1 (d1, d) exact -> (a (d,), alpha (d1,)) with W1[i] = alpha[i] * a exactly, or None."""
    d1, d = W1.shape
    lead = next(((i, j) for i in range(d1) for j in range(d) if W1[i, j] != 0), None)
    if lead is None:
        return None
    i0, j0 = lead
    a = W1[i0]
    alpha = []
    for i in range(d1):
        s = W1[i, j0] / a[j0]
        if any(W1[i, j] != s * a[j] for j in range(d)):
            return None
        alpha.append(s)
    return a, alpha


def _line_pass(layers, x) -> np.ndarray | None:
    """Exact outputs of a 3-layer network whose first layer has rank one, by a sweep along the line.

    Such a network is g(x) = phi(a . x) with phi piecewise linear (every 3-layer construction is
    built on one projection t = a . x). Between consecutive first-layer breakpoints every
    second-layer pre-activation is affine in t, so the sweep keeps one affine form A_r t + B_r per
    distinct second-layer row (rows equal up to sign share it; each neuron adds only its short
    offset from the row's reference bias) and updates it at each breakpoint. Inside an interval a
    neuron switches at most once, found by bisection over that interval's samples with integer
    sign tests; at each sample the output is the sum over the rows whose active neurons' output
    weights do not cancel (a saturated ramp's or bump's neurons do) plus a short constant.
    Cost O(d1 * rows + K + switches * log K) rational operations instead of the K x d1 x d2 of
    ``_int_layer`` (U1 at K = 20000: 570 neurons over ~15000-bit rationals, ~10^9 products).

    Returns:
      (K,) object array of ``Fraction`` in the samples' order, or ``None`` when the network is not
      of this form (then the generic pass applies).
    """
    if len(layers) != 3:
        return None
    (W1, b1), (W2, b2), (W3, b3) = [(_as_fraction_array(W), _as_fraction_array(b)) for W, b in layers]
    if W1.shape[0] == 0 or W3.shape[0] != 1:
        return None
    r1 = _rank_one(W1)
    if r1 is None:
        return None
    a, alpha = r1
    K = x.num.shape[0] if isinstance(x, _IntColumns) else x.shape[0]
    # t_i = a . x_i exactly, as integers T_i over one denominator Lt (sorting is integer work)
    xq = x if isinstance(x, _IntColumns) else _int_columns(x)
    coef = [a[j] / int(xq.den[j]) for j in range(len(a))]
    Lt = math.lcm(*(c.denominator for c in coef))
    T = xq.num.dot(np.asarray([c.numerator * (Lt // c.denominator) for c in coef], dtype=object))
    order = sorted(range(K), key=T.__getitem__)
    Ts = [int(T[i]) for i in order]

    d1, d2 = W1.shape[0], W2.shape[0]
    c2 = [b2[k] for k in range(d2)]
    moving = []                          # first-layer neurons that depend on t
    for i in range(d1):
        if alpha[i] == 0:                # constant neuron: fold relu(b1) into the next bias
            if b1[i] > 0:
                c2 = [c2[k] + W2[k, i] * b1[i] for k in range(d2)]
        else:
            moving.append(i)
    u = [W3[0, k] for k in range(d2)]
    # distinct second-layer rows up to sign (over the moving neurons), among neurons that are read
    rows, row_of = _rows_up_to_sign([tuple(W2[k, i] for i in moving) if u[k] != 0 else None
                                     for k in range(d2)])
    ref = [None] * len(rows)             # a row's reference bias: its first neuron's offset is 0
    for k, rk in enumerate(row_of):
        if rk is not None and ref[rk[0]] is None:
            ref[rk[0]] = rk[1] * c2[k]
    delta = [None if row_of[k] is None else c2[k] - row_of[k][1] * ref[row_of[k][0]]
             for k in range(d2)]
    # affine form A_r t + B_r of each row's dot product plus its reference bias
    forms = [_RowForm(row, alpha, b1, moving, ref[r]) for r, row in enumerate(rows)]
    breaks: dict = {}
    for m, i in enumerate(moving):
        breaks.setdefault(-b1[i] / alpha[i], []).append(m)
    taus = sorted(breaks)

    out = np.empty(K, dtype=object)
    lo = 0
    for s in range(len(taus) + 1):
        hi = K
        if s < len(taus):                # samples with t <= tau (continuity: either side works)
            tau_n, tau_d = taus[s].numerator * Lt, taus[s].denominator
            hi = lo
            while hi < K and Ts[hi] * tau_d <= tau_n:
                hi += 1
        if hi > lo:
            _line_interval(forms, row_of, delta, u, b3[0], Ts, Lt, lo, hi, out, order)
        lo = hi
        if s < len(taus):                # cross the breakpoint: neurons switch on (alpha > 0) or off
            for m in breaks[taus[s]]:
                on = alpha[moving[m]] > 0
                for f in forms:
                    f.switch(m, on)
    return out


class _RowForm:
    """A_r t + B_r = sum over the active first-layer neurons m of row[m] (alpha_m t + beta_m), plus
    a bias; updated as neurons switch at their breakpoints."""

    def __init__(self, row, alpha, beta, moving, bias):
        self.terms = {m: (row[m] * alpha[i], row[m] * beta[i])
                      for m, i in enumerate(moving) if row[m] != 0}
        self.A, self.B = _ZERO, bias
        for m in self.terms:             # left of every breakpoint: the neurons with alpha < 0
            if alpha[moving[m]] < 0:
                self.switch(m, True)

    def switch(self, m, on: bool) -> None:
        t = self.terms.get(m)
        if t is not None:
            if on:
                self.A += t[0]; self.B += t[1]
            else:
                self.A -= t[0]; self.B -= t[1]


def _line_interval(forms, row_of, delta, u, u0, Ts, Lt, lo, hi, out, order) -> None:
    """Outputs at sorted samples lo..hi-1 (t = Ts[p] / Lt), where neuron k's pre-activation is
    sign_k (A_r t + B_r) + delta_k for its row (r, sign_k) = row_of[k], A_r t + B_r = forms[r]."""
    # integers, no gcd per operation: with A = An / Ad, B = Bn / Bd, (A t + B) Z = X T + Y for
    # Z = Ad Bd Lt > 0, so sign(pre-activation) = sign(sign_k dd (X T + Y) + dn Z), delta = dn / dd
    XYZ: dict = {}
    P: dict = {}

    def row_value(r, p):                 # (A_r t + B_r) * Z_r at sorted position p, an integer
        if r not in XYZ:
            A, B = forms[r].A, forms[r].B
            An, Ad, Bn, Bd = A.numerator, A.denominator, B.numerator, B.denominator
            XYZ[r] = (An * Bd, Bn * Ad * Lt, Ad * Bd * Lt) if Ad != Bd else (An, Bn * Lt, Ad * Lt)
        key = (r, p)
        if key not in P:
            X, Y, _ = XYZ[r]
            P[key] = X * Ts[p] + Y
        return P[key]

    def pre(k, p):                       # an integer with the sign of neuron k's pre-activation
        r, sg = row_of[k]
        dv = row_value(r, p)
        dk = delta[k]
        return sg * dk.denominator * dv + dk.numerator * XYZ[r][2]

    kappa: dict = {}                     # row -> sum of u_k * sign_k over its active neurons
    E = u0                               # u0 + sum of u_k * delta_k over the active neurons
    switch_at: dict = {}                 # sorted position -> [(neuron, switches on)]
    for k, rk in enumerate(row_of):
        if rk is None:
            continue
        r, sg = rk
        v_lo, v_hi = pre(k, lo), pre(k, hi - 1)
        # state just right of t_lo (a neuron at exactly 0 contributes 0 in either state)
        if v_lo > 0 or (v_lo == 0 and sg * XYZ[r][0] > 0):
            kappa[r] = kappa.get(r, _ZERO) + u[k] * sg
            E += u[k] * delta[k]
        if (v_lo > 0 > v_hi) or (v_lo < 0 < v_hi):
            a_, b_ = lo, hi - 1          # bisect for the first position with v_hi's sign
            while b_ - a_ > 1:
                mid = (a_ + b_) // 2
                vm = pre(k, mid)
                if (vm > 0) if v_hi > 0 else (vm < 0):
                    b_ = mid
                else:
                    a_ = mid
            switch_at.setdefault(b_, []).append((k, v_hi > 0))
    kappa = {r: kp for r, kp in kappa.items() if kp != 0}
    for p in range(lo, hi):
        for k, on in switch_at.get(p, ()):
            r, sg = row_of[k]
            w = u[k] * sg if on else -u[k] * sg
            kp = kappa.get(r, _ZERO) + w
            if kp != 0:
                kappa[r] = kp
            else:                        # cancelled (e.g. a ramp saturated): not read again
                kappa.pop(r, None)
            E += u[k] * delta[k] if on else -u[k] * delta[k]
        val = E
        for r, kp in kappa.items():
            val += Fraction(kp.numerator * row_value(r, p), kp.denominator * XYZ[r][2])
        out[order[p]] = val


def float_error_bound(exact_layers, x) -> np.ndarray:
    """Rigorous per-sample bound on ``|forward_float(export_float(L), x) - forward_exact(L, x)|``.

    A posteriori, from the float64 pass itself (standard floating-point model, u = 2^-53): with
    h_hat the computed input of a layer (exact error bound e on |h_hat - h|), W_hat = fl(W) and
    b_hat = fl(b) (|W_hat - W| <= u |W|), the computed output fl(W_hat h_hat + b_hat) is within
    gamma_{n+1} (|W_hat| |h_hat| + |b_hat|) of W_hat h_hat + b_hat (any summation order, FMA
    included), and W_hat h_hat + b_hat is within u (|W| |h_hat| + |b|) + |W| e of the exact W h + b;
    ReLU is 1-Lipschitz. |W| <= |W_hat| / (1 - u). The model assumes no underflow (a product
    below 2^-1022 would need an extra absolute term per operation). No exact activations are needed, so the bound
    costs one float pass whatever the construction. It scales with the weight magnitudes times the
    activation magnitudes, which is what makes the 3-layer constructions fragile in float64. The
    bound's own float arithmetic is covered by a relative safety factor per layer.

    Args:
      exact_layers: exact layers in the shared format (floats are taken as exact).
      x: (K, d) inputs (floats, exact).

    Returns:
      (K,) float64 bounds.
    """
    h = np.asarray(x, dtype=np.float64)
    e = np.zeros_like(h)                 # inputs are exact
    n_layers = len(exact_layers)
    for li, (W, b) in enumerate(exact_layers):
        Wf = to_float(W) if np.asarray(W).dtype == object else np.asarray(W, dtype=np.float64)
        bf = to_float(b) if np.asarray(b).dtype == object else np.asarray(b, dtype=np.float64)
        absW = np.abs(Wf) / (1 - _U)     # >= |W| exactly
        absb = np.abs(bf) / (1 - _U)
        n = Wf.shape[1]
        gamma = (n + 1) * _U / (1 - (n + 1) * _U)
        mag = np.abs(h) @ absW.T + absb[None, :]
        # the bound's own sums of non-negative terms are accurate to a relative (n + 2) u
        e = (e @ absW.T + (gamma + _U) * mag) * (1 + (n + 4) * 4 * _U)
        h = h @ Wf.T + bf
        if li < n_layers - 1:
            h = np.maximum(h, 0.0)
    return e[:, 0]


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
    err_bound = float(np.max(float_error_bound(exact_layers, inst.x))) if len(inst.z) else 0.0
    # rounding is monotone, so the largest rounded |weight| is the rounded largest one (and the
    # exact comparisons of long rationals cost seconds at K = 20000)
    info = dict(info, max_abs_weight=[float(np.max(np.abs(W), initial=0.0)) for W, _ in layers])
    if check_exact:
        out = forward_exact(exact_layers, inst.x)
        bad = [i for i, (v, zi) in enumerate(zip(out, inst.z)) if v != Fraction(float(zi))]
        if bad:   # a bug, never a user error: the proofs say this cannot happen
            raise AssertionError(f"{name}: exact output misses z at samples {bad[:5]}")
    w = widths_of(exact_layers)
    return Construction(name, layers, exact_layers, int(sum(w)), w, int(bound), float_err,
                        err_bound, info)


def _as_obj(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=object)
