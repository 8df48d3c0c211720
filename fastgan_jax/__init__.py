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
import importlib.abc
import importlib.util
import sys

# Loaded on first use (PEP 562), so that `import fastgan_jax` (and the installed commands' start, where a
# Ctrl-C must stay one line) does not import JAX and every network before it is needed.
_PACKAGES = ("commands", "configs", "data", "images", "interop", "metrics", "nn", "sr", "train", "visual")
_NAMES = {
    "interop.convert": (
        "OfficialCheckpointError",
        "discriminator_from_official",
        "generator_from_official",
        "save_official_npz",
        "to_official",
    ),
    "nn.diffaug": ("diff_augment",),
    "sr.downsample": ("area_downsample", "bicubic_downsample"),
    "metrics.inception": ("fid", "inception_features", "kid"),
    "metrics.lpips": ("lpips_distance",),
    "nn.models": ("Discriminator", "Generator", "generate", "noise_shapes", "small_size"),
    "sr.pulse": ("UpscaleResult", "restore", "upscale"),
    "train.runs": ("Run", "load_run"),
    "metrics.similarity": ("psnr", "ssim"),
    "train.loop": ("train_and_evaluate",),
}
_HOME = {name: module for module, names in _NAMES.items() for name in names}

# The modules of the flat layout (0.1) by their old names, which keep working: `fastgan_jax.models`,
# `from fastgan_jax.models import ...` and `python -m fastgan_jax.sample` give the module that moved.
# `training` held the step and the loop; the loop re-exports the step's public names.
MOVED = {
    "checkpoints": "train.checkpoints",
    "cli": "commands.launch",
    "convert": "interop.convert",
    "diffaug": "nn.diffaug",
    "downsample": "sr.downsample",
    "evaluate": "commands.evaluate",
    "evaluate_sr": "commands.evaluate_sr",
    "hosts": "train.hosts",
    "inception": "metrics.inception",
    "layers": "nn.layers",
    "loss_scale": "train.loss_scale",
    "losses": "nn.losses",
    "lpips": "metrics.lpips",
    "models": "nn.models",
    "pipeline": "train.pipeline",
    "pulse": "sr.pulse",
    "runs": "train.runs",
    "sample": "commands.sample",
    "similarity": "metrics.similarity",
    "state": "train.state",
    "superres": "sr.files",
    "torch_pickle": "interop.torch_pickle",
    "train_cli": "commands.train",
    "training": "train.loop",
    "upscale_cli": "commands.upscale",
    "validate": "train.validate",
    "weights": "interop.weights",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `fastgan_jax.OLD` (a name of `MOVED`) as the very module it moved to, so that its functions,
    globals and monkeypatches are shared, never a copy."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in MOVED:
            return None
        origin = importlib.util.find_spec(_new_name(fullname)).origin  # its file (`python -m` shows it as argv[0])
        return importlib.util.spec_from_loader(fullname, self, origin=origin)

    def create_module(self, spec):
        module = importlib.import_module(_new_name(spec.name))
        spec.loader_state = module.__spec__  # the import system sets `__spec__` next; exec_module puts it back
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state

    def get_code(self, fullname):  # `python -m fastgan_jax.OLD` runs the moved module's code
        new = _new_name(fullname)
        return importlib.util.find_spec(new).loader.get_code(new)


def _new_name(fullname: str) -> str:
    return f"{__name__}.{MOVED[fullname.rpartition('.')[2]]}"


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())  # after the path finders: a real module of that name would come first


def __getattr__(name):
    if name in _PACKAGES or name in MOVED:
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
    "commands",
    "configs",
    "data",
    "diff_augment",
    "discriminator_from_official",
    "fid",
    "generate",
    "generator_from_official",
    "images",
    "inception",
    "inception_features",
    "interop",
    "kid",
    "load_run",
    "lpips",
    "lpips_distance",
    "metrics",
    "models",
    "nn",
    "noise_shapes",
    "psnr",
    "restore",
    "runs",
    "save_official_npz",
    "similarity",
    "small_size",
    "sr",
    "ssim",
    "to_official",
    "train",
    "train_and_evaluate",
    "training",
    "upscale",
    "visual",
]
