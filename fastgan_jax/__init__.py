"""fastgan-jax: FastGAN (Liu et al., ICLR 2021) in JAX/Flax, with PULSE-style super-resolution.

Float images are NHWC in [-1, 1] everywhere at this API; data is uint8
(see `fastgan_jax.images`).
"""

import importlib

# Loaded on first use (PEP 562), so that `import fastgan_jax` (and the installed commands' start, where a
# Ctrl-C must stay one line) does not import JAX and every network before it is needed.
_MODULES = ("checkpoints", "data", "images", "inception", "lpips", "models", "runs", "similarity", "training")
_NAMES = {
    "convert": (
        "OfficialCheckpointError",
        "discriminator_from_official",
        "generator_from_official",
        "save_official_npz",
        "to_official",
    ),
    "diffaug": ("diff_augment",),
    "downsample": ("area_downsample", "bicubic_downsample"),
    "inception": ("fid", "inception_features", "kid"),
    "lpips": ("lpips_distance",),
    "models": ("Discriminator", "Generator", "generate", "noise_shapes", "small_size"),
    "pulse": ("UpscaleResult", "upscale"),
    "runs": ("Run", "load_run"),
    "similarity": ("psnr", "ssim"),
    "training": ("train_and_evaluate",),
}
_HOME = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name):
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


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
