"""The fast exact evaluator (integer columns over per-neuron denominators) against a naive
reference written here in plain ``Fraction`` arithmetic, entry by entry.

The constructions' exact verification and ``forward_exact`` rely on ``_exact._int_layer``; these
tests make it disagree with the reference on anything it could get wrong: rows equal up to sign
(shared dot products), zero rows and columns, biases with new denominators, both summation paths
(one common denominator, and per-denominator terms merged per sample), ReLU at exactly 0, empty
layers, and the projection's exact sort and gaps.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ftcjax._src.constructions import _exact as E
from ftcjax._src.constructions.three_layer import three_layer_u2, tooth
from instances import random_instance


def naive_forward(layers, x):
    """Reference: every product and sum a reduced Fraction, row by row."""
    h = [[Fraction(float(v)) for v in row] for row in np.asarray(x, dtype=np.float64)]
    for li, (W, b) in enumerate(layers):
        out = []
        for row in h:
            vals = [sum((Fraction(W[i][j]) * row[j] for j in range(len(row))), Fraction(0))
                    + Fraction(b[i]) for i in range(len(b))]
            if li < len(layers) - 1:
                vals = [v if v > 0 else Fraction(0) for v in vals]
            out.append(vals)
        h = out
    return [row[0] for row in h]


def obj(rows):
    a = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
    for i, r in enumerate(rows):
        a[i, :] = r
    return a


def random_exact_layers(rng, d, widths, *, coprime_dens):
    """Random rational layers. ``coprime_dens`` draws denominators from distinct large primes
    (forces the per-sample merge path); otherwise small shared denominators (the matrix path).
    Every hidden layer gets a row repeated with flipped sign and one zero row; biases have their
    own denominators; a weight is occasionally exactly 0."""
    small = [p for p in range(2, 4000) if all(p % q for q in range(2, int(p ** 0.5) + 1))]
    # 16 pairwise coprime ~150-bit denominators of similar length (interleaved prime sets)
    coprime = [int(np.prod([p for p in small[k::16]][:14], dtype=object)) for k in range(16)]
    layers, n_in = [], d
    for li, n_out in enumerate(list(widths) + [1]):
        def rnd(k):
            if rng.random() < 0.15:
                return Fraction(0)
            den = (coprime[(li * 7 + k) % len(coprime)] if coprime_dens
                   else int(rng.integers(1, 7)))
            return Fraction(int(rng.integers(-50, 51)), den)
        rows = [[rnd(i * n_in + j) for j in range(n_in)] for i in range(n_out)]
        if li < len(widths) and n_out >= 3:
            rows[1] = [-v for v in rows[0]]          # equal up to sign: one shared dot product
            rows[2] = [Fraction(0)] * n_in           # zero row: constant neuron
        b = np.empty(n_out, dtype=object)
        b[:] = [Fraction(int(rng.integers(-9, 10)), int(rng.integers(1, 12))) for _ in range(n_out)]
        layers.append((obj(rows), b))
        n_in = n_out
    return tuple(layers)


@pytest.mark.parametrize("coprime", [False, True])
@pytest.mark.parametrize("widths", [(5,), (6, 4), (4, 7, 3)])
def test_int_pass_equals_naive_fractions(coprime, widths):
    rng = np.random.default_rng(len(widths) * 10 + coprime)
    x = rng.standard_normal((23, 3)) * np.array([1.0, 1e-7, 3e5])    # very different exponents
    layers = random_exact_layers(rng, 3, widths, coprime_dens=coprime)
    got = E.forward_exact(layers, x)
    want = naive_forward(layers, x)
    assert [g == w for g, w in zip(got, want)] == [True] * len(want)
    # the float activations used by the error bound are the correctly rounded exact values
    acts, _ = E._exact_pass(layers, x)
    assert np.array_equal(acts[-1].as_float(),
                          np.vectorize(float)(acts[-1].as_fractions()).astype(np.float64))


def test_relu_at_exactly_zero_and_empty_layer():
    # x = 1/2 gives pre-activation exactly 0 for the first neuron; a 0-width hidden layer follows
    W1 = obj([[Fraction(2)], [Fraction(-1, 3)]])
    b1 = np.asarray([Fraction(-1), Fraction(1, 6)], dtype=object)
    W2 = np.empty((0, 2), dtype=object)
    b2 = np.empty(0, dtype=object)
    W3 = np.empty((1, 0), dtype=object)
    b3 = np.asarray([Fraction(5, 7)], dtype=object)
    x = np.asarray([[0.5], [0.25], [-1.0]])
    assert list(E.forward_exact(((W1, b1), (W2, b2), (W3, b3)), x)) == [Fraction(5, 7)] * 3
    layers = ((W1, b1), (obj([[Fraction(1), Fraction(3)]]), np.asarray([Fraction(0)], dtype=object)))
    assert list(E.forward_exact(layers, x)) == naive_forward(layers, x)


def test_construction_outputs_equal_naive_reference():
    # real constructions (U2: bump triples sharing one dot product; tooth: sigma_L quadruples)
    # must equal the slow reference exactly
    rng = np.random.default_rng(3)
    x, z, changed = random_instance(rng, 40, 3, 6)
    for build in (three_layer_u2, tooth):
        c = build(x, z, changed, rng=1)
        want = naive_forward(c.exact_layers, x)
        assert list(E.forward_exact(c.exact_layers, x)) == want
        assert want == [Fraction(float(v)) for v in z]


def test_projection_sorts_and_gaps_exactly():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 4)) * np.array([1.0, 1e-9, 1e9, 3.0])
    p = E.project_exact(x, np.random.default_rng(0), draws=3)
    t = [sum((Fraction(float(a)) * Fraction(float(v)) for a, v in zip(p.a, row)), Fraction(0))
         for row in x]
    assert list(p.t) == t
    ts = sorted(t)
    assert [t[i] for i in p.order] == ts
    assert p.min_gap == min(b - a for a, b in zip(ts, ts[1:]))


def test_finish_rejects_a_wrong_network():
    # the exact check in finish must catch an output that is off by the smallest amount
    rng = np.random.default_rng(8)
    x, z, changed = random_instance(rng, 30, 2, 4)
    c = tooth(x, z, changed, rng=0)
    (W1, b1), (W2, b2), (W3, b3) = c.exact_layers
    b3 = b3.copy()
    b3[0] = b3[0] + Fraction(1, 10 ** 30)
    inst, _ = E.check_instance(x, z, changed)
    with pytest.raises(AssertionError, match="exact output misses z"):
        E.finish("tooth", ((W1, b1), (W2, b2), (W3, b3)), inst, c.bound, {})


# ----------------------------------------------------------------------------- the sweep along a line

def rank_one_layers(rng, x, d1, d2, *, coprime_dens):
    """Random 3-layer exact net whose first layer is alpha_i * a (a function of t = a . x).

    Breakpoints -beta_i / alpha_i sit on the sample grid (so samples fall exactly on them) and
    repeat; some alpha_i are 0 (constant neurons, bias of either sign); second-layer rows repeat
    with flipped sign, repeat scaled (NOT equal up to sign), are zero; some output weights are 0;
    with ``coprime_dens`` the second-layer denominators share no factors."""
    small = [p for p in range(3, 4000) if all(p % q for q in range(2, int(p ** 0.5) + 1))]
    coprime = [int(np.prod(small[k::24][:10], dtype=object)) for k in range(24)]
    d = x.shape[1]
    a = [Fraction(int(v), 4) for v in rng.integers(-8, 9, d)]
    if all(v == 0 for v in a):
        a[0] = Fraction(1)
    grid = [sum((Fraction(float(v)) * ai for v, ai in zip(row, a)), Fraction(0)) for row in x]
    W1 = np.empty((d1, d), dtype=object)
    b1 = np.empty(d1, dtype=object)
    for i in range(d1):
        al = Fraction(int(rng.integers(-5, 6)), int(rng.integers(1, 4)))
        if i % 7 == 3:
            al = Fraction(0)
        W1[i] = [al * v for v in a]
        tau = grid[int(rng.integers(0, len(grid)))]            # a sample's t, or close to one
        b1[i] = -al * tau if al != 0 else Fraction(int(rng.integers(-3, 4)), 2)
    W2 = np.empty((d2, d1), dtype=object)
    for k in range(d2):
        W2[k] = [Fraction(int(rng.integers(-40, 41)),
                          coprime[(k * 5 + j) % 24] if coprime_dens else int(rng.integers(1, 6)))
                 for j in range(d1)]
    if d2 >= 5:
        W2[1] = -W2[0]
        W2[2] = W2[0] * 3                                       # scaled: a different row
        W2[3] = Fraction(0)
    b2 = np.empty(d2, dtype=object)
    b2[:] = [Fraction(int(rng.integers(-9, 10)), int(rng.integers(1, 8))) for _ in range(d2)]
    W3 = np.empty((1, d2), dtype=object)
    W3[0] = [Fraction(int(rng.integers(-6, 7)), int(rng.integers(1, 5))) if k % 6 != 4 else Fraction(0)
             for k in range(d2)]
    b3 = np.asarray([Fraction(1, 3)], dtype=object)
    return ((W1, b1), (W2, b2), (W3, b3))


@pytest.mark.parametrize("coprime", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_line_pass_equals_naive_fractions(seed, coprime):
    rng = np.random.default_rng(100 + seed)
    d = 1 + seed
    x = rng.integers(-12, 13, (60, d)) / 8.0                     # dyadic grid: exact ties with t
    x = np.unique(x, axis=0)
    layers = rank_one_layers(rng, x, 9, 8, coprime_dens=coprime)
    got = E._line_pass(layers, x)
    assert got is not None
    want = naive_forward(layers, x)
    assert [g == w for g, w in zip(got, want)] == [True] * len(want)
    _, h = E._exact_pass(layers, x)                              # the generic pass agrees too
    assert list(h.as_fractions()[:, 0]) == want


def test_line_pass_with_a_pre_activation_exactly_zero_at_samples():
    # second-layer neuron relu(t - 1) - relu(t - 3) shapes: a layer-2 pre-activation crosses 0
    # exactly at a sample and touches 0 on a whole interval
    W1 = obj([[Fraction(1)], [Fraction(1)], [Fraction(-1)]])
    b1 = np.asarray([Fraction(-1), Fraction(-3), Fraction(2)], dtype=object)
    W2 = obj([[Fraction(1), Fraction(-1), Fraction(0)], [Fraction(-1), Fraction(1), Fraction(0)],
              [Fraction(0), Fraction(0), Fraction(1)], [Fraction(2), Fraction(0), Fraction(1)]])
    b2 = np.asarray([Fraction(-1), Fraction(1), Fraction(0), Fraction(-2)], dtype=object)
    W3 = obj([[Fraction(1), Fraction(5), Fraction(-2), Fraction(1, 3)]])
    b3 = np.asarray([Fraction(0)], dtype=object)
    layers = ((W1, b1), (W2, b2), (W3, b3))
    x = (np.arange(-8, 24) / 4.0)[:, None]
    got = E._line_pass(layers, x)
    assert list(got) == naive_forward(layers, x)
    # relu(relu(t) - 1) on t = -1, 0, 1, 2, 3: the interval right of the breakpoint t = 0 starts at
    # t = 1, where the second-layer neuron is exactly 0 and rising
    layers = ((obj([[Fraction(1)]]), np.asarray([Fraction(0)], dtype=object)),
              (obj([[Fraction(1)]]), np.asarray([Fraction(-1)], dtype=object)),
              (obj([[Fraction(1)]]), np.asarray([Fraction(0)], dtype=object)))
    x = np.arange(-1.0, 4.0)[:, None]
    assert list(E._line_pass(layers, x)) == [0, 0, 0, 1, 2] == naive_forward(layers, x)


def test_line_pass_declines_other_networks():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 3))
    assert E._line_pass(random_exact_layers(rng, 3, (4, 5), coprime_dens=False), x) is None  # rank 2+
    assert E._line_pass(random_exact_layers(rng, 3, (4,), coprime_dens=False), x) is None    # depth 2
    layers = rank_one_layers(rng, x, 5, 4, coprime_dens=False)
    assert E._line_pass(layers, x) is not None


def test_every_three_layer_construction_is_verified_along_its_line():
    # the fast path is what makes U1/U2 at K = 20000 feasible: it must be the one taken
    from ftcjax._src.constructions.three_layer import three_layer_4n4, three_layer_u1, three_layer_u3
    rng = np.random.default_rng(6)
    x, z, changed = random_instance(rng, 50, 3, 5)
    for build in (three_layer_u1, three_layer_u2, three_layer_u3, three_layer_4n4, tooth):
        c = build(x, z, changed, rng=2)
        got = E._line_pass(c.exact_layers, x)
        assert got is not None
        assert list(got) == [Fraction(float(v)) for v in z]


@pytest.mark.parametrize("seed", [0, 1])
def test_float_error_bound_covers_the_float_pass(seed):
    # weights spanning 12 orders of magnitude with cancellation: the observed float64 error is
    # large, and the a-posteriori bound must still cover it at every sample (and not by 1e6)
    rng = np.random.default_rng(30 + seed)
    x = rng.standard_normal((40, 3))
    layers = []
    n_in = 3
    for n_out in (12, 10, 1):
        W = rng.standard_normal((n_out, n_in)) * 10.0 ** rng.integers(-6, 7, (n_out, n_in))
        b = rng.standard_normal(n_out) * 1e3
        layers.append((E.to_fractions(W), E.to_fractions(b)))
        n_in = n_out
    layers[1][0][1] = -layers[1][0][0] + E.to_fractions(rng.standard_normal(12) * 1e-9)
    layers = tuple(layers)
    exact = naive_forward(layers, x)
    flt = E.forward_float(E.export_float(layers), x)
    err = np.asarray([abs(Fraction(float(f)) - e) for f, e in zip(flt, exact)], dtype=object)
    bound = E.float_error_bound(layers, x)
    assert all(Fraction(float(bnd)) >= e for bnd, e in zip(bound, err))
    assert float(max(err)) > 0 and float(max(bound)) < 1e6 * float(max(err)) + 1e-300
