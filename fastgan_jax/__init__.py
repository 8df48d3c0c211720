"""fastgan-jax: FastGAN (Liu et al., ICLR 2021) in JAX/Flax."""

from fastgan_jax.convert import (
    OfficialCheckpointError,
    discriminator_from_official,
    generator_from_official,
    save_official_npz,
    to_official,
)
from fastgan_jax.diffaug import diff_augment
from fastgan_jax.downsample import area_downsample, bicubic_downsample
from fastgan_jax.models import Discriminator, Generator, noise_shapes, small_size
from fastgan_jax.pulse import UpscaleResult, upscale

__all__ = [
    "Discriminator",
    "Generator",
    "OfficialCheckpointError",
    "UpscaleResult",
    "area_downsample",
    "bicubic_downsample",
    "diff_augment",
    "discriminator_from_official",
    "generator_from_official",
    "noise_shapes",
    "save_official_npz",
    "small_size",
    "to_official",
    "upscale",
]
