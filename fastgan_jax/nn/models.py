"""FastGAN generator and discriminator (Liu et al., ICLR 2021), NHWC.

The official resolutions are 256, 512 and 1024. 64 and 128 are a shrink of
the same design for CPU runs and tests: the generator simply stops earlier,
its second output ("img_128") comes from the half-resolution map
(`small_size(im_size)`: 32 at 64, 64 at 128, 128 from 256 on), and the
discriminator drops its top levels (the stem starts at `im_size` instead of
256, skip-layer excitations that would start above it are left out, the
small path and the decoders stop at the small size). Module names follow the
official ones so that `convert.py` maps them one to one.

The official generator applies tanh to its outputs only at 1024; here
`output_tanh=True` applies it at every resolution (what our training uses);
models imported from official checkpoints set it to `im_size == 1024` so they
reproduce the official outputs exactly.

`remat` trades compute for memory in training (gradient checkpointing,
`jax.checkpoint` through `nn.remat`) without changing any result or any
variable name: 'none' keeps every activation for the backward pass;
'blocks' keeps only what enters and leaves each up/down block, skip-layer
excitation and decoder block, and recomputes their insides in the backward
pass (about one more forward); 'full' keeps only the network's inputs and
recomputes its whole forward in the backward pass, with the blocks
checkpointed inside it (about two more forwards), so nothing of a network is
held while the other one runs.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fastgan_jax.nn.layers import (
    BatchNorm,
    DownBlock,
    DownBlockComp,
    SEBlock,
    SNConv,
    SNLatentConvTranspose,
    UpBlock,
    UpBlockComp,
    avg_pool,
    glu,
    leaky_relu,
    nearest_resize,
)

IM_SIZES = (64, 128, 256, 512, 1024)
# Official channel tables: channels at resolution r are int(mult[r] * width).
G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
D_MULT = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
COMP_SIZES = (8, 32, 128, 512)  # up blocks with noise injection
REMATS = ("none", "blocks", "full")  # see the module docstring


def _check_size(im_size):
    if im_size not in IM_SIZES:
        raise ValueError(f"im_size must be one of {IM_SIZES}, got {im_size}")


def _check_remat(remat):
    if remat not in REMATS:
        raise ValueError(f"remat must be one of {REMATS}, got {remat!r}")


def _remat(block, remat, train_argnum=2):
    """`block` (a Module class), checkpointed unless remat is 'none'; its name and variables are unchanged.

    `train_argnum` is the position of the `train` flag counting the module
    as 0 (it stays a Python bool: static); pass it positionally.
    """
    return block if remat == "none" else nn.remat(block, static_argnums=(train_argnum,))


def small_size(im_size: int) -> int:
    """Resolution of the generator's second output and of D's small path."""
    return min(128, im_size // 2)


def _widths(mult, width):
    return {r: int(m * width) for r, m in mult.items()}


def noise_shapes(im_size: int, batch: int) -> list[tuple[int, int, int, int]]:
    """Shapes of the generator's noise maps, in the order `Generator` takes them."""
    _check_size(im_size)
    return [(batch, r, r, 1) for r in COMP_SIZES if r <= im_size for _ in range(2)]


class Generator(nn.Module):
    """FastGAN generator: z [B, nz] -> (img [B, S, S, 3], img_small [B, s, s, 3]).

    Attributes:
      im_size: output resolution, one of 64, 128, 256, 512, 1024.
      ngf: width multiplier (official 64).
      nz: latent size (official train.py: 256).
      output_tanh: tanh on both outputs (the official does it only at 1024).
      dtype: compute dtype (None: the input's); parameters stay float32.
      remat: 'none', 'blocks' or 'full' (see the module docstring); same
        results and variables, less memory in training.
    """

    im_size: int = 256
    ngf: int = 64
    nz: int = 256
    output_tanh: bool = True
    dtype: jnp.dtype | None = None
    remat: str = "none"

    def __call__(
        self,
        z,
        train: bool = False,
        noise: Sequence[jax.Array] | None = None,
        *,
        features: dict[int, jax.Array] | None = None,
        stop_at: int | None = None,
    ):
        """Args:
          z: [B, nz] latents (unused, may be None, with `features`).
          train: batch statistics and one spectral-norm power iteration
            (needs `mutable=['batch_stats']`).
          noise: optional noise maps, shapes `noise_shapes(im_size, B)`;
            without them noise is drawn from the `noise` RNG stream.
          features: intermediate features to continue from (intermediate
            layer optimisation): {r: [B, r, r, C_r]} for every r = 4, 8, ..., R,
            as `stop_at=R` returns them; the layers up to R are not run (the
            skip-layer excitations above R read these), and noise maps of
            those layers are not used.
          stop_at: return the features {4: ..., ..., stop_at: ...} instead of
            the images.

        Returns:
          (img, img_small), NHWC; or the features with `stop_at`.
        """
        _check_size(self.im_size)
        _check_remat(self.remat)
        if features is None and (z.ndim != 2 or z.shape[1] != self.nz):
            raise ValueError(f"Generator expects z of shape [B, {self.nz}], got {z.shape}")
        if self.remat == "full":
            return nn.remat(Generator._forward, static_argnums=(2, 5))(self, z, train, noise, features, stop_at)
        return self._forward(z, train, noise, features, stop_at)

    @nn.compact
    def _forward(self, z, train, noise, features=None, stop_at=None):
        nfc, dt = _widths(G_MULT, self.ngf), self.dtype
        noise = list(noise) if noise is not None else [None] * len(noise_shapes(self.im_size, 1))
        up, up_comp, se = (_remat(b, self.remat, n) for b, n in ((UpBlock, 2), (UpBlockComp, 2), (SEBlock, 3)))

        if features is None:
            x = SNLatentConvTranspose(2 * nfc[4], dtype=dt, name="init_conv")(z, train)
            x = glu(BatchNorm(name="init_bn")(x, train))  # [B, 4, 4, nfc[4]]
            feats = {4: x}
        else:  # continue after the given layers; their noise maps are not needed
            feats = dict(features)
            x = feats[max(feats)]
            noise = noise[2 * sum(1 for r in COMP_SIZES if r <= max(feats)) :]
        if stop_at == max(feats):
            return feats
        r = 2 * max(feats)
        while r <= self.im_size:
            if r in COMP_SIZES:
                x = up_comp(nfc[r], dtype=dt, name=f"feat_{r}")(x, train, noise[:2])
                noise = noise[2:]
            else:
                x = up(nfc[r], dtype=dt, name=f"feat_{r}")(x, train)
            if 64 <= r <= 512:  # skip-layer excitation from the map 16x smaller
                x = se(nfc[r], dtype=dt, name=f"se_{r}")(feats[r // 16], x, train)
            feats[r] = x
            if r == stop_at:
                return feats
            r *= 2

        img = SNConv(3, 3, padding=1, dtype=dt, name="to_big")(feats[self.im_size], train)
        img_small = SNConv(3, 1, dtype=dt, name="to_small")(feats[small_size(self.im_size)], train)
        if self.output_tanh:
            img, img_small = jnp.tanh(img), jnp.tanh(img_small)
        return img, img_small


class SimpleDecoder(nn.Module):
    """Decodes an 8x8 feature map to an image of `out_size` (official: 128)."""

    out_size: int = 128
    width: int = 32  # the official hard-codes 32, independent of ndf
    dtype: jnp.dtype | None = None
    remat: str = "none"  # 'none'; otherwise its up blocks are checkpointed

    @nn.compact
    def __call__(self, x, train: bool = False):
        nfc, up = _widths(G_MULT, self.width), _remat(UpBlock, self.remat)
        x = avg_pool(x, 8)
        r = 16
        while r <= self.out_size:
            x = up(nfc[r], dtype=self.dtype, name=f"up{r}")(x, train)
            r *= 2
        return jnp.tanh(SNConv(3, 3, padding=1, dtype=self.dtype, name="conv_out")(x, train))


class Discriminator(nn.Module):
    """FastGAN discriminator with self-supervised reconstruction decoders.

    Call with a real batch and a quadrant index `part` (0 top-left,
    1 top-right, 2 bottom-left, 3 bottom-right; a Python int or a traced
    scalar) to get `(logits, (rec_all, rec_small, rec_part))`; call with a
    fake pair `(img, img_small)` to get the logits alone. Logits are ordered
    as the official: the flattened 5x5 maps of the big head for the whole
    batch, then those of the small head, shape [2 * B * 25].

    Attributes:
      im_size: input resolution, one of 64, 128, 256, 512, 1024.
      ndf: width multiplier (official 64).
      dec_width: decoder width (official 32).
      dtype: compute dtype (None: the input's).
      remat: 'none', 'blocks' or 'full' (see the module docstring); same
        results and variables, less memory in training.
    """

    im_size: int = 256
    ndf: int = 64
    dec_width: int = 32
    dtype: jnp.dtype | None = None
    remat: str = "none"

    def __call__(self, images, part=None, train: bool = False):
        _check_size(self.im_size)
        _check_remat(self.remat)
        if not isinstance(images, (tuple, list)) and part is None:
            raise ValueError("Discriminator: a real batch needs part= (the quadrant to reconstruct, 0..3)")
        if self.remat == "full":
            return nn.remat(Discriminator._forward, static_argnums=(3,))(self, images, part, train)
        return self._forward(images, part, train)

    @nn.compact
    def _forward(self, images, part, train):
        nfc, dt, s = _widths(D_MULT, self.ndf), self.dtype, small_size(self.im_size)
        down, down_comp, se = (_remat(b, self.remat, n) for b, n in ((DownBlock, 2), (DownBlockComp, 2), (SEBlock, 3)))
        real = not isinstance(images, (tuple, list))
        if real:
            # The official resizes real images with nearest interpolation.
            big, small = nearest_resize(images, self.im_size), nearest_resize(images, s)
        else:
            big, small = images

        def ch(r):  # channels of the big path at resolution r
            return nfc[2 * r]

        # Stem down to at most 256x256.
        if self.im_size == 1024:
            x = leaky_relu(SNConv(nfc[1024], 4, 2, 1, dtype=dt, name="stem_conv1")(big, train))
            x = SNConv(nfc[512], 4, 2, 1, dtype=dt, name="stem_conv2")(x, train)
            x = leaky_relu(BatchNorm(name="stem_bn")(x, train))
        elif self.im_size == 512:
            x = leaky_relu(SNConv(nfc[512], 4, 2, 1, dtype=dt, name="stem_conv1")(big, train))
        else:
            x = leaky_relu(SNConv(ch(self.im_size), 3, 1, 1, dtype=dt, name="stem_conv1")(big, train))
        top = x.shape[1]
        feats = {top: x}
        r = top // 2
        while r >= 8:
            x = down_comp(ch(r), dtype=dt, name=f"down_{512 // r}")(x, train)
            if 8 * r <= top:  # skip-layer excitation from the map 8x larger
                x = se(ch(r), dtype=dt, name=f"se_{64 // r}_{512 // r}")(feats[8 * r], x, train)
            feats[r] = x
            r //= 2

        h = SNConv(nfc[8], 1, dtype=dt, name="rf_big_conv1")(x, train)
        h = leaky_relu(BatchNorm(name="rf_big_bn")(h, train))
        rf_big = SNConv(1, 4, dtype=dt, name="rf_big_conv2")(h, train)  # [B, 5, 5, 1]

        y = leaky_relu(SNConv(nfc[4 * s // 2], 4, 2, 1, dtype=dt, name="small_conv")(small, train))
        r = s // 4
        while r >= 8:
            y = down(nfc[4 * r], dtype=dt, name=f"small_down_{r}")(y, train)
            r //= 2
        rf_small = SNConv(1, 4, dtype=dt, name="rf_small")(y, train)  # [B, 5, 5, 1]

        logits = jnp.concatenate([rf_big.reshape(-1), rf_small.reshape(-1)]).astype(jnp.float32)
        if not real:
            return logits

        dec = functools.partial(SimpleDecoder, s, self.dec_width, dt, self.remat)
        rec_all = dec(name="decoder_big")(x, train)
        rec_small = dec(name="decoder_small")(y, train)
        # Eq. 4 (FastGAN): reconstruct one quadrant from the 16x16 features.
        part = jnp.asarray(part, jnp.int32)
        f16 = feats[16]
        quadrant = jax.lax.dynamic_slice(
            f16, (0, (part // 2) * 8, (part % 2) * 8, 0), (f16.shape[0], 8, 8, f16.shape[3])
        )
        rec_part = dec(name="decoder_part")(quadrant, train)
        return logits, (rec_all, rec_small, rec_part)


# Size variants (flax examples style).
Generator256 = functools.partial(Generator, im_size=256)
Generator512 = functools.partial(Generator, im_size=512)
Generator1024 = functools.partial(Generator, im_size=1024)
Discriminator256 = functools.partial(Discriminator, im_size=256)
Discriminator512 = functools.partial(Discriminator, im_size=512)
Discriminator1024 = functools.partial(Discriminator, im_size=1024)
# Tiny variants for tests and CPU runs.
TinyGenerator = functools.partial(Generator, im_size=64, ngf=8, nz=32)
TinyDiscriminator = functools.partial(Discriminator, im_size=64, ndf=8, dec_width=8)


@functools.partial(jax.jit, static_argnums=0)
def _generate(G: Generator, variables, z, key, noise):
    if noise is not None:
        noise = [jnp.broadcast_to(m, (z.shape[0], *m.shape[1:])) for m in noise]
        return G.apply(variables, z, train=False, noise=noise)[0]
    return G.apply(variables, z, train=False, rngs={"noise": key})[0]


def generate(G: Generator, variables, z: jax.Array, key: jax.Array | None = None, noise=None) -> jax.Array:
    """Eval-mode images for latents, one compiled program per generator and shape.

    In eval mode every image depends only on its latent and its noise, never
    on the rest of the batch (use an EMA generator with recalibrated
    statistics, as `load_run` gives).

    Args:
      G: the generator module.
      variables: its {'params', 'batch_stats'}.
      z: latents [B, nz].
      key: where the noise maps come from (one key for the batch).
      noise: noise maps of batch 1 (shapes `noise_shapes(im_size, 1)`)
        shared by every image; then `key` is not used.

    Returns:
      [B, S, S, 3] float images in [-1, 1] (with `output_tanh`), in G's dtype.
    """
    if np.ndim(z) != 2 or np.shape(z)[1] != G.nz:
        raise ValueError(f"z must be latents of shape [B, {G.nz}], got shape {tuple(np.shape(z))}")
    if key is None and noise is None:
        raise ValueError("generate: pass key= (random noise maps) or noise= (fixed maps)")
    return _generate(G, variables, z, key, noise)


def generate_batches(
    G: Generator, variables, z, key, *, batch: int = 32, shared_noise: bool = False, progress=None
) -> np.ndarray:
    """`generate` over many latents z [N, nz] in batches, as float32 numpy [N, S, S, 3] in [-1, 1].

    Batch i draws its noise from fold_in(key, i). With `shared_noise` every
    image gets the same noise maps, so that images differ only through their
    latents (for interpolations). `progress`, if given, is called with the
    number of images of each finished batch (e.g. a tqdm bar's `update`).
    """
    maps = None
    if shared_noise:
        maps = [jax.random.normal(jax.random.fold_in(key, i), s) for i, s in enumerate(noise_shapes(G.im_size, 1))]
    out = []
    for i in range(0, len(z), batch):
        out.append(np.asarray(generate(G, variables, z[i : i + batch], jax.random.fold_in(key, i), maps), np.float32))
        if progress is not None:
            progress(len(out[-1]))
    return np.concatenate(out)


# For CPU programs that run once (init, a benchmark's compile-only figures): XLA's CPU backend spends most of
# its compile time optimising with LLVM. Init is mostly random-number code (an unrolled threefry per
# parameter): without LLVM's optimisations it compiles 2-2.5x faster, to the same values within an ulp,
# deterministically. Other backends compile it as usual.
CPU_NO_CODEGEN_OPT = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@functools.lru_cache(maxsize=32)
def _jitted_init(module: nn.Module, top_level: bool):
    """One jitted `init` per network: a second run in the same process neither traces nor compiles it again."""
    cpu = top_level and jax.default_backend() == "cpu"  # compiler options are for top-level programs only
    return jax.jit(module.init, compiler_options=CPU_NO_CODEGEN_OPT if cpu else None)


def _init(module: nn.Module, rngs: dict, *args):
    """`module.init`, shared by every compute dtype and remat policy (the variables do not depend on them)."""
    _check_remat(module.remat)  # the canonical clone below would hide a bad value
    top_level = not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((rngs, args)))
    return _jitted_init(module.clone(dtype=None, remat="none"), top_level)(rngs, *args)


def init_generator(module: Generator, key: jax.Array, batch: int = 2):
    """Initialises a generator's variables ({'params', 'batch_stats'})."""
    z = jnp.zeros((batch, module.nz), jnp.float32)
    return _init(module, {"params": key, "noise": key}, z)


def init_discriminator(module: Discriminator, key: jax.Array, batch: int = 2):
    """Initialises a discriminator's variables ({'params', 'batch_stats'})."""
    x = jnp.zeros((batch, module.im_size, module.im_size, 3), jnp.float32)
    return _init(module, {"params": key}, x, 0)
