"""PSNR and SSIM: full-reference similarity of float images in [-1, 1].

Both are defined here on the [0, 1] scale (data range 1, SSIM's constants
K1 = 0.01, K2 = 0.03), the scale the SR literature reports; images are
converted inside.
"""

import dm_pix
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


def ssim(x, y):
    """SSIM (Wang et al., 2004) per image: [B].

    The reference implementation's settings on the [0, 1] scale: an 11x11
    Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering,
    averaged over pixels and channels (`dm_pix.ssim`; the same as
    scikit-image's `structural_similarity` with `gaussian_weights=True,
    use_sample_covariance=False, data_range=1`).

    Args:
      x, y: float images [B, H, W, 3] in [-1, 1], at least 11x11.
    """
    x, y = _unit_pair(x, y)
    return dm_pix.ssim(x, y, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03)
