"""Worst-case instances and the exact 1-D breakpoint oracle (paper-notes section 4).

The oracle ``min_breakpoints`` is checked against an INDEPENDENT exact search over breakpoint
placements (a dynamic program over "how many breakpoints in each open interval / at each sample",
and a brute-force enumeration of the same placements for tiny K), in both directions:
the optimal interpolant it builds really interpolates with that many breakpoints (upper), and no
placement with fewer breakpoints admits an interpolant (lower).
"""
from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from ftcjax._src.errors import FTCInputError
from ftcjax._src.worst_case import (alternating_turns, min_breakpoint_interpolant, min_breakpoints,
                                    turn_signs, worst_case_two_layer)

INF = None


# ----------------------------------------------------------------------------- independent search

def _slopes(z, x):
    zq = [Fraction(v) for v in z]
    xq = [Fraction(v) for v in x]
    return [(zq[i + 1] - zq[i]) / (xq[i + 1] - xq[i]) for i in range(len(zq) - 1)]


def _contains(S, v):
    kind = S[0]
    return (kind == "all" or (kind == "pt" and S[1] == v) or (kind == "ge" and v >= S[1])
            or (kind == "le" and v <= S[1]))


def _below(S, v):
    return S[0] in ("all", "le") or (S[0] == "pt" and S[1] < v) or (S[0] == "ge" and S[1] < v)


def _above(S, v):
    return S[0] in ("all", "ge") or (S[0] == "pt" and S[1] > v) or (S[0] == "le" and S[1] > v)


def _interval_step(S, s, r):
    """Feasible outgoing slopes (just left of the next sample) given incoming slopes S (just right
    of the current sample) and r breakpoints inside the open interval whose secant slope is s.
    r = 0: linear, slope s. r = 1: s lies between incoming and outgoing slope (closed: a breakpoint
    on an end sample is also at most one breakpoint). r >= 2: anything (connect any two lines)."""
    if S is None:
        return None
    if r == 0:
        return ("pt", s) if _contains(S, s) else None
    if r == 1:
        lo, hi = _below(S, s), _above(S, s)
        if _contains(S, s) or (lo and hi):
            return ("all",)
        return ("ge", s) if lo else (("le", s) if hi else None)
    return ("all",)


def _point_step(S, b):
    """Through an interior sample: slope continuous (b = 0) or free (b = 1 breakpoint there)."""
    if S is None:
        return None
    return ("all",) if b else S


def dp_min_breakpoints(z, x=None):
    """Exact minimum over breakpoint placements by dynamic programming (independent of the oracle)."""
    K = len(z)
    x = list(range(1, K + 1)) if x is None else list(x)
    if K <= 2:
        return 0
    s = _slopes(z, x)
    states = {("all",): 0}          # slope just right of sample 1 is free
    for j in range(K - 1):
        nxt = {}
        for S, c in states.items():
            for r in (0, 1, 2):
                T = _interval_step(S, s[j], r)
                if T is not None and nxt.get(T, 10 ** 9) > c + r:
                    nxt[T] = c + r
        states = nxt
        if j < K - 2:               # interior sample j + 2 (1-based)
            nxt = {}
            for S, c in states.items():
                for b in (0, 1):
                    T = _point_step(S, b)
                    if T is not None and nxt.get(T, 10 ** 9) > c + b:
                        nxt[T] = c + b
            states = nxt
    return min(states.values())


def brute_feasible_counts(z):
    """Set of total counts of every feasible placement pattern (brute force, tiny K)."""
    K = len(z)
    s = _slopes(z, range(1, K + 1))
    counts = set()
    for rs in itertools.product((0, 1, 2), repeat=K - 1):
        for bs in itertools.product((0, 1), repeat=K - 2):
            S = ("all",)
            for j in range(K - 1):
                S = _interval_step(S, s[j], rs[j])
                if j < K - 2:
                    S = _point_step(S, bs[j])
            if S is not None:
                counts.add(sum(rs) + sum(bs))
    return counts


def eval_interpolant(bps, changes, slope0, value0, x0, t):
    return value0 + slope0 * (t - x0) + sum((c * max(t - b, Fraction(0)) for b, c in zip(bps, changes)),
                                            Fraction(0))


# ----------------------------------------------------------------------------- worst-case instances

@pytest.mark.parametrize("N", [1, 2, 3, 5, 8, 13])
def test_worst_case_needs_exactly_3N_breakpoints(N):
    for K in (3 * N + 2, 3 * N + 3, 3 * N + 11):
        x, z, changed = worst_case_two_layer(N, K)
        assert x.shape == (K, 1) and x.dtype == np.float64
        assert z.shape == (K,) and z.dtype == np.float64
        assert changed.shape == (K,) and changed.dtype == bool
        assert changed.sum() == N and np.all((z != 0) == changed)
        assert np.all(np.diff(x[:, 0]) == 1)          # equally spaced on a line
        sg = turn_signs(z)
        # turns 2..3N+1 are non-zero and alternate, the rest are 0
        assert np.all(sg[:3 * N] != 0) and np.all(sg[:3 * N][1:] == -sg[:3 * N][:-1])
        assert np.all(sg[3 * N:] == 0)
        assert min_breakpoints(z) == 3 * N
        if K <= 14:
            assert dp_min_breakpoints(z) == 3 * N


def test_worst_case_paper_values():
    x, z, changed = worst_case_two_layer(2, 8)
    assert z.tolist() == [0, 0, -1, 0, 0, 2, 0, 0]
    assert np.flatnonzero(changed).tolist() == [2, 5]


@pytest.mark.parametrize("N", list(range(1, 13)))
def test_alternating_turns_force_K_minus_2(N):
    for K in range(N, 3 * N + 2):
        x, z, changed = alternating_turns(N, K)
        assert changed.sum() == N and np.all((z != 0) == changed), (N, K)
        assert np.all(z == np.round(z)) and np.max(np.abs(z)) <= 4
        assert min_breakpoints(z) == max(K - 2, 0), (N, K, z)
        sg = turn_signs(z)
        assert np.all(sg != 0) and np.all(sg[1:] == -sg[:-1])
        if K <= 9:
            assert dp_min_breakpoints(z) == max(K - 2, 0)


def test_alternating_turns_memorization_is_plus_minus_one():
    _, z, changed = alternating_turns(6, 6)
    assert changed.all()
    assert np.all(np.abs(z) == 1) and np.all(z[1:] == -z[:-1])


def test_paper_fig3_example_is_flawed():
    """The paper's K = 2N + 1 example (T = {2, 4, ..., 2N}, values -1, +2) does NOT force K - 2:
    at K = 9 five breakpoints suffice, and a 5-neuron 2-layer net fits it exactly."""
    z = [0, -1, 0, 2, 0, -1, 0, 2, 0]
    assert min_breakpoints(z) == 5 == dp_min_breakpoints(z) < len(z) - 2
    bps, ch, s0, v0 = min_breakpoint_interpolant(z)
    # realise it with 5 ReLUs: neurons left of a chosen subset face left so the far-left slope is s0
    left = next(L for r in range(len(bps) + 1) for L in itertools.combinations(range(len(bps)), r)
                if sum(ch[k] for k in L) == -s0)
    t = [Fraction(i) for i in range(1, 10)]

    def g(tt):   # 5 ReLUs: c relu(b - t) (left-facing) or c relu(t - b)
        out = sum((ch[k] * max((bps[k] - tt) if k in left else (tt - bps[k]), Fraction(0))
                   for k in range(len(bps))), Fraction(0))
        return out
    const = Fraction(z[0]) - g(t[0])
    assert all(g(ti) + const == zi for ti, zi in zip(t, z))
    # whereas the corrected instance at the same (N, K) needs K - 2 = 7
    assert min_breakpoints(alternating_turns(4, 9)[1]) == 7


# ----------------------------------------------------------------------------- oracle, both directions

@pytest.mark.parametrize("K", [1, 2, 3, 4, 5, 6, 7])
def test_oracle_matches_exact_search_all_ternary(K):
    for z in itertools.product((-1, 0, 1), repeat=K):
        b = min_breakpoints(np.asarray(z, dtype=np.float64))
        assert b == dp_min_breakpoints(z), z
        bps, ch, s0, v0 = min_breakpoint_interpolant(list(z))
        assert len(bps) == b and all(c != 0 for c in ch)
        assert all(eval_interpolant(bps, ch, s0, v0, 1, Fraction(i + 1)) == z[i] for i in range(K))


def test_oracle_brute_force_both_directions_tiny():
    rng = np.random.default_rng(0)
    for _ in range(25):
        K = int(rng.integers(3, 6))
        z = rng.integers(-3, 4, size=K).tolist()
        counts = brute_feasible_counts(z)
        b = min_breakpoints(z)
        assert min(counts) == b                      # b feasible, nothing below b feasible
        assert b - 1 not in counts


def test_oracle_random_positions_and_values():
    rng = np.random.default_rng(1)
    for _ in range(150):
        K = int(rng.integers(3, 12))
        x = np.cumsum(rng.integers(1, 4, size=K)).astype(float) / 4
        z = rng.integers(-2, 3, size=K) / 2
        b = min_breakpoints(z, x)
        assert b == dp_min_breakpoints(z, x)
        bps, ch, s0, v0 = min_breakpoint_interpolant(z, x)
        assert len(bps) == b
        xq = [Fraction(v) for v in x]
        assert all(eval_interpolant(bps, ch, s0, v0, xq[0], xq[i]) == Fraction(z[i]) for i in range(K))
        assert all(xq[0] < p < xq[-1] for p in bps)


def test_oracle_is_exact_not_float():
    # the true second difference is -0.5, but float64 rounds 2^53 - 0.5 back to 2^53 and sees 0
    z = np.array([2.0 ** 53, 0.25, -(2.0 ** 53)])
    assert np.diff(z, 2)[0] == 0.0
    assert turn_signs(z).tolist() == [-1]
    assert min_breakpoints(z) == 1


def test_oracle_large_K_fast():
    x, z, _ = worst_case_two_layer(1000, 100_000)
    assert min_breakpoints(z) == 3000


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("fn,args,name", [
    (worst_case_two_layer, (0, 10), "N"),
    (worst_case_two_layer, (3, 10), "K"),
    (worst_case_two_layer, (2.0, 10), "N"),
    (worst_case_two_layer, (2, True), "K"),
    (alternating_turns, (5, 4), "N"),
    (alternating_turns, (3, 11), "K"),
    (alternating_turns, (0, 1), "N"),
])
def test_bad_arguments_raise_naming_them(fn, args, name):
    with pytest.raises(FTCInputError, match=rf"\b{name}\b"):
        fn(*args)


def test_oracle_bad_input():
    with pytest.raises(FTCInputError, match="z"):
        min_breakpoints(np.zeros((3, 2)))
    with pytest.raises(FTCInputError, match="z"):
        min_breakpoints([0.0, np.nan, 1.0])
    with pytest.raises(FTCInputError, match="x"):
        min_breakpoints([0.0, 1.0, 0.0], x=[0.0, 2.0, 1.0])


# ----------------------------------------------------------------------------- tolerant oracle, exact width

from ftcjax._src.worst_case import min_breakpoints_within, oracle_two_layer_width  # noqa: E402


@pytest.mark.parametrize("seed", range(6))
def test_min_breakpoints_within_is_a_lower_bound_for_every_admissible_perturbation(seed):
    """For z + e with |e_i| <= eps (random corners and interior points of the box, the extreme cases of a
    sign flip), the exact oracle of the perturbed data never goes below the tolerant bound."""
    rng = np.random.default_rng(seed)
    K = 9
    x = np.sort(rng.uniform(0, 4, K))
    z = np.where(rng.random(K) < 0.5, rng.uniform(-1, 1, K), 0.0)
    for eps in (0.0, 1e-3, 0.05, 0.3):
        lb = min_breakpoints_within(z, x, eps)
        assert lb <= min_breakpoints(z, x)
        for _ in range(40):
            e = eps * rng.choice([-1.0, 1.0, 0.0, 0.5], size=K)
            assert min_breakpoints(z + e, x) >= lb, (eps, e)


def test_min_breakpoints_within_at_zero_is_the_oracle_and_shrinks_with_eps():
    rng = np.random.default_rng(3)
    for _ in range(10):
        z = rng.uniform(-1, 1, 12)
        assert min_breakpoints_within(z, None, 0) == min_breakpoints(z)
        vals = [min_breakpoints_within(z, None, e) for e in (0, 0.01, 0.1, 1.0, 10.0)]
        assert vals == sorted(vals, reverse=True) and vals[-1] == 0
    x, z, _ = worst_case_two_layer(5, 20)
    assert min_breakpoints_within(z, x, 1e-3) == 15  # turns of size >= 1 survive a 1e-3 tolerance
    with pytest.raises(FTCInputError, match="eps"):
        min_breakpoints_within(z, x, -1.0)


def _net_from_interpolant(z, x):
    """The 2-layer ReLU net behind ``oracle_two_layer_width`` built explicitly (exact rationals):
    breakpoints left of a flat piece use leftward units relu(t_k - t), the others rightward relu(t - t_k);
    without a flat piece one extra unit relu(t - x_1 + 1) carries the first slope."""
    bps, changes, slope0, value0 = min_breakpoint_interpolant(z, x)
    xs = [Fraction(v) for v in (x if x is not None else range(1, len(z) + 1))]
    slopes = [slope0]
    for c in changes:
        slopes.append(slopes[-1] + c)
    flat = next((k for k, s in enumerate(slopes) if s == 0), None)

    def f_interp(t):
        return value0 + slope0 * (t - xs[0]) + sum(c * max(t - b, 0) for b, c in zip(bps, changes))

    units = []  # (w, b, a): a * relu(w t - b)
    if flat is None:
        units.append((Fraction(1), xs[0] - 1, slope0))
        units += [(Fraction(1), b, c) for b, c in zip(bps, changes)]
    else:
        for k, (b, c) in enumerate(zip(bps, changes)):
            # a leftward unit c relu(b - t) adds slope -c left of b and 0 right of it: a change of +c
            units.append((Fraction(-1), -b, c) if k < flat else (Fraction(1), b, c))
    t_flat = None if flat is None else (bps[flat - 1] if flat > 0 else bps[0] - 1 if bps else xs[0])

    def g(t, c0):
        return c0 + sum(a * max(w * t - b, 0) for w, b, a in units)

    c0 = f_interp(xs[0]) - g(xs[0], 0) if flat is None else f_interp(t_flat) - g(t_flat, 0)
    return len(units), [g(t, c0) for t in xs]


@pytest.mark.parametrize("seed", range(8))
def test_oracle_width_is_realised_by_an_explicit_net_exactly(seed):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(4, 14))
    x = np.sort(rng.choice(np.arange(1, 60), K, replace=False)).astype(float)
    z = np.where(rng.random(K) < 0.5, rng.integers(-3, 4, K), 0).astype(float)
    m, out = _net_from_interpolant(z, x)
    assert m == oracle_two_layer_width(z, x)
    assert out == [Fraction(v) for v in z]
    assert min_breakpoints(z, x) <= m <= min_breakpoints(z, x) + 1


def test_oracle_width_on_the_worst_case_is_exactly_3N():
    for N in (1, 3, 7):
        x, z, _ = worst_case_two_layer(N, 3 * N + 2)
        assert oracle_two_layer_width(z, x) == min_breakpoints(z) == 3 * N
