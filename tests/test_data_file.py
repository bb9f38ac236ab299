"""Your own data in a sweep: data = "file.npz" (x, y, optionally f_x) as a grid value."""
import jax
import numpy as np
import pytest

import ftcjax
from ftcjax import FTCInputError
from ftcjax.sweep.cells import instance_problems
from ftcjax.sweep.plan import make_plan
from ftcjax.sweep.spec import SpecError, parse_spec


def _spec(path, K=12, d=3, extra=""):
    return (f'[grid]\nN = [1, 4]\nK = {K}\nd = {d}\ndata = "{path}"\n{extra}[train]\nsteps = 10\n'
            "[width]\nupper = 4\n")


def test_a_sweep_on_a_data_file(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.uniform(-1, 1, 12)
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    spec = parse_spec(_spec(path))
    insts = [i for c in make_plan(spec) for i in c.instances]
    probs = instance_problems(spec.seed, insts)
    for inst, p in zip(insts, probs):
        np.testing.assert_array_equal(np.asarray(p.x), x)           # the file's samples, untouched
        assert int(np.asarray(p.changed).sum()) == inst.cell["N"]   # N random positions changed
        np.testing.assert_array_equal(np.asarray(p.f_x), y)          # interpolant: f fits the file's y
        z, ch = np.asarray(p.z), np.asarray(p.changed)
        assert np.all(z[~ch] == 0) and np.all(z[ch] != 0)
    # with f_x in the file, it is the frozen net; its misfit on y is reported
    f = y + 0.1
    np.savez(path, x=x, y=y, f_x=f)
    p = ftcjax.make_problem(jax.random.key(0), K=12, d=3, N=2, data=str(path))
    np.testing.assert_allclose(np.asarray(p.f_x), f)
    assert float(p.f_fit_mse) == pytest.approx(0.01)


def test_bad_data_files_are_named(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((5, 2)), y=np.zeros(5))
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(tmp_path / "none.npz"))
    assert "grid.data: file" in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(SpecError, match="repeated samples"):
        parse_spec(_spec(path))
    np.savez(path, x=np.arange(10.0).reshape(5, 2), y=np.zeros(4))
    with pytest.raises(SpecError, match=r"y has shape \(4,\), expected \(5,\)"):
        parse_spec(_spec(path))
    np.savez(path, x=np.arange(10.0).reshape(5, 2), y=np.zeros(5))
    with pytest.raises(SpecError, match="holds K = 5 samples of d = 2, but K = 12, d = 3"):
        parse_spec(_spec(path))
    np.savez(path, y=np.zeros(5))
    with pytest.raises(FTCInputError, match="has no array 'x'"):
        ftcjax.make_problem(jax.random.key(0), K=5, d=2, N=1, data=str(path))
