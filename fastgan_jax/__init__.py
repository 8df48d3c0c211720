"""fastgan-jax: FastGAN (Liu et al., ICLR 2021) in JAX/Flax."""

from fastgan_jax.convert import (
    OfficialCheckpointError,
    discriminator_from_official,
    generator_from_official,
    save_official_npz,
    to_official,
)
from fastgan_jax.diffaug import diff_augment
from fastgan_jax.models import Discriminator, Generator, noise_shapes, small_size

__all__ = [
    "Discriminator",
    "Generator",
    "OfficialCheckpointError",
    "diff_augment",
    "discriminator_from_official",
    "generator_from_official",
    "noise_shapes",
    "save_official_npz",
    "small_size",
    "to_official",
]
