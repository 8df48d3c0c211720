"""What a search is given, checked against the generator and the degradation: one-line ValueErrors before
anything compiles."""

import jax
import jax.numpy as jnp
import numpy as np

from fastgan_jax import images as images_lib
from fastgan_jax.sr import degrade
from fastgan_jax.sr.downsample import DOWNSAMPLERS


def check_lr_images(lr_images, im_size: int) -> tuple[int, int]:
    """Checks the LR batch against the generator; returns (batch, LR size)."""
    images_lib.check_any(lr_images, "lr_images")
    b, h, w = np.shape(lr_images)[:3]
    if not b:
        raise ValueError("lr_images: the batch is empty")
    if h != w:
        raise ValueError(f"lr_images: LR images must be square, got {h}x{w}")
    if im_size % h:
        raise ValueError(f"lr_images: the generator's {im_size}px is not a whole multiple of the {h}px LR size")
    return b, h


def check_observed(observed, im_size: int, op) -> int:
    """Checks the observations against what `op` makes of the generator's images; returns the batch."""
    want = jax.eval_shape(op, jax.ShapeDtypeStruct((1, im_size, im_size, 3), jnp.float32)).shape[1:]
    if np.ndim(observed) == 4 and tuple(np.shape(observed)[1:]) != tuple(want):
        raise ValueError(
            f"observed: the operator makes {want[0]}x{want[1]}x{want[2]} of the generator's {im_size}px images, "
            f"got {'x'.join(map(str, np.shape(observed)[1:]))}"
        )
    images_lib.check_any(observed, "observed", channels=want[2])  # dtype, range, [B, h, w, c]
    if not np.shape(observed)[0]:
        raise ValueError("observed: the batch is empty")
    return np.shape(observed)[0]


def same_kind(observed, im_size, op) -> bool:
    """Whether `observed` are images like the generator's: its size, 3 channels, every pixel known."""
    shape = tuple(np.shape(observed)[1:])
    return shape == (im_size, im_size, 3) and not any(isinstance(o, degrade.Mask) for o in _ops(op))


def _ops(op) -> tuple:
    return op.ops if isinstance(op, degrade.Chain) else (op,)


def downsampling(generator, lr_images, downsample):
    """The `degrade.Downsample` whose outputs are `lr_images`' size, for `generator`'s images (checked)."""
    if downsample not in DOWNSAMPLERS:
        raise ValueError(f"downsample must be one of {sorted(DOWNSAMPLERS)}, got {downsample!r}")
    _, size = check_lr_images(lr_images, generator.im_size)
    return degrade.Downsample(generator.im_size // size, downsample)
