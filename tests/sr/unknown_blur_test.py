"""The blur of unknown width (degrade.UnknownBlur) and its estimates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastgan_jax.sr import degrade


def images(n=2, size=32):
    return jax.random.uniform(jax.random.key(0), (n, size, size, 3), minval=-1, maxval=1)


@pytest.mark.parametrize("sigma", [0.6, 1.5])
def test_it_is_the_gaussian_blur_of_its_width(sigma):
    x = images()
    blur = degrade.UnknownBlur(jnp.float32(sigma), hi=2.0)
    known = degrade.GaussianBlur(sigma, radius=blur.size)  # dm-pix, truncated alike
    np.testing.assert_allclose(blur(x), known(x), atol=1e-5)


def test_each_image_has_its_own_width_and_the_width_has_a_gradient():
    x = images()
    both = degrade.UnknownBlur(jnp.array([0.5, 2.0]))(x)
    np.testing.assert_allclose(both[:1], degrade.UnknownBlur(jnp.float32(0.5))(x[:1]), atol=1e-6)
    np.testing.assert_allclose(both[1:], degrade.UnknownBlur(jnp.float32(2.0))(x[1:]), atol=1e-6)
    target = degrade.GaussianBlur(1.5, radius=9)(x)
    grad = jax.grad(lambda s: jnp.mean(jnp.square(degrade.UnknownBlur(s)(x) - target)))(jnp.float32(0.8))
    assert float(grad) < 0  # too narrow: a wider blur fits better


def test_unknowns_are_read_replaced_clipped_repeated_and_taken():
    op = degrade.chain(degrade.UnknownBlur(jnp.array([1.0, 2.0])), degrade.Downsample(2))
    (sigma,) = degrade.unknowns(op)
    np.testing.assert_array_equal(sigma, [1.0, 2.0])
    moved = degrade.with_unknowns(op, (jnp.array([0.1, 9.0]),))
    np.testing.assert_allclose(degrade.clip_unknowns(moved, degrade.unknowns(moved))[0], [0.3, 3.0])
    np.testing.assert_array_equal(degrade.unknowns(degrade.repeat(op, 2))[0], [1.0, 1.0, 2.0, 2.0])
    np.testing.assert_array_equal(degrade.unknowns(degrade.take(op, 1, 2))[0], [2.0])
    assert degrade.unknowns(degrade.Downsample(2)) == ()
