"""Fine-tuning forms: the LoRA form's masking, its frozen-network identity, a provable rank-1 case, and
no regression of the additive form through the new contract."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ftcjax
from ftcjax._src import forms, networks
from ftcjax._src.protocol import static_config

# unroll=1 keeps compile times short in tests.
SMALL = dict(steps=60, segment=20, restarts=1, learning_rate=5e-2, criterion="strict", unroll=1)
REFERENCE = Path(__file__).with_name("data") / "additive_reference.npz"


def _cfg(bucket, in_dim=2, depth=2, K=8, form=None):
    return static_config(ftcjax.Protocol(depth=depth, **SMALL), bucket=bucket, in_dim=in_dim,
                         num_samples=K, form=form)


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


def test_lora_bookkeeping_live_mask_dead_and_update_size():
    frozen = _frozen()
    form = ftcjax.LoRA(alpha=2.0)
    with jax.enable_x64(True):
        params = _random_adapters(form, frozen, bucket=5, seed=6)
        live = form.live_mask(params, jnp.int32(2), _cfg(5))
        for (a, b), (la, lb) in zip(params, live):
            assert la.shape == a.shape and lb.shape == b.shape
            np.testing.assert_array_equal(np.asarray(la)[:, 0], [1, 1, 0, 0, 0])
            np.testing.assert_array_equal(np.asarray(lb)[0], [1, 1, 0, 0, 0])
        x_t = jax.random.normal(jax.random.key(1), (2, 10), jnp.float64)
        # the update's size: scale * max|B_r A_r| with scale = alpha / r, only the live rank counts
        wm = np.asarray(form.weight_max(params, frozen, jnp.int32(2), _cfg(5)))
        a, b = (np.asarray(v) for v in params[1])
        np.testing.assert_allclose(wm[1], np.abs(1.0 * b[:, :2] @ a[:2]).max(), rtol=1e-13)
        init = form.init(jax.random.key(0), jnp.int32(2), _cfg(5), frozen)
        assert np.all(np.asarray(form.weight_max(init, frozen, jnp.int32(2), _cfg(5))) == 0)  # B = 0
        assert not bool(form.dead(init, frozen, x_t, jnp.int32(2), _cfg(5)))
        # a frozen net whose first layer is off everywhere is dead, adapted or not
        off = ((frozen[0][0] * 0, frozen[0][1] * 0 - 1.0),) + tuple(frozen[1:])
        assert bool(form.dead(init, off, x_t, jnp.int32(2), _cfg(5)))


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


@pytest.mark.slow  # two buckets, two compilations (~20 s)
def test_fit_does_not_depend_on_the_rank_bucket():
    probs = ftcjax.make_lora_problems(jax.random.key(8), num=3, K=12, d=2, N=2, width=5, depth=3)
    protocol = ftcjax.Protocol(**SMALL)
    keys = jax.random.split(jax.random.key(9), 3)
    ranks = np.array([1, 2, 3])
    a = ftcjax.fit_batch(probs, ranks, keys=keys, protocol=protocol, form=ftcjax.LoRA(), bucket=3)
    b = ftcjax.fit_batch(probs, ranks, keys=keys, protocol=protocol, form=ftcjax.LoRA(), bucket=6)
    np.testing.assert_allclose(a.mse, b.mse, rtol=1e-10)
    np.testing.assert_array_equal(a.steps, b.steps)
    assert np.all(a.mse < np.mean(np.asarray(probs.z) ** 2, axis=1))  # training did something


def test_rank_zero_fit_is_judged_like_g_equal_zero():
    probs = ftcjax.make_lora_problems(jax.random.key(10), num=2, K=10, d=2, N=3, width=4, depth=2)
    res = ftcjax.fit_batch(probs, np.array([0, 0]), keys=jax.random.split(jax.random.key(11), 2),
                           protocol=ftcjax.Protocol(**SMALL), form=ftcjax.LoRA(), bucket=2)
    z = np.asarray(probs.z)
    np.testing.assert_allclose(res.mse, np.mean(z ** 2, axis=1), rtol=1e-13)
    np.testing.assert_allclose(res.max_err, np.abs(z).max(axis=1), rtol=1e-13)
    assert not res.success.any()


def _rank_one_case():
    """A 2-layer frozen net on 3 points of the line whose hidden features are linearly independent:
    a rank-1 update of the last layer (1 x 3, so every update of it has rank <= 1) moves the output
    on any one point alone, so N = 1 is exactly fittable at r = 1 and not at r = 0."""
    w1 = np.array([[1.0], [1.0], [1.0]])
    b1 = np.array([2.0, 0.5, -0.5])
    w2 = np.array([[0.3, -0.2, 0.1]])
    b2 = np.array([0.05])
    x = np.array([[-1.0], [0.0], [1.0]])
    frozen = [(w1, b1), (w2, b2)]
    f_x = (np.maximum(x @ w1.T + b1, 0) @ w2.T + b2)[:, 0]
    changed = np.array([False, True, False])
    y = np.where(changed, f_x + 0.8, f_x)
    return x, y, changed, frozen


def test_hand_built_rank_one_last_layer_case_is_found_at_rank_one():
    x, y, changed, frozen = _rank_one_case()
    # The claim behind the case: the hidden features are independent, so the exact update exists.
    feats = np.maximum(x @ frozen[0][0].T + frozen[0][1], 0)
    assert np.linalg.matrix_rank(feats) == 3
    delta = np.linalg.solve(feats, y - (feats @ frozen[1][0].T + frozen[1][1])[:, 0])
    np.testing.assert_allclose(feats @ (frozen[1][0][0] + delta) + frozen[1][1], y, atol=1e-12)
    with jax.enable_x64(True):
        base = ftcjax.make_lora_problem(jax.random.key(0), K=3, d=1, N=1, frozen=frozen)
        prob = base._replace(x=jnp.asarray(x), f_x=jnp.asarray(np.asarray(base.f_x)),
                             y=jnp.asarray(y), changed=jnp.asarray(changed),
                             z=jnp.asarray(np.where(changed, y - np.asarray(base.f_x), 0.0)))
        # The frozen outputs of the user's net on our x agree with the hand computation.
        np.testing.assert_allclose(networks.forward(prob.frozen, prob.x.T),
                                   (feats @ frozen[1][0].T + frozen[1][1])[:, 0], atol=1e-14)
    protocol = ftcjax.Protocol(optimizer="adam", learning_rate=3e-2, steps=1500, segment=250, restarts=2,
                               criterion="strict", tol=1e-6, unroll=1)
    # both rules probe rank 0 (no update) as a candidate of its own; the adaptive ladder starts above it
    for strategy in ("bisect", "adaptive"):
        res = ftcjax.min_width(prob, key=jax.random.key(1), protocol=protocol, widths=[0, 1, 2, 3],
                               strategy=strategy, form=ftcjax.LoRA(layers=(-1,)))
        assert res.min_width == 1 and not res.censored, strategy
        tried = {p.width: p.success for p in res.probes}
        assert tried[0] is False and tried[1] is True, strategy


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


def test_additive_on_lora_problems_equals_additive_on_plain_problems():
    key = jax.random.key(14)
    lp = ftcjax.make_lora_problems(key, num=2, K=12, d=2, N=3, width=5, depth=2)
    plain = ftcjax.Problem(*lp[:6])
    protocol = ftcjax.Protocol(**SMALL)
    keys = jax.random.split(jax.random.key(15), 2)
    a = ftcjax.fit_batch(lp, np.array([3, 4]), keys=keys, protocol=protocol)
    b = ftcjax.fit_batch(plain, np.array([3, 4]), keys=keys, protocol=protocol)
    np.testing.assert_array_equal(a.mse, b.mse)


# --- refusals ----------------------------------------------------------------------------------------

def test_mixed_forms_refused_with_a_clear_message():
    probs = ftcjax.make_lora_problems(jax.random.key(16), num=2, K=8, d=2, N=1, width=4)
    keys = jax.random.split(jax.random.key(17), 2)
    with pytest.raises(ftcjax.FTCInputError, match="mixes 2 forms"):
        ftcjax.fit_batch(probs, np.array([1, 2]), keys=keys, protocol=ftcjax.Protocol(**SMALL),
                         form=[ftcjax.Additive(), ftcjax.LoRA()])
    # one form repeated per lane is fine
    res = ftcjax.fit_batch(probs, np.array([1, 2]), keys=keys, protocol=ftcjax.Protocol(**SMALL),
                           form=[ftcjax.LoRA(), ftcjax.LoRA()])
    assert res.mse.shape == (2,)


def test_lora_needs_a_frozen_network():
    probs = ftcjax.make_problems(jax.random.key(18), num=2, K=8, d=2, N=1)
    with pytest.raises(ftcjax.FTCInputError, match="frozen network"):
        ftcjax.fit_batch(probs, np.array([1, 2]), keys=jax.random.split(jax.random.key(0), 2),
                         protocol=ftcjax.Protocol(**SMALL), form=ftcjax.LoRA())


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=(5,)), "outside a 3-layer"),
    (dict(layers=(0, -3)), "names a layer twice"),
    (dict(layers=()), "non-empty"),
    (dict(alpha=-1.0), "lora.alpha"),
])
def test_bad_lora_options(kwargs, match):
    probs = ftcjax.make_lora_problems(jax.random.key(19), num=1, K=8, d=2, N=1, width=4, depth=3)
    with pytest.raises(ftcjax.FTCInputError, match=match):
        ftcjax.fit_batch(probs, np.array([1]), keys=jax.random.split(jax.random.key(0), 1),
                         protocol=ftcjax.Protocol(**SMALL), form=ftcjax.LoRA(**kwargs))


def test_bad_user_frozen_net_and_negative_rank():
    with pytest.raises(ftcjax.FTCInputError, match="do not chain"):
        ftcjax.make_lora_problem(jax.random.key(0), K=4, d=2, N=1,
                                 frozen=[(np.ones((3, 5)), np.ones(3)), (np.ones((1, 3)), np.ones(1))])
    with pytest.raises(ftcjax.FTCInputError, match="frozen"):
        ftcjax.make_lora_problem(jax.random.key(0), K=4, d=2, N=1, frozen="interpolant")
    probs = ftcjax.make_lora_problems(jax.random.key(19), num=1, K=8, d=2, N=1, width=4)
    with pytest.raises(ftcjax.FTCInputError, match="ranks: -1 is negative"):
        ftcjax.fit_batch(probs, np.array([-1]), keys=jax.random.split(jax.random.key(0), 1),
                         protocol=ftcjax.Protocol(**SMALL), form=ftcjax.LoRA(), bucket=2)


# --- no regression: the additive form through the contract ------------------------------------------

@pytest.mark.slow  # every stored case recompiled (~25 s): a bit-level regression check, in the slow step
def test_additive_through_the_form_contract_is_bit_identical_to_the_old_kernel():
    """``additive_reference*.npz`` hold outputs of the kernel before forms existed (see
    tests/data/make_additive_reference.py). Same jax version, backend and host ISA: identical bits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_ref", REFERENCE.with_name("make_additive_reference.py"))
    make_ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_ref)
    # bits are per jax version, backend and host ISA (XLA:CPU generates code for the host): the
    # reference made on this ISA if there is one, else the first one (made on the CI machine)
    own = REFERENCE.with_name(f"additive_reference-{make_ref.host_isa()}.npz")
    ref = np.load(own if own.exists() else REFERENCE)
    isa = str(ref["meta/isa"]) if "meta/isa" in ref.files else make_ref.host_isa()  # unrecorded: CI's
    same_platform = (str(ref["meta/jax"]) == jax.__version__ and str(ref["meta/backend"]) == jax.default_backend()
                     and isa == make_ref.host_isa())
    for name, case in make_ref.CASES.items():
        res = make_ref.run_case(*case)
        got = {"mse": res.mse, "max_err": res.max_err, "steps": res.steps}
        got.update({f"param{i}": leaf for i, leaf in enumerate(jax.tree.leaves(res.params))})
        for field, value in got.items():
            want = ref[f"{name}/{field}"]
            if same_platform or field == "steps":
                np.testing.assert_array_equal(np.asarray(value), want, err_msg=f"{name}/{field}")
            else:  # another jax or backend: bits are per backend (design notes); stay float64-close
                np.testing.assert_allclose(np.asarray(value), want, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{name}/{field}")


# --- a [form] sweep: spec, plan, runner ----------------------------------------------------------------

FORM_SPEC = """\
name = "tiny-forms"
seed = 3
replicates = 2

[grid]
depth = [2, 3]
N = [1, 2]
K = 8
d = 2
frozen = "random_relu"
criterion = "relative"

[train]
steps = 40
segment = 20
restarts = 1
learning_rate = 0.05
rel_eps = 0.05
unroll = 1

[width]
lower = 1
upper = 6
strategy = "bisect"

[form]
kind = ["lora", "additive"]
frozen_width = 4
frozen_depth = 2
ranks = [1, 2]

[batch]
chunk_size = 4
"""


def test_form_sweep_runs_pairs_instances_and_counts_parameters(tmp_path):
    from ftcjax.sweep.runner import run_sweep
    from ftcjax.sweep.spec import canonical_dict, parse_spec

    spec = parse_spec(FORM_SPEC)
    cells = spec.cells()
    # LoRA ignores the depth of g: its cells exist at the first depth only.
    assert sorted({(c["form"], c["depth"]) for c in cells}) == [("additive", 2), ("additive", 3), ("lora", 2)]
    assert canonical_dict(spec)["form"]["ranks"] == [1, 2]
    run_sweep(spec, tmp_path / "run")
    from ftcjax.analysis.records import load_records

    recs = load_records(tmp_path / "run")
    assert len(recs) == spec.num_instances == 12
    by = {}
    for r in recs:
        c = r["cell"]
        by[(c["form"], c["depth"], c["N"], r["replicate"])] = r
        assert r["form"]["form"] == c["form"]
        if r["min_width"] is not None:
            shapes = [(4, 2), (1, 4)]
            want = (ftcjax.LoRA().num_params(r["min_width"], frozen_shapes=shapes) if c["form"] == "lora"
                    else ftcjax.Additive().num_params(r["min_width"], in_dim=2, depth=c["depth"]))
            assert r["trainable_params"] == want
        else:
            assert r["trainable_params"] is None
    # Paired instances: every form sees the same problem (same z, same g = 0 error).
    for n in (1, 2):
        for rep in (0, 1):
            zs = {k[:2]: (v["problem"]["z_max"], v["problem"]["mse_zero"]) for k, v in by.items()
                  if k[2:] == (n, rep)}
            assert len(set(zs.values())) == 1, zs
    assert {r["cell"]["form"] for r in recs} == {"lora", "additive"}

    # The report and figures of a form sweep: one row per (K, N), the three series side by side.
    from ftcjax.analysis import forms as form_report

    written = form_report.write_all(tmp_path / "run", tmp_path / "figs")
    text = (tmp_path / "figs" / "report.md").read_text()
    assert "## Frozen net: width 4, depth 2" in text
    assert "LoRA: size" in text and "additive, 3-layer g: size" in text
    rows = [line for line in text.splitlines() if line.startswith("| 8 |")]
    assert len(rows) == 2  # N = 1, 2 at K = 8
    # the LoRA median rank of the N = 1 row is the median of the stored ranks (or marked censored)
    ranks = sorted(by[("lora", 2, 1, rep)]["min_width"] for rep in (0, 1)
                   if by[("lora", 2, 1, rep)]["min_width"] is not None)
    cell = rows[0].split(" | ")[2]
    if len(ranks) == 2:
        assert cell == f"{np.median(ranks):g}"
    else:  # a censored instance sits above every measured one: the median is only a lower bound
        assert cell == ">2"
    assert sum(p.endswith(".png") for p in written) == 4
    # the one CLI: `ftcjax figures` on a [form] run writes the same report and figures
    from ftcjax.cli import main

    assert main(["figures", str(tmp_path / "run"), "--out", str(tmp_path / "figs2")]) == 0
    assert (tmp_path / "figs2" / "report.md").read_text() == text


@pytest.mark.parametrize("extra", ["", "alpha = 4.0\nlayers = [0, -1]\n"])
def test_form_spec_canonical_dict_is_a_valid_spec_with_the_same_hash(extra):
    from ftcjax.sweep.spec import canonical_dict, spec_from_dict, spec_hash, parse_spec

    spec = parse_spec(FORM_SPEC.replace("ranks = [1, 2]\n", "ranks = [1, 2]\n" + extra))
    again = spec_from_dict(canonical_dict(spec))
    assert spec_hash(again) == spec_hash(spec) and again.cells() == spec.cells()
    assert again.form_options == spec.form_options


def test_spec_without_form_table_is_unchanged():
    from ftcjax.sweep.spec import canonical_dict, parse_spec

    text = FORM_SPEC[:FORM_SPEC.index("[form]")] + "[batch]\nchunk_size = 4\n"
    text = text.replace('frozen = "random_relu"\n', "")
    spec = parse_spec(text)
    assert "form" not in canonical_dict(spec)
    assert all("form" not in c and "frozen_width" not in c for c in spec.cells())


@pytest.mark.parametrize("change, message", [
    (('frozen = "random_relu"', 'frozen = "interpolant"'), "grid.frozen: 'interpolant' has no explicit network"),
    (("ranks = [1, 2]", "ranks = [1, 2]\nlayers = [5]"), "outside a 2-layer frozen net"),
    (('kind = ["lora", "additive"]', 'kind = ["lora", "prefix"]'), "form.kind: unknown value 'prefix'"),
    (("ranks = [1, 2]", "ranks = [1, 2]\nalpha = -2"), "form.alpha"),
    (("ranks = [1, 2]", "ranks = [1, 2]\nshape = 3"), "form.shape: unknown key"),
])
def test_bad_form_tables_are_refused_naming_the_field(change, message):
    from ftcjax.sweep.spec import SpecError, parse_spec

    with pytest.raises(SpecError, match=message):
        parse_spec(FORM_SPEC.replace(*change))


@pytest.mark.parametrize("protocol_kwargs", [
    dict(optimizer="lm", steps=60, segment=20),
    dict(optimizer="adam", steps=1500, segment=250, learning_rate=3e-2, dtype="float32"),
    dict(optimizer="adam", steps=300, segment=100, learning_rate=3e-2, polish_steps=30),
])
def test_lora_trains_with_the_swappable_trainers(protocol_kwargs):
    """LM (its solve sees only the live rank), a float32 run judged in float64, and an LM polish all
    reach the provable rank-1 fit of the hand-built case, and keep masked components at zero."""
    x, y, changed, frozen = _rank_one_case()
    with jax.enable_x64(True):
        base = ftcjax.make_lora_problem(jax.random.key(0), K=3, d=1, N=1, frozen=frozen)
        prob = base._replace(x=jnp.asarray(x), y=jnp.asarray(y), changed=jnp.asarray(changed),
                             z=jnp.asarray(np.where(changed, y - np.asarray(base.f_x), 0.0)))
    batch = jax.tree.map(lambda a: jnp.asarray(a)[None], prob)
    protocol = ftcjax.Protocol(restarts=1, criterion="strict", tol=1e-6, unroll=1, **protocol_kwargs)
    res = ftcjax.fit_batch(batch, np.array([1]), keys=jax.random.split(jax.random.key(3), 1),
                           protocol=protocol, form=ftcjax.LoRA(layers=(-1,)), bucket=3)
    assert bool(res.success[0]), (res.mse, res.max_err)
    a, b = (np.asarray(v)[0] for v in res.params[0])
    assert np.all(a[1:] == 0) and np.all(b[:, 1:] == 0)
