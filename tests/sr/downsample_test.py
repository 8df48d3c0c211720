import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fastgan_jax.sr.downsample import area_downsample, bicubic_downsample, keys_cubic


def pil_resize(img, size, method):  # img [H, W, C] float -> per-channel PIL 'F' resize
    h, w = size
    return np.stack(
        [np.asarray(Image.fromarray(img[..., c], "F").resize((w, h), method)) for c in range(img.shape[-1])], -1
    )


def pulse_reference(img, factor):
    """PULSE's BicubicDownSample.forward in numpy: reflect pad, strided separable correlation."""
    size = 4 * factor
    k = keys_cubic((np.arange(size) - np.floor(size / 2) + 0.5) / factor)
    k = (k / k.sum()).astype(np.float32)
    pad = size - factor
    top = pad // 2
    x = np.pad(img, ((top, pad - top), (0, 0), (0, 0)), mode="reflect")
    x = np.stack(
        [np.tensordot(k, x[i * factor : i * factor + size], axes=(0, 0)) for i in range(img.shape[0] // factor)]
    )
    x = np.pad(x, ((0, 0), (top, pad - top), (0, 0)), mode="reflect")
    cols = [np.tensordot(x[:, j * factor : j * factor + size], k, axes=(1, 0)) for j in range(img.shape[1] // factor)]
    return np.stack(cols, 1)


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [
        ((64, 64), (32, 32)),
        ((96, 96), (32, 32)),
        ((256, 256), (16, 16)),
        ((1024, 1024), (16, 16)),
        ((128, 128), (2, 2)),
        ((37, 53), (11, 7)),
        ((100, 100), (30, 30)),
        ((64, 64), (64, 64)),
        ((63, 64), (21, 8)),
    ],
)
def test_area_matches_pil_box(in_hw, out_hw):
    img = np.random.default_rng(0).random((*in_hw, 3), dtype=np.float32)
    ours = area_downsample(jnp.asarray(img)[None], out_hw)[0]
    np.testing.assert_allclose(ours, pil_resize(img, out_hw, Image.BOX), atol=1e-5)


def test_area_at_whole_factors_is_the_block_mean():
    img = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    np.testing.assert_allclose(area_downsample(img, 8), img.reshape(2, 8, 8, 8, 8, 3).mean(axis=(2, 4)), atol=1e-6)


@pytest.mark.parametrize("factor", [2, 3, 4, 8, 16])
def test_bicubic_matches_pulse_and_pil_inside(factor):
    n = 16 * factor
    img = np.random.default_rng(1).random((n, n, 3), dtype=np.float32)
    ours = np.asarray(bicubic_downsample(jnp.asarray(img)[None], n // factor)[0])
    np.testing.assert_allclose(ours, pulse_reference(img, factor), atol=1e-5)
    if factor % 2 == 0:  # PIL's bicubic is the same kernel, aligned the same for even factors
        pil = pil_resize(img, (n // factor, n // factor), Image.BICUBIC)
        np.testing.assert_allclose(ours[2:-2, 2:-2], pil[2:-2, 2:-2], atol=1e-5)


@pytest.mark.parametrize("down,in_size,out_size", [(area_downsample, 12, 5), (bicubic_downsample, 16, 4)])
def test_jit_and_numerical_gradient(down, in_size, out_size):
    x = jax.random.uniform(jax.random.key(0), (1, in_size, in_size, 1))
    w = jax.random.normal(jax.random.key(1), (1, out_size, out_size, 1))
    f = jax.jit(lambda x: jnp.sum(jnp.sin(down(x, out_size) * 3) * w))
    g = jax.grad(f)(x)
    eps = 1e-2  # float32: a larger step keeps rounding out of the central difference
    for idx in [(0, 0, 0, 0), (0, 5, 7, 0), (0, in_size - 1, in_size - 1, 0)]:
        num = (f(x.at[idx].add(eps)) - f(x.at[idx].add(-eps))) / (2 * eps)
        np.testing.assert_allclose(g[idx], num, rtol=1e-2, atol=5e-5)


def test_bad_sizes():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="to the larger 64x64"):
        area_downsample(x, 64)
    with pytest.raises(ValueError, match="one whole factor"):
        bicubic_downsample(x, 12)
    with pytest.raises(ValueError, match="expected images"):
        area_downsample(jnp.zeros((32, 32, 3)), 8)
