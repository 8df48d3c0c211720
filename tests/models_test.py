import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax.models import TinyDiscriminator, TinyGenerator, init_discriminator, init_generator

KEY = jax.random.key(0)


@functools.cache
def tiny(im_size):
    G = TinyGenerator(im_size=im_size)
    D = TinyDiscriminator(im_size=im_size)
    return G, init_generator(G, KEY), D, init_discriminator(D, KEY)


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
