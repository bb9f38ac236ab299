"""L-layer construction (Prop. 6.1, corrected), checked in exact rational arithmetic."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from ftcjax._src import bounds
from ftcjax._src.constructions._exact import forward_float, forward_exact
from ftcjax._src.constructions.deep import deep_stacked, deep_width_bound
from ftcjax._src.errors import FTCInputError
from ftcjax._src.worst_case import worst_case_two_layer
from instances import random_instance




def assert_exact(c, x, z, L):
    g = forward_exact(c.exact_layers, x)
    assert all(g[i] == Fraction(z[i]) for i in range(len(z)))
    assert len(c.layers) == L and len(c.widths) == L - 1
    assert c.layers[-1][0].shape[0] == 1
    assert c.float_error <= c.float_error_bound
    assert np.max(np.abs(forward_float(c.layers, x) - z)) == c.float_error


@pytest.mark.parametrize("L", [4, 5, 6, 7, 9])
@pytest.mark.parametrize("K,d,N", [(1, 1, 1), (3, 1, 2), (12, 2, 5), (30, 3, 30), (60, 4, 12)])
def test_deep_exact_and_width_bound(L, K, d, N):
    rng = np.random.default_rng(L * 1000 + K + N)
    x, z, changed = random_instance(rng, K, d, N)
    c = deep_stacked(x, z, changed, L=L, rng=rng, verify=False)
    assert_exact(c, x, z, L)
    assert max(c.widths) == c.info["max_width"] <= c.bound == deep_width_bound(N, K, L)
    # the integer bound is the corrected Prop 6.1 bound up to the integer ceiling of a group count
    P = (L - 1) // 2
    real = bounds.prop61_width(N, K, L)
    assert c.bound <= 4 * math.ceil(math.sqrt(min(3 * N / P + 5, K))) + 2
    assert c.bound <= real + 4


def test_more_layers_narrower():
    """Width shrinks like sqrt(N / P): N = 24 on the 2-layer worst case (K = 77)."""
    N, K = 24, 77
    x, z, changed = worst_case_two_layer(N, K)
    z = z / 2
    widths = {}
    for L in (4, 7, 13):
        c = deep_stacked(x, z, changed, L=L, rng=0, verify=False)
        if L != 7:
            assert_exact(c, x, z, L)
        widths[L] = c.info["max_width"]
        assert widths[L] <= deep_width_bound(N, K, L)
    assert widths[4] > widths[7] > widths[13]


def test_width_independent_of_K():
    rng = np.random.default_rng(6)
    ws = []
    for K in (10, 60, 240):
        x, z, changed = random_instance(rng, K, 2, 6)
        c = deep_stacked(x, z, changed, L=5, rng=rng, verify=K <= 60)
        ws.append(c.info["max_width"])
        assert c.info["max_width"] <= deep_width_bound(6, 10 ** 9, 5)
    assert max(ws) <= 4 * math.ceil(math.sqrt(3 * 3 + 2)) + 2


def test_deep_errors():
    x = np.arange(4.0)[:, None]
    z = np.array([0.0, 0.5, 0.0, 0.0])
    ch = z != 0
    for L in (3, 2, 4.0, True):
        with pytest.raises(FTCInputError, match="L"):
            deep_stacked(x, z, ch, L=L, rng=0)
    with pytest.raises(FTCInputError, match="z"):
        deep_stacked(x, 3 * z, ch, L=4, rng=0)
    c = deep_stacked(x, 3 * z, ch, L=4, rng=0, rescale=True)
    assert_exact(c, x, 3 * z, 4)
