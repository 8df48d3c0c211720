"""fastgan-jax: FastGAN (Liu et al., ICLR 2021) in JAX/Flax, with PULSE-style super-resolution.

Float images are NHWC in [-1, 1] everywhere at this API; data is uint8
(see `fastgan_jax.images`).
"""

from fastgan_jax import checkpoints, data, images, inception, lpips, models, runs, similarity, training
from fastgan_jax.convert import (
    OfficialCheckpointError,
    discriminator_from_official,
    generator_from_official,
    save_official_npz,
    to_official,
)
from fastgan_jax.diffaug import diff_augment
from fastgan_jax.downsample import area_downsample, bicubic_downsample
from fastgan_jax.inception import fid, inception_features, kid
from fastgan_jax.lpips import lpips_distance
from fastgan_jax.models import Discriminator, Generator, generate, noise_shapes, small_size
from fastgan_jax.pulse import UpscaleResult, upscale
from fastgan_jax.runs import Run, load_run
from fastgan_jax.similarity import psnr, ssim
from fastgan_jax.training import train_and_evaluate

__all__ = [
    "Discriminator",
    "Generator",
    "OfficialCheckpointError",
    "Run",
    "UpscaleResult",
    "area_downsample",
    "bicubic_downsample",
    "checkpoints",
    "data",
    "diff_augment",
    "discriminator_from_official",
    "fid",
    "generate",
    "generator_from_official",
    "images",
    "inception",
    "inception_features",
    "kid",
    "load_run",
    "lpips",
    "lpips_distance",
    "models",
    "noise_shapes",
    "psnr",
    "runs",
    "save_official_npz",
    "similarity",
    "small_size",
    "ssim",
    "to_official",
    "train_and_evaluate",
    "training",
    "upscale",
]
