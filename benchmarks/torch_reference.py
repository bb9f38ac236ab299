"""PyTorch references for the benchmark: what a researcher would otherwise write.

Benchmark-only: ftcjax never imports this module (nor torch). Two references train the same network
(ReLU MLP ``d -> h_1 -> ... -> 1``) with the same full-batch Adam loop as ftcjax:

* :func:`train_eager`: one ``nn.Sequential`` per instance, ``torch.optim.Adam``, a Python loop over
  steps, one instance at a time (what the paper's authors and most users would write);
* :func:`train_ensemble`: ``torch.func`` model ensembling over B instances (``stack_module_state`` +
  ``functional_call`` + ``vmap``), the PyTorch analogue of ftcjax's batched kernel.

Loss: mean over the K samples of ``(g(x_k) - z_k) ** 2`` (full batch), Adam with PyTorch defaults
(betas 0.9 / 0.999, eps 1e-8, the same constants as optax), learning rate either constant or the
cosine decay ``lr * 0.5 * (1 + cos(pi * t / steps))`` at update ``t = 0..steps-1`` (optax's
``cosine_decay_schedule`` with ``alpha = 0``). Initialisation: PyTorch's default (Kaiming-uniform) unless
``init_layers`` gives explicit parameters in ftcjax's network format ``((W, b), ...)``, W ``(out, in)``;
that is how the smoke test makes both implementations start from the same point.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "make_mlp",
    "load_layers",
    "lr_at",
    "train_eager",
    "train_ensemble",
]


def make_mlp(sizes: Sequence[int], *, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """ReLU MLP with layer sizes ``sizes = (d, h_1, ..., 1)``, PyTorch default init."""
    mods: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(fan_in, fan_out, dtype=dtype))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def load_layers(model: nn.Sequential, layers) -> nn.Sequential:
    """Copy network-format parameters ``((W (out,in), b (out,)), ...)`` into ``model`` in place."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if len(linears) != len(layers):
        raise ValueError(f"layers: expected {len(linears)} layers, got {len(layers)}")
    with torch.no_grad():
        for lin, (w, b) in zip(linears, layers):
            w = torch.as_tensor(np.array(w, copy=True), dtype=lin.weight.dtype)
            b = torch.as_tensor(np.array(b, copy=True), dtype=lin.bias.dtype).reshape(-1)
            if tuple(w.shape) != tuple(lin.weight.shape):
                raise ValueError(f"layers: W shape {tuple(w.shape)} != {tuple(lin.weight.shape)}")
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return model


def lr_at(step: int, *, learning_rate: float, steps: int, schedule: str) -> float:
    """Learning rate of update ``step`` (0-based), mirroring optax's schedules."""
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        frac = min(step, steps) / steps
        return learning_rate * 0.5 * (1.0 + math.cos(math.pi * frac))
    raise ValueError(f"schedule: unknown schedule {schedule!r}")


def _as_tensor(a, dtype) -> torch.Tensor:
    return torch.as_tensor(np.array(a, copy=True), dtype=dtype)  # own, writable memory


def train_eager(x, z, *, sizes: Sequence[int], steps: int, learning_rate: float,
                schedule: str = "constant", init_layers=None, dtype: torch.dtype = torch.float32,
                seed: int | None = None) -> float:
    """Train one network on one instance; return the final full-batch MSE.

    Args:
      x: ``(K, d)`` inputs.  z: ``(K,)`` targets (the residuals g must fit; 0 off the changed set).
      sizes: ``(d, h_1, ..., 1)``.  init_layers: optional network-format initial parameters.
    Returns:
      MSE after ``steps`` Adam updates (a Python float).
    """
    if seed is not None:
        torch.manual_seed(seed)
    model = make_mlp(sizes, dtype=dtype)
    if init_layers is not None:
        load_layers(model, init_layers)
    xt, zt = _as_tensor(x, dtype), _as_tensor(z, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for t in range(steps):
        if schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = lr_at(t, learning_rate=learning_rate, steps=steps, schedule=schedule)
        opt.zero_grad(set_to_none=True)
        loss = ((model(xt).squeeze(-1) - zt) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((model(xt).squeeze(-1) - zt) ** 2).mean())


def train_ensemble(xs, zs, *, sizes: Sequence[int], steps: int, learning_rate: float,
                   schedule: str = "constant", init_layers=None, dtype: torch.dtype = torch.float32,
                   seed: int | None = None) -> np.ndarray:
    """Train B networks on B instances at once with ``torch.func`` ensembling.

    Args:
      xs: ``(B, K, d)``.  zs: ``(B, K)``.
      init_layers: optional network-format parameters with a leading ``(B,)`` axis on every array.
    Returns:
      ``(B,)`` final full-batch MSEs.
    """
    from torch.func import functional_call, stack_module_state, vmap

    if seed is not None:
        torch.manual_seed(seed)
    xt, zt = _as_tensor(xs, dtype), _as_tensor(zs, dtype)
    num = xt.shape[0]
    models = [make_mlp(sizes, dtype=dtype) for _ in range(num)]
    if init_layers is not None:
        for i, model in enumerate(models):
            load_layers(model, [(np.asarray(w)[i], np.asarray(b)[i]) for w, b in init_layers])
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(one)
    # Adam is elementwise, so one optimizer over the stacked (B, ...) tensors is B independent Adams;
    # summing the per-model mean losses gives each model exactly its own gradient.
    opt = torch.optim.Adam(list(params.values()), lr=learning_rate)
    for t in range(steps):
        if schedule != "constant":
            for group in opt.param_groups:
                group["lr"] = lr_at(t, learning_rate=learning_rate, steps=steps, schedule=schedule)
        opt.zero_grad(set_to_none=True)
        out = batched(params, buffers, xt).squeeze(-1)
        loss = ((out - zt) ** 2).mean(dim=1).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = batched(params, buffers, xt).squeeze(-1)
        return ((out - zt) ** 2).mean(dim=1).numpy().copy()
