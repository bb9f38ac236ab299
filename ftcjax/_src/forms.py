"""Fine-tuning forms: what is trained on top of the frozen network, and how big it is.

A *form* is a small static contract the fit kernel dispatches on (it is hashable and part of the
kernel's static configuration, so a form never changes inside a compiled program):

* ``init(key, size, cfg, frozen)``: trainable parameters for a *size* ``s`` padded to a bucket
  ``cfg.bucket`` (the size is a mask, like the width: a new size never recompiles, and the first
  components do not depend on the bucket);
* ``predict(params, frozen, x_t, size, cfg)``: the fine-tuned model's ``(K,)`` outputs on a
  feature-major batch ``x_t (d, K)`` (:func:`apply_one` is the one-example view);
* ``target(problem)``: what ``predict`` is fitted to, ``(K,)``; ``frozen_of(problem)``: the part of
  the frozen network ``predict`` reads (``()`` for the additive form);
* ``num_params(size, in_dim, frozen_shapes)``: trainable parameters at size ``s``, so different forms
  share one axis;
* for the trainers' bookkeeping: ``live_mask`` (the parameters a size really has: Levenberg-Marquardt
  keeps the rest out of its solve), ``dead`` (the model is constant on the samples) and ``weight_max``
  (per-layer size of what was trained).

Two forms exist:

* :class:`Additive` (``size`` = total hidden width ``m`` of ``g``): the paper's ``f + g``. Only the
  residual ``z = y - f(x)`` matters, so ``predict`` is ``g(x)`` and the target is ``z``; the frozen
  network is never evaluated.
* :class:`LoRA` (``size`` = rank ``r``): the frozen ``f`` is an explicit ReLU MLP carried in the
  problem's pytree (``problem.frozen``) and each adapted layer ``l`` becomes
  ``W_l + scale * B_l A_l`` with ``A_l (r, in_l)``, ``B_l (out_l, r)``; biases stay frozen. The
  target is the new labels ``y`` over all ``K`` samples (the residual view does not apply: the update
  changes ``f`` everywhere), so ``r = 0`` reproduces ``f`` exactly and is judged like ``g = 0``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ftcjax._src import networks
from ftcjax._src.errors import FTCInputError

FORMS = ("additive", "lora")


def _first(size: int, count):
    count = jnp.asarray(count)
    return jnp.arange(size, dtype=count.dtype) < count


def _dead_layers(layers, x_t):
    """True when some hidden layer of a plain MLP has no unit active on any sample of ``x_t (d, K)``."""
    h = x_t
    dead = jnp.zeros((), bool)
    for w, b in layers[:-1]:
        h = jax.nn.relu(w @ h + b[:, None])
        dead = dead | ~jnp.any(h > 0)
    return dead


@dataclasses.dataclass(frozen=True)
class Additive:
    """``f + g`` with ``g`` a masked ReLU MLP of the protocol's depth and split (the paper's form).

    ``size`` is the total hidden width ``m``; parameters are those of :func:`networks.init_mlp`.
    """

    name: str = dataclasses.field(default="additive", init=False)

    def min_size(self, cfg) -> int:
        return networks.smallest_valid_width(cfg.depth, cfg.split)

    def init(self, key, size, cfg, frozen=()):
        return networks.init_mlp(key, size, in_dim=cfg.in_dim, depth=cfg.depth, bucket=cfg.bucket,
                                 split=cfg.split, dtype=jnp.dtype(cfg.dtype))

    def predict(self, params, frozen, x_t, size, cfg):
        masks = networks.neuron_masks(size, cfg.bucket, cfg.depth, cfg.split)
        return networks.forward(params, x_t, masks)

    def target(self, problem):
        return problem.z

    def frozen_of(self, problem):
        """What of the frozen net the kernel needs: nothing (so frozen shapes never recompile ``g``)."""
        return ()

    def live_mask(self, params, size, cfg):
        """0/1 pytree like ``params``: 1 on the parameters a width-``size`` ``g`` really has."""
        from ftcjax._src import lm

        return lm.param_mask(params, networks.neuron_masks(size, cfg.bucket, cfg.depth, cfg.split))

    def dead(self, params, frozen, x_t, size, cfg):
        """True when some hidden layer of ``g`` has no live unit active on any sample (``g`` constant)."""
        masks = networks.neuron_masks(size, cfg.bucket, cfg.depth, cfg.split)
        return _dead_layers(networks.mask_params(params, masks), x_t)

    def trim(self, params, size: int, *, depth: int, split=None):
        """One lane's padded parameters as plain numpy layers with only the true neurons."""
        return networks.to_layers(params, size, depth=depth, split=split)

    def weight_max(self, params, frozen, size, cfg):
        """``(depth,)`` max |W| per layer of ``g`` (biases excluded)."""
        return jnp.stack([jnp.max(jnp.abs(w)) for w, _ in params])

    def num_params(self, size: int, *, in_dim: int, depth: int, split=None, frozen_shapes=None) -> int:
        """Weights and biases of ``g`` with true width ``size``: ``sum_l (in_l + 1) out_l``."""
        dims = [int(in_dim)] + [int(h) for h in networks.hidden_widths(int(size), depth, split)] + [1]
        return int(sum((a + 1) * b for a, b in zip(dims[:-1], dims[1:])))

    def to_dict(self) -> dict:
        return {"form": self.name, "size": "total hidden width m of g", "target": "z = y - f(x)"}


@dataclasses.dataclass(frozen=True)
class LoRA:
    """Low-rank updates ``W_l + scale * B_l A_l`` of chosen layers of an explicit frozen MLP.

    Attributes:
      layers: indices of the adapted layers of the frozen net (negative counts from the end; ``-1`` is
        the output layer); ``None`` adapts every layer.
      alpha: if set, ``scale = alpha / r`` with ``r`` the TRUE rank (the usual LoRA scaling); if
        ``None``, ``scale = 1``.

    Initialisation (the usual LoRA one): ``B = 0``; row ``j`` of ``A_l`` is
    ``U(-1/sqrt(in_l), 1/sqrt(in_l))`` (PyTorch's default for LoRA's ``A``), drawn from
    ``fold_in(fold_in(key, l), j)`` only, so the first ``r`` rows do not depend on the rank bucket;
    rows and columns past the true rank are zero and stay zero (masked: zero gradient).
    """

    layers: tuple | None = None
    alpha: float | None = None
    name: str = dataclasses.field(default="lora", init=False)

    def __post_init__(self):
        if self.layers is not None:
            try:
                layers = tuple(int(i) for i in self.layers)
            except (TypeError, ValueError):
                raise FTCInputError(f"lora.layers: {self.layers!r} must be a list of layer indices") from None
            if not layers or len(set(layers)) != len(layers):
                raise FTCInputError(f"lora.layers: {self.layers!r} must be non-empty and distinct")
            object.__setattr__(self, "layers", layers)
        if self.alpha is not None:
            a = float(self.alpha)
            if not np.isfinite(a) or a <= 0:
                raise FTCInputError(f"lora.alpha: {self.alpha!r} must be a finite positive number")
            object.__setattr__(self, "alpha", a)

    def min_size(self, cfg) -> int:
        return 1

    def adapted(self, num_layers: int) -> tuple:
        """Sorted non-negative indices of the adapted layers of a ``num_layers``-layer frozen net."""
        if self.layers is None:
            return tuple(range(num_layers))
        out = []
        for i in self.layers:
            j = i + num_layers if i < 0 else i
            if not 0 <= j < num_layers:
                raise FTCInputError(f"lora.layers: index {i} is outside a {num_layers}-layer frozen net")
            out.append(j)
        if len(set(out)) != len(out):
            raise FTCInputError(f"lora.layers: {list(self.layers)} names a layer twice")
        return tuple(sorted(out))

    def init(self, key, size, cfg, frozen):
        """Adapters ``((A (R, in_l), B (out_l, R)), ...)`` per adapted layer, ``R = cfg.bucket``."""
        dtype = jnp.dtype(cfg.dtype)
        params = []
        for l in self.adapted(len(frozen)):
            out_dim, in_dim = frozen[l][0].shape
            layer_key = jax.random.fold_in(key, l)
            bound = 1.0 / jnp.sqrt(jnp.asarray(in_dim, dtype))
            a = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(layer_key, j), (in_dim,), dtype,
                                                      -bound, bound))(jnp.arange(cfg.bucket))
            rows = _first(cfg.bucket, size).astype(dtype)
            params.append((a * rows[:, None], jnp.zeros((out_dim, cfg.bucket), dtype)))
        return tuple(params)

    def scale(self, size, dtype):
        if self.alpha is None:
            return jnp.ones((), dtype)
        return jnp.asarray(self.alpha, dtype) / jnp.maximum(jnp.asarray(size, dtype), 1.0)

    def adapted_weights(self, params, frozen, size, bucket: int) -> tuple:
        """The frozen layers with ``W_l + scale * (B_l m)(m A_l)``, ``m`` the rank mask: a plain MLP."""
        layers = list(frozen)
        dtype = frozen[0][0].dtype
        mask = _first(bucket, size).astype(dtype)
        s = self.scale(size, dtype)
        for l, (a, b) in zip(self.adapted(len(frozen)), params):
            w, bias = layers[l]
            layers[l] = (w + s * ((b * mask[None, :]) @ (a * mask[:, None])), bias)
        return tuple(layers)

    def predict(self, params, frozen, x_t, size, cfg):
        return networks.forward(self.adapted_weights(params, frozen, size, cfg.bucket), x_t)

    def live_mask(self, params, size, cfg):
        """0/1 pytree like ``params``: the first ``size`` rows of every ``A`` and columns of every ``B``."""
        out = []
        for a, b in params:
            m = _first(cfg.bucket, size).astype(a.dtype)
            out.append((jnp.broadcast_to(m[:, None], a.shape), jnp.broadcast_to(m[None, :], b.shape)))
        return tuple(out)

    def dead(self, params, frozen, x_t, size, cfg):
        """True when some hidden layer of the ADAPTED net is inactive on every sample (constant output)."""
        return _dead_layers(self.adapted_weights(params, frozen, size, cfg.bucket), x_t)

    def trim(self, params, size: int, *, depth: int = 0, split=None):
        """One lane's adapters as numpy ``[(A (r, in), B (out, r)), ...]`` with only the true rank."""
        return [(np.asarray(a)[:size].copy(), np.asarray(b)[:, :size].copy()) for a, b in params]

    def weight_max(self, params, frozen, size, cfg):
        """``(adapted layers,)`` max |scale B A| per adapted layer: the size of the update itself."""
        dtype = frozen[0][0].dtype
        mask = _first(cfg.bucket, size).astype(dtype)
        s = self.scale(size, dtype)
        return jnp.stack([jnp.max(jnp.abs(s * ((b * mask[None, :]) @ (a * mask[:, None])))) for a, b in params])

    def target(self, problem):
        return problem.y

    def frozen_of(self, problem):
        return problem.frozen

    def num_params(self, size: int, *, in_dim: int = 0, depth: int = 0, split=None,
                   frozen_shapes: Sequence[tuple] | None = None) -> int:
        """``r * sum_l (in_l + out_l)`` over the adapted layers (``frozen_shapes``: ``(out, in)`` per layer)."""
        if frozen_shapes is None:
            raise FTCInputError("frozen_shapes: the LoRA parameter count needs the frozen layers' shapes")
        shapes = [tuple(int(v) for v in s) for s in frozen_shapes]
        return int(size) * int(sum(shapes[l][0] + shapes[l][1] for l in self.adapted(len(shapes))))

    def to_dict(self) -> dict:
        return {"form": self.name, "size": "rank r of every adapted layer",
                "layers": None if self.layers is None else list(self.layers), "alpha": self.alpha,
                "scale": "alpha / r" if self.alpha is not None else "1",
                "init": "B = 0; A row j ~ U(-1/sqrt(in), 1/sqrt(in)) from fold_in(fold_in(key, l), j)",
                "target": "y (new labels) over all K; biases frozen"}


def make_form(name: str = "additive", *, layers=None, alpha=None):
    """A form from its name (``"additive"`` or ``"lora"``) and LoRA options."""
    if name == "additive":
        if layers is not None or alpha is not None:
            raise FTCInputError("form: layers and alpha are LoRA options; the additive form takes none")
        return Additive()
    if name == "lora":
        return LoRA(layers=layers, alpha=alpha)
    raise FTCInputError(f"form: unknown value {name!r}; choose one of {', '.join(FORMS)}")


def single_form(forms: Any, *, default):
    """One form for a batch: ``forms`` is a form, ``None`` (``default``) or a per-lane sequence.

    A per-lane sequence must hold a single form: a kernel compiles one form, so a batch that mixes
    forms is refused (split it by form and call the kernel once per form).
    """
    if forms is None:
        return default
    if isinstance(forms, (Additive, LoRA)):
        return forms
    if isinstance(forms, (list, tuple)):
        distinct = list(dict.fromkeys(forms))
        if not distinct:
            raise FTCInputError("form: empty list of forms")
        if len(distinct) > 1:
            raise FTCInputError(
                f"form: the batch mixes {len(distinct)} forms ({', '.join(repr(f) for f in distinct)}); "
                "one kernel call trains one form: split the lanes by form")
        return single_form(distinct[0], default=default)
    raise FTCInputError(f"form: {forms!r} is not a fine-tuning form (use ftcjax.Additive() or ftcjax.LoRA())")


def check_problems(form, problems) -> None:
    """Refuse a problem batch the form cannot train (LoRA needs the frozen net in the pytree)."""
    frozen = getattr(problems, "frozen", None)
    if isinstance(form, LoRA):
        if not frozen:
            raise FTCInputError(
                "problems: the lora form needs problems that carry their frozen network (make them with "
                "ftcjax.make_lora_problem / make_lora_problems); these have only f(x)")
        form.adapted(len(frozen))


def apply_one(form, params, frozen, x, size, cfg):
    """The fine-tuned model on ONE example ``x (d,)`` (a scalar); vmap it for batches."""
    return form.predict(params, frozen, x[:, None], size, cfg)[0]
