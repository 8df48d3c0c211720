"""Degradation operators (`fastgan_jax.sr.degrade`) against independent implementations: SciPy, PIL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from PIL import Image
from scipy import ndimage

from fastgan_jax.sr import degrade


def images(shape=(2, 24, 20, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, minval=-1.0, maxval=1.0)


def per_channel(fn, x):
    """SciPy's 2-D `fn` on every image and channel of a [B, H, W, C] array."""
    x = np.asarray(x, np.float64)
    return np.stack([np.stack([fn(x[b, ..., c]) for c in range(x.shape[-1])], -1) for b in range(len(x))])


@pytest.mark.parametrize(("sigma", "radius"), [(1.5, None), (0.8, 4)])
def test_gaussian_blur_is_scipys_with_mirrored_borders(sigma, radius):
    op = degrade.GaussianBlur(sigma, radius)
    x = images()
    r = op.size
    expected = per_channel(lambda a: ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=r / sigma), x)
    np.testing.assert_allclose(op(x), expected, atol=1e-5)
    check_grads(op, (images((1, 8, 8, 3)),), order=1, modes=["rev"], atol=1e-2)


def test_a_user_kernel_is_convolved_as_scipy_does():
    kernel = jnp.array([[0.0, 0.1, 0.0], [0.2, 0.3, 0.1], [0.0, 0.25, 0.05]])  # not symmetric: flips matter
    x = images()
    expected = per_channel(lambda a: ndimage.convolve(a, np.asarray(kernel, np.float64), mode="reflect"), x)
    np.testing.assert_allclose(degrade.Blur(kernel)(x), expected, atol=1e-5)
    check_grads(degrade.Blur(kernel), (images((1, 6, 6, 3)),), order=1, modes=["rev"], atol=1e-2)


def test_grayscale_is_pils_luma():
    rgb = np.asarray(jax.random.randint(jax.random.key(1), (2, 16, 16, 3), 0, 256), np.uint8)
    gray = degrade.Grayscale()(jnp.asarray(rgb, jnp.float32) / 127.5 - 1)
    assert gray.shape == (2, 16, 16, 1)
    ours = np.rint((np.asarray(gray[..., 0]) + 1) * 127.5)
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert np.abs(ours - pil).max() <= 1  # PIL rounds its integer weights; the same luma otherwise
    assert float(degrade.Grayscale()(-jnp.ones((1, 2, 2, 3))).max()) == pytest.approx(-1)  # black stays black


def test_blur_then_area_downsample_is_scipy_then_pil_box():
    op = degrade.chain(degrade.GaussianBlur(1.0), degrade.Downsample(4, "area"))
    x = images((1, 32, 32, 3))
    blurred = per_channel(lambda a: ndimage.gaussian_filter(a, 1.0, mode="reflect", truncate=3.0), x)[0]
    pil = np.stack(
        [
            np.asarray(Image.fromarray(blurred[..., c].astype(np.float32), "F").resize((8, 8), Image.BOX))
            for c in range(3)
        ],
        -1,
    )
    np.testing.assert_allclose(op(x)[0], pil, atol=1e-5)
    assert isinstance(op, degrade.Chain) and len(op.ops) == 2


def test_a_mask_counts_only_known_pixels_and_the_error_is_on_the_unit_scale():
    known = jnp.zeros((8, 8)).at[:, :4].set(1.0)  # the left half is observed
    op = degrade.Mask(known)
    y = images((2, 8, 8, 3))
    off_unknown = y.at[:, :, 4:].set(0.7)
    np.testing.assert_allclose(degrade.observed_mse(op, off_unknown, y), 0.0, atol=0)
    shifted = y.at[:, :, :4].add(0.2)  # 0.1 on the [0, 1] scale
    np.testing.assert_allclose(degrade.observed_mse(op, shifted, y), 0.01, rtol=1e-5)
    with pytest.raises(ValueError, match="a Mask must be the last operator"):
        degrade.chain(op, degrade.Downsample(2))


def test_noise_sets_the_error_floor_and_chains_add_up():
    assert degrade.noise_variance(degrade.Noise(0.1)) == pytest.approx(0.01)
    assert degrade.noise_variance(degrade.chain(degrade.GaussianBlur(1.0), degrade.Noise(0.1))) == pytest.approx(0.01)
    assert degrade.noise_variance(degrade.Downsample(4)) == 0.0


def test_one_program_serves_every_mask_of_a_shape():
    @jax.jit
    def err(op, x, y):
        return degrade.observed_mse(op, x, y)

    x, y = images((1, 8, 8, 3)), images((1, 8, 8, 3), seed=1)
    for i in range(3):
        err(degrade.Mask(jnp.zeros((8, 8)).at[i].set(1.0)), x, y)
    assert err._cache_size() == 1
