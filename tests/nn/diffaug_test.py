import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastgan_jax.nn import diffaug
from fastgan_jax.nn.diffaug import diff_augment

KEY = jax.random.key(0)


def images(b=8, h=32, w=32, seed=0):
    return jax.random.uniform(jax.random.key(seed), (b, h, w, 3), jnp.float32, -1, 1)


def shifted(x, dh, dw):  # out[i, j] = x[i + dh, j + dw], zero outside
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    src = x[max(dh, 0) : h + min(dh, 0), max(dw, 0) : w + min(dw, 0)]
    out[max(-dh, 0) : max(-dh, 0) + src.shape[0], max(-dw, 0) : max(-dw, 0) + src.shape[1]] = src
    return out


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation", "color,translation,cutout"])
def test_shape_dtype_and_jit(policy):
    x = images()
    out = jax.jit(diff_augment, static_argnames="policy")(KEY, x, policy=policy)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not np.allclose(out, x)


def test_empty_policy_is_identity():
    x = images()
    np.testing.assert_array_equal(diff_augment(KEY, x, ""), x)


def test_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown DiffAugment op 'flip'"):
        diff_augment(KEY, images(), "color,flip")


def test_translation_shifts_with_zero_fill_within_an_eighth():
    x = np.asarray(images(b=16))
    out = np.asarray(diffaug.translation(KEY, jnp.asarray(x)))
    shift = int(32 * 0.125 + 0.5)
    seen = set()
    for i in range(len(x)):
        found = [
            (dh, dw)
            for dh, dw in itertools.product(range(-shift, shift + 1), repeat=2)
            if np.array_equal(out[i], shifted(x[i], dh, dw))
        ]
        assert len(found) == 1, f"sample {i} is not a zero-filled shift of at most {shift}"
        seen.add(found[0])
    assert len(seen) > 4  # per-sample shifts


def test_cutout_zeroes_one_half_size_square():
    x = np.asarray(images(b=16)) + 3.0  # no zeros of its own
    out = np.asarray(diffaug.cutout(KEY, jnp.asarray(x)))
    for i in range(len(x)):
        zero = out[i, :, :, 0] == 0
        np.testing.assert_array_equal(out[i][~zero], x[i][~zero])
        assert (out[i][zero] == 0).all()
        rows, cols = np.nonzero(zero)
        # A 16x16 square (clipped at the border) is zeroed.
        assert 8 <= np.ptp(rows) + 1 <= 16 and 8 <= np.ptp(cols) + 1 <= 16
        assert zero.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)


def test_color_value_effects():
    x = images()
    k1, k2, k3 = jax.random.split(KEY, 3)
    delta = np.asarray(diffaug.rand_brightness(k1, x) - x)
    per_sample = delta.reshape(len(delta), -1)
    np.testing.assert_allclose(per_sample, per_sample[:, :1] * np.ones_like(per_sample), atol=1e-6)
    assert (np.abs(per_sample[:, 0]) <= 0.5).all() and np.ptp(per_sample[:, 0]) > 0.1

    gray = jnp.repeat(x[..., :1], 3, axis=-1)
    np.testing.assert_allclose(diffaug.rand_saturation(k2, gray), gray, atol=1e-6)
    sat = diffaug.rand_saturation(k2, x)
    np.testing.assert_allclose(sat.mean(-1), x.mean(-1), atol=1e-6)

    con = diffaug.rand_contrast(k3, x)
    np.testing.assert_allclose(con.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-5)
    ratio = np.asarray((con - con.mean((1, 2, 3), keepdims=True)).std((1, 2, 3)) / x.std((1, 2, 3)))
    assert ((ratio >= 0.5 - 1e-4) & (ratio <= 1.5 + 1e-4)).all()


def test_samples_are_augmented_independently():
    x = images()
    policy = "color,translation,cutout"
    out = diff_augment(KEY, x, policy)
    x2 = x.at[1:].set(images(seed=1)[1:])
    out2 = diff_augment(KEY, x2, policy)
    np.testing.assert_allclose(out[0], out2[0], atol=1e-6)  # sample 0 ignores the others
    same = diff_augment(KEY, jnp.repeat(x[:1], 8, axis=0), policy)
    assert not np.allclose(same[0], same[1])  # but draws its own parameters


def test_gradients_flow():
    x = images()
    grad = jax.grad(lambda im: jnp.sum(diff_augment(KEY, im, "color,translation,cutout") ** 2))(x)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
