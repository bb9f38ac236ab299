"""Masked ReLU MLPs as plain pytrees.

Format (shared with :mod:`ftcjax.constructions`): a tuple of layers ``((W1, b1), ..., (WL, bL))`` with
``W`` of shape ``(out, in)`` and ``b`` of shape ``(out,)``; ReLU after every layer except the last, whose
``out`` is 1. A depth-``L`` net has ``L - 1`` hidden layers and ``m = d_1 + ... + d_{L-1}`` hidden
neurons (the paper's count, both hidden layers for ``L = 3``).

A width is a *mask*: parameters live in a padded bucket (the hidden sizes of the largest width a
search may probe) and neurons past the true width are zeroed. Masking the parameters (``O(params)``)
rather than the activations (``O(width * K)``) keeps the hot loop cheap and still gives padded neurons
exactly zero output and zero gradient. Widths may be traced integers, so a new width never recompiles.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ftcjax._src.errors import FTCInputError

Params = tuple  # tuple[(W (out, in), b (out,)), ...]


def _split_weights(depth: int, split: Sequence[int] | None) -> tuple[int, ...]:
    n_hidden = depth - 1
    if split is None:
        return (1,) * n_hidden
    split = tuple(int(s) for s in split)
    if len(split) != n_hidden or any(s <= 0 for s in split):
        raise FTCInputError(
            f"split: {split!r} must be {n_hidden} positive integer weights (one per hidden layer of a "
            f"depth-{depth} net)"
        )
    return split


def hidden_widths(m, depth: int, split: Sequence[int] | None = None) -> tuple:
    """Hidden layer widths ``(d_1, ..., d_{L-1})`` of a depth-``L`` net with ``m`` hidden neurons.

    ``split`` holds integer weights per hidden layer (default: equal). Cumulative widths are
    ``floor(m * S_l / S)`` in exact integer arithmetic, so the remainder goes to later layers: the
    default 3-layer split is ``d_1 = floor(m/2)``, ``d_2 = ceil(m/2)`` (paper-notes section 1).
    Works on Python ints and on traced integer arrays alike.
    """
    if depth < 2:
        raise FTCInputError(f"depth: {depth!r} must be >= 2 (a 2-layer net has one hidden layer)")
    weights = _split_weights(depth, split)
    total = sum(weights)
    cum = np.cumsum(weights)
    bounds = [(m * int(c)) // total for c in cum]
    return tuple([bounds[0]] + [bounds[i] - bounds[i - 1] for i in range(1, len(bounds))])


def smallest_valid_width(depth: int, split: Sequence[int] | None = None) -> int:
    """Smallest total width giving every hidden layer at least one neuron."""
    m = depth - 1
    while min(hidden_widths(m, depth, split)) < 1:
        m += 1
    return m


def neuron_masks(width, bucket: int, depth: int, split: Sequence[int] | None = None) -> tuple:
    """Boolean masks ``(H_l,)`` per hidden layer: True for the first ``d_l(width)`` of ``H_l = d_l(bucket)``."""
    true = hidden_widths(width, depth, split)
    padded = hidden_widths(bucket, depth, split)
    return tuple(_first(h, t) for h, t in zip(padded, true))


def _first(size: int, count):
    """``(size,)`` bool mask of the first ``count`` entries (``count`` may be traced)."""
    count = jnp.asarray(count)
    return jnp.arange(size, dtype=count.dtype) < count


def init_mlp(key, width, *, in_dim: int, depth: int, bucket: int | None = None,
             split: Sequence[int] | None = None, dtype=jnp.float32) -> Params:
    """PyTorch-default initialisation of a depth-``depth`` MLP with ``width`` hidden neurons, padded to ``bucket``.

    Every weight and bias of layer ``l`` is ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the TRUE fan-in.
    Neuron ``j`` of layer ``l`` draws from ``fold_in(fold_in(key, l), j)`` only, so the first ``width``
    neurons are the same whatever the bucket; padded neurons (and columns) are exactly zero.

    Args:
      key: PRNG key.
      width: total hidden neurons ``m`` (int or traced int), ``<= bucket``.
      in_dim: input dimension ``d``.
    Returns:
      params: ``((W1 (H1, d), b1 (H1,)), ..., (WL (1, H_{L-1}), bL (1,)))``.
    """
    bucket = width if bucket is None else bucket
    true = list(hidden_widths(width, depth, split)) + [1]
    padded = list(hidden_widths(bucket, depth, split)) + [1]
    layers = []
    fan_true, fan_pad = in_dim, in_dim
    for layer, (out_true, out_pad) in enumerate(zip(true, padded)):
        layer_key = jax.random.fold_in(key, layer)
        bound = 1.0 / jnp.sqrt(jnp.asarray(fan_true, dtype))

        def neuron(j, layer_key=layer_key, bound=bound, fan_pad=fan_pad):
            # One draw per neuron: entry 0 is the bias, entries 1.. the weights. Threefry is
            # counter-based (partitionable), so entry i depends on (key, i) only and a wider padded
            # fan-in does not change the true entries. One draw instead of split + two keeps the
            # kernel's compile time down.
            u = jax.random.uniform(jax.random.fold_in(layer_key, j), (fan_pad + 1,), dtype, -bound, bound)
            return u[1:], u[0]

        w, b = jax.vmap(neuron)(jnp.arange(out_pad))
        rows = _first(out_pad, out_true).astype(dtype)
        cols = _first(fan_pad, fan_true).astype(dtype)
        layers.append((w * rows[:, None] * cols[None, :], b * rows))
        fan_true, fan_pad = out_true, out_pad
    return tuple(layers)


def mask_params(params: Params, masks: tuple) -> Params:
    """Zero the rows (and biases) of padded hidden neurons: their outputs and gradients vanish."""
    out = []
    for (w, b), mask in zip(params[:-1], masks):
        m = mask.astype(w.dtype)
        out.append((w * m[:, None], b * m))
    out.append(params[-1])
    return tuple(out)


def forward(params: Params, x_t, masks: tuple | None = None):
    """Network outputs on a feature-major batch.

    Args:
      params: layers as in :func:`init_mlp`.
      x_t: inputs ``(d, K)``, one column per sample (feature-major: ``K`` is contiguous, which makes
        the per-layer matmuls and elementwise ops fast on CPU).
      masks: optional neuron masks from :func:`neuron_masks`.
    Returns:
      ``(K,)`` outputs.
    """
    if masks is not None:
        params = mask_params(params, masks)
    h = x_t
    for w, b in params[:-1]:
        h = jax.nn.relu(w @ h + b[:, None])
    w, b = params[-1]
    return (w @ h + b[:, None])[0]


def apply_mlp(params: Params, x, masks: tuple | None = None):
    """Output of the network on ONE example ``x (d,)`` (a scalar); vmap it for batches."""
    return forward(params, x[:, None], masks)[0]


def count_neurons(params: Params, masks: tuple | None = None) -> int:
    """Hidden neurons in use: mask entries if given, else all hidden rows."""
    if masks is not None:
        return int(sum(int(np.asarray(m).sum()) for m in masks))
    return int(sum(w.shape[0] for w, _ in params[:-1]))


def to_layers(params: Params, width: int, *, depth: int | None = None,
              split: Sequence[int] | None = None) -> list:
    """Trim padded ``params`` to the plain format: a list of numpy ``(W, b)`` with only the true neurons."""
    depth = len(params) if depth is None else depth
    sizes = list(hidden_widths(int(width), depth, split)) + [1]
    layers, fan = [], params[0][0].shape[1]
    for (w, b), out in zip(params, sizes):
        w, b = np.asarray(w), np.asarray(b)
        layers.append((w[:out, :fan].copy(), b[:out].copy()))
        fan = out
    return layers


def from_layers(layers: Sequence, *, dtype=jnp.float64) -> Params:
    """Plain layers (numpy or jax) to a params pytree usable by :func:`forward` (no padding, no mask)."""
    return tuple((jnp.asarray(np.asarray(w, dtype=np.float64), dtype),
                  jnp.asarray(np.asarray(b, dtype=np.float64), dtype)) for w, b in layers)
