"""The image conventions of the public API, and the checks at its boundary.

- Float images are NHWC with 3 channels in [-1, 1] (float32, bfloat16 or
  float16) everywhere a user passes or receives them: generator outputs,
  `upscale` inputs and results, LPIPS, FID helpers, grids.
- Data is uint8 NHWC in [0, 255]: what `data.load` returns and what the
  train step draws its batches from.

A scale that is internal to an algorithm (PULSE's eps and loss on [0, 1],
SSIM's constants) is converted inside that algorithm. The checks below look
at dtype and shape only (static, free inside jit); a concrete float array
whose values are far outside [-1, 1] (e.g. 0-255 floats) is also refused.
"""

import jax
import jax.numpy as jnp
import numpy as np

_FLOATS = (np.float16, np.float32, np.float64, jnp.bfloat16)


def _dtype(x) -> np.dtype:
    return np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)


def _shape_error(name, x, size, what, channels=3):
    want = f"[B, {size or 'H'}, {size or 'W'}, {channels}]"
    return ValueError(f"{name}: expected {what} images of shape {want}, got shape {tuple(np.shape(x))}")


def _check_shape(x, name, size, what, ndim, channels=3):
    shape = np.shape(x)
    if len(shape) != ndim or shape[-1] != channels or (size is not None and tuple(shape[-3:-1]) != (size, size)):
        raise _shape_error(name, x, size, what, channels)


def check_float(x, name: str = "images", *, size: int | None = None, ndim: int = 4, channels: int = 3):
    """Returns `x` after checking that it is a float image batch [B, H, W, 3] in [-1, 1].

    Args:
      x: the images (numpy or JAX, traced or concrete).
      name: what to call them in the error (an argument or a flag).
      size: the required height and width, or None for any.
      ndim: 4 for a batch [B, H, W, 3], 3 for one image [H, W, 3].
      channels: the last axis (3; 1 for gray images).

    Raises:
      ValueError: one line naming `name`, what was expected and what came.
    """
    dtype = _dtype(x)
    if dtype == np.uint8:
        raise ValueError(
            f"{name}: got uint8 images; this function takes float images in [-1, 1] "
            "(convert with fastgan_jax.images.to_float)"
        )
    if dtype not in [np.dtype(t) for t in _FLOATS]:
        raise ValueError(f"{name}: expected float images in [-1, 1], got dtype {dtype}")
    _check_shape(x, name, size, "float", ndim, channels)
    if not isinstance(x, jax.core.Tracer) and np.size(x):
        lo, hi = _value_range(x)
        if lo < -1.5 or hi > 1.5:
            raise ValueError(f"{name}: float images must lie in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
    return x


def _value_range(x) -> tuple[float, float]:
    """(min, max) of a concrete array, also when it is a constant seen while tracing a jitted caller."""
    if isinstance(x, jax.Array):
        with jax.ensure_compile_time_eval():  # two scalars from the device, not the batch
            return float(jnp.min(x)), float(jnp.max(x))
    x = np.asarray(x)
    return float(np.min(x)), float(np.max(x))


def check_uint8(x, name: str = "images", *, size: int | None = None, ndim: int = 4, channels: int = 3):
    """Returns `x` after checking that it is a uint8 image batch [B, H, W, 3] (data).

    Raises:
      ValueError: a float array (the train step would read [-1, 1] floats as
        pixel values), or a wrong shape.
    """
    dtype = _dtype(x)
    if dtype != np.uint8:
        raise ValueError(
            f"{name}: expected uint8 data in [0, 255], got dtype {dtype} "
            "(float images in [-1, 1] convert with fastgan_jax.images.to_uint8)"
        )
    _check_shape(x, name, size, "uint8", ndim, channels)
    return x


def check_any(x, name: str = "images", *, size: int | None = None, ndim: int = 4, channels: int = 3):
    """Checks uint8 data or float images in [-1, 1]; returns `x` unchanged."""
    if _dtype(x) == np.uint8:
        return check_uint8(x, name, size=size, ndim=ndim, channels=channels)
    return check_float(x, name, size=size, ndim=ndim, channels=channels)


def to_float(x):
    """uint8 [0, 255] -> float32 [-1, 1] (float input passes through as float32)."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 127.5 - 1.0
    return x.astype(jnp.float32)


def to_uint8(images) -> np.ndarray:
    """Float images in [-1, 1] (any float dtype) -> uint8 numpy, rounded; uint8 passes through."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        return x
    x = (x.astype(np.float32) + 1.0) * 127.5
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def to_unit(x):
    """[-1, 1] -> [0, 1], for algorithms defined on that scale."""
    return (x + 1.0) / 2.0


def from_unit(x):
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0
