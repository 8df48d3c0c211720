"""Degradation operators (`fastgan_jax.sr.degrade`) against independent implementations: SciPy, PIL."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from PIL import Image
from scipy import ndimage

from fastgan_jax import images as images_lib
from fastgan_jax.sr import baseline, degrade


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


def test_observe_draws_the_noise_clips_and_blanks_unknown_pixels():
    known = degrade.block_mask(jax.random.key(3), 2, 32, unknown=0.25)
    op = degrade.Degradation(factor=1, noise_sigma=0.1).operator(known)
    x = images((2, 32, 32, 3))
    y = degrade.observe(op, x, jax.random.key(4))
    assert float(jnp.abs(y).max()) <= 1.0 and np.all(np.asarray(y)[np.asarray(known) == 0] == 0)
    seen = np.asarray(known) == 1
    noise = (np.asarray(y) - np.asarray(x))[seen] / 2  # on the [0, 1] scale; clipping only shrinks it
    assert 0.08 < noise.std() < 0.1 and abs(noise.mean()) < 0.01
    np.testing.assert_array_equal(degrade.observe(op, x, jax.random.key(4)), y)  # the key decides


def test_block_masks_hide_their_share_of_an_8x8_grid_per_image():
    known = np.asarray(degrade.block_mask(jax.random.key(0), 3, 64, unknown=0.5))
    cells = known[:, ::8, ::8]  # one pixel per block; each block is constant
    np.testing.assert_array_equal(np.repeat(np.repeat(cells, 8, 1), 8, 2), known)
    assert np.all(cells.reshape(3, -1).sum(1) == 32) and not np.array_equal(cells[0], cells[1])
    with pytest.raises(ValueError, match="8 blocks do not divide 20 px"):
        degrade.block_mask(jax.random.key(0), 1, 20)


def test_degradation_chains_in_camera_order_and_take_slices_per_image_masks():
    known = jnp.ones((4, 6, 6))
    op = degrade.Degradation(factor=4, blur=1.5, gray=True, noise_sigma=0.1).operator(known)
    kinds = [type(o) for o in op.ops]
    assert kinds == [degrade.GaussianBlur, degrade.Downsample, degrade.Grayscale, degrade.Noise, degrade.Mask]
    assert degrade.take(op, 1, 3).ops[-1].known.shape == (2, 6, 6) and degrade.take(op, 1, 3).ops[0] == op.ops[0]
    assert degrade.Degradation().operator() == degrade.Chain(())  # factor 1 and nothing else: the identity
    np.testing.assert_array_equal(degrade.Chain(())(images()), images())


def test_the_classical_baseline_is_pils_bicubic_the_gray_image_and_skimages_biharmonic():
    from skimage.restoration import inpaint_biharmonic

    x = images((2, 32, 32, 3))
    down = degrade.Downsample(4)
    y = down(x)
    pil = [np.asarray(Image.fromarray(im).resize((32, 32), Image.BICUBIC)) for im in images_lib.to_uint8(y)]
    np.testing.assert_allclose(baseline.classical(down, y, 32), images_lib.to_float(np.stack(pil)), atol=1e-6)
    assert baseline.name(down) == "bicubic"
    gray = degrade.Grayscale()
    np.testing.assert_array_equal(baseline.classical(gray, gray(x), 32), jnp.repeat(gray(x), 3, -1))
    known = degrade.block_mask(jax.random.key(1), 2, 32)
    mask = degrade.Mask(known)
    filled = np.asarray(baseline.classical(mask, x * known[..., None], 32))
    hole = np.asarray(known[0]) == 0
    ref = inpaint_biharmonic(np.asarray(x[0] * known[0, ..., None], np.float64), hole, channel_axis=-1)
    np.testing.assert_allclose(filled[0], ref, atol=1e-5)
    np.testing.assert_array_equal(filled[0][~hole], np.asarray(x)[0][~hole])  # known pixels kept
    assert baseline.name(degrade.chain(gray, mask)) == "biharmonic+gray"
    assert baseline.name(degrade.Noise(0.1)) == "identity"


def test_the_inpainting_baseline_names_the_package_it_misses(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.restoration", None)  # as if scikit-image were not installed
    with pytest.raises(ImportError, match=r"^the inpainting baseline needs scikit-image: pip install scikit-image$"):
        baseline.check(degrade.chain(degrade.Grayscale(), degrade.Mask(None)))
    baseline.check(degrade.Downsample(2))  # no other baseline needs it
