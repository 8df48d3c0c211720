"""fastgan-jax: FastGAN (Liu et al., ICLR 2021) in JAX/Flax, with PULSE-style super-resolution.

Float images are NHWC in [-1, 1] everywhere at this API; data is uint8
(see `fastgan_jax.images`). The package, by what each part is for (README
"Layout"; imports only point down this list):

    commands/   the installed commands and their arguments
    sr/         degradation (downsampling) and the PULSE search, its files in and out
    train/      the compiled step, the loop around it, state, data pipeline, checkpoints, runs
    metrics/    FID/KID (Inception), LPIPS, PSNR/SSIM
    interop/    official PyTorch checkpoints, the torch-free pickle reader, pretrained weights
    nn/         layers, Generator/Discriminator, DiffAugment, losses
    images.py, visual.py, data.py, configs/   conventions, figures, data reading, recipes
"""

import importlib

# The public names, imported on first use (PEP 562). Importing them here would import JAX with the package:
# the installed commands import `fastgan_jax.commands.launch` (and so this file) before launch.py's SIGINT
# guard is in place, so a Ctrl-C during that import would be a traceback instead of one line.
_HOME = {
    "Discriminator": "nn.models",
    "Generator": "nn.models",
    "generate": "nn.models",
    "noise_shapes": "nn.models",
    "small_size": "nn.models",
    "diff_augment": "nn.diffaug",
    "OfficialCheckpointError": "interop.convert",
    "discriminator_from_official": "interop.convert",
    "generator_from_official": "interop.convert",
    "save_official_npz": "interop.convert",
    "to_official": "interop.convert",
    "fid": "metrics.inception",
    "inception_features": "metrics.inception",
    "kid": "metrics.inception",
    "lpips_distance": "metrics.lpips",
    "psnr": "metrics.similarity",
    "ssim": "metrics.similarity",
    "area_downsample": "sr.downsample",
    "bicubic_downsample": "sr.downsample",
    "UpscaleResult": "sr.candidates",
    "restore": "sr.pulse",
    "upscale": "sr.pulse",
    "Run": "train.runs",
    "load_run": "train.runs",
    "train_and_evaluate": "train.trainer",
}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
