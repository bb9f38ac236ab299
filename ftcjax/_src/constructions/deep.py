"""L-layer construction (Prop. 6.1, corrected): stack 3-layer U3 blocks over a partition of T.

T is split (in projection order) into P = floor((L - 1) / 2) parts of at most ceil(N / P) samples.
Block p is the U3 block of the sub-instance "only part p changed" (so it outputs z on part p and
exactly 0 on every other sample). The blocks run serially; two carry ReLUs pass the projection
(relu(t - t_lo), t_lo < min t) and the running sum (relu(S + 2), |S| <= 1 on the data) through
every layer; spare layers (L even, or fewer than P non-empty parts) carry the sum only.
Maximum width <= 4 ceil(sqrt(min{3N/P + 5, K})) + 2: the paper prints a square root over
floor((L-1)/2) that its own proof does not support (paper-notes section 2).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ftcjax._src.constructions import _blocks as B
from ftcjax._src.constructions._exact import Construction, finish, to_fractions
from ftcjax._src.constructions.three_layer import _prep, _Sorted, u3_block, zero_network
from ftcjax._src.errors import FTCInputError

__all__ = ["deep_stacked", "deep_width_bound"]

_ZERO = Fraction(0)
_ONE = Fraction(1)
_TWO = Fraction(2)


def deep_width_bound(N: int, K: int, L: int) -> int:
    """Integer width bound met by ``deep_stacked``: 4 ceil(sqrt(min{3N/P + 5, K})) + 2, P = floor((L-1)/2).

    (The real-valued Prop. 6.1 bound without ceilings is ``ftcjax.bounds.prop61_width``.)
    """
    P = (L - 1) // 2
    Np = -(-N // P)
    nJ = min(3 * Np + 2, K)          # <= min(3N/P + 5, K)
    return 4 * (math.isqrt(nJ - 1) + 1 if nJ > 1 else 1) + 2


def _mat(rows: list, ncols: int) -> np.ndarray:
    M = np.empty((len(rows), ncols), dtype=object)
    M[...] = _ZERO
    for i, r in enumerate(rows):
        for j, v in r.items():
            M[i, j] = v
    return M


def deep_stacked(x, z, changed, *, L: int, rng, delta=1, rescale: bool = False, draws: int = 4,
                 verify: bool = True) -> Construction:
    """An exact depth-L ReLU net (L >= 4 layers, L - 1 hidden) fitting the instance (Prop. 6.1).

    Args:
      x (K, d), z (K,) (0 off changed), changed (K,) bool.
      L: number of layers (>= 4).
      rng: np.random.Generator or int seed (projection draw, shared by all blocks).
      delta, rescale, draws, verify: as in ``three_layer_u3``.

    Returns:
      Construction with ``bound`` = the corrected max-WIDTH bound (``deep_width_bound``),
      ``info["max_width"]`` the realised maximum width and ``neurons`` the total hidden ReLUs.
    """
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 4:
        raise FTCInputError(f"L must be an int >= 4 (layers, Prop. 6.1), got {L!r}")
    L = int(L)
    inst, scale, rng = _prep(x, z, changed, rng, rescale, draws)
    delta = B.check_delta(delta)
    K, d = inst.x.shape
    N = int(inst.changed.sum())
    P = (L - 1) // 2
    bound = deep_width_bound(max(N, 1), K, L)
    if N == 0 or not np.any(inst.z != 0):
        c = finish("deep", zero_network(d, L), inst, bound, {"N": N, "L": L, "max_width": 0})
        return c
    S = _Sorted(inst, scale, rng, draws)
    cpos = [i for i in range(S.K) if S.ch[i]]
    size = -(-N // P)
    parts = [cpos[k:k + size] for k in range(0, N, size)]
    blocks, metas = [], []
    for part in parts:
        blk, meta = u3_block(S.restrict(part), delta)
        blocks.append(blk)
        metas.append(meta)
    t_lo = S.ts[0] - 1
    aq = to_fractions(S.proj.a)

    layers = []
    # hidden layer 1: block 1 layer 1 + carry t  (input x)
    b1 = blocks[0]
    W = np.empty((len(b1.alpha) + 1, d), dtype=object)
    for i, al in enumerate(b1.alpha):
        W[i] = al * aq
    W[-1] = aq
    layers.append((W, B.obj(list(b1.beta) + [-t_lo])))
    # state: names of the carries in the current hidden layer -> column index; 'blk' offset
    n_blk = len(b1.alpha)
    cols = {"t": n_blk}          # carry positions in the current layer output
    width_in = n_blk + 1         # block neurons come first in every layer, carries after them
    stage = ("l1", 0)            # current layer holds layer 1 of block 0
    hidden_done = 1
    while hidden_done < L - 1:
        kind, p = stage
        rows, bias = [], []
        if kind == "l1":              # next: layer 2 of block p
            blk = blocks[p]
            for r in range(blk.V.shape[0]):
                rows.append({j: blk.V[r, j] for j in range(blk.V.shape[1])})
                bias.append(blk.c[r])
            new_cols = {}
            for name in ("t", "s"):
                if name in cols:
                    new_cols[name] = len(rows)
                    rows.append({cols[name]: _ONE})
                    bias.append(_ZERO)
            stage = ("l2", p)
        elif kind == "l2":            # current holds layer 2 of block p: output of p joins the sum
            blk = blocks[p]
            s_row = {j: blk.u[j] for j in range(len(blk.u))}
            s_bias = blk.u0 + _TWO
            if "s" in cols:
                s_row[cols["s"]] = s_row.get(cols["s"], _ZERO) + _ONE
                s_bias -= _TWO
            if p + 1 < len(blocks) and (L - 1 - hidden_done) >= 2:
                nb = blocks[p + 1]    # next block's layer 1 reads t = carry_t + t_lo
                for i, al in enumerate(nb.alpha):
                    rows.append({cols["t"]: al})
                    bias.append(al * t_lo + nb.beta[i])
                new_cols = {"t": len(rows)}
                rows.append({cols["t"]: _ONE}); bias.append(_ZERO)
                new_cols["s"] = len(rows)
                rows.append(s_row); bias.append(s_bias)
                stage = ("l1", p + 1)
            else:                     # spare layer: carry the finished sum
                new_cols = {"s": len(rows)}
                rows.append(s_row); bias.append(s_bias)
                if p + 1 < len(blocks):
                    raise AssertionError("ran out of layers before the last block")
                stage = ("sum", p)
        else:                         # "sum": carry the finished sum through a spare layer
            rows, bias = [{cols["s"]: _ONE}], [_ZERO]
            new_cols = {"s": 0}
        layers.append((_mat(rows, width_in), B.obj(bias)))
        width_in = len(rows)
        cols = new_cols
        hidden_done += 1
    # output layer
    kind, p = stage
    if kind == "sum":
        out_row, out_b = {cols["s"]: _ONE}, -_TWO
    elif kind == "l2":
        blk = blocks[p]
        out_row = {j: blk.u[j] for j in range(len(blk.u))}
        out_b = blk.u0
        if "s" in cols:
            out_row[cols["s"]] = _ONE
            out_b -= _TWO
    else:
        raise AssertionError("depth too small for the blocks")
    sc = Fraction(scale)
    out_row = {j: v * sc for j, v in out_row.items()}
    layers.append((_mat([out_row], width_in), B.obj([out_b * sc])))
    info = {"N": N, "L": L, "P": P, "parts": len(parts), "part_J": [m["J"] for m in metas],
            "scale": scale, "projection": S.proj.a, "min_gap": float(S.proj.min_gap)}
    c = finish("deep", tuple(layers), inst, bound, info, check_exact=verify)
    return c._replace(info=dict(c.info, max_width=max(c.widths)))
