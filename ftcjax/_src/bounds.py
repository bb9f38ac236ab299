"""Every theoretical bound of paper-notes section 2 as a plain function.

Sohn, Kwon, An, Lee, "Memorization Capacity for Additive Fine-Tuning with Small ReLU Networks",
UAI 2024. Notation: K samples, N changed (|T| = N), m hidden neurons (3-layer: m = d1 + d2),
L layers, d input dimension. m* = the worst-case minimal width; N* = the fine-tuning capacity.
Real-valued bounds are returned as floats exactly as printed (no ceilings); ``*_int`` variants give
the integer consequence (a width is an integer).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ftcjax._src.errors import FTCInputError

__all__ = [
    "thm41_two_layer", "thm44_data_dependent", "cor42_two_layer_capacity",
    "thm51_u1", "thm51_u2", "thm51_u3", "thm51_upper", "thm51_lower", "thm51_lower_int",
    "three_layer_line_lower", "cor52_three_layer_capacity", "prop61_width",
"generic_two_layer_lower", "generic_three_layer_lower",
    "generic_three_layer_slope", "slab_two_layer", "tooth_neurons",
]


def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise FTCInputError(f"{name} must be an int, got {v!r}")
    if v < lo:
        raise FTCInputError(f"{name} must be >= {lo}, got {v}")
    return int(v)


def _NK(N, K, *, K_min: int = 1) -> tuple[int, int]:
    N = _int("N", N, 0)
    K = _int("K", K, K_min)
    if N > K:
        raise FTCInputError(f"N must be <= K, got N={N} > K={K}")
    return N, K


# ----------------------------------------------------------------------------- two layers

def thm41_two_layer(N: int, K: int) -> tuple[int, int]:
    """Thm 4.1 (K >= 3): min{3N, K-2} <= m*(N, K) <= min{3N+1, K-1} for 2-layer ReLU nets.

    The lower bound is worst case (an instance needs that many neurons, e.g.
    ``worst_case_two_layer``), not per instance. Returns (lower, upper).
    """
    N, K = _NK(N, K, K_min=3)
    return min(3 * N, K - 2), min(3 * N + 1, K - 1)


def thm44_data_dependent(changed_sorted: Sequence[bool]) -> int:
    """Thm 4.4: with samples sorted by a projection a.x_1 < ... < a.x_K,
    m* <= K - 1 - sum over maximal runs P of consecutive unchanged samples of max(|P| - 2, 0).

    Args:
      changed_sorted: (K,) bools in projection order.
    """
    ch = np.asarray(changed_sorted)
    if ch.ndim != 1 or ch.dtype != bool:
        raise FTCInputError(f"changed_sorted must be a (K,) bool array, got {ch.dtype} {ch.shape}")
    K = len(ch)
    if K == 0:
        raise FTCInputError("changed_sorted must be non-empty")
    drop, run = 0, 0
    for c in list(ch) + [True]:
        if c:
            drop += max(run - 2, 0)
            run = 0
        else:
            run += 1
    return K - 1 - drop


def cor42_two_layer_capacity(m: int, K: int) -> tuple[int, int]:
    """Cor 4.2: FTC in samples N* of a 2-layer net with m neurons.

    K >= m + 2: floor((m-1)/3) <= N* <= m/3 (returned as floor(m/3)); K <= m + 1: N* = K.
    Returns (lower, upper).
    """
    m = _int("m", m, 1)
    K = _int("K", K, 1)
    if K <= m + 1:
        return K, K
    return (m - 1) // 3, m // 3


def slab_two_layer(N: int, d: int) -> int:
    """Slab construction (paper-notes 3.2, after Bubeck et al. 2020): 4 ceil(N/d) neurons suffice
    for data in general position (an upper bound per instance, independent of K)."""
    N = _int("N", N, 0)
    d = _int("d", d, 1)
    return 4 * (-(-N // d))


def generic_two_layer_lower(N: int, d: int) -> float:
    """Generic-data parameter count (paper-notes section 2, derived): for almost every target vector
    a 2-layer net needs m (d + 1) + 1 >= N (parameters m(d+2) + 1 minus one ReLU rescaling per
    neuron), i.e. m >= (N - 1) / (d + 1)."""
    N = _int("N", N, 0)
    d = _int("d", d, 1)
    return (N - 1) / (d + 1)


# ----------------------------------------------------------------------------- three layers

def thm51_u1(K: int) -> float:
    """Thm 5.1 upper bound U1 = 4 sqrt(K) (Yun-Sra-Jadbabaie memoriser on all K samples)."""
    return 4 * math.sqrt(_int("K", K, 1))


def thm51_u2(N: int, K: int) -> float:
    """Thm 5.1 upper bound U2 = 2 sqrt(K) + 3N."""
    N, K = _NK(N, K)
    return 2 * math.sqrt(K) + 3 * N


def thm51_u3(N: int) -> float:
    """Thm 5.1 upper bound U3 = 6 sqrt(3N + 2): the only one free of K."""
    return 6 * math.sqrt(3 * _int("N", N, 0) + 2)


def thm51_upper(N: int, K: int) -> float:
    """Thm 5.1 (K >= 3, |z| <= 1): m* <= min{ 2 sqrt(K) + min{2 sqrt(K), 3N}, 6 sqrt(3N + 2) }
    = min(U1, U2, U3)."""
    N, K = _NK(N, K, K_min=3)
    return min(2 * math.sqrt(K) + min(2 * math.sqrt(K), 3 * N), 6 * math.sqrt(3 * N + 2))


def thm51_lower(N: int, K: int) -> float:
    """Thm 5.1 lower bound (K >= 3): m* >= sqrt(2 min{3N, K-2} + 1/4) - 1/2 (from
    min{3N, K-2} <= 2 d1 d2 + d2 <= m^2/2 + m/2 on a line, Yun et al. Thm 3.3)."""
    N, K = _NK(N, K, K_min=3)
    return math.sqrt(2 * min(3 * N, K - 2) + 0.25) - 0.5


def thm51_lower_int(N: int, K: int) -> int:
    """Integer form of ``thm51_lower``: the smallest integer m with m^2 + m >= 2 min{3N, K-2}."""
    N, K = _NK(N, K, K_min=3)
    X = min(3 * N, K - 2)
    m = 0
    while m * m + m < 2 * X:
        m += 1
    return m


def three_layer_line_lower(N: int, K: int) -> int:
    """Sharper integer lower bound behind Thm 5.1: the smallest m = d1 + d2 for which SOME split
    has 2 d1 d2 + d2 >= min{3N, K-2} (line pieces, Yun et al. Thm 3.3). >= ``thm51_lower_int``."""
    N, K = _NK(N, K, K_min=3)
    X = min(3 * N, K - 2)
    m = 0
    while max(2 * d1 * (m - d1) + (m - d1) for d1 in range(m + 1)) < X:
        m += 1
    return m


def cor52_three_layer_capacity(m: int, K: int) -> tuple[int, int]:
    """Cor 5.2: FTC in samples N* of a 3-layer net with m neurons (lower bound clipped at 0).

    K <= floor(m^2/16): N* = K;
    floor(m^2/16) + 1 <= K < (m^2 + m + 4)/2: floor(m^2/108 - 2/3) <= N* <= K;
    K >= (m^2 + m + 4)/2: floor(m^2/108 - 2/3) <= N* <= (m^2 + m)/6 (returned floored).
    Returns (lower, upper).
    """
    m = _int("m", m, 1)
    K = _int("K", K, 1)
    if K <= m * m // 16:
        return K, K
    lo = max(0, (m * m - 72) // 108)     # floor(m^2/108 - 2/3) in exact integer arithmetic
    lo = min(lo, K)
    if 2 * K < m * m + m + 4:
        return lo, K
    return lo, (m * m + m) // 6


def generic_three_layer_lower(N: int, d: int) -> int:
    """Generic-data parameter count for 3 layers (paper-notes section 2, derived): the smallest
    m = d1 + d2 such that some split has d1 d + d1 d2 + d2 + 1 >= N (about 2 sqrt(N) - d)."""
    N = _int("N", N, 0)
    d = _int("d", d, 1)
    m = 0
    while max(d1 * d + d1 * (m - d1) + (m - d1) + 1 for d1 in range(m + 1)) < N:
        m += 1
    return m


def generic_three_layer_slope(N: float, d: int) -> float:
    """Local log-log slope of the generic 3-layer width 2 sqrt(N) - d: sqrt(N) / (2 sqrt(N) - d)
    (paper-notes section 2: 1.0 at N = 100, 0.64 at N = 500, 0.53 at N = 10^4 for d = 10).
    Only meaningful where 2 sqrt(N) > d."""
    r = math.sqrt(N)
    if 2 * r <= d:
        raise FTCInputError(f"N must exceed d^2/4 for a positive width, got N={N}, d={d}")
    return r / (2 * r - d)


def tooth_neurons(N: int) -> int:
    """Neurons of the "tooth" construction (paper-notes 3.4, derived): min over q of
    (2 ceil(N/q) + 1) + 4q, about 4 sqrt(2N) + 1 ~ 5.66 sqrt(N); independent of K."""
    N = _int("N", N, 1)
    return min(2 * (-(-N // q)) + 1 + 4 * q for q in range(1, N + 1))


# ----------------------------------------------------------------------------- deeper nets

def prop61_width(N: int, K: int, L: int) -> float:
    """Prop. 6.1, CORRECTED (paper-notes section 2): some L-layer net (L >= 4) of maximum width
    w <= 4 min{ sqrt(3N / floor((L-1)/2) + 5), sqrt(K) } + 2 fits every instance.

    The paper's printed formula puts a square root over floor((L-1)/2); its proof (split T into
    P = floor((L-1)/2) parts, one 3-layer block of width <= 4 sqrt(|J_p|) + 2 carries per part,
    |J_p| <= 3 ceil(N/P) + 2 <= 3N/P + 5) gives this version, which ``deep_stacked`` meets (with
    integer ceilings: ``deep_width_bound``).
    """
    N, K = _NK(N, K)
    L = _int("L", L, 4)
    P = (L - 1) // 2
    return 4 * min(math.sqrt(3 * N / P + 5), math.sqrt(K)) + 2

