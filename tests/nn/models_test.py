import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax.metrics import lpips
from fastgan_jax.nn import models
from fastgan_jax.nn.models import TinyDiscriminator, TinyGenerator, init_discriminator, init_generator
from fastgan_jax.train import state

KEY = jax.random.key(0)


@functools.cache
def tiny(im_size):
    G = TinyGenerator(im_size=im_size)
    D = TinyDiscriminator(im_size=im_size)
    return G, init_generator(G, KEY), D, init_discriminator(D, KEY)


@pytest.mark.slow
@pytest.mark.parametrize("im_size", [64, 128])  # 256 and 1024: parity_test.py
def test_shapes_of_the_small_variants(im_size):
    G, gv, D, dv = tiny(im_size)
    s = fj.small_size(im_size)

    @jax.jit
    def run(gv, dv, z):
        img, img_small = G.apply(gv, z, rngs={"noise": KEY})
        return img, img_small, D.apply(dv, img, part=1), D.apply(dv, (img, img_small))

    img, img_small, (logits, recs), fake_logits = run(gv, dv, jax.random.normal(KEY, (3, G.nz)))
    assert img.shape == (3, im_size, im_size, 3) and img_small.shape == (3, s, s, 3)
    assert jnp.abs(img).max() <= 1 and jnp.abs(img_small).max() <= 1  # tanh outputs
    assert logits.shape == fake_logits.shape == (2 * 3 * 25,)
    assert all(r.shape == (3, s, s, 3) for r in recs)


@pytest.mark.slow
def test_variables_do_not_depend_on_compute_dtype_or_remat():
    # models._init runs one init program for every variant of a network: the variant's own init agrees.
    G, gv, D, dv = tiny(64)
    rngs = {"params": KEY, "noise": KEY}
    for module, variables, x in ((G, gv, (jnp.zeros((2, G.nz)),)), (D, dv, (jnp.zeros((2, 64, 64, 3)), 0))):
        variant = module.clone(dtype=jnp.float16, remat="full")
        own = jax.jit(variant.init, compiler_options=models.CPU_NO_CODEGEN_OPT)(rngs, *x)
        assert jax.tree.structure(own) == jax.tree.structure(variables)
        for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(variables), strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), module


def test_official_init_statistics():
    G = fj.Generator(im_size=256, ngf=16, nz=64)
    params = init_generator(G, KEY)["params"]
    kernel = np.asarray(params["feat_16"]["conv"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.001 and abs(kernel.mean()) < 0.001
    scale = np.asarray(params["feat_8"]["bn1"]["scale"])
    assert abs(scale.mean() - 1) < 0.01 and 0.01 < scale.std() < 0.03
    assert np.all(np.asarray(params["feat_8"]["bn1"]["bias"]) == 0)
    assert params["feat_8"]["noise1"]["weight"] == 0


def test_noise_from_rng_or_explicit():
    G, gv, _, _ = tiny(64)
    gv = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.5 if "noise" in jax.tree_util.keystr(p) else x, gv
    )  # non-zero noise weights
    z = jax.random.normal(KEY, (2, G.nz))
    a, _ = G.apply(gv, z, rngs={"noise": jax.random.key(1)})
    b, _ = G.apply(gv, z, rngs={"noise": jax.random.key(2)})
    assert not np.allclose(a, b)
    shapes = fj.noise_shapes(64, 2)
    assert shapes == [(2, 8, 8, 1), (2, 8, 8, 1), (2, 32, 32, 1), (2, 32, 32, 1)]
    maps = [jax.random.normal(jax.random.key(i), s) for i, s in enumerate(shapes)]
    c, _ = G.apply(gv, z, noise=maps)
    d, _ = G.apply(gv, z, noise=maps)
    np.testing.assert_array_equal(c, d)
    zero = [jnp.zeros(s) for s in shapes]
    e, _ = G.apply(gv, z, noise=zero)
    assert not np.allclose(c, e)
    with pytest.raises(ValueError, match="rngs=\\{'noise': key\\}"):
        G.apply(gv, z)


@pytest.mark.slow
def test_eval_mode_is_batch_independent_and_train_mode_updates_stats():
    G, gv, D, dv = tiny(64)
    z = jax.random.normal(KEY, (4, G.nz))
    full, _ = G.apply(gv, z, noise=[jnp.zeros(s) for s in fj.noise_shapes(64, 4)])
    one, _ = G.apply(gv, z[:1], noise=[jnp.zeros(s) for s in fj.noise_shapes(64, 1)])
    np.testing.assert_allclose(full[:1], one, atol=1e-5)
    _, upd = G.apply(gv, z, train=True, rngs={"noise": KEY}, mutable=["batch_stats"])
    before, after = gv["batch_stats"]["feat_16"], upd["batch_stats"]["feat_16"]
    assert not np.allclose(before["bn"]["mean"], after["bn"]["mean"])
    assert not np.allclose(before["conv"]["u"], after["conv"]["u"])
    assert after["bn"]["count"] == before["bn"]["count"] + 1


def test_discriminator_part_may_be_traced_and_is_required():
    _, _, D, dv = tiny(64)
    x = jax.random.uniform(KEY, (2, 64, 64, 3), minval=-1, maxval=1)
    apply = jax.jit(lambda v, x, p: D.apply(v, x, part=p)[1][2])
    for part in range(4):
        np.testing.assert_allclose(apply(dv, x, part), D.apply(dv, x, part=part)[1][2], atol=1e-5)
    with pytest.raises(ValueError, match="part="):
        D.apply(dv, x)


def test_bfloat16_compute():
    # Train mode: at init the stored spectral-norm vectors are random (as in
    # PyTorch), so eval-mode outputs of a fresh network are meaningless.
    gv = tiny(64)[1]
    z = jax.random.normal(KEY, (4, 32))

    def run(dtype):
        G = TinyGenerator(im_size=64, output_tanh=False, dtype=dtype)
        (img, _), _ = G.apply(gv, z, train=True, rngs={"noise": KEY}, mutable=["batch_stats"])
        return img

    img, ref = jax.jit(run, static_argnums=0)(jnp.bfloat16), jax.jit(run, static_argnums=0)(jnp.float32)
    assert img.dtype == jnp.bfloat16 and ref.dtype == jnp.float32
    err = np.linalg.norm(np.asarray(img, np.float32) - ref) / np.linalg.norm(ref)
    assert err < 0.05


def test_bad_arguments():
    with pytest.raises(ValueError, match="im_size must be one of"):
        init_generator(fj.Generator(im_size=100), KEY)
    G, gv, _, _ = tiny(64)
    with pytest.raises(ValueError, match="z of shape \\[B, 32\\]"):
        G.apply(gv, jnp.zeros((2, 7)), rngs={"noise": KEY})


# XLA's CPU pipeline drops jax.checkpoint's optimization barriers before its CSE pass, which then merges the
# recomputation back into the forward pass; keeping them (as GPU and TPU compilers do) shows remat's memory here.
# Compiled for a memory figure and one run: without LLVM's optimisations (models.CPU_NO_CODEGEN_OPT).
CPU_REMAT_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"} | models.CPU_NO_CODEGEN_OPT


def _assert_close_leaves(got, want, what):
    # Other fusions round float32 otherwise: deviations of up to 4e-6 of an array's largest value, 5e-5 for a
    # scalar gradient that sums many terms of both signs (a noise weight's). A remat bug (other noise, batch
    # statistics or variables) is an O(1) difference.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        where = f"{what}{jax.tree_util.keystr(path)}"
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max(), err_msg=where)


def shapes(init, module):
    return jax.tree.map(jnp.shape, jax.eval_shape(lambda: init(module, KEY)))


@pytest.mark.slow
def test_remat_changes_neither_results_nor_variables_and_saves_memory():
    G, gv, D, dv = tiny(64)
    z = jax.random.normal(KEY, (2, G.nz))

    def run(remat):
        G_, D_ = G.clone(remat=remat), D.clone(remat=remat)

        def loss(g_params, d_params):
            # G's image as D's real batch: one D pass through every D module, decoders included.
            (img, small), g_upd = G_.apply(
                {"params": g_params, "batch_stats": gv["batch_stats"]},
                z,
                True,
                rngs={"noise": KEY},
                mutable=["batch_stats"],
            )
            (logits, recs), d_upd = D_.apply(
                {"params": d_params, "batch_stats": dv["batch_stats"]}, img, 1, True, mutable=["batch_stats"]
            )
            value = jnp.mean(logits) + sum(jnp.mean(jnp.square(r)) for r in recs) + jnp.mean(jnp.square(small))
            return value, (img, small, logits, recs, g_upd, d_upd)

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        compiled = step.lower(gv["params"], dv["params"]).compile(compiler_options=CPU_REMAT_OPTIONS)
        (_, outputs), grads = compiled(gv["params"], dv["params"])
        return (outputs, grads), compiled.memory_analysis().temp_size_in_bytes

    # 'full' checkpoints the whole networks with every block checkpointed inside: both kinds of nn.remat.
    want, temp_none = run("none")
    got, temp_full = run("full")
    _assert_close_leaves(got, want, "remat=full: ")
    assert temp_full < temp_none
    for remat in ("blocks", "full"):  # the same variable names and shapes: official state dicts map one to one
        assert shapes(init_generator, G.clone(remat=remat)) == shapes(init_generator, G)
        assert shapes(init_discriminator, D.clone(remat=remat)) == shapes(init_discriminator, D)


def test_remat_choices():
    G, D = state.make_models(im_size=64, ngf=8, ndf=8, nz=16, dec_width=4, remat="blocks")
    assert G.remat == D.remat == "blocks"
    assert all(m.remat == "none" for m in state.make_models(im_size=64, ngf=8, ndf=8, nz=16))
    with pytest.raises(ValueError, match="remat must be one of"):
        state.make_models(im_size=64, ngf=8, ndf=8, nz=16, remat="some")
    with pytest.raises(ValueError, match="remat must be one of"):
        jax.eval_shape(lambda: init_generator(TinyGenerator(remat="all"), KEY))


def test_lpips_remat_same_distance_and_gradient():
    variables = lpips.lpips_variables("alex")  # the same stage code as VGG's, a smaller program
    x, y = (jax.random.uniform(jax.random.key(i), (2, 64, 64, 3), minval=-1, maxval=1) for i in (1, 2))

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_grad(remat, variables, x, y):
        return jax.value_and_grad(lambda x: jnp.sum(lpips.lpips(variables, x, y, "alex", remat)))(x)

    want = value_and_grad(False, variables, x, y)
    _assert_close_leaves(value_and_grad(True, variables, x, y), want, "lpips remat: ")
