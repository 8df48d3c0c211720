"""Degradation operators y = A(x): the forward models that restoration inverts through the generator.

Each operator takes [B, H, W, 3] float images in [-1, 1] (the generator's
outputs) to what the camera or the damage would show, in [-1, 1] too, and is
jittable and differentiable: the search minimises the error of A(G(z))
against the observed y. Operators are pytrees (`flax.struct.dataclass`):
settings that change shapes are static fields, data (a mask, a kernel) are
array leaves, so one compiled search serves every mask of a shape.

- `Downsample(factor, method)`: area (PIL's BOX) or PULSE's bicubic
  (`downsample.py`), super-resolution.
- `GaussianBlur(sigma)`: DeepMind's dm-pix separable Gaussian, with the
  border mirrored as SciPy's `gaussian_filter(mode="reflect")`.
- `UnknownBlur(sigma)`: a Gaussian of unknown width, estimated by the
  search with the image (its `sigma` is a leaf: `unknowns`, `with_unknowns`).
- `Blur(kernel)`: a user's [k, k] kernel, convolved (flipped, as
  `scipy.ndimage.convolve`) with the border mirrored the same way.
- `Mask(known)`: inpainting: the image itself, of which only the known
  pixels (known = 1) count in the error.
- `Grayscale()`: ITU-R 601 luma, as PIL's `convert("L")` (dm-pix's
  `rgb_to_grayscale` on the [0, 1] scale); one channel out.
- `Noise(sigma)`: denoising: the image itself, observed with additive
  Gaussian noise of standard deviation `sigma` on the [0, 1] scale; the
  search cannot (and should not) fit below sigma^2, which `eps` adds.
- `Chain(ops)`: the operators applied in order, e.g. blur then downsample.
"""

import dataclasses

import dm_pix as pix
import flax
import jax
import jax.numpy as jnp

from fastgan_jax.sr.downsample import DOWNSAMPLERS


def _mirror(x, radius: int):
    """[B, H, W, C] with `radius` pixels mirrored at each border (SciPy's "reflect": the edge repeated)."""
    return jnp.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="symmetric")


@flax.struct.dataclass
class Downsample:
    """Whole-factor downsampling: `method` 'area' (PIL's BOX) or 'bicubic' (PULSE's)."""

    factor: int = flax.struct.field(pytree_node=False)
    method: str = flax.struct.field(pytree_node=False, default="area")

    def __call__(self, x):
        h, w = x.shape[1] // self.factor, x.shape[2] // self.factor
        return DOWNSAMPLERS[self.method](x, (h, w))


@flax.struct.dataclass
class GaussianBlur:
    """Gaussian blur of standard deviation `sigma` pixels, truncated at `radius` (default ceil(3 sigma))."""

    sigma: float = flax.struct.field(pytree_node=False)
    radius: int | None = flax.struct.field(pytree_node=False, default=None)

    @property
    def size(self) -> int:
        return self.radius if self.radius is not None else max(1, int(-(-3 * self.sigma // 1)))

    def __call__(self, x):
        r = self.size
        return pix.gaussian_blur(_mirror(x, r), self.sigma, 2 * r + 1, padding="VALID")


@flax.struct.dataclass
class UnknownBlur:
    """A Gaussian blur whose width is not known: the search estimates it with the image (blind deblurring).

    `sigma` is a leaf (a scalar, or [B] per image), the current estimate in pixels; the search optimises it
    (`unknowns`, `with_unknowns`) and clips it to [lo, hi]. The kernel is truncated at ceil(3 hi) pixels
    for every sigma (one compiled shape), normalised, and applied as `GaussianBlur` is (border mirrored).
    """

    sigma: jax.Array
    lo: float = flax.struct.field(pytree_node=False, default=0.3)
    hi: float = flax.struct.field(pytree_node=False, default=3.0)

    @property
    def size(self) -> int:
        return max(1, int(-(-3 * self.hi // 1)))

    def kernels(self, n: int) -> jax.Array:
        """[n, 2 size + 1] normalised 1-D Gaussians of the (clipped) widths."""
        sigma = jnp.broadcast_to(jnp.clip(jnp.asarray(self.sigma, jnp.float32), self.lo, self.hi), (n,))
        t = jnp.arange(-self.size, self.size + 1, dtype=jnp.float32)
        k = jnp.exp(-0.5 * jnp.square(t[None] / sigma[:, None]))
        return k / k.sum(axis=1, keepdims=True)

    def __call__(self, x):
        # Rows, then columns, as sums of 2 size + 1 shifted copies weighted per image: one fused elementwise
        # pass each way (2.4-3x faster than a per-image depthwise convolution, forward and gradient, on a CPU).
        r, h, w = self.size, x.shape[1], x.shape[2]
        k = self.kernels(x.shape[0]).astype(x.dtype)[:, :, None, None, None]
        padded = _mirror(x, r)
        rows = sum(k[:, t] * padded[:, t : t + h] for t in range(2 * r + 1))
        return sum(k[:, t] * rows[:, :, t : t + w] for t in range(2 * r + 1))


def unknowns(op) -> tuple:
    """The estimates of every `UnknownBlur` of `op` (a chain's in order): what a search optimises."""
    return tuple(o.sigma for o in (op.ops if isinstance(op, Chain) else (op,)) if isinstance(o, UnknownBlur))


def with_unknowns(op, values):
    """`op` with its `UnknownBlur` estimates replaced by `values` (as `unknowns` orders them)."""
    values = iter(values)
    ops = [o.replace(sigma=next(values)) if isinstance(o, UnknownBlur) else o for o in _ops(op)]
    return Chain(tuple(ops)) if isinstance(op, Chain) else ops[0]


def clip_unknowns(op, values) -> tuple:
    """`values` (as `unknowns` orders them) clipped to their operators' ranges."""
    blurs = [o for o in _ops(op) if isinstance(o, UnknownBlur)]
    return tuple(jnp.clip(v, o.lo, o.hi) for v, o in zip(values, blurs, strict=True))


def _ops(op) -> tuple:
    return op.ops if isinstance(op, Chain) else (op,)


@flax.struct.dataclass
class Blur:
    """Convolution of every channel with a [k, k] kernel (k odd; not normalised here), border mirrored."""

    kernel: jax.Array

    def __call__(self, x):
        k = self.kernel.shape[0]
        c = x.shape[-1]
        kernel = jnp.tile(self.kernel[::-1, ::-1, None, None], (1, 1, 1, c)).astype(x.dtype)  # flip: convolution
        return jax.lax.conv_general_dilated(
            _mirror(x, k // 2),
            kernel,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
        )


@flax.struct.dataclass
class Mask:
    """Inpainting: the image itself; only pixels where `known` ([H, W] or [B, H, W], 1 or 0) is 1 count."""

    known: jax.Array

    def __call__(self, x):
        return x

    def weights(self, y):
        return jnp.broadcast_to(jnp.asarray(self.known, y.dtype)[..., None], y.shape[:3] + (1,))


@flax.struct.dataclass
class Grayscale:
    """ITU-R 601 luma (PIL's convert("L")), [B, H, W, 1]."""

    def __call__(self, x):
        return pix.rgb_to_grayscale((x + 1) / 2, keep_dims=False) * 2 - 1


@flax.struct.dataclass
class Noise:
    """Denoising: the image itself, seen with additive Gaussian noise of `sigma` on the [0, 1] scale."""

    sigma: float = flax.struct.field(pytree_node=False)

    def __call__(self, x):
        return x

    @property
    def noise_variance(self) -> float:
        return self.sigma**2


@flax.struct.dataclass
class Chain:
    """The operators in `ops`, applied in order (a `Mask` only last: its pixels are the observation's)."""

    ops: tuple

    def __post_init__(self):
        if any(isinstance(op, Mask) for op in self.ops[:-1]):
            raise ValueError("a Mask must be the last operator of a chain: it marks the observed pixels")

    def __call__(self, x):
        for op in self.ops:
            x = op(x)
        return x

    def weights(self, y):
        return weights(self.ops[-1], y) if self.ops else jnp.ones(y.shape[:3] + (1,), y.dtype)

    @property
    def noise_variance(self) -> float:
        return sum(noise_variance(op) for op in self.ops)


def weights(op, y) -> jax.Array:
    """[B, h, w, 1] weights of the observation's pixels in the error: 1 where observed, 0 where unknown."""
    return op.weights(y) if hasattr(op, "weights") else jnp.ones(y.shape[:3] + (1,), y.dtype)


def noise_variance(op) -> float:
    """The observation noise's variance on the [0, 1] scale (0 without a `Noise`)."""
    return getattr(op, "noise_variance", 0.0)


def observed_errors(op, x, y) -> tuple[jax.Array, jax.Array]:
    """([B] mean squared, [B] mean absolute) error on the [0, 1] scale between A(x) and the observation y,
    over the known pixels.

    x: [B, H, W, 3] in [-1, 1]; y: A's output shape in [-1, 1]. An image with no known pixel has error 0.
    """
    pred = op(x)
    w = weights(op, pred)
    diff = (pred - y) / 2  # [-1, 1] -> [0, 1] halves the differences
    count = jnp.maximum(jnp.sum(w, axis=(1, 2, 3)) * pred.shape[-1], 1)
    mse = jnp.sum(jnp.square(diff) * w, axis=(1, 2, 3)) / count
    return mse, jnp.sum(jnp.abs(diff) * w, axis=(1, 2, 3)) / count


def _halve(a):
    """[B, H / 2, W / 2, C]: the means of 2x2 blocks."""
    b, h, w, c = a.shape
    return a.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def observed_multiscale_l1(op, x, y, levels: int = 3) -> jax.Array:
    """[B] the mean over `levels` scales of the L1 error on the [0, 1] scale between A(x) and y over the known
    pixels: at the observation's size, then halved (2x2 means of the known pixels) while it stays even and at
    least 2 px. The robust search's loss (`pulse.Search(loss='robust')`).
    """
    pred = op(x)
    w = weights(op, pred)
    errors = []
    for level in range(levels):
        b, h, wd, c = pred.shape
        if level:
            if h % 2 or wd % 2 or h < 4 or wd < 4:
                break

            known = _halve(w)
            pred, y = _halve(pred * w) / jnp.maximum(known, 1e-8), _halve(y * w) / jnp.maximum(known, 1e-8)
            w = (known > 0).astype(pred.dtype)
        count = jnp.maximum(jnp.sum(w, axis=(1, 2, 3)) * c, 1)
        errors.append(jnp.sum(jnp.abs(pred - y) / 2 * w, axis=(1, 2, 3)) / count)
    return jnp.mean(jnp.stack(errors), axis=0)


def blind(op, factor: int | None = None):
    """`op` with a Gaussian blur of unknown width (`UnknownBlur`) before its first `Downsample`, unless it blurs
    already: the robust mode's model of a resizer it does not know (PIL's antialiased bicubic at xF is about an
    area downsampling after a Gaussian of 0.45 F HR pixels). The width starts at F / 4 and stays in
    [0.3, 3 F / 4] HR pixels (F: the downsampling's factor, or `factor`). Without a downsampling, `op` as it is.
    """
    ops = list(_ops(op))
    if any(isinstance(o, GaussianBlur | Blur | UnknownBlur) for o in ops):
        return op
    at = next((i for i, o in enumerate(ops) if isinstance(o, Downsample)), None)
    if at is None:
        return op
    f = factor or ops[at].factor
    blur = UnknownBlur(jnp.float32(f / 4), lo=0.3, hi=max(0.75 * f, 0.6))
    return chain(*ops[:at], blur, *ops[at:])


def observed_mse(op, x, y) -> jax.Array:
    """[B] mean squared error on the [0, 1] scale between A(x) and y over the known pixels (`observed_errors`)."""
    return observed_errors(op, x, y)[0]


def repeat(op, n: int):
    """`op` for n consecutive copies of every image (a search's restarts): per-image masks repeated."""
    if isinstance(op, Chain):
        return Chain(tuple(repeat(o, n) for o in op.ops))
    if isinstance(op, Mask) and jnp.ndim(op.known) == 3:
        return Mask(jnp.repeat(op.known, n, axis=0))
    if isinstance(op, UnknownBlur) and jnp.ndim(op.sigma) == 1:
        return op.replace(sigma=jnp.repeat(op.sigma, n))
    return op


def take(op, start: int, stop: int):
    """`op` for images start..stop-1 of a batch: per-image masks ([B, H, W]) sliced, the rest as it is."""
    if isinstance(op, Chain):
        return Chain(tuple(take(o, start, stop) for o in op.ops))
    if isinstance(op, Mask) and jnp.ndim(op.known) == 3:
        return Mask(op.known[start:stop])
    if isinstance(op, UnknownBlur) and jnp.ndim(op.sigma) == 1:
        return op.replace(sigma=op.sigma[start:stop])
    return op


def chain(*ops):
    """One operator from several, applied in order (`Chain`); a single operator is returned as it is."""
    flat = []
    for op in ops:
        flat.extend(op.ops if isinstance(op, Chain) else [op])
    return flat[0] if len(flat) == 1 else Chain(tuple(flat))  # Chain(()): the identity


def observe(op, x, key) -> jax.Array:
    """What a camera behind `op` records of `x`: A(x) with the chain's Gaussian noise drawn from `key`
    (sigma on the [0, 1] scale, so 2 sigma on [-1, 1]), clipped to [-1, 1], and unknown pixels set to 0.

    x: [B, H, W, 3] float in [-1, 1]. Returns A's output shape in [-1, 1]: the `observed` input that
    `pulse.restore` takes, for benchmarks on images whose truth is known.
    """
    y = op(x)
    sigma = noise_variance(op) ** 0.5
    if sigma:
        y = jnp.clip(y + 2 * sigma * jax.random.normal(key, y.shape, y.dtype), -1, 1)
    return y * weights(op, y)


def block_mask(key, n: int, size: int, *, blocks: int = 8, unknown: float = 0.5) -> jax.Array:
    """[n, size, size] float32 masks, 1 where known: each image's `size` px square cut into a blocks x blocks
    grid, of which round(unknown * blocks^2) cells, drawn from `key` per image, are unknown (0).

    Raises ValueError unless `blocks` divides `size` and 0 <= unknown <= 1.
    """
    if size % blocks:
        raise ValueError(f"block_mask: {blocks} blocks do not divide {size} px")
    if not 0 <= unknown <= 1:
        raise ValueError(f"block_mask: the unknown share must be in [0, 1], got {unknown}")
    cells, cut = blocks * blocks, round(unknown * blocks * blocks)
    keep = jax.vmap(lambda k: jax.random.permutation(k, cells) >= cut)(jax.random.split(key, n))
    side = size // blocks
    return jnp.repeat(jnp.repeat(keep.reshape(n, blocks, blocks), side, 1), side, 2).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class Degradation:
    """A camera's degradation in the order it happens, as `fastgan-upscale`'s options describe it.

    factor: whole downscaling factor (1: none); blur: Gaussian sigma in HR pixels (0: none); kernel: a
    blur kernel of the user's (`Blur`, after the Gaussian if both); gray:
    ITU-R 601 luma; noise_sigma: on the [0, 1] scale (0: none); inpaint: for benchmarks, the unknown
    share of an 8x8 grid of blocks (`block_mask`; 0: none); downsample: 'area' or 'bicubic'.
    """

    factor: int = 1
    blur: float = 0.0
    gray: bool = False
    noise_sigma: float = 0.0
    inpaint: float = 0.0
    downsample: str = "area"
    kernel: object = dataclasses.field(default=None, compare=False, repr=False)  # [k, k] (`Blur`), or None

    def operator(self, known=None):
        """The chain blur (Gaussian, or `kernel`), downsample, gray, noise, then `Mask(known)` when `known`
        ([h, w] or [N, h, w])."""
        ops = [GaussianBlur(self.blur)] if self.blur else []
        ops += [Blur(jnp.asarray(self.kernel, jnp.float32))] if self.kernel is not None else []
        ops += [Downsample(self.factor, self.downsample)] if self.factor > 1 else []
        ops += [Grayscale()] if self.gray else []
        ops += [Noise(self.noise_sigma)] if self.noise_sigma else []
        ops += [Mask(known)] if known is not None else []
        return chain(*ops)
