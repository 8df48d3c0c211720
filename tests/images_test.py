"""One image convention at the API: float images in [-1, 1], uint8 data; the wrong kind is a one-line ValueError."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax import images, visual

FLOAT = np.zeros((2, 16, 16, 3), np.float32)
U8 = np.zeros((2, 16, 16, 3), np.uint8)


def one_line(excinfo):
    assert "\n" not in str(excinfo.value)
    return str(excinfo.value)


def test_checks_accept_the_right_kind():
    assert images.check_float(FLOAT, size=16) is FLOAT
    assert images.check_float(jnp.asarray(FLOAT, jnp.bfloat16)) is not None
    assert images.check_uint8(U8, size=16) is U8
    assert images.check_any(U8) is U8 and images.check_any(FLOAT) is FLOAT
    assert images.check_float(FLOAT[0], ndim=3) is not None


@pytest.mark.parametrize(
    ("check", "x", "message"),
    [
        (images.check_float, U8, r"x: got uint8 images; this function takes float images in \[-1, 1\]"),
        (images.check_float, FLOAT + 200, r"x: float images must lie in \[-1, 1\], got values in \[200, 200\]"),
        (images.check_float, FLOAT[..., :1], r"x: expected float images of shape \[B, H, W, 3\], got shape"),
        (images.check_float, FLOAT[0], r"expected float images of shape \[B, H, W, 3\], got shape \(16, 16, 3\)"),
        (images.check_float, np.zeros((2, 16, 16, 3), np.int32), "x: expected float images in .*got dtype int32"),
        (images.check_uint8, FLOAT, r"x: expected uint8 data in \[0, 255\], got dtype float32"),
        (images.check_uint8, U8[..., :2], r"x: expected uint8 images of shape \[B, H, W, 3\]"),
    ],
)
def test_wrong_kinds_are_one_line_errors(check, x, message):
    with pytest.raises(ValueError, match=message) as e:
        check(x, "x")
    one_line(e)


def test_range_check_of_a_constant_seen_inside_jit():
    # A concrete device array closed over by a jitted caller is checked without turning into a tracer.
    good, bad = jnp.zeros((1, 8, 8, 3)), jnp.full((1, 8, 8, 3), 255.0)
    assert float(jax.jit(lambda y: images.check_float(good).sum() + y)(1.0)) == 1.0
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\], got values in \[255, 255\]"):
        jax.jit(lambda y: images.check_float(bad).sum() + y)(1.0)


def test_size_is_checked():
    with pytest.raises(ValueError, match=r"images of shape \[B, 32, 32, 3\], got shape \(2, 16, 16, 3\)"):
        images.check_uint8(U8, size=32)


def test_conversions_round_trip():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, -1)
    x = images.to_float(jnp.asarray(u8))
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(images.to_uint8(x), u8)
    np.testing.assert_allclose(images.from_unit(images.to_unit(x)), x, atol=1e-7)


def test_public_functions_refuse_the_wrong_kind():
    with pytest.raises(ValueError, match="x: got uint8 images") as e:
        fj.lpips_distance("alex")(U8, U8)
    one_line(e)
    with pytest.raises(ValueError, match="x: float images must lie in"):
        fj.psnr(FLOAT + 255, FLOAT)
    with pytest.raises(ValueError, match="y: got uint8 images"):
        fj.ssim(FLOAT, U8)
    with pytest.raises(ValueError, match="images: float images must lie in"):
        visual.grid(FLOAT + 255)
    with pytest.raises(ValueError, match="images: float images must lie in"):
        fj.inception_features(FLOAT + 128)
    with pytest.raises(ValueError, match=r"images: expected uint8 images of shape \[B, H, W, 3\]"):
        visual.grid(U8[..., :1])


def test_grid_takes_uint8_and_float_alike():
    x = np.linspace(-1, 1, 2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    np.testing.assert_array_equal(visual.grid(x), visual.grid(images.to_uint8(x)))


def test_labelled_rows_name_each_row_at_its_left():
    tiles = np.zeros((8, 16, 16, 3), np.uint8)  # black tiles: 2 rows of 4
    out = visual.labelled_rows(tiles, ["real", "rec_all"])
    plain = visual.grid(tiles, ncols=4)
    assert out.shape[0] == plain.shape[0] and out.shape[1] > plain.shape[1]
    np.testing.assert_array_equal(out[:, -plain.shape[1] :], plain)
    margin = out[:, : out.shape[1] - plain.shape[1]]
    for r in range(2):  # dark text in each row's band of the margin
        band = margin[2 + r * 18 : 2 + r * 18 + 16]
        assert band.min() < 128, r
