"""A flax model works as the frozen network f (flax is optional; CI installs it for this file)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax

linen = pytest.importorskip("flax.linen")


class MLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(1)(linen.relu(linen.Dense(16)(x)))[..., 0]


def test_flax_model_is_the_frozen_network_and_g_fine_tunes_it():
    model = MLP()
    x_probe = jnp.zeros((1, 3))
    variables = model.init(jax.random.key(0), x_probe)

    def frozen(x):
        return model.apply(variables, x.astype(jnp.float32)).astype(x.dtype)

    problem = ftcjax.make_problem(jax.random.key(1), K=24, d=3, N=3, frozen=frozen)
    expected = np.asarray(model.apply(variables, np.asarray(problem.x, np.float32)))
    np.testing.assert_allclose(np.asarray(problem.f_x), expected, rtol=1e-6)
    z = np.asarray(problem.z)
    assert np.all(z[~np.asarray(problem.changed)] == 0.0)
    protocol = ftcjax.Protocol(depth=2, steps=400, segment=200, restarts=2, criterion="relative",
                               rel_eps=0.05, learning_rate=3e-2, unroll=1)
    result = ftcjax.min_width(problem, key=jax.random.key(2), protocol=protocol, widths=[2, 4, 8, 16])
    assert not result.censored and result.min_width is not None
