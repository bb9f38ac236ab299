"""3-layer constructions (tooth, U3, 4N+4), checked in EXACT rational arithmetic.

Every check of g(x_i) = z_i here is an equality of Fractions (zero tolerance): exactly 0 on the
unchanged samples and exactly z_i on the changed ones. The float64 export must stay within the
rigorous weight-magnitude error bound the construction reports.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ftcjax._src import bounds
from ftcjax._src.constructions._blocks import sigma_L, sigma_T
from ftcjax._src.constructions._exact import forward_float, forward_exact
from ftcjax._src.constructions.three_layer import (three_layer_4n4, three_layer_u1,
                                                   three_layer_u2, three_layer_u3, tooth,
                                                   tooth_split)
from ftcjax._src.errors import FTCInputError
from ftcjax._src.worst_case import alternating_turns, min_breakpoints, worst_case_two_layer
from instances import random_instance




def assert_exact(c, x, z):
    g = forward_exact(c.exact_layers, x)
    bad = [i for i in range(len(z)) if g[i] != Fraction(z[i])]
    assert not bad, (c.name, bad[:5])
    # float64 export: observed error within the reported rigorous bound
    g_f = forward_float(c.layers, x)
    assert np.max(np.abs(g_f - z)) == c.float_error
    assert c.float_error <= c.float_error_bound
    assert sum(c.widths) == c.neurons and len(c.layers) == 3


def u3_bound(N, K):
    n = min(3 * N + 2, K)
    return 6 * math.ceil(math.sqrt(n))


BUILDERS = {
    "tooth": (tooth, lambda N, K: bounds.tooth_neurons(N)),
    "u3": (three_layer_u3, u3_bound),
    "u3T": (lambda *a, **k: three_layer_u3(*a, points="T", **k),
            lambda N, K: 6 * math.ceil(math.sqrt(N))),
    "4n4": (three_layer_4n4, lambda N, K: 4 * N + 4),
    "u1": (three_layer_u1, lambda N, K: 4 * math.ceil(math.sqrt(K))),
    "u2": (three_layer_u2, lambda N, K: 2 * math.ceil(math.sqrt(K)) + 3 * N),
}
ALL = ("tooth", "u3", "4n4", "u1", "u2")

SIZES = [(1, 1, 1), (2, 1, 1), (2, 2, 2), (3, 1, 2), (5, 2, 1), (7, 3, 7), (20, 1, 5),
         (20, 10, 20), (40, 2, 3), (60, 3, 13), (90, 5, 24)]


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("K,d,N", SIZES)
def test_exact_fit_and_bound(name, K, d, N):
    build, bound = BUILDERS[name]
    rng = np.random.default_rng(K * 7919 + d * 31 + N)
    x, z, changed = random_instance(rng, K, d, N)
    c = build(x, z, changed, rng=rng, verify=False)
    assert_exact(c, x, z)
    assert c.neurons <= c.bound <= bound(N, K), (name, c.neurons, c.bound)


def test_tooth_count_formula_and_sqrt_growth():
    for N in range(1, 200):
        p, q = tooth_split(N)
        assert p * q >= N and 2 * p + 1 + 4 * q == bounds.tooth_neurons(N)
        assert bounds.tooth_neurons(N) <= 4 * math.sqrt(2 * N) + 7      # ~ 5.66 sqrt(N)


@pytest.mark.parametrize("name", ["tooth", "u3", "4n4"])
def test_counts_independent_of_K(name):
    """Tooth and U3 do not grow with K for fixed N (4N+4 neither): N = 4, K from 6 to 400."""
    build, bound = BUILDERS[name]
    rng = np.random.default_rng(4)
    counts = []
    for K in (6, 25, 100, 400):
        x, z, changed = random_instance(rng, K, 3, 4)
        c = build(x, z, changed, rng=rng, verify=False)
        if K <= 100:
            assert_exact(c, x, z)
        counts.append(c.neurons)
        assert c.neurons <= bound(4, 10 ** 9)     # a bound with K -> infinity
    if name == "tooth":
        assert len(set(counts)) == 1 and counts[0] == bounds.tooth_neurons(4)


def test_three_layer_beats_two_layer_order_on_worst_case():
    """On the 2-layer worst case (3N breakpoints), 3-layer constructions use O(sqrt N) neurons, and
    every one of them respects the 3-layer line lower bound: a 3-layer net with hidden widths
    (d1, d2) has at most 2 d1 d2 + d2 + 1 linear pieces on a line (Yun et al. Thm 3.3)."""
    for N in (1, 4, 10, 25):
        K = 3 * N + 5
        x, z, changed = worst_case_two_layer(N, K)
        z = z / 2                                  # the 3-layer theory needs |z| <= 1
        need = min_breakpoints(z)
        assert need == 3 * N
        for name in ALL:
            c = BUILDERS[name][0](x, z, changed, rng=N, verify=False)
            assert_exact(c, x, z)
            d1, d2 = c.widths
            assert 2 * d1 * d2 + d2 >= need, (name, c.widths)
            assert c.neurons >= bounds.thm51_lower(N, K)
            assert c.neurons >= bounds.three_layer_line_lower(N, K)
        if N >= 10:
            assert tooth(x, z, changed, rng=N, verify=False).neurons < 3 * N


def test_lower_bound_on_alternating_instances():
    for N, K in [(3, 7), (5, 16), (8, 8), (8, 25)]:
        x, z, changed = alternating_turns(N, K)
        need = min_breakpoints(z)
        assert need == K - 2
        for name in ALL:
            c = BUILDERS[name][0](x, z, changed, rng=K, rescale=True, verify=False)
            assert_exact(c, x, z)
            d1, d2 = c.widths
            assert 2 * d1 * d2 + d2 >= need
            assert c.neurons >= bounds.three_layer_line_lower(N, K)


def test_z_above_one_needs_rescale():
    rng = np.random.default_rng(11)
    x, z, changed = random_instance(rng, 15, 2, 4, zmax=5.0)
    z[np.flatnonzero(changed)[0]] = 4.5
    for name in ALL:
        build = BUILDERS[name][0]
        with pytest.raises(FTCInputError, match=r"z.*rescale"):
            build(x, z, changed, rng=0)
        c = build(x, z, changed, rng=0, rescale=True, verify=False)
        assert_exact(c, x, z)
        assert c.info["scale"] == np.max(np.abs(z)) > 1


def test_4n4_handles_empty_groups():
    """App. A indexes 2N + 1 alternating groups; with adjacent changed samples some are empty.
    Dropping them (signs alternate over the non-empty ones) still fits exactly."""
    x = np.arange(1.0, 9.0)[:, None]
    changed = np.array([True, True, True, False, False, True, True, False])
    z = np.where(changed, [0.5, -0.25, 1.0, 0, 0, -1.0, 0.75, 0], 0.0)
    c = three_layer_4n4(x, z, changed, rng=0, verify=False)
    assert_exact(c, x, z)
    assert c.info["groups"] == 7 < 2 * 5 + 1
    assert c.neurons <= 2 * 7 + 2 <= 4 * 5 + 4   # zero-weight hard-tanh units get pruned
    x, z, changed = alternating_turns(6, 6)            # N = K: every group is a single sample
    c = three_layer_4n4(x, z, changed, rng=1, verify=False)
    assert_exact(c, x, z)
    assert c.neurons <= 2 * 6 + 2


def test_u1_u2_grow_with_K_tooth_does_not():
    """U1 and U2 pay for every sample (sqrt K); the K-free constructions do not."""
    rng = np.random.default_rng(12)
    small = random_instance(rng, 9, 2, 3)
    large = random_instance(rng, 144, 2, 3)
    u1 = [three_layer_u1(*inst, rng=0, verify=False).neurons for inst in (small, large)]
    u2 = [three_layer_u2(*inst, rng=0, verify=False).neurons for inst in (small, large)]
    tt = [tooth(*inst, rng=0, verify=False).neurons for inst in (small, large)]
    assert u1[1] > u1[0] and u2[1] > u2[0] and tt[0] == tt[1]
    assert u1[1] <= 4 * 12 and u2[1] <= 2 * 12 + 9


def test_activation_gadgets():
    d = Fraction(1, 3)
    for p in [Fraction(k, 7) for k in range(-21, 22)]:
        expect_L = p if abs(p) <= 1 else (Fraction(0) if abs(p) >= 1 + d else
                                          (1 if p > 0 else -1) * (1 + d - abs(p)) / d)
        assert sigma_L(p, d) == expect_L
        expect_T = p if p <= 1 else (Fraction(0) if p >= 1 + d else (1 + d - p) / d)
        assert sigma_T(p, d) == expect_T


def test_trivial_instance_has_no_neurons():
    x = np.arange(5.0)[:, None]
    changed = np.array([False, True, False, False, False])
    z = np.zeros(5)
    for name in ALL:
        c = BUILDERS[name][0](x, z, changed, rng=0)
        assert c.neurons == 0 and np.all(forward_float(c.layers, x) == 0)


def test_errors():
    x = np.arange(6.0).reshape(3, 2)
    z = np.array([0.5, 0.0, 0.0])
    ch = np.array([True, False, False])
    for build in (tooth, three_layer_u3, three_layer_4n4):
        with pytest.raises(FTCInputError, match="delta"):
            build(x, z, ch, rng=0, delta=0)
    for build in (tooth, three_layer_u3, three_layer_4n4, three_layer_u1, three_layer_u2):
        with pytest.raises(FTCInputError, match="x"):
            build(np.vstack([x, x[:1]]), np.append(z, 0.0), np.append(ch, False), rng=0)
        with pytest.raises(FTCInputError, match="changed"):
            build(x, z, ch[:2], rng=0)
    with pytest.raises(FTCInputError, match="points"):
        three_layer_u3(x, z, ch, rng=0, points="K")


def test_weights_explode_in_float_but_exact_stays_exact():
    """The numerics warning of paper-notes 3.3: U3/4N+4 weights span many orders of magnitude, so
    the float64 export degrades with K while the rational network stays exact."""
    rng = np.random.default_rng(5)
    x, z, changed = random_instance(rng, 100, 10, 12)
    c = three_layer_u3(x, z, changed, rng=rng, verify=False)
    assert_exact(c, x, z)
    assert max(c.info["max_abs_weight"]) > 1e6
    t = tooth(x, z, changed, rng=rng, verify=False)
    assert_exact(t, x, z)
    assert t.float_error < c.float_error_bound


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tooth", "u3", "4n4", "u3T", "u1", "u2"])
def test_exact_fit_moderate_sizes(name):
    build, bound = BUILDERS[name]
    rng = np.random.default_rng(2024)
    for K, d, N in [(250, 10, 25), (150, 2, 150), (300, 3, 12)]:
        x, z, changed = random_instance(rng, K, d, N)
        c = build(x, z, changed, rng=rng, verify=False)
        assert_exact(c, x, z)
        assert c.neurons <= bound(N, K)
