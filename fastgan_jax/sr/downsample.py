"""Differentiable image downsampling for PULSE: area (box) and bicubic.

Both are separable linear maps, built once per shape as small matrices in
float64 on the host and applied with two einsums, so they work under `jit`
and `grad` at any size.

- `area_downsample` reproduces PIL's `Image.resize(size, Image.BOX)`: every
  output pixel averages the input pixels whose centres fall inside its
  footprint (PIL's box filter). For integer factors that is exactly the mean
  over each factor x factor block.
- `bicubic_downsample` is PULSE's antialiased bicubic (`BicubicDownSample`
  of the PULSE code): a Keys kernel (a = -0.5) stretched by the factor,
  4 * factor taps, normalised, reflect padding, integer factors only.
"""

import functools

import jax.numpy as jnp
import numpy as np


def _box(x):
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


@functools.lru_cache(maxsize=64)
def box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] weights of PIL's BOX resampling along one axis."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        x = np.arange(lo, hi)
        w = _box((x - center + 0.5) / filterscale)
        if w.sum() != 0:
            w = w / w.sum()
        m[i, lo:hi] = w
    return m


def keys_cubic(x, a=-0.5):
    """The Keys cubic convolution kernel (a = -0.5 as PULSE and PIL)."""
    x = np.abs(x)
    return np.where(
        x <= 1,
        (a + 2) * x**3 - (a + 3) * x**2 + 1,
        np.where(x < 2, a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a, 0.0),
    )


def _reflect(i, n):
    # torch F.pad(mode='reflect'): ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
    period = 2 * (n - 1)
    i = np.abs(i) % period if n > 1 else np.zeros_like(i)
    return np.where(i >= n, period - i, i)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, factor: int) -> np.ndarray:
    """[in_size // factor, in_size] weights of PULSE's bicubic downsampler along one axis."""
    size = 4 * factor
    taps = keys_cubic((np.arange(size) - np.floor(size / 2) + 0.5) / factor)
    taps = (taps / taps.sum()).astype(np.float32).astype(np.float64)  # PULSE stores the kernel in float32
    pad = (size - factor) // 2
    out = in_size // factor
    m = np.zeros((out, in_size))
    for j in range(out):
        src = _reflect(j * factor - pad + np.arange(size), in_size)
        np.add.at(m[j], src, taps)
    return m


def _check(images, size):
    if images.ndim != 4:
        raise ValueError(f"expected images [B, H, W, C], got shape {images.shape}")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h > images.shape[1] or w > images.shape[2]:
        raise ValueError(f"cannot downsample {images.shape[1]}x{images.shape[2]} to the larger {h}x{w}")
    return h, w


def _apply(images, mh, mw):
    dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
    x = images.astype(dtype)
    x = jnp.einsum("oh,bhwc->bowc", jnp.asarray(mh, dtype), x, precision="highest")
    return jnp.einsum("pw,bowc->bopc", jnp.asarray(mw, dtype), x, precision="highest")


def area_downsample(images, size):
    """Area (box) downsampling of NHWC images to `size` (int or (H, W)), as PIL's BOX.

    Any factor, integer or not; differentiable; jit-friendly.
    """
    h, w = _check(images, size)
    return _apply(images, box_matrix(images.shape[1], h), box_matrix(images.shape[2], w))


def bicubic_downsample(images, size):
    """PULSE's antialiased bicubic downsampling of NHWC images to `size` (whole factors only)."""
    h, w = _check(images, size)
    H, W = images.shape[1:3]
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"bicubic downsampling needs one whole factor: {H}x{W} -> {h}x{w}")
    f = H // h
    return _apply(images, bicubic_matrix(H, f), bicubic_matrix(W, f))


DOWNSAMPLERS = {"area": area_downsample, "bicubic": bicubic_downsample}
