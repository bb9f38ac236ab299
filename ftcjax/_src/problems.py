"""Fine-tuning problems: the pytree a kernel trains on.

A problem is the data ``x``, the frozen network's outputs ``f_x``, the labels after the change ``y``,
the mask of changed samples, and the residual ``z = y - f_x`` that ``g`` must fit: ``z`` is exactly 0
off ``changed`` by construction (the unchanged labels are *defined* as the frozen outputs, so an
imperfect ``f`` never leaks into the problem; how well ``f`` fitted its own labels is reported in
``f_fit_mse``). ``N`` is a mask, not a shape: problems with different ``N`` batch together.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ftcjax._src.errors import FTCInputError

DATA = ("gaussian", "sphere", "collinear", "worst_case", "alternating")
LABELS = ("uniform", "gaussian", "rademacher")
FROZEN = ("interpolant", "random_relu", "pretrained")
DTYPES = ("float32", "float64")
# Structured instances fix z themselves (paper-notes section 4): built on the host, not under vmap.
_STRUCTURED = ("worst_case", "alternating")


class Problem(NamedTuple):
    """One fine-tuning instance (add a leading axis for a batch).

    Attributes:
      x: ``(K, d)`` inputs, pairwise distinct.
      f_x: ``(K,)`` outputs of the frozen pre-trained network.
      y: ``(K,)`` labels after the change (``= f_x`` on unchanged samples).
      changed: ``(K,)`` bool, True on the ``N`` changed samples.
      z: ``(K,)`` residual ``y - f_x``, exactly 0 where ``changed`` is False.
      f_fit_mse: ``()`` mean squared error of ``f`` on its original labels (0 for an ideal interpolant,
        NaN when unknown).
    """

    x: jax.Array
    f_x: jax.Array
    y: jax.Array
    changed: jax.Array
    z: jax.Array
    f_fit_mse: jax.Array

    @property
    def num_changed(self):
        """``N`` (an array: per instance for a batch)."""
        return jnp.sum(self.changed, axis=-1)


def _check_choice(name, value, allowed):
    if callable(value) and name == "frozen":
        return
    if value not in allowed:
        raise FTCInputError(f"{name}: unknown value {value!r}; choose one of {', '.join(allowed)}")


def _check_int(name, value, lo, hi=None):
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                                           and np.all(arr == np.round(arr))):
        raise FTCInputError(f"{name}: {value!r} must be an integer")
    if np.any(arr < lo):
        raise FTCInputError(f"{name}: {value!r} must be >= {lo}")
    if hi is not None and np.any(arr > hi[1]):
        raise FTCInputError(f"{name}: {value!r} exceeds {hi[0]} = {hi[1]}")


def is_data_file(data) -> bool:
    """True when ``data`` names a file of the user's own samples (``*.npz``), not a distribution."""
    return isinstance(data, str) and data.endswith(".npz")


def load_data_file(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``x (K, d)``, ``y (K,)`` (the labels ``f`` was trained on) and optional ``f_x (K,)`` of an ``.npz`` file.

    Raises :class:`FTCInputError` naming ``data`` and the file for a missing file, missing arrays, bad
    shapes, non-finite values or repeated samples.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except FileNotFoundError:
        raise FTCInputError(f"data: file {path!r} does not exist") from None
    except (OSError, ValueError) as e:
        raise FTCInputError(f"data: {path!r} is not a readable .npz file ({e})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise FTCInputError(f"data: {path!r} has no array {missing[0]!r} (it needs x (K, d), y (K,) and may "
                            f"have f_x (K,); it has {', '.join(sorted(arrays)) or 'none'})")
    x, y, f_x = arrays["x"], arrays["y"], arrays.get("f_x")
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] < 1:
        raise FTCInputError(f"data: {path!r}: x has shape {x.shape}, expected (K, d)")
    for name, a in (("y", y), ("f_x", f_x)):
        if a is not None and a.shape != (x.shape[0],):
            raise FTCInputError(f"data: {path!r}: {name} has shape {a.shape}, expected ({x.shape[0]},) to match x")
    for name, a in (("x", x), ("y", y), ("f_x", f_x)):
        if a is not None and (a.dtype.kind not in "fiu" or not np.isfinite(a).all()):
            raise FTCInputError(f"data: {path!r}: {name} must hold finite numbers")
    if np.unique(x, axis=0).shape[0] != x.shape[0]:
        raise FTCInputError(f"data: {path!r}: x has repeated samples (the theory needs distinct x)")
    return x, y, f_x


def validate_problem_args(*, K, d, N, data="gaussian", labels="uniform", frozen="interpolant",
                          dtype="float64") -> None:
    """Raise :class:`FTCInputError` naming the first bad argument of :func:`make_problem`."""
    _check_int("K", K, 1)
    _check_int("d", d, 1)
    _check_int("N", N, 0, ("K", K))
    if is_data_file(data):
        x, _, _ = load_data_file(data)
        if x.shape != (int(K), int(d)):
            raise FTCInputError(f"data: {data!r} holds K = {x.shape[0]} samples of d = {x.shape[1]}, but K = {K}, "
                                f"d = {d} were asked for")
    else:
        _check_choice("data", data, DATA)
    _check_choice("labels", labels, LABELS)
    _check_choice("frozen", frozen, FROZEN)
    _check_choice("dtype", dtype, DTYPES)
    if data in _STRUCTURED and np.ndim(N) != 0:
        raise FTCInputError(f"N: data={data!r} instances need one integer N, got an array")
    if data in _STRUCTURED:
        from ftcjax._src.worst_case import structured_problem

        why = structured_problem(data, int(N), int(K))
        if why is not None:
            raise FTCInputError(why)


def _inputs(key, K, d, data, dtype):
    if data == "gaussian":
        return jax.random.normal(key, (K, d), dtype)
    if data == "sphere":
        g = jax.random.normal(key, (K, d), dtype)
        return g / jnp.linalg.norm(g, axis=1, keepdims=True)
    if data == "collinear":
        # x_i = t_i u on a random line, t equally spaced in [-1, 1] (paper-notes section 4; the scale
        # keeps inputs O(1) for training).
        u = jax.random.normal(key, (d,), dtype)
        u = u / jnp.linalg.norm(u)
        t = jnp.linspace(-1.0, 1.0, K, dtype=dtype)
        return t[:, None] * u[None, :]
    raise AssertionError(data)


def _new_labels(key, K, labels, dtype):
    if labels == "uniform":
        return jax.random.uniform(key, (K,), dtype, -1.0, 1.0)
    if labels == "gaussian":
        return jax.random.normal(key, (K,), dtype)
    if labels == "rademacher":
        return jax.random.rademacher(key, (K,), dtype)
    raise AssertionError(labels)


def _random_relu(key, x, width=64):
    k1, k2, k3 = jax.random.split(key, 3)
    d = x.shape[1]
    w1 = jax.random.normal(k1, (width, d), x.dtype) / jnp.sqrt(jnp.asarray(d, x.dtype))
    b1 = jax.random.normal(k2, (width,), x.dtype)
    w2 = jax.random.normal(k3, (width,), x.dtype) / jnp.sqrt(jnp.asarray(width, x.dtype))
    return jax.nn.relu(x @ w1.T + b1[None, :]) @ w2


def pretrain_frozen(key, x, y, *, width: int = 256, steps: int = 3000, learning_rate: float = 3e-3):
    """Train a 2-layer ReLU net to interpolate ``y`` on ``x`` (the paper's pre-trained ``f``).

    Full-batch Adam with a cosine schedule, PyTorch-default init. Returns ``(f_x (K,), fit_mse ())``.
    """
    import optax

    from ftcjax._src import networks, schedules

    params = networks.init_mlp(key, width, in_dim=x.shape[1], depth=2, dtype=x.dtype)
    params, fit_mse = pretrain_mlp(params, x, y, steps=steps, learning_rate=learning_rate)
    return networks.forward(params, x.T), fit_mse


def pretrain_mlp(params, x, y, *, steps: int = 3000, learning_rate: float = 3e-3):
    """Train every layer of an MLP ``params`` on ``(x (K, d), y (K,))``: full-batch Adam, cosine schedule.

    One loop for the additive form's pre-trained ``f`` and LoRA's pre-trained frozen net.
    Returns ``(params, fit_mse ())``.
    """
    import optax

    from ftcjax._src import networks, schedules

    tx = optax.scale_by_adam()
    x_t = x.T

    def loss(p):
        return jnp.mean((networks.forward(p, x_t) - y) ** 2)

    def step(carry, t):
        p, s = carry
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 count with floats
            u, s = tx.update(jax.grad(loss)(p), s, p)
        lr = learning_rate * schedules.lr_multiplier("cosine", t, steps, x.dtype)
        return (jax.tree.map(lambda a, b: a - lr * b, p, u), s), None

    with jax.numpy_dtype_promotion("standard"):
        state = tx.init(params)
    (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(steps))
    return params, loss(params)


def _assemble(x, f_x, y_new, changed, f_fit_mse):
    y = jnp.where(changed, y_new, f_x)
    z = jnp.where(changed, y - f_x, jnp.zeros_like(f_x))
    return Problem(x=x, f_x=f_x, y=y, changed=changed, z=z, f_fit_mse=f_fit_mse)


def _make_random(key, K, d, N, data, labels, frozen, dtype, given=None):
    """A problem on drawn inputs and original labels, or on ``given = (x, y, f_x or None)`` from a file."""
    kx, kmask, klab, korig, kf = (jax.random.fold_in(key, i) for i in range(5))
    if given is None:
        x = _inputs(kx, K, d, data, dtype)
        y_orig = jax.random.uniform(korig, (K,), dtype, -1.0, 1.0)
    else:
        x, y_orig = jnp.asarray(given[0], dtype), jnp.asarray(given[1], dtype)
    # N random positions: the first N of a random permutation (N may be traced).
    changed = jax.random.permutation(kmask, K) < N
    if given is not None and given[2] is not None:  # the file says what the frozen f outputs
        f_x = jnp.asarray(given[2], dtype)
        fit = jnp.mean((f_x - y_orig) ** 2)
    elif callable(frozen):
        out = jnp.asarray(frozen(x))
        if out.shape not in ((K,), (K, 1)):
            raise FTCInputError(f"frozen: the callable returned shape {tuple(out.shape)} for x of shape "
                                f"{tuple(x.shape)}; it must return f(x) of shape ({K},)")
        f_x = out.astype(dtype).reshape(K)
        fit = jnp.full((), jnp.nan, dtype)  # a user's f was not trained on y_orig
    elif frozen == "interpolant":
        # An ideal pre-trained net interpolating the original labels (one exists by memorisation).
        f_x, fit = y_orig, jnp.zeros((), dtype)
    elif frozen == "random_relu":
        f_x, fit = _random_relu(kf, x), jnp.full((), jnp.nan, dtype)
    else:
        f_x, fit = pretrain_frozen(kf, x, y_orig)
    return _assemble(x, f_x, _new_labels(klab, K, labels, dtype), changed, fit)


def _make_structured(key, K, d, N, data, dtype):
    from ftcjax._src import worst_case

    build = worst_case.worst_case_two_layer if data == "worst_case" else worst_case.alternating_turns
    t, z, changed = build(int(N), int(K))
    t = np.asarray(t, np.float64).reshape(K)
    # Rescale the line to [-1, 1] (scale-free: only the order and equal spacing matter) and embed it
    # along a random direction of R^d.
    t = 2.0 * (t - t.min()) / max(t.max() - t.min(), 1.0) - 1.0 if K > 1 else t * 0.0
    u = jax.random.normal(jax.random.fold_in(key, 0), (d,), dtype)
    u = u / jnp.linalg.norm(u)
    x = jnp.asarray(t, dtype)[:, None] * u[None, :]
    zero = jnp.zeros((K,), dtype)
    return _assemble(x, zero, jnp.asarray(z, dtype), jnp.asarray(changed, bool), jnp.zeros((), dtype))


def make_problem(key, *, K: int, d: int, N, data: str = "gaussian", labels: str = "uniform",
                 frozen: str | Callable = "interpolant", dtype: str = "float64") -> Problem:
    """Draw one fine-tuning problem.

    Args:
      key: PRNG key; every random choice (inputs, changed set, labels, ``f``) folds from it.
      K: number of samples; d: input dimension; N: number of changed labels (int, may be traced).
      data: ``"gaussian"`` (``N(0, I_d)``, the paper's), ``"sphere"`` (uniform on the unit sphere),
        a path ``"*.npz"`` of your own samples (``x (K, d)``, the original labels ``y (K,)`` and
        optionally the frozen net's outputs ``f_x (K,)``; without ``f_x``, ``frozen`` says what ``f`` is),
        ``"collinear"`` (equally spaced on a random line), ``"worst_case"`` (the 2-layer worst case of
        paper-notes section 4, ``K >= 3N + 2``) or ``"alternating"`` (alternating turns, forcing
        ``K - 2`` neurons); the last two fix ``z`` themselves.
      labels: distribution of the new labels: ``"uniform"`` ``U[-1, 1]`` (the paper's), ``"gaussian"``,
        ``"rademacher"``.
      frozen: the frozen ``f``: ``"interpolant"`` (ideal net fitting the original ``U[-1, 1]`` labels),
        ``"random_relu"`` (a random width-64 ReLU net), ``"pretrained"`` (a 2-layer net trained on the
        original labels, see :func:`pretrain_frozen`), or any callable ``x (K, d) -> (K,)`` (a user's
        JAX or flax model).
      dtype: ``"float64"`` (reference) or ``"float32"``.
    Returns:
      A :class:`Problem` with arrays of shapes ``x (K, d)``, others ``(K,)``.
    """
    validate_problem_args(K=K, d=d, N=N, data=data, labels=labels, frozen=frozen, dtype=dtype)
    given = load_data_file(data) if is_data_file(data) else None
    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        if data in _STRUCTURED:
            return _make_structured(key, int(K), int(d), N, data, jdtype)
        return _check_frozen_output(_make_random(key, int(K), int(d), N, data, labels, frozen, jdtype, given),
                                    frozen)


def _check_frozen_output(problem: Problem, frozen) -> Problem:
    """A user's ``f`` must give finite outputs: NaN would flow through training and read as censored."""
    if callable(frozen) and not isinstance(problem.f_x, jax.core.Tracer):
        bad = ~np.isfinite(np.asarray(problem.f_x))
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise FTCInputError(f"frozen: the callable returned a non-finite value {np.asarray(problem.f_x)[tuple(idx)]}"
                                f" at index {tuple(int(i) for i in idx)}; f(x) must be finite")
    return problem


def make_problems(key, *, num: int, K: int, d: int, N, data: str = "gaussian", labels: str = "uniform",
                  frozen: str | Callable = "interpolant", dtype: str = "float64") -> Problem:
    """``num`` problems with a leading axis; problem ``i`` uses ``fold_in(key, i)``.

    ``N`` is an int or a ``(num,)`` array (different ``N`` batch together: it is a mask).
    """
    _check_int("num", num, 1)
    validate_problem_args(K=K, d=d, N=N, data=data, labels=labels, frozen=frozen, dtype=dtype)
    if np.shape(N) not in ((), (num,)):
        raise FTCInputError(f"N: shape {np.shape(N)} must be a scalar or (num,) = ({num},)")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    n = np.broadcast_to(np.asarray(N), (num,))
    if data in _STRUCTURED or is_data_file(data):
        probs = [make_problem(keys[i], K=K, d=d, N=int(n[i]), data=data, labels=labels,
                              frozen=frozen, dtype=dtype) for i in range(num)]
        return stack_problems(probs)
    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        make = jax.vmap(lambda k, nn: _make_random(k, int(K), int(d), nn, data, labels, frozen, jdtype))
        return _check_frozen_output(make(keys, jnp.asarray(n)), frozen)


def stack_problems(problems) -> Problem:
    """Stack same-shape problems (one each, ``x (K, d)``) into a batch with a leading axis.

    LoRA problems (:func:`ftcjax.make_lora_problem`, frozen nets of one shape) stack the same way.
    """
    from ftcjax._src.lora import LoRAProblem  # lora imports this module: not at the top

    problems = list(problems)
    if not problems:
        raise FTCInputError("problems: need at least one problem to stack")
    kind = type(problems[0]) if isinstance(problems[0], LoRAProblem) else Problem
    for i, p in enumerate(problems):
        if not isinstance(p, kind):
            raise FTCInputError(f"problems[{i}]: expected an ftcjax.{kind.__name__}, got {type(p).__name__}")
        if np.ndim(p.x) != 2:
            raise FTCInputError(f"problems[{i}]: x has shape {tuple(np.shape(p.x))}; stack single problems x (K, d)")
        if np.shape(p.x) != np.shape(problems[0].x):
            (k0, d0), (k, d) = np.shape(problems[0].x), np.shape(p.x)
            raise FTCInputError(f"problems[{i}]: K = {k}, d = {d} differ from problems[0] (K = {k0}, d = {d0}); "
                                "a batch needs one K and d")
    return jax.tree.map(lambda *a: jnp.stack(a), *problems)


def problem_from_arrays(x, y, changed, f_x=None) -> Problem:
    """Wrap user data as a problem, after validating it on the host.

    Args:
      x: ``(K, d)`` inputs, finite and pairwise distinct (the theory needs distinct samples).
      y: ``(K,)`` labels after the change.
      changed: ``(K,)`` bool mask of the changed samples.
      f_x: optional ``(K,)`` outputs of the frozen network. If omitted, ``f`` is taken to fit the
        unchanged labels exactly and to output 0 on the changed samples, i.e. ``z = y`` on them.
    The residual is ``z = y - f_x`` on changed samples and exactly 0 elsewhere; the mismatch of ``f`` on
    unchanged samples is reported as ``f_fit_mse``. The dtype follows ``x`` (float64 stays float64
    only with x64 enabled).
    """
    x = np.asarray(x)
    for name, arr in (("x", x), ("y", y), ("f_x", f_x)):
        if arr is None:
            continue
        a = np.asarray(arr)
        if np.iscomplexobj(a):
            raise FTCInputError(f"{name}: complex values are not supported (give real arrays)")
        if a.dtype.kind not in "biuf":
            raise FTCInputError(f"{name}: dtype {a.dtype} is not numeric")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise FTCInputError(f"x: shape {x.shape} must be (K, d) with K >= 1")
    K = x.shape[0]
    # Every check runs in the dtype the problem will have: values distinct or finite in float64 may
    # collide or overflow once cast to float32.
    target = np.float64 if (x.dtype == np.float64 and jax.config.jax_enable_x64) else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(target)
        y = np.asarray(y).astype(target)
    changed = np.asarray(changed)
    if y.shape != (K,):
        raise FTCInputError(f"y: shape {y.shape} must be ({K},) to match x")
    if changed.shape != (K,) or changed.dtype != bool:
        raise FTCInputError(f"changed: must be a bool array of shape ({K},), got {changed.dtype} {changed.shape}")
    for name, arr in (("x", x), ("y", y)):
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            raise FTCInputError(f"{name}: non-finite value {float(arr[tuple(idx)])} at index "
                                f"{tuple(int(i) for i in idx)} in {np.dtype(target).name}")
    uniq, first, counts = np.unique(x, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        rows = np.flatnonzero((x == dup).all(axis=1))
        raise FTCInputError(f"x: duplicate samples at rows {rows[:4].tolist()} in "
                            f"{np.dtype(target).name} (the theory needs distinct x)")
    if f_x is None:
        f = np.where(changed, 0.0, y).astype(target)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            f = np.asarray(f_x).astype(target)
        if f.shape != (K,):
            raise FTCInputError(f"f_x: shape {f.shape} must be ({K},) to match x")
        if not np.isfinite(f).all():
            raise FTCInputError(f"f_x: non-finite value {float(f[~np.isfinite(f)][0])} at index "
                                f"{int(np.flatnonzero(~np.isfinite(f))[0])} in {np.dtype(target).name}")
    with np.errstate(over="ignore", invalid="ignore"):
        z = y - f
    if not np.isfinite(z).all():
        i = int(np.flatnonzero(~np.isfinite(z))[0])
        raise FTCInputError(f"y: the residual y - f_x overflows {np.dtype(target).name} at index {i}")
    unchanged = ~changed
    fit = float(np.mean((y[unchanged].astype(np.float64) - f[unchanged]) ** 2)) if unchanged.any() else 0.0
    dtype = jnp.float64 if target == np.float64 else jnp.float32
    xj = jnp.asarray(x, dtype)
    fj = jnp.asarray(f, dtype)
    return _assemble(xj, fj, jnp.asarray(y, dtype), jnp.asarray(changed), jnp.asarray(fit, dtype))
