"""Building blocks of FastGAN, ported from the official `models.py` (NHWC).

Every convolution is spectral-normalised as in the official code
(`torch.nn.utils.spectral_norm`): the raw kernel is a parameter, the
power-iteration vectors `u` and `v` live in the `batch_stats` collection next
to the BatchNorm running statistics. In eval mode (`train=False`) the stored
vectors are used as they are; in train mode one power iteration runs first
and updates them, exactly as PyTorch does.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Official `weights_init`: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02).
conv_init = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def _l2_normalize(x, eps=1e-12):
    # torch.nn.functional.normalize: x / max(||x||, eps).
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def _random_unit(key, n):
    return _l2_normalize(jax.random.normal(key, (n,), jnp.float32))


def spectral_normalize(w_t, u, v, power_iteration):
    """Divides a weight matrix by its largest singular value, as PyTorch does.

    Args:
      w_t: the transposed weight matrix `W^T`, shape [K, O] (a conv kernel
        reshaped so that its last axis is the output channel).
      u: [O] left vector; v: [K] right vector.
      power_iteration: run one power iteration before estimating sigma.

    Returns:
      (w_t / sigma, u, v) with the (possibly updated) vectors.
    """
    if power_iteration:
        w_const = jax.lax.stop_gradient(w_t).astype(jnp.float32)
        v = _l2_normalize(w_const @ u)  # W^T u
        u = _l2_normalize(v @ w_const)  # W v
    # sigma = u^T W v; gradients flow through W only, as in PyTorch.
    sigma = jnp.dot(u, jnp.dot(v, w_t.astype(jnp.float32)))
    return w_t / sigma.astype(w_t.dtype), u, v


def _sn_weight(module: nn.Module, kernel, train: bool):
    """`kernel` divided by its spectral norm, with `u`, `v` kept in `batch_stats`.

    The kernel's last axis is the output channel; `v` follows the order of
    `kernel.reshape(-1, out)`. Train mode runs one power iteration and stores it.
    """
    out, n_in = kernel.shape[-1], kernel.size // kernel.shape[-1]
    u = module.variable("batch_stats", "u", lambda: _random_unit(module.make_rng("params"), out))
    v = module.variable("batch_stats", "v", lambda: _random_unit(module.make_rng("params"), n_in))
    update = train and not module.is_initializing()
    w_t, u_new, v_new = spectral_normalize(kernel.reshape(n_in, out), u.value, v.value, update)
    if update:
        u.value, v.value = u_new, v_new
    return w_t.reshape(kernel.shape)


class SNConv(nn.Module):
    """Spectral-normalised 2D convolution without bias (NHWC, HWIO kernel).

    `v` is stored in the order of `kernel.reshape(-1, out)`, i.e. (kh, kw, in);
    `convert.py` permutes it from PyTorch's (in, kh, kw).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):  # x: [B, H, W, Cin]
        k, cin = self.kernel_size, x.shape[-1]
        kernel = _sn_weight(self, self.param("kernel", conv_init, (k, k, cin, self.features)), train)
        dtype = self.dtype or x.dtype
        p = self.padding
        return jax.lax.conv_general_dilated(
            x.astype(dtype),
            kernel.astype(dtype),
            window_strides=(self.stride, self.stride),
            padding=((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )


class SNLatentConvTranspose(nn.Module):
    """The official init layer's ConvTranspose2d(nz, C, 4, 1, 0) on a 1x1 map.

    On a 1x1 input a transposed 4x4 convolution is a matrix product; the kernel
    is kept as [nz, 4, 4, C] (PyTorch's [in, out, kh, kw] with `out` last), so
    that `kernel.reshape(nz * 16, C)` is the matrix PyTorch normalises
    (`dim=1`), with `v` in PyTorch's own order.
    """

    features: int
    size: int = 4
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, z, train: bool = False):  # z: [B, nz]
        nz, s = z.shape[-1], self.size
        kernel = _sn_weight(self, self.param("kernel", conv_init, (nz, s, s, self.features)), train)
        dtype = self.dtype or z.dtype
        w = kernel.reshape(nz, s * s * self.features).astype(dtype)
        return (z.astype(dtype) @ w).reshape(z.shape[0], s, s, self.features)  # [B, 4, 4, C]


class BatchNorm(nn.Module):
    """BatchNorm2d with PyTorch's semantics (eps 1e-5, momentum 0.1).

    Train mode normalises with the biased batch variance and updates the
    running variance with the unbiased one, as PyTorch does (Flax's own
    BatchNorm stores the biased variance). `count` mirrors
    `num_batches_tracked` so that official checkpoints round-trip.
    """

    momentum: float = 0.1
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool = False):  # x: [B, H, W, C]
        c = x.shape[-1]
        scale = self.param("scale", _bn_scale_init, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        count = self.variable("batch_stats", "count", lambda: jnp.zeros((), jnp.int32))
        if train:
            xf = x.astype(jnp.float32)
            n = x.size // c
            mean = jnp.mean(xf, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * (n / max(n - 1, 1))
                count.value = count.value + 1
        else:
            mean, var = ra_mean.value, ra_var.value
        mul = scale * jax.lax.rsqrt(var + self.eps)
        return (x - mean.astype(x.dtype)) * mul.astype(x.dtype) + bias.astype(x.dtype)


def glu(x):
    """Gated linear unit over channels: first half times sigmoid(second half)."""
    c = x.shape[-1] // 2
    return x[..., :c] * jax.nn.sigmoid(x[..., c:])


def leaky_relu(x):
    return jax.nn.leaky_relu(x, 0.2)


def upsample2x(x):  # nearest, [B, H, W, C] -> [B, 2H, 2W, C]
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def avg_pool(x, out_size):
    """AdaptiveAvgPool2d(out_size) for sizes that divide evenly (all FastGAN uses)."""
    b, h, w, c = x.shape
    if h % out_size or w % out_size:
        raise ValueError(f"avg_pool: {h}x{w} map does not divide into {out_size}x{out_size}")
    x = x.reshape(b, out_size, h // out_size, out_size, w // out_size, c)
    return x.mean(axis=(2, 4))


def nearest_resize(x, size):
    """F.interpolate(x, size, mode='nearest') of PyTorch on NHWC images."""

    def index(n_in):
        scale = np.float32(n_in) / np.float32(size)
        idx = np.floor(np.arange(size, dtype=np.float32) * scale).astype(np.int64)
        return np.minimum(idx, n_in - 1)

    if x.shape[1] == size and x.shape[2] == size:
        return x
    return x[:, index(x.shape[1])][:, :, index(x.shape[2])]


class NoiseInjection(nn.Module):
    """feat + weight * noise, noise N(0, 1) of shape [B, H, W, 1] (weight init 0).

    Noise comes from the `noise` RNG stream unless given explicitly.
    """

    @nn.compact
    def __call__(self, x, noise=None):
        weight = self.param("weight", nn.initializers.zeros, ())
        if noise is None:
            if not self.has_rng("noise"):
                raise ValueError(
                    "Generator needs noise: pass rngs={'noise': key} to apply(), or the noise maps explicitly"
                )
            noise = jax.random.normal(self.make_rng("noise"), (*x.shape[:3], 1), jnp.float32)
        return x + (weight * noise).astype(x.dtype)


class SEBlock(nn.Module):
    """Skip-layer excitation: gates `big` channel-wise from the low-res `small` map."""

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, small, big, train: bool = False):
        h = avg_pool(small, 4)
        h = SNConv(self.features, 4, dtype=self.dtype, name="conv1")(h, train)  # [B, 1, 1, C]
        h = nn.swish(h)
        h = SNConv(self.features, 1, dtype=self.dtype, name="conv2")(h, train)
        return big * jax.nn.sigmoid(h)


class UpBlock(nn.Module):
    """Nearest x2, conv3x3, BatchNorm, GLU."""

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = SNConv(2 * self.features, 3, padding=1, dtype=self.dtype, name="conv")(upsample2x(x), train)
        return glu(BatchNorm(name="bn")(x, train))


class UpBlockComp(nn.Module):
    """Nearest x2, two (conv3x3, noise injection, BatchNorm, GLU)."""

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, noise: Sequence | None = None):
        noise = noise if noise is not None else (None, None)
        x = upsample2x(x)
        for i in (1, 2):
            x = SNConv(2 * self.features, 3, padding=1, dtype=self.dtype, name=f"conv{i}")(x, train)
            x = NoiseInjection(name=f"noise{i}")(x, noise[i - 1])
            x = glu(BatchNorm(name=f"bn{i}")(x, train))
        return x


class DownBlock(nn.Module):
    """conv4x4 stride 2, BatchNorm, LeakyReLU(0.2)."""

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = SNConv(self.features, 4, 2, 1, dtype=self.dtype, name="conv")(x, train)
        return leaky_relu(BatchNorm(name="bn")(x, train))


class DownBlockComp(nn.Module):
    """Residual down block: the average of a conv path and an avg-pool shortcut."""

    features: int
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        f, dt = self.features, self.dtype
        main = SNConv(f, 4, 2, 1, dtype=dt, name="conv1")(x, train)
        main = leaky_relu(BatchNorm(name="bn1")(main, train))
        main = SNConv(f, 3, 1, 1, dtype=dt, name="conv2")(main, train)
        main = leaky_relu(BatchNorm(name="bn2")(main, train))
        direct = avg_pool(x, x.shape[1] // 2)
        direct = SNConv(f, 1, dtype=dt, name="conv_direct")(direct, train)
        direct = leaky_relu(BatchNorm(name="bn_direct")(direct, train))
        return (main + direct) / 2
