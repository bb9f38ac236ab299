"""LoRA problems: fine-tuning instances that carry their explicit frozen network.

A :class:`LoRAProblem` has every field of :class:`~ftcjax._src.problems.Problem` (so the search, the
criteria and the additive form read it unchanged) plus ``frozen``: the frozen ReLU MLP as a params
pytree ``((W1 (h1, d), b1), ..., (WL (1, h_{L-1}), bL))``. Problems whose frozen nets have the same
shapes stack into one batch, whatever their weights.

The data, the changed set and the new labels are drawn exactly as :func:`make_problem` draws them
from the same key, and ``f_x`` is the frozen net's output, so the additive form on a LoRA problem is
the same instance (``z = y - f(x)``): both forms are measured on paired instances.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ftcjax._src import networks, problems
from ftcjax._src.errors import FTCInputError

FROZEN_NETS = ("random_relu", "pretrained")


class LoRAProblem(NamedTuple):
    """One LoRA fine-tuning instance (add a leading axis for a batch); fields as in ``Problem`` plus:

    Attributes:
      frozen: the frozen MLP's layers ``((W (out, in), b (out,)), ...)``; ``f_x = forward(frozen, x)``.
    """

    x: jax.Array
    f_x: jax.Array
    y: jax.Array
    changed: jax.Array
    z: jax.Array
    f_fit_mse: jax.Array
    frozen: tuple

    @property
    def num_changed(self):
        return jnp.sum(self.changed, axis=-1)


def frozen_shapes(frozen) -> list:
    """``(out, in)`` per layer of a frozen net (batched or not: the last two axes)."""
    return [tuple(int(s) for s in w.shape[-2:]) for w, _ in frozen]


def random_frozen(key, *, in_dim: int, width: int, depth: int, dtype=jnp.float64):
    """A random depth-``depth`` ReLU MLP with ``width`` neurons per hidden layer (PyTorch-default init)."""
    return networks.init_mlp(key, width * (depth - 1), in_dim=in_dim, depth=depth, dtype=dtype)


pretrain = problems.pretrain_mlp  # one pre-training loop for both forms


def _validate(K, d, N, width, depth, frozen, data, labels, dtype):
    problems.validate_problem_args(K=K, d=d, N=N, data=data, labels=labels, dtype=dtype)
    if data in problems._STRUCTURED:
        raise FTCInputError(f"data: {data!r} fixes z without a frozen net; LoRA problems need "
                            f"one of {', '.join(d for d in problems.DATA if d not in problems._STRUCTURED)}")
    if not isinstance(frozen, (tuple, list)) and frozen not in FROZEN_NETS:
        raise FTCInputError(f"frozen: {frozen!r} is not an explicit network; choose one of "
                            f"{', '.join(FROZEN_NETS)} or pass the network's layers")
    for name, v, lo in (("frozen_width", width, 1), ("frozen_depth", depth, 2)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise FTCInputError(f"{name}: {v!r} must be an integer >= {lo}")


def _make(key, K, d, N, width, depth, frozen, data, labels, dtype, pretrain_steps):
    # The same folds as problems._make_random: x, the changed set and the new labels are those of
    # make_problem(key, ...), so the additive form sees the same instance.
    kx, kmask, klab, korig, kf = (jax.random.fold_in(key, i) for i in range(5))
    x = problems._inputs(kx, K, d, data, dtype)
    changed = jax.random.permutation(kmask, K) < N
    if isinstance(frozen, tuple):
        net, fit = frozen, jnp.full((), jnp.nan, dtype)  # a user's net was not trained on our labels
    else:
        net = random_frozen(kf, in_dim=d, width=width, depth=depth, dtype=dtype)
        fit = jnp.full((), jnp.nan, dtype)
        if frozen == "pretrained":
            y_orig = jax.random.uniform(korig, (K,), dtype, -1.0, 1.0)
            net, fit = pretrain(net, x, y_orig, steps=pretrain_steps)
    f_x = networks.forward(net, x.T)
    base = problems._assemble(x, f_x, problems._new_labels(klab, K, labels, dtype), changed, fit)
    return LoRAProblem(*base, frozen=net)


def _user_net(frozen, d, dtype):
    net = networks.from_layers(frozen, dtype=dtype)
    shapes = frozen_shapes(net)
    if shapes[0][1] != d or shapes[-1][0] != 1 or any(a[1] != b[0] for b, a in zip(shapes, shapes[1:])):
        raise FTCInputError(f"frozen: layer shapes {shapes} do not chain from d = {d} inputs to 1 output")
    return net


def make_lora_problem(key, *, K: int, d: int, N, frozen="random_relu", width: int = 16, depth: int = 2,
                      data: str = "gaussian", labels: str = "uniform", dtype: str = "float64",
                      pretrain_steps: int = 3000) -> LoRAProblem:
    """Draw one LoRA problem with an explicit frozen network.

    Args:
      key: PRNG key (the same folds as :func:`make_problem`: same ``x``, changed set, new labels).
      K, d, N, data, labels, dtype: as in :func:`make_problem` (random data only).
      frozen: ``"random_relu"`` (a random MLP, PyTorch-default init), ``"pretrained"`` (that MLP
        trained on the original ``U[-1, 1]`` labels for ``pretrain_steps`` Adam steps), or the user's
        own layers ``[(W (out, in), b (out,)), ...]`` (then ``width`` and ``depth`` are ignored).
      width: neurons per hidden layer of the generated frozen net; depth: its layers.
    Returns:
      :class:`LoRAProblem`: ``x (K, d)``, ``(K,)`` fields, ``frozen`` the net's layers.
    """
    if isinstance(frozen, list):
        frozen = tuple(frozen)
    _validate(K, d, N, width, depth, frozen, data, labels, dtype)
    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        net = _user_net(frozen, int(d), jdtype) if isinstance(frozen, tuple) else frozen
        return _make(key, int(K), int(d), N, int(width), int(depth), net, data, labels, jdtype,
                     int(pretrain_steps))


def make_lora_problems(key, *, num: int, K: int, d: int, N, frozen="random_relu", width: int = 16,
                       depth: int = 2, data: str = "gaussian", labels: str = "uniform",
                       dtype: str = "float64", pretrain_steps: int = 3000) -> LoRAProblem:
    """``num`` LoRA problems with a leading axis; problem ``i`` uses ``fold_in(key, i)`` (like
    :func:`make_problems`), each with its own frozen net of the same shapes."""
    problems._check_int("num", num, 1)
    if isinstance(frozen, list):
        frozen = tuple(frozen)
    _validate(K, d, N, width, depth, frozen, data, labels, dtype)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    n = np.broadcast_to(np.asarray(N), (num,))
    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        net = _user_net(frozen, int(d), jdtype) if isinstance(frozen, tuple) else frozen
        make = jax.vmap(lambda k, nn: _make(k, int(K), int(d), nn, int(width), int(depth), net, data,
                                            labels, jdtype, int(pretrain_steps)))
        return make(keys, jnp.asarray(n))
