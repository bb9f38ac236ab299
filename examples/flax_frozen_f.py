"""A real flax model as the frozen pre-trained network f.

Train a flax MLP on the original labels, freeze it, change N labels, and measure the smallest
trainable 2-layer g that fine-tunes it. Run: python examples/flax_frozen_f.py (needs `pip install flax`).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

import ftcjax


class MLP(nn.Module):
    width: int = 128

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(nn.relu(nn.Dense(self.width)(x)))[..., 0]


def pretrained_flax_f(key, x, y, steps=2000):
    """Fit a flax MLP to (x, y) with Adam; returns the frozen callable ``x -> (K,)``."""
    model = MLP()
    params = model.init(key, x)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean((model.apply(p, x) - y) ** 2))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return lambda inputs: model.apply(params, inputs)


def main():
    key = jax.random.key(0)
    K, d, N = 64, 3, 4
    x = jax.random.normal(jax.random.fold_in(key, 0), (K, d))
    y_orig = jax.random.uniform(jax.random.fold_in(key, 1), (K,), minval=-1.0, maxval=1.0)
    f = pretrained_flax_f(jax.random.fold_in(key, 2), x, y_orig)
    changed = np.zeros(K, bool)
    changed[:N] = True
    y_new = np.where(changed, np.asarray(jax.random.uniform(jax.random.fold_in(key, 3), (K,))), np.asarray(f(x)))
    problem = ftcjax.problem_from_arrays(np.asarray(x), y_new, changed, f_x=np.asarray(f(x)))
    protocol = ftcjax.Protocol(depth=2, steps=2000, restarts=4, criterion="relative", rel_eps=1e-2,
                               dtype="float32", learning_rate=2e-2)
    result = ftcjax.min_width(problem, key=jax.random.fold_in(key, 4), protocol=protocol,
                              widths=ftcjax.width_grid(1, 32))
    print(f"frozen flax f fit its labels to mse {float(jnp.mean((f(x) - y_orig) ** 2)):.2e}; "
          f"smallest trainable g: {result.min_width} (censored: {result.censored})")


if __name__ == "__main__":
    main()
