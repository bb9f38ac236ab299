"""Three-layer constructions, built in exact rationals (paper-notes sections 3.3-3.4).

Every function takes ``x (K, d)``, ``z (K,)`` (0 off ``changed``), ``changed (K,) bool`` and an
explicit ``rng`` (``np.random.Generator`` or int seed) for the projection draw, and returns a
:class:`~ftcjax._src.constructions._exact.Construction` whose ``exact_layers`` satisfy
g(x_i) = z_i EXACTLY on every sample (verified in rationals when ``verify=True``), with the float64
export and its error bound. Neuron counts are hidden ReLUs of both hidden layers (m = d1 + d2).

The theory needs |z| <= 1; pass ``rescale=True`` to build for z / max|z| and multiply the output
layer back (exact).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ftcjax._src.constructions import _blocks as B
from ftcjax._src.constructions._exact import (Construction, CheckedInstance, check_instance, check_rng,
                                              finish, project_exact, to_fractions)
from ftcjax._src.errors import FTCInputError

__all__ = ["tooth", "three_layer_u1", "three_layer_u2", "three_layer_u3", "three_layer_4n4",
           "zero_network", "kept_set"]

_ZERO = Fraction(0)
_ONE = Fraction(1)


def zero_network(d: int, depth: int) -> tuple:
    """The network g = 0 with no hidden neurons, in the shared format (hidden widths 0)."""
    layers, width_in = [], d
    for _ in range(depth - 1):
        layers.append((np.zeros((0, width_in), dtype=object), np.zeros((0,), dtype=object)))
        width_in = 0
    out_b = np.empty(1, dtype=object)
    out_b[0] = _ZERO
    layers.append((np.zeros((1, width_in), dtype=object), out_b))
    return tuple(layers)


class _Sorted:
    """The instance in projection order, exact. ts, zs: lists of Fractions; ch: list of bools."""

    def __init__(self, inst: CheckedInstance, scale: float, rng, draws: int):
        self.proj = project_exact(inst.x, rng, draws=draws)
        order = self.proj.order
        self.ts = [self.proj.t[i] for i in order]
        sc = Fraction(scale)
        self.zs = [Fraction(float(inst.z[i])) / sc for i in order]
        self.ch = [bool(inst.changed[i]) for i in order]
        self.K = len(order)
        span = self.ts[-1] - self.ts[0]
        self.pad = span / self.K if span > 0 else _ONE   # margin outside the data range

    def restrict(self, keep_sorted: list) -> "_Sorted":
        """Same samples and projection; only sorted positions in ``keep_sorted`` stay changed
        (the others become unchanged with z = 0): the sub-instance of one part of T."""
        sub = object.__new__(_Sorted)
        sub.__dict__.update(self.__dict__)
        keep = set(keep_sorted)
        sub.ch = [c and (i in keep) for i, c in enumerate(self.ch)]
        sub.zs = [zv if i in keep else _ZERO for i, zv in enumerate(self.zs)]
        return sub


def _assemble(block: B.Block, a: np.ndarray, scale: float) -> tuple:
    """Block on t = a.x -> exact layers ((W1, b1), (W2, b2), (W3, b3))."""
    aq = to_fractions(a)
    W1 = np.empty((len(block.alpha), len(aq)), dtype=object)
    for i, al in enumerate(block.alpha):
        W1[i] = al * aq
    sc = Fraction(scale)
    W3 = np.empty((1, len(block.u)), dtype=object)
    W3[0] = block.u * sc
    b3 = np.empty(1, dtype=object)
    b3[0] = block.u0 * sc
    return ((W1, block.beta.copy()), (block.V, block.c.copy()), (W3, b3))


def kept_set(ch: list, only_changed: bool = False) -> list:
    """Positions (in sorted order) of J: every changed sample plus the first and last sample of
    every maximal run of unchanged samples (Thm 4.4 / Lemma 4.7, |J| <= min{3N + 2, K})."""
    K, keep, i = len(ch), [], 0
    while i < K:
        if ch[i]:
            keep.append(i)
            i += 1
            continue
        j = i
        while j + 1 < K and not ch[j + 1]:
            j += 1
        if not only_changed:
            keep.append(i)
            if j > i:
                keep.append(j)
        i = j + 1
    return keep


def _prep(x, z, changed, rng, rescale, draws):
    inst, scale = check_instance(x, z, changed, need_unit_z=True, rescale=rescale)
    rng = check_rng(rng)
    return inst, scale, rng


def _zero_construction(name, inst, info):
    K, d = inst.x.shape
    return finish(name, zero_network(d, 3), inst, 0, dict(info, trivial=True))


# ----------------------------------------------------------------------------- tooth

def tooth_split(N: int) -> tuple[int, int]:
    """(p, q) minimising (2p + 1) + 4q subject to p q >= N, p = ceil(N / q) (ties: smaller q)."""
    best = None
    for q in range(1, N + 1):
        p = -(-N // q)
        cost = 2 * p + 1 + 4 * q
        if best is None or cost < best[0]:
            best = (cost, p, q)
    return best[1], best[2]


def tooth(x, z, changed, *, rng, delta=1, rescale: bool = False, draws: int = 4,
          verify: bool = True) -> Construction:
    """Closed-form "tooth" 3-layer construction (paper-notes 3.4, derived): (2p + 1) + 4q neurons.

    Layer 1: 2p + 1 ReLUs relu(t - c) whose combinations are p "teeth" (each 0 off its group of
    consecutive projected samples and strictly increasing on it); layer 2: q sigma_L units (4 ReLUs
    each); unit k reads the k-th changed sample of every group. Independent of K; about
    4 sqrt(2N) + 1 ~ 5.66 sqrt(N) neurons.

    Args:
      x (K, d), z (K,), changed (K,) bool: the instance.
      rng: np.random.Generator or int seed (projection draw).
      delta: sigma_L ramp width (> 0).
      rescale: allow max|z| > 1 by scaling the output layer.
      draws: projection directions tried; the best relative min gap wins.
      verify: check g(x_i) = z_i exactly in rationals (costly for large K).
    """
    inst, scale, rng = _prep(x, z, changed, rng, rescale, draws)
    delta = B.check_delta(delta)
    N = int(inst.changed.sum())
    if N == 0 or not np.any(inst.z != 0):
        return _zero_construction("tooth", inst, {"N": N})
    S = _Sorted(inst, scale, rng, draws)
    p, q = tooth_split(N)
    cpos = [i for i in range(S.K) if S.ch[i]]
    groups_c = [cpos[j * q:(j + 1) * q] for j in range(p)]
    cuts = [S.ts[0] - 1]
    for j in range(p - 1):
        cuts.append(B.cut_between(S.ts, groups_c[j][-1], groups_c[j + 1][0]))
    cuts.append(S.ts[-1] + 1)
    # group of each sorted sample; last sample of each group
    grp, j = [], 0
    for i in range(S.K):
        while S.ts[i] > cuts[j + 1]:
            j += 1
        grp.append(j)
    last = [max(i for i in range(S.K) if grp[i] == jj) for jj in range(p)]
    P = [(S.ts[last[jj]] + cuts[jj + 1]) / 2 for jj in range(p)]
    tau = [(S.ts[i] - cuts[grp[i]]) / (P[grp[i]] - cuts[grp[i]]) for i in range(S.K)]
    members = [[i for i in range(S.K) if grp[i] == jj] for jj in range(p)]

    # layer 1: relu(t - c), c in S_1, P_1, S_2, ..., P_p, S_{p+1}
    centers = []
    for jj in range(p):
        centers += [cuts[jj], P[jj]]
    centers.append(cuts[p])
    d1 = 2 * p + 1
    alpha = B.obj([_ONE] * d1)
    beta = B.obj([-c for c in centers])
    F = B.obj2([[_ZERO] * d1] * p, d1)
    for jj in range(p):
        r1 = 1 / (P[jj] - cuts[jj])
        r2 = 1 / (cuts[jj + 1] - P[jj])
        F[jj, 2 * jj] = r1
        F[jj, 2 * jj + 1] = -(r1 + r2)
        F[jj, 2 * jj + 2] = r2
    f0 = B.obj([_ZERO] * p)

    pre, Bs = [], []
    for k in range(q):
        sel = {jj: groups_c[jj][k] for jj in range(p) if k < len(groups_c[jj])}
        need = [2 + delta]
        for jj, s in sel.items():
            others = [abs(tau[i] - tau[s]) for i in members[jj] if i != s]
            if others:
                need.append((3 + delta) / min(others))
        Bk = max(need) + 1
        W = [((S.zs[sel[jj]] + Bk) / tau[sel[jj]]) if jj in sel else _ZERO for jj in range(p)]
        pre.append((B.obj(W), -Bk))
        Bs.append(Bk)
    V, c, u = B.expand_layer2(F, f0, pre, B.sigma_L_terms(delta))
    block = B.Block(alpha, beta, V, c, u, _ZERO)
    info = {"N": N, "p": p, "q": q, "delta": float(delta), "scale": scale,
            "projection": S.proj.a, "min_gap": float(S.proj.min_gap),
            "max_B": float(max(Bs))}
    return finish("tooth", _assemble(block, S.proj.a, scale), inst, 2 * p + 1 + 4 * q, info,
                  check_exact=verify)


# ----------------------------------------------------------------------------- alternating hard-tanh

def _regions(S: _Sorted, cut_list: list) -> tuple[list, list]:
    """(A_j, B_j) per region from interior cuts; region index of each sorted sample."""
    bounds = [S.ts[0] - S.pad] + cut_list + [S.ts[-1] + S.pad]
    AB = [(bounds[j], bounds[j + 1]) for j in range(len(bounds) - 1)]
    reg, j = [], 0
    for i in range(S.K):
        while S.ts[i] > bounds[j + 1]:
            j += 1
        reg.append(j)
    return AB, reg


def _signs(g: int) -> list:
    return [1 if j % 2 == 0 else -1 for j in range(g)]


def u3_block(S: "_Sorted", delta: Fraction, points: str = "J") -> tuple[B.Block, dict]:
    """The U3 block on the sorted instance S (its zs / ch define which samples are targets)."""
    J = kept_set(S.ch, only_changed=(points == "T"))
    nJ = len(J)
    g0 = math.isqrt(nJ - 1) + 1 if nJ > 1 else 1         # ceil(sqrt(nJ))
    q = -(-nJ // g0)
    chunks = [J[k:k + q] for k in range(0, nJ, q)]
    g = len(chunks)
    cut_list = [B.cut_between(S.ts, chunks[j][-1], chunks[j + 1][0]) for j in range(g - 1)]
    AB, reg = _regions(S, cut_list)
    signs = _signs(g)
    alpha_val = [B.hardtanh_value(S.ts[i], *AB[reg[i]], signs[reg[i]]) for i in range(S.K)]
    members = [[i for i in range(S.K) if reg[i] == j] for j in range(g)]

    pre, lambdas = [], []
    for r in range(q):
        b, zz, rep = [], [], []
        for j in range(g):
            if r < len(chunks[j]):
                i = chunks[j][r]
                b.append(alpha_val[i]); zz.append(S.zs[i]); rep.append(i)
            else:   # virtual representative in the largest gap of the region's alpha values
                vals = sorted([-_ONE, _ONE] + [alpha_val[i] for i in members[j]])
                k = max(range(len(vals) - 1), key=lambda t: vals[t + 1] - vals[t])
                b.append((vals[k] + vals[k + 1]) / 2); zz.append(_ZERO); rep.append(None)
        mu, mu0, nu, nu0 = B.alternating_fit(b, zz, signs)
        lam = _ZERO
        for j in range(g):
            gaps = [abs(alpha_val[i] - b[j]) for i in members[j] if i != rep[j]]
            if gaps:
                lam = max(lam, ((2 + delta) / min(gaps) - mu[j]) / nu[j])
        w = [mu[j] + lam * nu[j] for j in range(g)]
        pre.append((B.obj(w), mu0 + lam * nu0))
        lambdas.append(lam)
    alpha, beta, F, f0 = B.hardtanh_features(AB, signs)
    V, c, u = B.expand_layer2(F, f0, pre, B.sigma_L_terms(delta))
    meta = {"J": nJ, "groups": g, "units": q, "max_lambda": float(max(lambdas))}
    return B.Block(alpha, beta, V, c, u, _ZERO), meta


def three_layer_u3(x, z, changed, *, rng, delta=1, rescale: bool = False, points: str = "J",
                   draws: int = 4, verify: bool = True) -> Construction:
    """The paper's U3 = 6 sqrt(3N + 2) construction (Thm 5.1, paper-notes 3.3).

    J (changed samples + ends of unchanged runs, |J| <= min{3N+2, K}) is split into g = ceil(sqrt|J|)
    consecutive groups of at most q = ceil(|J|/g) points. Layer 1: one alternating hard-tanh per
    group (2 ReLUs each); layer 2: q sigma_L units (4 ReLUs each), unit r fitted to the r-th J point
    of every group via the closed-form positive null vector, with lambda large enough that every
    other sample (dropped ones included) lands outside [-1-delta, 1+delta]. Output: sum of units.
    Neurons 2g + 4q <= 6 ceil(sqrt |J|).

    ``points="T"`` uses J = T (changed samples only), about 6 ceil(sqrt N) (derived).
    """
    if points not in ("J", "T"):
        raise FTCInputError(f"points must be 'J' or 'T', got {points!r}")
    inst, scale, rng = _prep(x, z, changed, rng, rescale, draws)
    delta = B.check_delta(delta)
    N = int(inst.changed.sum())
    K = inst.x.shape[0]
    if N == 0 or not np.any(inst.z != 0):
        return _zero_construction("u3", inst, {"N": N})
    S = _Sorted(inst, scale, rng, draws)
    block, meta = u3_block(S, delta, points)
    nbound = N if points == "T" else min(3 * N + 2, K)
    bound = 6 * (math.isqrt(nbound - 1) + 1 if nbound > 1 else 1)
    info = dict(meta, N=N, delta=float(delta), scale=scale, projection=S.proj.a,
                min_gap=float(S.proj.min_gap))
    return finish("u3", _assemble(block, S.proj.a, scale), inst, bound, info, check_exact=verify)


def three_layer_4n4(x, z, changed, *, rng, delta=1, rescale: bool = False, draws: int = 4,
                    verify: bool = True) -> Construction:
    """The paper's 4N + 4 construction (App. A, paper-notes 3.3).

    Groups alternate maximal unchanged runs and single changed samples in projection order (empty
    groups, e.g. between adjacent changed samples, simply do not occur: the paper's indexing
    assumes they exist). Layer 1: one alternating hard-tanh per group (<= 2N + 1 groups, 2 ReLUs
    each); layer 2: ONE sigma_T unit (2 ReLUs) whose pre-activation equals z at one representative
    per group (for a run: its sample with the smallest hard-tanh value) and is >= 1 + delta at every
    other sample, where sigma_T is 0. Neurons 2 (#groups) + 2 <= 4N + 4.
    """
    inst, scale, rng = _prep(x, z, changed, rng, rescale, draws)
    delta = B.check_delta(delta)
    N = int(inst.changed.sum())
    if N == 0 or not np.any(inst.z != 0):
        return _zero_construction("4n4", inst, {"N": N})
    S = _Sorted(inst, scale, rng, draws)
    groups, i = [], 0
    while i < S.K:
        if S.ch[i]:
            groups.append([i]); i += 1
            continue
        j = i
        while j + 1 < S.K and not S.ch[j + 1]:
            j += 1
        groups.append(list(range(i, j + 1))); i = j + 1
    g = len(groups)
    cut_list = [(S.ts[groups[j][-1]] + S.ts[groups[j + 1][0]]) / 2 for j in range(g - 1)]
    AB, reg = _regions(S, cut_list)
    signs = _signs(g)
    alpha_val = [B.hardtanh_value(S.ts[i], *AB[reg[i]], signs[reg[i]]) for i in range(S.K)]
    rep = [grp[0] if signs[j] == 1 else grp[-1] for j, grp in enumerate(groups)]
    b = [alpha_val[r] for r in rep]
    zz = [S.zs[r] for r in rep]
    mu, mu0, nu, nu0 = B.alternating_fit(b, zz, signs)
    lam = _ZERO
    for j, grp in enumerate(groups):
        gaps = [alpha_val[i] - b[j] for i in grp if i != rep[j]]
        if gaps:
            assert min(gaps) > 0
            lam = max(lam, ((1 + delta) / min(gaps) - mu[j]) / nu[j])
    w = [mu[j] + lam * nu[j] for j in range(g)]
    alpha, beta, F, f0 = B.hardtanh_features(AB, signs)
    V, c, u = B.expand_layer2(F, f0, [(B.obj(w), mu0 + lam * nu0)], B.sigma_T_terms(delta))
    block = B.Block(alpha, beta, V, c, u, _ZERO)
    info = {"N": N, "groups": g, "delta": float(delta), "scale": scale, "projection": S.proj.a,
            "min_gap": float(S.proj.min_gap), "lambda": float(lam),
            "nu_span": float(max(nu) / min(nu))}
    return finish("4n4", _assemble(block, S.proj.a, scale), inst, 4 * N + 4, info,
                  check_exact=verify)


# ----------------------------------------------------------------------------- U1 and U2

def _all_sample_groups(S: _Sorted):
    """g = ceil(sqrt K) consecutive groups of q = ceil(K / g) samples with their hard-tanh regions;
    members of each group listed in ORIENTATION order (increasing hard-tanh value)."""
    K = S.K
    g0 = math.isqrt(K - 1) + 1 if K > 1 else 1
    q = -(-K // g0)
    chunks = [list(range(k, min(k + q, K))) for k in range(0, K, q)]
    g = len(chunks)
    cut_list = [(S.ts[chunks[j][-1]] + S.ts[chunks[j + 1][0]]) / 2 for j in range(g - 1)]
    AB, reg = _regions(S, cut_list)
    signs = _signs(g)
    alpha_val = [B.hardtanh_value(S.ts[i], *AB[reg[i]], signs[reg[i]]) for i in range(K)]
    oriented = [ch if signs[j] == 1 else ch[::-1] for j, ch in enumerate(chunks)]
    # _fit_unit finds nearest values by bisection, which needs every group strictly increasing
    if any(alpha_val[a] >= alpha_val[b] for mem in oriented for a, b in zip(mem, mem[1:])):
        raise AssertionError("hard-tanh values not increasing in orientation order")
    return oriented, q, AB, signs, alpha_val


def _fit_unit(oriented, r, target, virtual, signs, alpha_val, margin):
    """Layer-2 pre-activation w . alpha + w0 equal to target(j) at the r-th (orientation order)
    sample of every group, with slope w_j * gap >= margin to every other sample of the group.
    Groups with fewer than r + 1 samples get a virtual representative (``virtual(j, vals)`` gives
    its hard-tanh value and target)."""
    b, zz, rep = [], [], []
    for j, mem in enumerate(oriented):
        if r < len(mem):
            b.append(alpha_val[mem[r]]); zz.append(target(j)); rep.append(mem[r])
        else:
            vb, vz = virtual(j, [alpha_val[i] for i in mem])
            b.append(vb); zz.append(vz); rep.append(None)
    mu, mu0, nu, nu0 = B.alternating_fit(b, zz, signs)
    lam = _ZERO
    for j, mem in enumerate(oriented):
        gap = B.nearest_gap([alpha_val[i] for i in mem], b[j], skip=r if rep[j] is not None else None)
        if gap is not None:
            lam = max(lam, (margin / gap - mu[j]) / nu[j])
    w = [mu[j] + lam * nu[j] for j in range(len(oriented))]
    return B.obj(w), mu0 + lam * nu0, lam


def three_layer_u1(x, z, changed, *, rng, rescale: bool = False, draws: int = 4,
                   verify: bool = True) -> Construction:
    """U1 = 4 sqrt(K) (Thm 5.1): a Yun-Sra-Jadbabaie style memoriser of all K samples (z = 0 off T).

    Layer 1: g = ceil(sqrt K) alternating hard-tanh units over consecutive groups of q = ceil(K/g)
    samples (2 ReLUs each). Layer 2: q "ramp" units ramp(p) = (h(p) + 1) / 2 (2 ReLUs each); unit
    r is in its linear range exactly at the r-th sample (in orientation order) of every group, 0
    before it and 1 after it. Output sum_r c_r ramp_r - 3/2 with c_r = 3, -3, 3, ...: at the r-th
    sample of a group the saturated units contribute 0 (r odd) or 3 (r even) and the linear one
    places z in [1/6, 5/6] of its range. Neurons 2g + 2q <= 4 ceil(sqrt K).
    """
    inst, scale, rng = _prep(x, z, changed, rng, rescale, draws)
    N = int(inst.changed.sum())
    K = inst.x.shape[0]
    if N == 0 or not np.any(inst.z != 0):
        return _zero_construction("u1", inst, {"N": N})
    S = _Sorted(inst, scale, rng, draws)
    oriented, q, AB, signs, alpha_val = _all_sample_groups(S)
    c = [Fraction(3) if r % 2 == 0 else Fraction(-3) for r in range(q)]
    b_out = Fraction(-3, 2)
    pre, lams = [], []
    for r in range(q):
        before = sum(c[:r], _ZERO)

        def target(j, r=r, before=before):
            rho = (S.zs[oriented[j][r]] - b_out - before) / c[r]
            return 2 * rho - 1

        def virtual(j, vals):        # after every sample: the whole group saturates at 0
            return (max(vals) + 1) / 2, _ZERO

        w, w0, lam = _fit_unit(oriented, r, target, virtual, signs, alpha_val, Fraction(2))
        pre.append((w, w0))
        lams.append(lam)
    alpha, beta, F, f0 = B.hardtanh_features(AB, signs)
    half = Fraction(1, 2)
    V, cc, _ = B.expand_layer2(F, f0, pre, [(_ONE, _ONE, half), (_ONE, -_ONE, -half)])
    u = B.obj([cr * gm for cr in c for gm in (half, -half)])
    block = B.Block(alpha, beta, V, cc, u, b_out)
    bound = 4 * (math.isqrt(K - 1) + 1 if K > 1 else 1)
    info = {"N": N, "groups": len(oriented), "units": q, "scale": scale, "projection": S.proj.a,
            "min_gap": float(S.proj.min_gap), "max_lambda": float(max(lams))}
    return finish("u1", _assemble(block, S.proj.a, scale), inst, bound, info, check_exact=verify)


def three_layer_u2(x, z, changed, *, rng, rescale: bool = False, draws: int = 4,
                   verify: bool = True) -> Construction:
    """U2 = 2 sqrt(K) + 3N (Thm 5.1): U1's layer 1 plus one bump unit (3 ReLUs) per changed sample.

    Layer-2 pre-activation r takes the distinct values (j + 1) / (g + 1) at the r-th sample of
    group j and is >= 1 + 1/(g+1) away from them at every other sample (lambda large), so a bump of
    half-width 1 / (2 (g + 1)) centred at the changed sample's value outputs z there and 0 at every
    other sample. Neurons 2g + 3N <= 2 ceil(sqrt K) + 3N.
    """
    inst, scale, rng = _prep(x, z, changed, rng, rescale, draws)
    N = int(inst.changed.sum())
    K = inst.x.shape[0]
    if N == 0 or not np.any(inst.z != 0):
        return _zero_construction("u2", inst, {"N": N})
    S = _Sorted(inst, scale, rng, draws)
    oriented, q, AB, signs, alpha_val = _all_sample_groups(S)
    g = len(oriented)
    delta = Fraction(1, 2 * (g + 1))
    alpha, beta, F, f0 = B.hardtanh_features(AB, signs)
    rows, cs, us, lams = [], [], [], []
    for r in range(q):
        targets = [Fraction(j + 1, g + 1) for j in range(g)]
        hits = [(j, oriented[j][r]) for j in range(g)
                if r < len(oriented[j]) and S.ch[oriented[j][r]] and S.zs[oriented[j][r]] != 0]
        if not hits:
            continue                  # no changed sample is read by this unit: no neurons

        def virtual(j, vals):         # in the largest gap, value between the real targets
            vv = sorted([-_ONE, _ONE] + vals)
            k = max(range(len(vv) - 1), key=lambda t: vv[t + 1] - vv[t])
            return (vv[k] + vv[k + 1]) / 2, Fraction(2 * j + 1, 2 * (g + 1))

        w, w0, lam = _fit_unit(oriented, r, lambda j: targets[j], virtual, signs, alpha_val,
                               Fraction(2))
        lams.append(lam)
        P = w.dot(F)
        p0 = w.dot(f0) + w0
        for j, i in hits:             # bump centred at targets[j], height z_i
            v = targets[j]
            for shift, gm in ((-v + delta, _ONE), (-v, Fraction(-2)), (-v - delta, _ONE)):
                rows.append(P)
                cs.append(p0 + shift)
                us.append(S.zs[i] / delta * gm)
    V = np.empty((len(rows), F.shape[1]), dtype=object)
    for i, rrow in enumerate(rows):
        V[i] = rrow
    block = B.Block(alpha, beta, V, B.obj(cs), B.obj(us), _ZERO)
    bound = 2 * (math.isqrt(K - 1) + 1 if K > 1 else 1) + 3 * N
    info = {"N": N, "groups": g, "units": q, "scale": scale, "projection": S.proj.a,
            "min_gap": float(S.proj.min_gap), "max_lambda": float(max(lams))}
    return finish("u2", _assemble(block, S.proj.a, scale), inst, bound, info, check_exact=verify)
