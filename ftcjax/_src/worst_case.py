"""Worst-case fine-tuning instances on a line and the exact 1-D breakpoint oracle.

Source: paper-notes section 4 (Sohn, Kwon, An, Lee, UAI 2024, Thm 4.1 lower bound; the paper's
Fig. 3 example for K < 3N + 2 is flawed and is replaced here by alternating-turn instances).

All instances put the K samples on a line at x_i = i (i = 1..K, exact integers in float64), shape
``x (K, 1)``; ``z (K,)`` are the residuals (0 off ``changed``) and ``changed (K,)`` is the mask T.

Vocabulary: for equally spaced collinear data the *turn* at interior sample i (2 <= i <= K-1,
1-based) is the second difference D_i = z_{i-1} - 2 z_i + z_{i+1}; its sign is the *turn sign*.
A 2-layer ReLU net with m hidden neurons restricted to a line is continuous piecewise linear (CPWL)
with at most m breakpoints, so ``min_breakpoints(z)`` is a lower bound on the 2-layer width that
fits (x, z) exactly.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError

__all__ = [
    "structured_problem",
    "worst_case_two_layer",
    "alternating_turns",
    "min_breakpoints",
    "turn_signs",
    "min_breakpoint_interpolant",
    "min_breakpoints_within",
    "oracle_two_layer_width",
]


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise FTCInputError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise FTCInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def structured_problem(data: str, N: int, K: int) -> str | None:
    """Why ``(N, K)`` cannot make a ``data`` instance ("worst_case" or "alternating"), or None.

    The rule the builders below enforce, stated once so validation can report it before any work.
    """
    if data == "worst_case":
        if N < 1:
            return f"N must be >= 1 for data='worst_case', got N={N}"
        if K < 3 * N + 2:
            return (f"K must be >= 3N + 2 = {3 * N + 2} for data='worst_case' (N={N}), got K={K}; "
                    "use data='alternating' for N <= K < 3N + 2")
    elif data == "alternating":
        if N < 1:
            return f"N must be >= 1 for data='alternating', got N={N}"
        if not N <= K < 3 * N + 2:
            return (f"K must satisfy N <= K < 3N + 2 = {3 * N + 2} for data='alternating' (N={N}), "
                    f"got K={K}; use data='worst_case' for K >= 3N + 2")
    return None


def _line(K: int) -> np.ndarray:
    """x_i = i for i = 1..K as a (K, 1) float64 array (exact integers)."""
    return np.arange(1, K + 1, dtype=np.float64)[:, None]


def worst_case_two_layer(N: int, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's 2-layer worst case (Thm 4.1 lower bound) for K >= 3N + 2.

    Samples on a line x_i = i (1-based); T = {3, 6, ..., 3N}; z = -1 at i = 6k - 3 and z = +2 at
    i = 6k, 0 elsewhere. The turn signs at i = 2, ..., 3N + 1 alternate (-, +, -, ...) and are all
    non-zero, so any CPWL interpolant needs exactly 3N breakpoints (``min_breakpoints`` = 3N) and
    any 2-layer net needs m >= 3N hidden neurons.

    Args:
      N: number of changed samples, N >= 1.
      K: number of samples, K >= 3N + 2.

    Returns:
      x (K, 1) float64, z (K,) float64, changed (K,) bool.

    Raises:
      FTCInputError: N < 1 or K < 3N + 2 (naming the argument).
    """
    N = _check_int("N", N, 1)
    K = _check_int("K", K, 3)
    if K < 3 * N + 2:
        raise FTCInputError(
            f"K must be >= 3N + 2 = {3 * N + 2} for the 2-layer worst case (N={N}), got K={K}; "
            "use alternating_turns for N <= K < 3N + 2")
    z = np.zeros(K, dtype=np.float64)
    changed = np.zeros(K, dtype=bool)
    idx = 3 * np.arange(1, N + 1)          # 1-based positions 3, 6, ..., 3N
    changed[idx - 1] = True
    z[idx - 1] = np.where(idx % 6 == 3, -1.0, 2.0)
    return _line(K), z, changed


def _alternating_mask(N: int, K: int) -> np.ndarray:
    """Changed positions for ``alternating_turns``: the K - N zeros spread over the N + 1 gaps
    around the changed samples, at most 2 per gap (possible because K - N <= 2N + 1), so no three
    consecutive samples are unchanged (three zeros in a row would give a zero turn)."""
    Z = K - N
    base, extra = divmod(Z, N + 1)
    gaps = [base + (1 if g < extra else 0) for g in range(N + 1)]
    changed = []
    for g in range(N + 1):
        changed.extend([False] * gaps[g])
        if g < N:
            changed.append(True)
    return np.asarray(changed, dtype=bool)


def alternating_turns(N: int, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances forcing K - 2 breakpoints (hence K - 2 two-layer neurons) for N <= K < 3N + 2.

    Replaces the paper's Fig. 3 example (K = 2N + 1, values -1/+2 on even positions), which a
    smaller net fits (paper-notes section 4). Here ALL K - 2 interior turns are non-zero and their
    signs alternate, so ``min_breakpoints(z) = K - 2`` (no breakpoint can serve two turns).

    Construction: the K - N unchanged samples are spread over the N + 1 gaps around the changed
    ones, at most 2 per gap. The changed values are then chosen left to right: the value z_i is
    the last free value entering each turn D_j (j in {i-1, i, i+1}) whose other entries are already
    known or unchanged; every such constraint sign(D_j) = sigma_j is a lower bound on
    sigma_{i-1} * z_i (the coefficient signs line up because sigma alternates), so the smallest
    positive integer above all bounds satisfies them and is non-zero. Values are integers
    (exact in float64); for N = K this gives z_i = +-1 alternating.

    Args:
      N: number of changed samples, N >= 1.
      K: number of samples, N <= K < 3N + 2.

    Returns:
      x (K, 1) float64, z (K,) float64 (non-zero exactly on changed), changed (K,) bool.
    """
    N = _check_int("N", N, 1)
    K = _check_int("K", K, 1)
    if K < N:
        raise FTCInputError(f"N must be <= K, got N={N} > K={K}")
    if K >= 3 * N + 2:
        raise FTCInputError(
            f"K must be < 3N + 2 = {3 * N + 2} for alternating_turns (N={N}), got K={K}; "
            "use worst_case_two_layer for K >= 3N + 2")
    changed = _alternating_mask(N, K)
    z = [0] * K                              # python ints: exact
    sigma = [(-1) ** j for j in range(K)]    # desired sign of the turn at 0-based j

    for i in range(K):
        if not changed[i]:
            continue
        s = sigma[i - 1] if i >= 1 else -sigma[0]   # orientation of z_i (see docstring)
        v_min = 1
        for j in (i - 1, i, i + 1):
            if not 1 <= j <= K - 2:
                continue                   # not an interior turn
            later = [k for k in (j - 1, j, j + 1) if k > i]
            if any(changed[k] for k in later):
                continue                   # a later free value owns this turn
            coef = 1 if j != i else -2
            rest = sum(z[k] for k in (j - 1, j, j + 1) if k < i)   # later entries are 0
            # need sigma_j * (coef * s * v + rest) > 0 with a = sigma_j * coef * s > 0
            a = sigma[j] * coef * s
            assert a > 0, "turn orientation bookkeeping broken"
            bound = -sigma[j] * rest        # need a * v > bound
            v_min = max(v_min, bound // a + 1)
        z[i] = s * v_min
    return _line(K), np.asarray(z, dtype=np.float64), changed


def _as_exact(v) -> list:
    """Exact rationals from floats / ints / Fractions (floats are dyadic rationals)."""
    out = []
    for e in np.asarray(v, dtype=object).ravel():
        if isinstance(e, (float, np.floating)):
            f = float(e)
            if not np.isfinite(f):
                raise FTCInputError(f"z must be finite, got {f}")
            out.append(Fraction(f))
        elif isinstance(e, (int, np.integer, Fraction)):
            out.append(Fraction(e))
        else:
            raise FTCInputError(f"z entries must be real numbers, got {e!r}")
    return out


def _secant_slopes(z: Sequence[Fraction], x: Sequence[Fraction] | None) -> list[Fraction]:
    K = len(z)
    if x is None:
        return [z[i + 1] - z[i] for i in range(K - 1)]
    return [(z[i + 1] - z[i]) / (x[i + 1] - x[i]) for i in range(K - 1)]


def _validate_line(z, x):
    z_arr = np.asarray(z)
    if z_arr.ndim != 1:
        raise FTCInputError(f"z must have shape (K,), got shape {z_arr.shape}")
    zq = _as_exact(z_arr)
    xq = None
    if x is not None:
        x_arr = np.asarray(x)
        if x_arr.ndim == 2 and x_arr.shape[1] == 1:
            x_arr = x_arr[:, 0]
        if x_arr.shape != z_arr.shape:
            raise FTCInputError(
                f"x must have shape (K,) or (K, 1) matching z {z_arr.shape}, got {np.shape(x)}")
        xq = _as_exact(x_arr)
        if any(xq[i + 1] <= xq[i] for i in range(len(xq) - 1)):
            raise FTCInputError("x must be strictly increasing (sorted, distinct positions)")
    return zq, xq


def turn_signs(z, x=None) -> np.ndarray:
    """Exact signs of the turns (slope changes) at the K - 2 interior samples.

    Args:
      z: (K,) values (floats, ints or Fractions); computed in exact rational arithmetic.
      x: optional (K,) or (K, 1) strictly increasing positions; default equally spaced.

    Returns:
      (max(K - 2, 0),) int8 array in {-1, 0, +1}: sign of s_i - s_{i-1}, with s the secant slopes.
    """
    zq, xq = _validate_line(z, x)
    s = _secant_slopes(zq, xq)
    return np.asarray([(d > 0) - (d < 0) for d in (s[i] - s[i - 1] for i in range(1, len(s)))],
                      dtype=np.int8)


def _runs(signs: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs (start, length, sign) of equal non-zero entries."""
    runs, i, n = [], 0, len(signs)
    while i < n:
        if signs[i] == 0:
            i += 1
            continue
        j = i
        while j + 1 < n and signs[j + 1] == signs[i]:
            j += 1
        runs.append((i, j - i + 1, int(signs[i])))
        i = j + 1
    return runs


def min_breakpoints(z, x=None) -> int:
    """Exact minimum number of breakpoints of a CPWL interpolant of collinear data.

    For samples at equally spaced positions (or strictly increasing ``x``) with values z, the
    minimum number of breakpoints (points where the slope changes, anywhere on the real line) of a
    continuous piecewise-linear f with f(x_i) = z_i equals

        sum over maximal runs of consecutive interior samples with equal non-zero turn sign
            of ceil(run length / 2),

    where the turn at interior sample i is s_i - s_{i-1} (secant slopes; for equal spacing, the
    second difference).

    Proof sketch.
    Lower bound: if the turn at i is positive, f cannot be concave on [x_{i-1}, x_{i+1}], so f has
    a slope-INCREASING breakpoint in the open window (x_{i-1}, x_{i+1}); likewise a negative turn
    needs a slope-decreasing breakpoint there. A breakpoint has one sign and lies in the windows of
    at most two turns, which are then adjacent (it lies strictly between x_i and x_{i+1}; a
    breakpoint at a sample lies in one window only). So the positive breakpoints form a hitting
    set of the windows of the positive turns, where a point hits at most two consecutive indices:
    each maximal run of r consecutive positive turns needs ceil(r/2) of them; same for negative.
    Upper bound (``min_breakpoint_interpolant`` builds it): inside each run pair turns (i, i+1)
    greedily from the left and leave a last odd turn single. f follows the secant on every interval
    not inside a pair; for a pair, f continues the secant line of [x_{i-1}, x_i] and the secant
    line of [x_{i+1}, x_{i+2}], which meet at relative position D_{i+1} / (D_i + D_{i+1}) in
    (0, 1) of [x_i, x_{i+1}] because the two turns have the same sign: one breakpoint serves both.
    A single turn gets a breakpoint at its sample. Pairs never share an interval, so the pieces fit
    together. Consequently a 2-layer ReLU net on these samples needs at least this many neurons.

    Args:
      z: (K,) values; evaluated exactly (floats are converted to Fractions, no rounding).
      x: optional (K,) or (K, 1) strictly increasing positions; default equally spaced.

    Returns:
      The minimum number of breakpoints (int, 0 when K <= 2).
    """
    return sum((length + 1) // 2 for _, length, _ in _runs(turn_signs(z, x)))


def min_breakpoint_interpolant(z, x=None) -> tuple[list[Fraction], list[Fraction], Fraction, Fraction]:
    """An optimal CPWL interpolant, exactly: the constructive half of ``min_breakpoints``.

    Returns ``(breakpoints, slope_changes, slope0, value0)`` with f(t) = value0 + slope0 (t - x_1)
    + sum_k slope_changes[k] * relu(t - breakpoints[k]) (all Fractions, breakpoints sorted, every
    slope change non-zero), satisfying f(x_i) = z_i exactly; len(breakpoints) == min_breakpoints.
    Positions default to x_i = i (1-based), as in the instances of this module.
    """
    zq, xq = _validate_line(z, x)
    K = len(zq)
    if xq is None:
        xq = [Fraction(i + 1) for i in range(K)]
    if K == 0:
        return [], [], Fraction(0), Fraction(0)
    if K == 1:
        return [], [], Fraction(0), zq[0]
    s = _secant_slopes(zq, xq)
    D = [s[i] - s[i - 1] for i in range(1, len(s))]   # D[j] is the turn at sample j + 1 (0-based)
    signs = np.asarray([(d > 0) - (d < 0) for d in D], dtype=np.int8)
    bps, changes = [], []
    for start, length, _ in _runs(signs):
        k = 0
        while k < length:
            j = start + k                         # turn index; its sample is j + 1 (0-based)
            i = j + 1
            if k + 1 < length:                    # pair turns at samples i and i + 1
                u = D[j + 1] / (D[j] + D[j + 1])
                bps.append(xq[i] + u * (xq[i + 1] - xq[i]))
                changes.append(s[i + 1] - s[i - 1])
                k += 2
            else:
                bps.append(xq[i])
                changes.append(s[i] - s[i - 1])
                k += 1
    return bps, changes, s[0], zq[0]


def min_breakpoints_within(z, x=None, eps=0) -> int:
    """Minimum number of breakpoints of ANY CPWL f with ``max_i |f(x_i) - z_i| <= eps``: a lower bound.

    Every fit within ``eps`` is an exact interpolant of some ``z + e`` with ``|e_i| <= eps``. A turn
    ``D_i = s_i - s_{i-1}`` moves by at most ``2 eps (1/dx_{i-1} + 1/dx_i)`` under such ``e``; a turn
    larger than that keeps its sign for every admissible ``e`` (*robust*). The hitting-set argument of
    :func:`min_breakpoints` applies to the robust turns alone (a turn that may vanish or flip is
    dropped, i.e. set to 0: a lower bound, since dropping can only split runs). With ``eps = 0`` this is
    ``min_breakpoints`` exactly.

    Args:
      z: (K,) values; x: optional (K,) or (K, 1) strictly increasing positions (default 1..K);
      eps: the absolute tolerance (>= 0), e.g. the strict criterion's ``tol * max(1, max|z|)``.
    Returns:
      int, computed in exact rational arithmetic.
    """
    zq, xq = _validate_line(z, x)
    e = _as_exact([eps])[0]
    if e < 0:
        raise FTCInputError(f"eps must be >= 0, got {eps}")
    K = len(zq)
    if K <= 2:
        return 0
    xs = xq if xq is not None else [Fraction(i + 1) for i in range(K)]
    s = _secant_slopes(zq, xs)
    signs = []
    for i in range(1, len(s)):
        d = s[i] - s[i - 1]
        slack = 2 * e * (1 / (xs[i] - xs[i - 1]) + 1 / (xs[i + 1] - xs[i]))
        signs.append(1 if d > slack else (-1 if d < -slack else 0))
    return sum((length + 1) // 2 for _, length, _ in _runs(np.asarray(signs, dtype=np.int8)))


def oracle_two_layer_width(z, x=None) -> int:
    """Neurons of the smallest 2-layer ReLU net through ``min_breakpoint_interpolant``: exact capacity
    up to one neuron.

    A 2-layer net ``c + sum_j a_j relu(w_j t - b_j)`` on a line puts one breakpoint per neuron; with
    ``b`` breakpoints it must have a piece of slope 0 (neurons left of it oriented leftwards, right of
    it rightwards) or one more neuron (a unit active on every sample carries the slope). So the width
    is ``b`` when the optimal interpolant built here has a flat piece, else ``b + 1``; the capacity of
    the instance lies in ``[min_breakpoints(z, x), oracle_two_layer_width(z, x)]``, exactly.
    """
    bps, changes, slope0, _ = min_breakpoint_interpolant(z, x)
    slope, flat = slope0, slope0 == 0
    for c in changes:
        slope += c
        flat = flat or slope == 0
    return len(bps) + (0 if flat else 1)
