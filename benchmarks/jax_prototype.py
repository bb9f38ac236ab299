"""A minimal fast JAX training kernel: the yardstick for what ftcjax's product kernel could reach.

No masks, no criteria, no early stop, no restarts: just full-batch Adam on B independent ReLU MLPs,
written the way the design's CPU section says is fast (feature-major activations ``(h, K)``, instance
axis sharded over the XLA host devices, ``lax.map`` over chunks of a few instances per device so the
working set stays in L2, ``lax.scan`` with unroll). The benchmark prints it beside ftcjax so a gap
between the two points at the product's overheads (masking, criteria, segments) rather than at JAX.
Benchmark-only; ftcjax does not import it.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["init_params", "make_trainer"]


def init_params(key, sizes: Sequence[int], num: int, dtype=jnp.float32):
    """PyTorch-default init of ``num`` MLPs: layers ``(W (num, out, in), b (num, out))``."""
    layers = []
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        kw, kb = jax.random.split(jax.random.fold_in(key, i))
        bound = 1.0 / math.sqrt(fi)
        layers.append((jax.random.uniform(kw, (num, fo, fi), dtype, -bound, bound),
                       jax.random.uniform(kb, (num, fo), dtype, -bound, bound)))
    return tuple(layers)


def _loss(params, x_t, z):
    """Mean squared error of one MLP on feature-major inputs ``x_t (d, K)``, targets ``z (K,)``."""
    h = x_t
    for w, b in params[:-1]:
        h = jax.nn.relu(w @ h + b[:, None])
    w, b = params[-1]
    out = (w @ h + b[:, None])[0]
    return jnp.mean((out - z) ** 2)


def _train_one(params, x_t, z, *, steps, lr, unroll, schedule):
    """Adam (optax constants) for ``steps`` full-batch updates; returns the final loss (scalar)."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    zeros = jax.tree.map(jnp.zeros_like, params)

    def step(carry, t):
        p, m, v = carry
        g = jax.grad(_loss)(p, x_t, z)
        tf = (t + 1).astype(x_t.dtype)
        if schedule == "cosine":
            rate = lr * 0.5 * (1 + jnp.cos(jnp.pi * t.astype(x_t.dtype) / steps))
        else:
            rate = jnp.asarray(lr, x_t.dtype)
        m = jax.tree.map(lambda a, gg: b1 * a + (1 - b1) * gg, m, g)
        v = jax.tree.map(lambda a, gg: b2 * a + (1 - b2) * gg * gg, v, g)
        c1, c2 = 1 - b1 ** tf, 1 - b2 ** tf
        p = jax.tree.map(lambda a, mm, vv: a - rate * (mm / c1) / (jnp.sqrt(vv / c2) + eps), p, m, v)
        return (p, m, v), None

    (p, _, _), _ = jax.lax.scan(step, (params, zeros, zeros), jnp.arange(steps), unroll=unroll)
    return _loss(p, x_t, z)


def make_trainer(*, steps: int, learning_rate: float, schedule: str = "cosine", chunk: int = 4,
                 unroll: int = 4, matmul_precision: str = "highest"):
    """A jitted ``train(params, x_t (B, d, K), z (B, K)) -> (B,) final losses``.

    B must be a multiple of ``chunk * num_devices`` (the caller pads). The instance axis is sharded
    over all local devices; inside each device ``lax.map`` runs ``chunk`` instances at a time.
    ``matmul_precision`` is ftcjax's Protocol default ("highest": no TF32 on a GPU), so the two
    compare equal arithmetic on every backend (on CPU it changes nothing).
    """
    one = functools.partial(_train_one, steps=steps, lr=learning_rate, unroll=unroll, schedule=schedule)
    devices = jax.devices()
    mesh = jax.make_mesh((len(devices),), ("i",), devices=devices)
    spec = jax.P("i")

    def per_device(params, x_t, z):
        return jax.lax.map(lambda a: one(*a), (params, x_t, z), batch_size=chunk)

    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)
    jitted = jax.jit(sharded)
    sharding = jax.NamedSharding(mesh, spec)

    def train(params, x_t, z):
        args = jax.device_put((params, x_t, z), sharding)
        with jax.default_matmul_precision(matmul_precision):   # traced (and cached) under it
            return np.asarray(jitted(*args))

    train.num_devices = len(devices)
    train.matmul_precision = matmul_precision
    return train
