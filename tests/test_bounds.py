"""Bounds against values computed by hand (each comment shows the arithmetic)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ftcjax._src import bounds as B
from ftcjax._src.errors import FTCInputError


def test_thm41():
    assert B.thm41_two_layer(5, 100) == (15, 16)     # min{15, 98}, min{16, 99}
    assert B.thm41_two_layer(5, 10) == (8, 9)        # min{15, 8}, min{16, 9}
    assert B.thm41_two_layer(3, 3) == (1, 2)         # N = K = 3
    assert B.thm41_two_layer(4, 14) == (12, 13)      # K = 3N + 2: K-independent from here
    assert B.thm41_two_layer(4, 10 ** 6) == (12, 13)


def test_thm44_data_dependent():
    # K = 10, runs of unchanged: [0..2] (3), [4..8] (5): 10 - 1 - (1 + 3) = 5
    ch = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 1], dtype=bool)
    assert B.thm44_data_dependent(ch) == 5
    assert B.thm44_data_dependent(np.ones(7, dtype=bool)) == 6            # K - 1
    assert B.thm44_data_dependent(np.zeros(7, dtype=bool)) == 1           # one run: 6 - 5
    # Lemma 4.7: never above min{3N + 2, K} - 1
    rng = np.random.default_rng(0)
    for _ in range(200):
        K = int(rng.integers(1, 40))
        ch = rng.random(K) < rng.random()
        assert B.thm44_data_dependent(ch) <= min(3 * int(ch.sum()) + 2, K) - 1


def test_cor42():
    assert B.cor42_two_layer_capacity(10, 100) == (3, 3)     # floor(9/3), floor(10/3)
    assert B.cor42_two_layer_capacity(12, 100) == (3, 4)     # floor(11/3) = 3, 12/3 = 4
    assert B.cor42_two_layer_capacity(10, 11) == (11, 11)    # K <= m + 1
    assert B.cor42_two_layer_capacity(10, 12) == (3, 3)      # K = m + 2


def test_thm51():
    assert B.thm51_u1(100) == 40.0                           # 4 * 10
    assert B.thm51_u2(7, 100) == 41.0                        # 2 * 10 + 21
    assert B.thm51_u3(2) == pytest.approx(6 * math.sqrt(8))  # 16.97
    # N = 10, K = 100: U1 = 40, U2 = 20 + 30 = 50, U3 = 6 sqrt 32 = 33.94
    assert B.thm51_upper(10, 100) == pytest.approx(6 * math.sqrt(32))
    # N = 1, K = 100: U1 = 40, U2 = 20 + 3 = 23, U3 = 6 sqrt 5 = 13.42 is the min
    assert B.thm51_upper(1, 100) == pytest.approx(6 * math.sqrt(5))
    # N = 16, K = 16: U1 = 16 is the min (U2 = 8 + 48 = 56, U3 = 6 sqrt 50 = 42.4)
    assert B.thm51_upper(16, 16) == 16.0
    # lower: N = 10, K = 100: sqrt(2 * 30 + 1/4) - 1/2 = sqrt(60.25) - 0.5 = 7.262
    assert B.thm51_lower(10, 100) == pytest.approx(math.sqrt(60.25) - 0.5)
    assert B.thm51_lower(1, 5) == 2.0                         # sqrt(2 * 3 + 1/4) - 1/2 = 2.5 - 0.5
    assert B.thm51_lower_int(10, 100) == 8                    # 7*8 = 56 < 60 <= 8*9 = 72
    # line pieces: smallest m with max_split 2 d1 d2 + d2 >= 30: m = 7 gives d1 = 3, d2 = 4: 28;
    # d1 = 4, d2 = 3: 27; m = 8: d1 = 4, d2 = 4: 36 >= 30
    assert B.three_layer_line_lower(10, 100) == 8
    for N, K in [(1, 3), (5, 20), (30, 1000), (50, 100)]:
        assert B.three_layer_line_lower(N, K) >= B.thm51_lower_int(N, K) >= B.thm51_lower(N, K)


def test_cor52():
    # m = 48: m^2/16 = 144; (m^2 + m + 4)/2 = 1178; m^2/108 - 2/3 = 20.67; (m^2 + m)/6 = 392
    assert B.cor52_three_layer_capacity(48, 144) == (144, 144)
    assert B.cor52_three_layer_capacity(48, 145) == (20, 145)
    assert B.cor52_three_layer_capacity(48, 1177) == (20, 1177)
    assert B.cor52_three_layer_capacity(48, 1178) == (20, 392)
    assert B.cor52_three_layer_capacity(6, 100) == (0, 7)     # floor(36/108 - 2/3) < 0 -> 0
    # consistency with U3: m >= 6 sqrt(3N + 2) for N = floor(m^2/108 - 2/3)
    for m in range(9, 200):
        lo, _ = B.cor52_three_layer_capacity(m, 10 ** 7)
        assert B.thm51_u3(lo) <= m + 1e-9


def test_prop61_corrected():
    # N = 100, K = 10^4, L = 5: P = 2, sqrt(150 + 5) = 12.45 < 100: 4 * 12.45 + 2 = 51.80
    assert B.prop61_width(100, 10 ** 4, 5) == pytest.approx(4 * math.sqrt(155) + 2)
    # L = 4 and L = 5 differ (P = 1 vs 2); L = 5 and L = 6 agree (floor((L-1)/2) = 2)
    assert B.prop61_width(100, 10 ** 4, 6) == B.prop61_width(100, 10 ** 4, 5)
    assert B.prop61_width(100, 10 ** 4, 4) == pytest.approx(4 * math.sqrt(305) + 2)
    # small K: the sqrt(K) branch, 4 * 3 + 2
    assert B.prop61_width(9, 9, 4) == 14.0


def test_generic_and_constructions():
    assert B.generic_two_layer_lower(101, 9) == 10.0           # (101 - 1) / (9 + 1)
    # d = 10, N = 100: m = 8 -> best split d1 = 8, d2 = 0: 80 + 1 = 81 < 100; m = 9, d1 = 9: 91;
    # d1 = 8, d2 = 1: 80 + 8 + 1 + 1 = 90; m = 10: d1 = 10: 101 >= 100
    assert B.generic_three_layer_lower(100, 10) == 10
    assert B.generic_three_layer_slope(100, 10) == pytest.approx(1.0)
    assert B.generic_three_layer_slope(500, 10) == pytest.approx(0.644, abs=1e-3)
    assert B.generic_three_layer_slope(10 ** 4, 10) == pytest.approx(0.526, abs=1e-3)
    assert B.slab_two_layer(100, 10) == 40 and B.slab_two_layer(101, 10) == 44
    # tooth: N = 8: q = 2 -> p = 4: 9 + 8 = 17; q = 3 -> p = 3: 7 + 12 = 19; q = 1: 17 + 4 = 21
    assert B.tooth_neurons(8) == 17
    assert B.tooth_neurons(1) == 7


@pytest.mark.parametrize("fn,args,name", [
    (B.thm41_two_layer, (5, 2), "K"),
    (B.thm41_two_layer, (6, 5), "N"),
    (B.thm41_two_layer, (-1, 5), "N"),
    (B.thm51_upper, (1.5, 10), "N"),
    (B.prop61_width, (3, 10, 3), "L"),
    (B.cor42_two_layer_capacity, (0, 10), "m"),
    (B.generic_two_layer_lower, (10, 0), "d"),
])
def test_bad_arguments(fn, args, name):
    with pytest.raises(FTCInputError, match=rf"\b{name}\b"):
        fn(*args)
