"""The classical restoration that a search through the generator has to beat, for any degradation chain.

Undoes what can be undone without a prior, in the reverse order of the chain
(`degrade.py`): unknown pixels filled by biharmonic inpainting (scikit-image's
`inpaint_biharmonic`, at the observation's size), a gray image repeated to
three channels, and a small image enlarged with PIL's bicubic filter (from
uint8, as a saved image is). Blur and noise are left as they are: the blurred
or noisy image is the baseline.
"""

import jax.numpy as jnp
import numpy as np
from PIL import Image

from fastgan_jax import images as images_lib
from fastgan_jax.sr import degrade
from fastgan_jax.sr.files import enlarge


def _ops(op) -> tuple:
    return op.ops if isinstance(op, degrade.Chain) else (op,)


def name(op) -> str:
    """What `classical` does for `op`, e.g. 'bicubic', 'biharmonic', 'gray', 'identity'."""
    kinds = {type(o) for o in _ops(op)}
    parts = [label for kind, label in ((degrade.Downsample, "bicubic"), (degrade.Mask, "biharmonic")) if kind in kinds]
    parts += ["gray"] if degrade.Grayscale in kinds else []
    return "+".join(parts) or "identity"


def check(op) -> None:
    """Raises ImportError (with the pip command) if `classical` needs scikit-image for `op` and it is missing:
    to call before anything slow starts."""
    if any(isinstance(o, degrade.Mask) for o in _ops(op)):
        _inpaint_biharmonic()


def _inpaint_biharmonic():
    try:
        from skimage.restoration import inpaint_biharmonic
    except ImportError:
        raise ImportError("the inpainting baseline needs scikit-image: pip install scikit-image") from None
    return inpaint_biharmonic


def biharmonic(y, known) -> np.ndarray:
    """[B, h, w, C] float images with the pixels where `known` ([h, w] or [B, h, w]) is 0 filled by
    scikit-image's biharmonic inpainting. Raises ImportError with the pip command without scikit-image."""
    inpaint_biharmonic = _inpaint_biharmonic()
    y = np.asarray(y, np.float64)
    unknown = np.array(np.broadcast_to(np.asarray(known) == 0, y.shape[:3]))  # writable, as skimage needs
    return np.stack([inpaint_biharmonic(im, m, channel_axis=-1) for im, m in zip(y, unknown, strict=True)])


def classical(op, y, size: int) -> jnp.ndarray:
    """[B, size, size, 3] float32 in [-1, 1]: the classical restoration of observations `y` of `op`.

    y: [B, h, w, C] in [-1, 1] (C 1 after `Grayscale`), as `degrade.observe` makes it; size: the
    generator's resolution (a whole multiple of h).
    """
    x = np.asarray(y, np.float32)
    mask = next((o for o in _ops(op) if isinstance(o, degrade.Mask)), None)
    if mask is not None:
        x = biharmonic(x, mask.known).astype(np.float32)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[1] != size:
        u8 = images_lib.to_uint8(jnp.asarray(x))
        x = images_lib.to_float(jnp.asarray(np.stack([enlarge(im, size, Image.BICUBIC) for im in u8])))
    return jnp.asarray(x, jnp.float32)
