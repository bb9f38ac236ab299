import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax
from ftcjax._src import networks


@pytest.mark.parametrize("m,expected", [(2, (1, 1)), (5, (2, 3)), (24, (12, 12)), (7, (3, 4))])
def test_three_layer_split_puts_ceil_half_in_second_layer(m, expected):
    assert ftcjax.hidden_widths(m, 3) == expected


def test_hidden_widths_sum_to_m_for_any_depth_and_split():
    for depth in (2, 3, 4, 5):
        for m in range(depth - 1, 40):
            w = ftcjax.hidden_widths(m, depth)
            assert sum(w) == m and min(w) >= 1 and max(w) - min(w) <= 1
    assert ftcjax.hidden_widths(9, 3, split=(1, 2)) == (3, 6)


def test_hidden_widths_traced_equals_python():
    f = jax.jit(lambda m: jnp.stack(ftcjax.hidden_widths(m, 4, (1, 2, 3))))
    for m in range(6, 30):
        assert tuple(int(v) for v in f(m)) == ftcjax.hidden_widths(m, 4, (1, 2, 3))


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_first_m_neurons_do_not_depend_on_bucket(depth):
    key = jax.random.key(3)
    m = 6
    small = ftcjax.init_mlp(key, m, in_dim=5, depth=depth, bucket=m)
    big = ftcjax.init_mlp(key, m, in_dim=5, depth=depth, bucket=20)
    trimmed_small = ftcjax.to_layers(small, m, depth=depth)
    trimmed_big = ftcjax.to_layers(big, m, depth=depth)
    for (ws, bs), (wb, bb) in zip(trimmed_small, trimmed_big):
        np.testing.assert_array_equal(ws, wb)
        np.testing.assert_array_equal(bs, bb)
    # Padded neurons are exactly zero, so they cannot contribute.
    sizes = ftcjax.hidden_widths(m, depth)
    for (w, b), d in zip(big[:-1], sizes):
        assert not np.any(np.asarray(w)[d:]) and not np.any(np.asarray(b)[d:])


def test_masked_neurons_get_zero_gradient_and_no_output():
    key = jax.random.key(0)
    depth, m, bucket = 3, 5, 12
    params = ftcjax.init_mlp(key, bucket, in_dim=3, depth=depth)  # all neurons non-zero
    masks = ftcjax.neuron_masks(m, bucket, depth)
    x = jax.random.normal(jax.random.key(1), (3, 17))
    z = jax.random.normal(jax.random.key(2), (17,))
    grads = jax.grad(lambda p: jnp.sum((ftcjax.forward(p, x, masks) - z) ** 2))(params)
    for (gw, gb), mask in zip(grads[:-1], masks):
        off = ~np.asarray(mask)
        assert off.any()
        assert not np.any(np.asarray(gw)[off]) and not np.any(np.asarray(gb)[off])
    # Output weights of masked neurons get no gradient either.
    off_last = ~np.asarray(masks[-1])
    assert not np.any(np.asarray(grads[-1][0])[:, off_last])
    # The masked network equals the trimmed network.
    trimmed = ftcjax.from_layers(ftcjax.to_layers(ftcjax.mask_params(params, masks), m, depth=depth),
                                 dtype=jnp.float32)
    np.testing.assert_allclose(ftcjax.forward(params, x, masks), ftcjax.forward(trimmed, x), rtol=1e-6)


def test_apply_mlp_on_one_example_matches_batch_forward():
    params = ftcjax.init_mlp(jax.random.key(4), 7, in_dim=2, depth=3)
    x = jax.random.normal(jax.random.key(5), (9, 2))
    per_example = jax.vmap(lambda xi: ftcjax.apply_mlp(params, xi))(x)
    np.testing.assert_allclose(per_example, ftcjax.forward(params, x.T), rtol=1e-6)


def test_init_bounds_use_true_fan_in():
    params = ftcjax.init_mlp(jax.random.key(6), 8, in_dim=64, depth=3, bucket=40)
    w1 = np.asarray(params[0][0])
    assert np.abs(w1).max() <= 1 / np.sqrt(64) + 1e-7
    w2 = np.asarray(params[1][0])[:4, :4]  # true fan-in of layer 2 is d1 = 4, not the bucket's 20
    assert np.abs(w2).max() <= 1 / np.sqrt(4) + 1e-7 and np.abs(w2).max() > 1 / np.sqrt(20)


def test_bad_depth_and_split():
    with pytest.raises(ftcjax.FTCInputError, match="depth"):
        ftcjax.hidden_widths(4, 1)
    with pytest.raises(ftcjax.FTCInputError, match="split"):
        ftcjax.hidden_widths(4, 3, split=(1,))
    assert networks.smallest_valid_width(3, (1, 3)) == 4  # floor(m/4) >= 1 needs m >= 4
