"""Fine-tuning forms: the LoRA form's masking, its frozen-network identity and parameter counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax
from ftcjax._src import forms, networks
from ftcjax._src.protocol import static_config

# unroll=1 keeps compile times short in tests.
SMALL = dict(steps=60, segment=20, restarts=1, learning_rate=5e-2, criterion="strict", unroll=1)


def _cfg(bucket, in_dim=2, depth=2, K=8):
    return static_config(ftcjax.Protocol(depth=depth, **SMALL), bucket=bucket, in_dim=in_dim,
                         num_samples=K)


def _frozen(seed=0, d=2, width=6, depth=3):
    with jax.enable_x64(True):
        return ftcjax.random_frozen(jax.random.key(seed), in_dim=d, width=width, depth=depth)


def _random_adapters(form, frozen, bucket, seed):
    """Adapters with every entry (padded ones too) random: masking, not zeros, must do the work."""
    with jax.enable_x64(True):
        shapes = [(w.shape[1], w.shape[0]) for w, _ in (frozen[l] for l in form.adapted(len(frozen)))]
        keys = jax.random.split(jax.random.key(seed), 2 * len(shapes))
        return tuple((jax.random.normal(keys[2 * i], (bucket, n_in), jnp.float64),
                      jax.random.normal(keys[2 * i + 1], (n_out, bucket), jnp.float64))
                     for i, (n_in, n_out) in enumerate(shapes))


# --- the LoRA form on its own ------------------------------------------------------------------------

def test_rank_zero_reproduces_the_frozen_network_bit_for_bit():
    frozen = _frozen()
    form = ftcjax.LoRA(alpha=4.0)
    with jax.enable_x64(True):
        x_t = jax.random.normal(jax.random.key(1), (2, 10), jnp.float64)
        params = _random_adapters(form, frozen, bucket=5, seed=2)
        got = form.predict(params, frozen, x_t, jnp.int32(0), _cfg(5))
        want = networks.forward(frozen, x_t)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        # ...and a nonzero rank does change it (the check above can fail).
        moved = form.predict(params, frozen, x_t, jnp.int32(1), _cfg(5))
        assert np.max(np.abs(np.asarray(moved - want))) > 1e-3


@pytest.mark.parametrize("layers", [None, (-1,), (0, 2)])
def test_masked_rank_components_get_exactly_zero_gradient(layers):
    frozen = _frozen()
    form = ftcjax.LoRA(layers=layers)
    rank, bucket = 2, 5
    with jax.enable_x64(True):
        x_t = jax.random.normal(jax.random.key(3), (2, 12), jnp.float64)
        y = jax.random.normal(jax.random.key(4), (12,), jnp.float64)
        params = _random_adapters(form, frozen, bucket, seed=5)

        def loss(p):
            return jnp.mean((form.predict(p, frozen, x_t, jnp.int32(rank), _cfg(bucket)) - y) ** 2)

        grads = jax.grad(loss)(params)
    for ga, gb in grads:
        ga, gb = np.asarray(ga), np.asarray(gb)
        assert np.all(ga[rank:] == 0.0) and np.all(gb[:, rank:] == 0.0)
        # the live components do learn (otherwise the zeros above would prove nothing)
        assert np.abs(ga[:rank]).max() > 0 and np.abs(gb[:, :rank]).max() > 0


def test_first_rank_components_do_not_depend_on_the_bucket():
    frozen = _frozen()
    form = ftcjax.LoRA()
    with jax.enable_x64(True):
        key = jax.random.key(7)
        small = form.init(key, jnp.int32(3), _cfg(3), frozen)
        big = form.init(key, jnp.int32(3), _cfg(9), frozen)
    assert len(small) == len(frozen)
    for (a3, b3), (a9, b9) in zip(small, big):
        np.testing.assert_array_equal(np.asarray(a9)[:3], np.asarray(a3))
        assert np.all(np.asarray(a9)[3:] == 0) and np.all(np.asarray(b9) == 0) and np.all(np.asarray(b3) == 0)
        assert np.abs(np.asarray(a3)).min() > 0  # the usual LoRA init: A random, B = 0


def test_parameter_counts():
    frozen_shapes = [(16, 2), (16, 16), (1, 16)]
    assert ftcjax.LoRA().num_params(3, frozen_shapes=frozen_shapes) == 3 * (18 + 32 + 17)
    assert ftcjax.LoRA(layers=(-1,)).num_params(2, frozen_shapes=frozen_shapes) == 2 * 17
    add = ftcjax.Additive()
    assert add.num_params(3, in_dim=2, depth=2) == 3 * 3 + 4
    # depth 3, m = 5 -> hidden (2, 3): (2+1)*2 + (2+1)*3 + (3+1)*1
    assert add.num_params(5, in_dim=2, depth=3) == 6 + 9 + 4
    # the count agrees with the initialised parameters' live entries
    with jax.enable_x64(True):
        p = networks.init_mlp(jax.random.key(0), 5, in_dim=2, depth=3, bucket=9)
    assert sum(int(np.count_nonzero(np.asarray(a))) for a in jax.tree.leaves(p)) == 19


def test_lora_problem_pairs_with_make_problem():
    key = jax.random.key(12)
    a = ftcjax.make_problem(key, K=14, d=3, N=4)
    b = ftcjax.make_lora_problem(key, K=14, d=3, N=4, width=7, depth=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.changed, b.changed)
    ch = np.asarray(a.changed)
    np.testing.assert_array_equal(np.asarray(a.y)[ch], np.asarray(b.y)[ch])
    with jax.enable_x64(True):
        np.testing.assert_array_equal(b.f_x, networks.forward(b.frozen, b.x.T))
    assert np.all(np.asarray(b.z)[~ch] == 0.0)
    assert [w.shape for w, _ in b.frozen] == [(7, 3), (7, 7), (1, 7)]


def test_pretrained_frozen_net_fits_its_original_labels():
    p = ftcjax.make_lora_problem(jax.random.key(13), K=8, d=2, N=2, frozen="pretrained", width=32,
                                 depth=2, pretrain_steps=1500)
    assert float(p.f_fit_mse) < 1e-2


def test_bad_user_frozen_net():
    with pytest.raises(ftcjax.FTCInputError, match="do not chain"):
        ftcjax.make_lora_problem(jax.random.key(0), K=4, d=2, N=1,
                                 frozen=[(np.ones((3, 5)), np.ones(3)), (np.ones((1, 3)), np.ones(1))])
    with pytest.raises(ftcjax.FTCInputError, match="frozen"):
        ftcjax.make_lora_problem(jax.random.key(0), K=4, d=2, N=1, frozen="interpolant")
    probs = ftcjax.make_lora_problems(jax.random.key(19), num=1, K=8, d=2, N=1, width=4)
