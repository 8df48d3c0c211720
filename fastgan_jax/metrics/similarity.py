"""PSNR and SSIM: full-reference similarity of float images in [-1, 1].

Both are defined here on the [0, 1] scale (data range 1, SSIM's constants
K1 = 0.01, K2 = 0.03), the scale the SR literature reports; images are
converted inside.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fastgan_jax import images as images_lib


def _unit_pair(x, y):
    x, y = images_lib.check_float(x, "x"), images_lib.check_float(y, "y")
    if np.shape(x) != np.shape(y):
        raise ValueError(f"x and y must have the same shape, got {tuple(np.shape(x))} and {tuple(np.shape(y))}")
    return (images_lib.to_unit(jnp.asarray(x, jnp.float32)), images_lib.to_unit(jnp.asarray(y, jnp.float32)))


def psnr(x, y):
    """Peak signal-to-noise ratio per image, in dB: [B].

    Args:
      x, y: float images [B, H, W, 3] in [-1, 1] (PSNR on the [0, 1] scale).
    """
    x, y = _unit_pair(x, y)
    mse = jnp.mean(jnp.square(x - y), axis=(1, 2, 3))
    return 10 * jnp.log10(1.0 / jnp.maximum(mse, 1e-12))


def _gaussian_window(size=11, sigma=1.5):
    g = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def ssim(x, y):
    """SSIM (Wang et al., 2004) per image: [B].

    The reference implementation's settings on the [0, 1] scale: an 11x11
    Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering,
    averaged over pixels and channels.

    Args:
      x, y: float images [B, H, W, 3] in [-1, 1].
    """
    x, y = _unit_pair(x, y)
    g = jnp.asarray(_gaussian_window())
    c = x.shape[-1]
    kernel = jnp.tile((g[:, None] * g[None, :])[:, :, None, None], (1, 1, 1, c))  # depthwise [11, 11, 1, C]

    def blur(v):
        return jax.lax.conv_general_dilated(
            v, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c
        )

    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(axis=(1, 2, 3))
