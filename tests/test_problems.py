import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax


@pytest.mark.parametrize("data", ["gaussian", "sphere", "collinear"])
@pytest.mark.parametrize("frozen", ["interpolant", "random_relu"])
def test_residual_is_exactly_zero_off_changed(data, frozen):
    p = ftcjax.make_problem(jax.random.key(0), K=50, d=3, N=7, data=data, frozen=frozen)
    assert p.x.shape == (50, 3) and p.z.shape == (50,) and p.x.dtype == jnp.float64
    changed = np.asarray(p.changed)
    assert changed.sum() == 7
    z = np.asarray(p.z)
    assert np.all(z[~changed] == 0.0)
    np.testing.assert_array_equal(z[changed], np.asarray(p.y - p.f_x)[changed])
    np.testing.assert_array_equal(np.asarray(p.y)[~changed], np.asarray(p.f_x)[~changed])
    assert len(np.unique(np.asarray(p.x), axis=0)) == 50


def test_data_distributions_have_their_shape():
    sphere = ftcjax.make_problem(jax.random.key(1), K=30, d=4, N=3, data="sphere")
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sphere.x), axis=1), 1.0, rtol=1e-12)
    line = np.asarray(ftcjax.make_problem(jax.random.key(1), K=30, d=4, N=3, data="collinear").x)
    assert np.linalg.matrix_rank(line, tol=1e-10) == 1
    labels = ftcjax.make_problem(jax.random.key(2), K=200, d=2, N=200, labels="rademacher")
    assert set(np.unique(np.asarray(labels.y))) <= {-1.0, 1.0}


def test_batched_problems_mix_n_and_match_single_draws():
    key = jax.random.key(3)
    n = np.array([0, 1, 5, 20])
    batch = ftcjax.make_problems(key, num=4, K=20, d=2, N=n)
    np.testing.assert_array_equal(np.asarray(batch.changed).sum(1), n)
    single = ftcjax.make_problem(jax.random.fold_in(key, 2), K=20, d=2, N=5)
    np.testing.assert_array_equal(np.asarray(batch.z[2]), np.asarray(single.z))


def test_same_key_same_problem_bit_for_bit():
    a = ftcjax.make_problem(jax.random.key(9), K=40, d=3, N=4, frozen="random_relu")
    b = ftcjax.make_problem(jax.random.key(9), K=40, d=3, N=4, frozen="random_relu")
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_user_callable_is_the_frozen_network():
    w = np.array([1.0, -2.0, 0.5])  # float64: the callable runs on float64 x
    p = ftcjax.make_problem(jax.random.key(0), K=25, d=3, N=5, frozen=lambda x: jnp.tanh(x @ w))
    np.testing.assert_allclose(np.asarray(p.f_x), np.tanh(np.asarray(p.x) @ np.asarray(w)), rtol=1e-12)
    assert np.isnan(float(p.f_fit_mse))


def test_pretrained_frozen_reports_its_fit():
    p = ftcjax.make_problem(jax.random.key(0), K=20, d=2, N=3, frozen="pretrained")
    fit = float(p.f_fit_mse)
    assert np.isfinite(fit) and 0.0 <= fit < 0.05  # a width-256 net nearly interpolates 20 points
    assert np.all(np.asarray(p.z)[~np.asarray(p.changed)] == 0.0)


def test_structured_instances_come_from_worst_case_module():
    from ftcjax._src import worst_case

    p = ftcjax.make_problem(jax.random.key(0), K=20, d=2, N=4, data="worst_case")
    _, z, changed = worst_case.worst_case_two_layer(4, 20)
    np.testing.assert_array_equal(np.asarray(p.z), z)
    np.testing.assert_array_equal(np.asarray(p.changed), changed)
    assert np.linalg.matrix_rank(np.asarray(p.x), tol=1e-10) == 1


def test_problem_from_arrays_defaults_and_fit_report():
    x = np.arange(6, dtype=np.float64).reshape(3, 2)
    y = np.array([1.0, 2.0, 3.0])
    changed = np.array([False, True, False])
    p = ftcjax.problem_from_arrays(x, y, changed)
    np.testing.assert_allclose(np.asarray(p.z), [0.0, 2.0, 0.0])
    p = ftcjax.problem_from_arrays(x, y, changed, f_x=np.array([0.5, 1.5, 3.0]))
    np.testing.assert_allclose(np.asarray(p.z), [0.0, 0.5, 0.0])
    assert float(p.f_fit_mse) == pytest.approx(0.125)


@pytest.mark.parametrize("kwargs,field", [
    (dict(K=10, d=2, N=11), "N: 11 exceeds K = 10"),
    (dict(K=10, d=2, N=-1), "N: -1"),
    (dict(K=0, d=2, N=0), "K: 0"),
    (dict(K=10, d=0, N=1), "d: 0"),
    (dict(K=10, d=2, N=1, data="cube"), "data: unknown value 'cube'"),
    (dict(K=10, d=2, N=1, labels="beta"), "labels"),
    (dict(K=10, d=2, N=1, frozen="resnet"), "frozen"),
    (dict(K=10, d=2, N=1, dtype="float16"), "dtype"),
    (dict(K=10, d=2, N=2.5), "N: 2.5 must be an integer"),
])
def test_bad_problem_arguments_name_the_argument(kwargs, field):
    with pytest.raises(ftcjax.FTCInputError, match=field.replace("(", r"\(")):
        ftcjax.make_problem(jax.random.key(0), **kwargs)


def test_bad_user_arrays_name_the_argument():
    x = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    ok = np.array([False, True, False])
    with pytest.raises(ftcjax.FTCInputError, match="x: non-finite value nan"):
        ftcjax.problem_from_arrays(np.where(x == 2.0, np.nan, x), [1.0, 2.0, 3.0], ok)
    with pytest.raises(ftcjax.FTCInputError, match="y: non-finite value inf"):
        ftcjax.problem_from_arrays(x, [1.0, np.inf, 3.0], ok)
    with pytest.raises(ftcjax.FTCInputError, match="f_x: non-finite"):
        ftcjax.problem_from_arrays(x, [1.0, 2.0, 3.0], ok, f_x=[0.0, np.nan, 0.0])
    with pytest.raises(ftcjax.FTCInputError, match="x: duplicate samples at rows \\[0, 2\\]"):
        ftcjax.problem_from_arrays(np.array([[0.0, 1.0], [1.0, 2.0], [0.0, 1.0]]), [1.0, 2.0, 3.0], ok)
    with pytest.raises(ftcjax.FTCInputError, match="y: shape"):
        ftcjax.problem_from_arrays(x, [1.0, 2.0], ok)
    with pytest.raises(ftcjax.FTCInputError, match="changed"):
        ftcjax.problem_from_arrays(x, [1.0, 2.0, 3.0], [0, 1, 0])
