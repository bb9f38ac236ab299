"""Two-layer constructions (paper-notes sections 3.1-3.2).

``two_layer_thm44``: Sohn et al. Thm 4.4 / Lemma 4.5 with the slope-CHANGE output weights (the
paper's proof prints the slope itself, which does not interpolate): |J| - 1 <= min{3N + 1, K - 1}
neurons, zero-output neurons pruned. float64 by default; ``exact=True`` builds it in rationals.

``two_layer_slab``: the slab construction for data in general position (after Bubeck, Eldan, Lee,
Mikulincer 2020): 4 ceil(N / d) neurons, float64.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ftcjax._src.constructions._exact import (Construction, check_instance, check_rng, finish,
                                              forward_float, project_exact)
from ftcjax._src.constructions.three_layer import kept_set, zero_network
from ftcjax._src.errors import FTCInputError

__all__ = ["two_layer_thm44", "two_layer_slab", "thm44_bound", "magnitude"]

_U = 2.0 ** -53


def magnitude(layers, x) -> float:
    """max_i sum_j |W2_j| (|W1_j . x_i| + |b1_j|) + |b2| for a float 2-layer net: the scale of the
    float64 rounding error. The float64 2-layer constructions stay within ``64 u magnitude``
    (u = 2^-53; measured at most about 5.5 u magnitude up to K = 100000), the tolerance the tests
    state."""
    (W1, b1), (W2, b2) = layers
    if W1.shape[0] == 0:
        return float(abs(b2[0]))
    pre = np.abs(np.asarray(x) @ np.asarray(W1, dtype=np.float64).T) + np.abs(b1)
    return float(np.max(pre @ np.abs(W2[0])) + abs(b2[0]))


def thm44_bound(changed_sorted) -> int:
    """Thm 4.4's data-dependent bound K - 1 - sum over maximal unchanged runs P of max(|P| - 2, 0)
    (equals |J| - 1), for ``changed`` given in projection order."""
    ch = [bool(c) for c in np.asarray(changed_sorted).reshape(-1)]
    return max(len(kept_set(ch)) - 1, 0)


def _float_projection(x: np.ndarray, rng: np.random.Generator, max_redraws: int = 20):
    """Gaussian direction with pairwise distinct float64 projections (redraw on ties)."""
    K, d = x.shape
    for _ in range(max_redraws):
        a = rng.standard_normal(d)
        t = x @ a
        order = np.argsort(t, kind="stable")
        if K < 2 or np.all(np.diff(t[order]) > 0):
            return a, t, order
    raise FTCInputError(
        f"x: float64 projections tie after {max_redraws} random directions; the samples are too "
        "close to be separated (try exact=True)")


def two_layer_thm44(x, z, changed, *, rng, exact: bool = False, verify: bool = True
                    ) -> Construction:
    """Sohn et al. Thm 4.4 + Lemma 4.5 (corrected): a 2-layer net with |J| - 1 hidden ReLUs.

    Project t = a.x, sort; J = changed samples + first and last sample of each maximal unchanged
    run (a piecewise-linear interpolant through J is 0 at both ends of a run, hence 0 on it).
    With kept points (w_1, t_1), ..., (w_{m+1}, t_{m+1}) and secant slopes s_j, neuron j is
    relu(a.x - w_j) with output weight s_1 (j = 1) or s_j - s_{j-1} (the slope CHANGE); output
    bias t_1. Neurons with zero output weight are pruned.

    Args:
      x (K, d), z (K,) (0 off changed), changed (K,) bool.
      rng: np.random.Generator or int seed (projection).
      exact: build in rationals (exact_layers set, float error bound reported); else float64 only.
      verify: with exact, check g(x_i) = z_i in rationals.

    Returns:
      Construction with bound = Thm 4.4's data-dependent bound |J| - 1 (<= min{3N + 1, K - 1}).
    """
    inst, _ = check_instance(x, z, changed)
    rng = check_rng(rng)
    K, d = inst.x.shape
    N = int(inst.changed.sum())
    if exact:
        proj = project_exact(inst.x, rng)
        t_sorted = [proj.t[i] for i in proj.order]
        order = proj.order
        a = proj.a
        zval = [Fraction(float(inst.z[i])) for i in order]
        num = Fraction
    else:
        a, t, order = _float_projection(inst.x, rng)
        t_sorted = [float(v) for v in t[order]]
        zval = [float(inst.z[i]) for i in order]
        num = float
    ch = [bool(inst.changed[i]) for i in order]
    J = kept_set(ch)
    m = len(J) - 1
    w = [t_sorted[i] for i in J]
    tv = [zval[i] for i in J]
    s = [(tv[j + 1] - tv[j]) / (w[j + 1] - w[j]) for j in range(m)]
    out_w = [s[0] if j == 0 else s[j] - s[j - 1] for j in range(m)]
    keep = [j for j in range(m) if out_w[j] != 0]
    info = {"N": N, "J": len(J), "projection": a, "unpruned": m,
            "bound_3N1": min(3 * N + 1, K - 1) if K >= 2 else 0}
    bound = m
    W1 = np.empty((len(keep), d), dtype=object if exact else np.float64)
    b1 = np.empty(len(keep), dtype=object if exact else np.float64)
    W2 = np.empty((1, len(keep)), dtype=object if exact else np.float64)
    b2 = np.empty(1, dtype=object if exact else np.float64)
    aq = np.asarray([Fraction(float(v)) for v in a], dtype=object) if exact else a
    for r, j in enumerate(keep):
        W1[r] = aq
        b1[r] = -w[j]
        W2[0, r] = out_w[j]
    b2[0] = tv[0] if K else num(0)
    if exact:
        return finish("thm44", ((W1, b1), (W2, b2)), inst, bound, info, check_exact=verify)
    layers = ((W1, b1), (W2, b2))
    err = float(np.max(np.abs(forward_float(layers, inst.x) - inst.z))) if K else 0.0
    info["magnitude"] = magnitude(layers, inst.x)
    return Construction("thm44", layers, None, len(keep), (len(keep),), bound, err, None, info)


def two_layer_slab(x, z, changed, *, rng, max_redraws: int = 10, rel_gap_tol: float = 1e-12
                   ) -> Construction:
    """Slab construction for data in general position: 4 ceil(N / d) neurons (paper-notes 3.2).

    Changed samples are split into groups G of at most d. With centred inputs x_c = x - x0 (x0 a
    random offset, so no hyperplane passes through the origin), u solves u.x_c = 1 on G and v solves
    v.x_c = z on G (G completed with random points when |G| < d). gap = min over the other samples
    of |u.x_c - 1|, eps = gap / 2, delta = eps / (2 max |v.x_c|); four neurons
    [relu(u.x_c - 1 + eps + delta v.x_c) - relu(u.x_c - 1 + eps) - relu(u.x_c - 1 - eps + delta v.x_c)
     + relu(u.x_c - 1 - eps)] / delta
    output v.x_c = z on G and exactly 0 at every sample with |u.x_c - 1| >= 2 eps.

    Raises:
      FTCInputError: when a group's hyperplane nearly passes through another sample (gap below
        ``rel_gap_tol`` relative to the data scale) after ``max_redraws`` tries: the data are not in
        general position (e.g. collinear data with d >= 2).
    """
    inst, _ = check_instance(x, z, changed)
    rng = check_rng(rng)
    X, Z, C = inst.x, inst.z, inst.changed
    K, d = X.shape
    N = int(C.sum())
    idx = np.flatnonzero(C & (Z != 0))
    groups = [idx[k:k + d] for k in range(0, len(idx), d)]
    mean = X.mean(axis=0)
    scale = float(np.max(np.abs(X - mean))) + 1.0
    rows, biases, outs = [], [], []
    worst_gap = np.inf
    for G in groups:
        others = np.ones(K, dtype=bool)
        others[G] = False
        for attempt in range(max_redraws):
            x0 = mean + scale * rng.standard_normal(d)
            XG = X[G] - x0
            zG = Z[G]
            if len(G) < d:   # complete to a square system with random points (value 0)
                extra = scale * rng.standard_normal((d - len(G), d))
                XG = np.vstack([XG, extra])
                zG = np.concatenate([zG, np.zeros(d - len(G))])
            try:
                u = np.linalg.solve(XG, np.ones(d))
                v = np.linalg.solve(XG, zG)
            except np.linalg.LinAlgError:
                continue
            Xc = X - x0
            ux = Xc @ u
            if not np.allclose(ux[G], 1.0, rtol=0, atol=1e-9) or not np.allclose(
                    Xc[G] @ v, Z[G], rtol=0, atol=1e-9 * max(1.0, np.max(np.abs(Z[G])))):
                continue
            gap = float(np.min(np.abs(ux[others] - 1.0))) if others.any() else 1.0
            if gap > rel_gap_tol * (1.0 + float(np.max(np.abs(ux)))):
                break
        else:
            raise FTCInputError(
                f"x: not in general position: a hyperplane through {len(G)} changed samples passes "
                f"(numerically) through another sample after {max_redraws} tries")
        worst_gap = min(worst_gap, gap)
        eps = gap / 2
        vmax = float(np.max(np.abs(Xc @ v)))
        delta = 0.5 * eps / vmax
        # rows act on the raw x: (u + c v).x_c + beta = (u + c v).x - (u + c v).x0 + beta
        for cv, shift, o in ((delta, -1 + eps, 1.0), (0.0, -1 + eps, -1.0),
                             (delta, -1 - eps, -1.0), (0.0, -1 - eps, 1.0)):
            wrow = u + cv * v
            rows.append(wrow)
            biases.append(shift - wrow @ x0)
            outs.append(o / delta)
    m = len(rows)
    W1 = np.asarray(rows, dtype=np.float64).reshape(m, d)
    b1 = np.asarray(biases, dtype=np.float64).reshape(m)
    W2 = np.asarray(outs, dtype=np.float64).reshape(1, m)
    layers = ((W1, b1), (W2, np.zeros(1)))
    err = float(np.max(np.abs(forward_float(layers, X) - Z))) if K else 0.0
    bound = 4 * (-(-N // d))
    info = {"N": N, "groups": len(groups), "min_gap": worst_gap,
            "magnitude": magnitude(layers, X),
            "max_abs_weight": [float(np.max(np.abs(W1), initial=0)),
                               float(np.max(np.abs(W2), initial=0))]}
    return Construction("slab", layers, None, m, (m,), bound, err, None, info)
