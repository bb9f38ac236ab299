"""2-layer constructions: Thm 4.4 / Lemma 4.5 (corrected) and the slab construction.

Float64 tolerance (stated): |g(x_i) - z_i| <= 64 u M with u = 2^-53 and M the weight-magnitude
scale ``magnitude(layers, x)`` (max over samples of sum_j |W2_j| (|W1_j x_i| + |b1_j|) + |b2|).
The exact variant of Thm 4.4 is checked in rationals with zero tolerance.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ftcjax._src import bounds
from ftcjax._src.constructions._exact import forward_float, forward_exact, to_fractions
from ftcjax._src.constructions.two_layer import magnitude, two_layer_slab, two_layer_thm44
from ftcjax._src.errors import FTCInputError
from ftcjax._src.worst_case import alternating_turns, min_breakpoints, worst_case_two_layer
from instances import random_instance

U = 2.0 ** -53




def assert_fits(c, x, z, meaningful=True):
    g = forward_float(c.layers, x)
    tol = 64 * U * magnitude(c.layers, x)
    err = np.max(np.abs(g - z))
    assert err <= tol, (c.name, err, tol)
    assert err == pytest.approx(c.float_error, rel=0, abs=0)
    # the fit must be meaningful, not just within tolerance: the error stays far below the
    # smallest changed residual (so g = 0 could never pass)
    changed_z = np.abs(z[z != 0])
    if meaningful and changed_z.size:
        assert err < 0.1 * changed_z.min(), (c.name, err, changed_z.min())


SIZES = [(1, 1, 1), (2, 1, 1), (2, 3, 2), (3, 2, 1), (10, 1, 10), (10, 4, 3), (50, 2, 1),
         (50, 10, 25), (200, 3, 200), (500, 5, 37), (1000, 2, 999), (2000, 10, 100)]


@pytest.mark.parametrize("K,d,N", SIZES)
def test_thm44_fits_and_respects_bounds(K, d, N):
    rng = np.random.default_rng(K * 1000 + d * 10 + N)
    x, z, changed = random_instance(rng, K, d, N)
    c = two_layer_thm44(x, z, changed, rng=rng)
    assert_fits(c, x, z)
    assert len(c.layers) == 2 and c.layers[0][0].shape == (c.neurons, d)
    assert c.neurons <= c.bound                                  # |J| - 1 (Thm 4.4)
    assert c.neurons <= min(3 * N + 1, max(K - 1, 0))            # Thm 4.1 / Lemma 4.7
    # the data-dependent bound computed independently from the projection order
    a = c.info["projection"]
    order = np.argsort(x @ a)
    assert c.bound == bounds.thm44_data_dependent(changed[order])


@pytest.mark.parametrize("K,d,N", SIZES)
def test_slab_fits_with_4_ceil_N_over_d(K, d, N):
    rng = np.random.default_rng(7 + K * 1000 + d * 10 + N)
    x, z, changed = random_instance(rng, K, d, N)
    c = two_layer_slab(x, z, changed, rng=rng)
    assert_fits(c, x, z)
    assert c.neurons == 4 * (-(-N // d)) == c.bound == bounds.slab_two_layer(N, d)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_exact_thm44_is_exact(d):
    rng = np.random.default_rng(d)
    for K, N in [(1, 1), (5, 2), (30, 30), (120, 11)]:
        x, z, changed = random_instance(rng, K, d, N, zmax=3.0)   # 2-layer theory: any z
        c = two_layer_thm44(x, z, changed, rng=rng, exact=True, verify=False)
        g = forward_exact(c.exact_layers, x)
        assert all(g[i] == Fraction(z[i]) for i in range(K))
        assert c.float_error <= c.float_error_bound


def test_counts_independent_of_K():
    """Thm 4.4 stays <= 3N + 1 and the slab at 4 ceil(N/d) however large K is (N = 3)."""
    rng = np.random.default_rng(3)
    for K in (11, 100, 1000, 20_000):
        x, z, changed = random_instance(rng, K, 4, 3)
        a = two_layer_thm44(x, z, changed, rng=rng)
        b = two_layer_slab(x, z, changed, rng=rng)
        assert a.neurons <= 10 and b.neurons == 4
        assert_fits(a, x, z)
        assert_fits(b, x, z)


def test_K_100000_N_3():
    rng = np.random.default_rng(100_000)
    x, z, changed = random_instance(rng, 100_000, 5, 3)
    a = two_layer_thm44(x, z, changed, rng=rng)
    b = two_layer_slab(x, z, changed, rng=rng)
    assert a.neurons <= 10 and b.neurons == 4
    assert_fits(a, x, z)
    assert_fits(b, x, z)


@pytest.mark.parametrize("N", [1, 2, 3, 7, 20, 60])
def test_worst_case_uses_exactly_3N_neurons(N):
    for K in (3 * N + 2, 3 * N + 9, 10 * N + 5):
        x, z, changed = worst_case_two_layer(N, K)
        for exact in ((False, True) if K <= 200 else (False,)):
            c = two_layer_thm44(x, z, changed, rng=N, exact=exact)
            assert c.neurons == 3 * N == min_breakpoints(z)
            assert_fits(c, x, z)
        s = two_layer_slab(x, z, changed, rng=N)      # d = 1: 4N, above the lower bound
        assert_fits(s, x, z)
        assert s.neurons == 4 * N >= min_breakpoints(z)


@pytest.mark.parametrize("N", [1, 2, 5, 9])
def test_lower_bound_holds_on_alternating_instances(N):
    """A 2-layer net is CPWL with <= m breakpoints on the line: every construction has
    m >= min_breakpoints(z) = K - 2 on the alternating-turn instances."""
    for K in range(max(N, 3), 3 * N + 2):
        x, z, changed = alternating_turns(N, K)
        for c in (two_layer_thm44(x, z, changed, rng=K), two_layer_slab(x, z, changed, rng=K)):
            assert_fits(c, x, z)
            assert c.neurons >= min_breakpoints(z) == K - 2
        assert two_layer_thm44(x, z, changed, rng=K).neurons <= K - 1


def test_lemma45_erratum_slope_itself_does_not_interpolate():
    """The paper's proof of Lemma 4.5 uses the secant slope s_j as neuron j's output weight; the
    correct weight is the slope change s_j - s_{j-1}. Swap them and the net misses the data."""
    rng = np.random.default_rng(45)
    x, z, changed = random_instance(rng, 12, 2, 12)
    c = two_layer_thm44(x, z, changed, rng=0, exact=True)
    (W1, b1), (W2, b2) = c.exact_layers
    slopes = np.cumsum(W2[0])                                   # s_1, s_2, ... (exact)
    wrong = ((W1, b1), (slopes[None, :], b2))
    g_wrong = forward_exact(wrong, x)
    g_right = forward_exact(c.exact_layers, x)
    assert all(g_right[i] == Fraction(z[i]) for i in range(12))
    assert sum(g_wrong[i] != Fraction(z[i]) for i in range(12)) >= 10


def test_slab_rejects_degenerate_data():
    # collinear points in d = 2: the line through two of them contains all the others
    t = np.linspace(-1, 1, 9)
    x = np.stack([t, 2 * t + 0.5], axis=1)
    changed = np.zeros(9, dtype=bool)
    changed[[1, 4]] = True
    z = np.where(changed, 0.5, 0.0)
    with pytest.raises(FTCInputError, match="general position"):
        two_layer_slab(x, z, changed, rng=0)
    c = two_layer_thm44(x, z, changed, rng=0)                  # Thm 4.4 only needs distinct x
    assert_fits(c, x, z)


@pytest.mark.parametrize("fn", [two_layer_thm44, two_layer_slab])
def test_input_errors(fn):
    x = np.zeros((4, 2)); x[:, 0] = np.arange(4)
    z = np.array([0.0, 0.5, 0.0, 0.0])
    ch = np.array([False, True, False, False])
    with pytest.raises(FTCInputError, match="x"):
        fn(np.vstack([x[:3], x[:1]]), z, ch, rng=0)           # duplicate x
    with pytest.raises(FTCInputError, match="x"):
        fn(x[:, 0], z, ch, rng=0)                               # shape
    with pytest.raises(FTCInputError, match="z"):
        fn(x, z[:3], ch, rng=0)
    with pytest.raises(FTCInputError, match="z"):
        fn(x, np.array([0.3, 0.5, 0.0, 0.0]), ch, rng=0)        # z off changed
    with pytest.raises(FTCInputError, match="changed"):
        fn(x, z, ch.astype(int), rng=0)
    with pytest.raises(FTCInputError, match="rng"):
        fn(x, z, ch, rng="seed")
    with pytest.raises(FTCInputError, match="x"):
        fn(np.where(x == 0, np.nan, x), z, ch, rng=0)


def test_projection_ties_raise_after_redraws():
    class Rigged(np.random.Generator):     # always draws a = (1, 1): x0 and x1 tie
        def standard_normal(self, size=None, *args, **kwargs):
            return np.ones(size)
    x = np.array([[0.0, 1.0], [1.0, 0.0], [3.0, 5.0]])
    z = np.array([0.5, 0.0, 0.0])
    ch = np.array([True, False, False])
    with pytest.raises(FTCInputError, match="tie"):
        two_layer_thm44(x, z, ch, rng=Rigged(np.random.PCG64(0)))
    with pytest.raises(FTCInputError, match="tie"):
        two_layer_thm44(x, z, ch, rng=Rigged(np.random.PCG64(0)), exact=True)


@pytest.mark.slow
def test_thm44_and_slab_large():
    rng = np.random.default_rng(99)
    for K, d, N in [(5000, 10, 2500), (5000, 2, 5000), (50_000, 3, 1000), (100_000, 1, 3)]:
        x, z, changed = random_instance(rng, K, d, N)
        a = two_layer_thm44(x, z, changed, rng=rng)
        assert_fits(a, x, z)
        assert a.neurons <= min(3 * N + 1, K - 1)
        b = two_layer_slab(x, z, changed, rng=rng)
        # the slab's 1/delta output weights make float64 lose the smallest residuals on dense
        # low-dimensional data (K = N = 5000, d = 2: error 1.2e-3 > min |z| = 3e-5); the
        # magnitude-scaled tolerance still holds
        assert_fits(b, x, z, meaningful=d >= 3)
        assert b.neurons == 4 * (-(-N // d))
