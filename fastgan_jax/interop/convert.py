"""Official PyTorch FastGAN state dicts <-> Flax variables.

Sources: a `.npz` whose keys are the official state-dict keys (one network),
or prefixed `g/`, `d/`, `g_ema/` (several); a `.pth` as the official
`train.py` writes it (`{'g': ..., 'd': ...}` or `all_N.pth` with `g`, `d`,
`g_ema`, `opt_g`, `opt_d`), read without torch by `torch_pickle`; or a dict of
arrays. Sizes (im_size, ngf, nz, ndf) are inferred from the shapes.

Layout: PyTorch convs are OIHW, ours HWIO; the spectral-norm vector `v`
follows the kernel's flattening, (i, kh, kw) there and (kh, kw, i) here. The
init layer's ConvTranspose2d weight [in, out, kh, kw] becomes [in, kh, kw,
out], with `v` unchanged (PyTorch normalises it along dim 1).
"""

import io
import math
import os
import zipfile
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fastgan_jax.interop import torch_pickle
from fastgan_jax.nn.models import COMP_SIZES, Discriminator, Generator, init_discriminator, init_generator

OFFICIAL_SIZES = (256, 512, 1024)

# Leaf names of each kind of official module, mapped to (collection, leaf).
_SN = {"weight_orig": ("params", "kernel"), "weight_u": ("batch_stats", "u"), "weight_v": ("batch_stats", "v")}
_BN = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
    "num_batches_tracked": ("batch_stats", "count"),
}
_NOISE = {"weight": ("params", "weight")}


class OfficialCheckpointError(ValueError):
    """The file or arrays are not an official FastGAN state dict of the expected shape."""


def _generator_modules(im_size):
    """[(official prefix, flax module path, kind)] in the official order."""
    mods = [("init.init.0", ("init_conv",), "sn_t"), ("init.init.1", ("init_bn",), "bn")]
    for r in (8, 16, 32, 64, 128, 256):
        mods += _up_block(f"feat_{r}", r in COMP_SIZES)
    for r in (64, 128, 256):
        mods += _se(f"se_{r}")
    mods += [("to_128", ("to_small",), "sn"), ("to_big", ("to_big",), "sn")]
    if im_size > 256:
        mods += _up_block("feat_512", True) + _se("se_512")
    if im_size > 512:
        mods += _up_block("feat_1024", False)
    return mods


def _up_block(name, comp):
    if comp:
        return [
            (f"{name}.1", (name, "conv1"), "sn"),
            (f"{name}.2", (name, "noise1"), "noise"),
            (f"{name}.3", (name, "bn1"), "bn"),
            (f"{name}.5", (name, "conv2"), "sn"),
            (f"{name}.6", (name, "noise2"), "noise"),
            (f"{name}.7", (name, "bn2"), "bn"),
        ]
    return [(f"{name}.1", (name, "conv"), "sn"), (f"{name}.2", (name, "bn"), "bn")]


def _se(name):
    return [(f"{name}.main.1", (name, "conv1"), "sn"), (f"{name}.main.3", (name, "conv2"), "sn")]


def _discriminator_modules(im_size):
    mods = [("down_from_big.0", ("stem_conv1",), "sn")]
    if im_size == 1024:
        mods += [("down_from_big.2", ("stem_conv2",), "sn"), ("down_from_big.3", ("stem_bn",), "bn")]
    for k in (4, 8, 16, 32, 64):
        n = f"down_{k}"
        mods += [
            (f"{n}.main.0", (n, "conv1"), "sn"),
            (f"{n}.main.1", (n, "bn1"), "bn"),
            (f"{n}.main.3", (n, "conv2"), "sn"),
            (f"{n}.main.4", (n, "bn2"), "bn"),
            (f"{n}.direct.1", (n, "conv_direct"), "sn"),
            (f"{n}.direct.2", (n, "bn_direct"), "bn"),
        ]
    mods += [
        ("rf_big.0", ("rf_big_conv1",), "sn"),
        ("rf_big.1", ("rf_big_bn",), "bn"),
        ("rf_big.3", ("rf_big_conv2",), "sn"),
    ]
    for n in ("se_2_16", "se_4_32", "se_8_64"):
        mods += _se(n)
    mods += [("down_from_small.0", ("small_conv",), "sn")]
    for i, r in ((2, 32), (3, 16), (4, 8)):
        n = f"small_down_{r}"
        mods += [(f"down_from_small.{i}.main.0", (n, "conv"), "sn"), (f"down_from_small.{i}.main.1", (n, "bn"), "bn")]
    mods += [("rf_small", ("rf_small",), "sn")]
    for dec in ("decoder_big", "decoder_part", "decoder_small"):
        for i, r in ((1, 16), (2, 32), (3, 64), (4, 128)):
            mods += [
                (f"{dec}.main.{i}.1", (dec, f"up{r}", "conv"), "sn"),
                (f"{dec}.main.{i}.2", (dec, f"up{r}", "bn"), "bn"),
            ]
        mods += [(f"{dec}.main.5", (dec, "conv_out"), "sn")]
    return mods


def _leaf_map(modules):
    """Official key -> (flax path, kind, leaf)."""
    out = {}
    for prefix, path, kind in modules:
        leaves = {"sn": _SN, "sn_t": _SN, "bn": _BN, "noise": _NOISE}[kind]
        for leaf, (col, name) in leaves.items():
            out[f"{prefix}.{leaf}"] = ((col, *path, name), kind, leaf)
    return out


def _to_flax(arr, kind, leaf):
    arr = np.asarray(arr)
    if kind in ("sn", "sn_t") and leaf == "weight_orig":
        # OIHW -> HWIO; ConvTranspose [in, out, kh, kw] -> [in, kh, kw, out].
        return arr.transpose(2, 3, 1, 0) if kind == "sn" else arr.transpose(0, 2, 3, 1)
    if leaf == "num_batches_tracked":
        return arr.astype(np.int32)
    if kind == "noise":
        return arr.reshape(())
    return arr.astype(np.float32)


def _from_flax(arr, kind, leaf):
    arr = np.asarray(arr)
    if kind in ("sn", "sn_t") and leaf == "weight_orig":
        return arr.transpose(3, 2, 0, 1) if kind == "sn" else arr.transpose(0, 3, 1, 2)
    if leaf == "num_batches_tracked":
        return arr.astype(np.int64)
    if kind == "noise":
        return arr.reshape(1)
    return arr


def _permute_v(v, kernel_hwio, to_flax):
    kh, kw, cin, _ = kernel_hwio.shape
    if to_flax:  # (i, kh, kw) -> (kh, kw, i)
        return v.reshape(cin, kh, kw).transpose(1, 2, 0).reshape(-1)
    return v.reshape(kh, kw, cin).transpose(2, 0, 1).reshape(-1)


def _check_keys(state, leaf_map, what):
    missing = [k for k in leaf_map if k not in state]
    extra = [k for k in state if k not in leaf_map]
    if missing:
        raise OfficialCheckpointError(f"{what}: missing key {missing[0]!r} ({len(missing)} missing)")
    if extra:
        raise OfficialCheckpointError(f"{what}: unexpected key {extra[0]!r} ({len(extra)} unexpected)")


def _state_to_variables(state, leaf_map, abstract, what):
    _check_keys(state, leaf_map, what)
    flat_abs = traverse_util.flatten_dict(abstract)
    flat = {}
    for key, (path, kind, leaf) in leaf_map.items():  # official order: a kernel before its vectors
        flat[path] = _to_flax(state[key], kind, leaf)
        if flat[path].shape != flat_abs[path].shape:
            got = list(np.shape(state[key]))
            raise OfficialCheckpointError(f"{what}: {key!r} has shape {got}, which fits no width of this network")
        if kind == "sn" and leaf == "weight_v":
            flat[path] = _permute_v(flat[path], flat[("params", *path[1:-1], "kernel")], to_flax=True)
    return jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat))


def _variables_to_state(variables, leaf_map):
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(variables)))
    state = {}
    for key, (path, kind, leaf) in leaf_map.items():
        arr = flat[path]
        if kind == "sn" and leaf == "weight_v":
            arr = _permute_v(arr, flat[("params", *path[1:-1], "kernel")], to_flax=False)
        state[key] = _from_flax(arr, kind, leaf)
    return state


def _shape(state, key, what):
    if key not in state:
        raise OfficialCheckpointError(f"{what}: missing key {key!r}")
    return np.asarray(state[key]).shape


def _whole(x, key, what):
    if x != int(x) or x <= 0:
        raise OfficialCheckpointError(f"{what}: the shape of {key!r} fits no width of this network")
    return int(x)


# ----------------------------------------------------------------------------- loading files


def _strip_module(state):
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def _read(source):
    """Returns (dict of top-level entries, name for messages)."""
    if isinstance(source, Mapping):
        return dict(source), "state dict"
    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.endswith(".npz"):
        nested = {}
        for k, v in _read_npz(path).items():
            head, sep, rest = k.partition("/")
            if sep and head in ("g", "d", "g_ema"):
                nested.setdefault(head, {})[rest] = v
            else:
                nested[k] = v
        return nested, path
    try:
        obj = torch_pickle.load(path)
    except torch_pickle.UnsafePickleError as e:
        raise OfficialCheckpointError(f"{path}: {e}") from None
    except torch_pickle.CheckpointFormatError as e:  # its message names the file
        raise OfficialCheckpointError(str(e)) from None
    if not isinstance(obj, Mapping):
        raise OfficialCheckpointError(f"{path}: holds a {type(obj).__name__}, not a FastGAN state dict")
    for where, names in [("", obj), *((f"{k!r:.40} ", v) for k, v in obj.items() if isinstance(v, Mapping))]:
        bad = [k for k in names if not isinstance(k, str)]  # state dicts, and the file's top level, are keyed by names
        if bad:
            raise OfficialCheckpointError(f"{path}: {where}has the key {bad[0]!r:.40}, not a FastGAN state dict")
    return dict(obj), path


def _one_line(e):
    return " ".join(str(e).split())


def _read_npz(path):
    """The arrays of an `.npz`, each `.npy` header checked against its record before use."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        why = "a truncated or damaged zip archive (no end-of-archive record)" if head == b"PK\x03\x04" else "not a zip"
        raise OfficialCheckpointError(f"{path}: not an .npz archive: {why}")
    try:
        with torch_pickle.open_zip(path) as zf:
            records = {info.filename: zf.read(info) for info in zf.infolist()}
    except torch_pickle.ZIP_ERRORS as e:
        raise OfficialCheckpointError(f"{path}: damaged zip archive: {_one_line(e)}") from None
    return {name.removesuffix(".npy"): _parse_npy(raw, f"{path}: {name}") for name, raw in records.items()}


def _parse_npy(raw, what):
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version not in headers:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = headers[version](f)
    except Exception as e:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise OfficialCheckpointError(f"{what} is not a .npy array: {_one_line(e)}") from None
    if dtype.hasobject:
        raise OfficialCheckpointError(f"{what} is an object array (pickled Python objects), not numbers")
    if dtype.kind not in "biuf":
        raise OfficialCheckpointError(f"{what} holds {dtype}, not numbers")
    if any(n < 0 for n in shape):
        raise OfficialCheckpointError(f"{what} has shape {list(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if len(raw) - f.tell() != nbytes:
        got = len(raw) - f.tell()
        raise OfficialCheckpointError(f"{what} has shape {list(shape)} ({nbytes} bytes) but holds {got} bytes")
    return np.frombuffer(raw, dtype, offset=f.tell()).reshape(shape, order="F" if fortran else "C")


def _pick(entries, name, which):
    """The state dict of network `which` ('g' or 'd') from a file's top level."""
    if which in entries and isinstance(entries[which], Mapping):
        return _strip_module(dict(entries[which]))
    marker = "init.init.0.weight_orig" if which == "g" else "down_from_big.0.weight_orig"
    plain = _strip_module({k: v for k, v in entries.items() if not isinstance(v, Mapping)})
    if marker in plain:
        return plain
    net = "generator" if which == "g" else "discriminator"
    raise OfficialCheckpointError(f"{name}: not a FastGAN {net} state dict (no {marker!r} and no {which!r} entry)")


def generator_from_official(source, *, ema: bool = True):
    """Builds a Generator from an official FastGAN checkpoint.

    Args:
      source: path to `.npz` / `.pth`, or a dict of arrays keyed as the official
        state dict.
      ema: when the file holds `g_ema` (all_N.pth: a list of tensors in
        parameter order; npz: `g_ema/<key>`), use the averaged parameters with
        `g`'s buffers, as the official `eval.py` does.

    Returns:
      (Generator, variables). `output_tanh` is set as the official has it
      (only at 1024).
    """
    entries, name = _read(source)
    state = _pick(entries, name, "g")
    what = f"{name} (generator)"
    init_shape = _shape(state, "init.init.0.weight_orig", what)
    if len(init_shape) != 4:
        raise OfficialCheckpointError(f"{what}: 'init.init.0.weight_orig' has shape {list(init_shape)}")
    nz = init_shape[0]
    ngf = _whole(init_shape[1] / 32, "init.init.0.weight_orig", what)
    im_size = 1024 if "feat_1024.1.weight_orig" in state else 512 if "feat_512.1.weight_orig" in state else 256
    leaf_map = _leaf_map(_generator_modules(im_size))
    if ema and "g_ema" in entries:
        state = _apply_ema(state, entries["g_ema"], leaf_map, what)
    module = Generator(im_size=im_size, ngf=ngf, nz=nz, output_tanh=im_size == 1024)
    abstract = jax.eval_shape(lambda: init_generator(module, jax.random.key(0)))
    return module, _state_to_variables(state, leaf_map, abstract, what)


def _apply_ema(state, g_ema, leaf_map, what):
    keys = [k for k, (path, _, _) in leaf_map.items() if path[0] == "params"]
    if isinstance(g_ema, Mapping):
        ema = _strip_module(dict(g_ema))
    else:
        g_ema = list(g_ema)
        if len(g_ema) != len(keys):
            raise OfficialCheckpointError(
                f"{what}: g_ema has {len(g_ema)} tensors, the generator {len(keys)} parameters"
            )
        ema = dict(zip(keys, g_ema, strict=True))
    state = dict(state)
    for k in keys:
        if k not in ema:
            raise OfficialCheckpointError(f"{what}: g_ema misses key {k!r}")
        if np.shape(ema[k]) != np.shape(state.get(k)):
            raise OfficialCheckpointError(f"{what}: g_ema entry for {k!r} has shape {list(np.shape(ema[k]))}")
        state[k] = ema[k]
    return state


def discriminator_from_official(source):
    """Builds a Discriminator from an official FastGAN checkpoint.

    Args:
      source: path to `.npz` / `.pth`, or a dict of arrays keyed as the official
        state dict.

    Returns:
      (Discriminator, variables).
    """
    entries, name = _read(source)
    state = _pick(entries, name, "d")
    what = f"{name} (discriminator)"
    stem = _shape(state, "down_from_big.0.weight_orig", what)
    rf = _shape(state, "rf_big.0.weight_orig", what)
    dec = _shape(state, "decoder_big.main.5.weight_orig", what)
    if len(stem) != 4 or len(rf) != 4 or len(dec) != 4:
        raise OfficialCheckpointError(f"{what}: convolution weights must be 4-D")
    ndf = _whole(rf[1] / 8, "rf_big.0.weight_orig", what)
    im_size = 256 if stem[2] == 3 else 1024 if "down_from_big.2.weight_orig" in state else 512
    module = Discriminator(im_size=im_size, ndf=ndf, dec_width=dec[1])
    leaf_map = _leaf_map(_discriminator_modules(im_size))
    abstract = jax.eval_shape(lambda: init_discriminator(module, jax.random.key(0)))
    return module, _state_to_variables(state, leaf_map, abstract, what)


def to_official(module, variables) -> dict[str, np.ndarray]:
    """The official state dict (key -> numpy array, official order) of a network."""
    if module.im_size not in OFFICIAL_SIZES:
        raise ValueError(f"only im_size {OFFICIAL_SIZES} exist in the official code, not {module.im_size}")
    if isinstance(module, Generator):
        leaf_map = _leaf_map(_generator_modules(module.im_size))
    elif isinstance(module, Discriminator):
        leaf_map = _leaf_map(_discriminator_modules(module.im_size))
    else:
        raise TypeError(f"expected a Generator or Discriminator, got {type(module).__name__}")
    return _variables_to_state(variables, leaf_map)


def save_official_npz(path, *, g=None, d=None):
    """Writes networks in the official layout to `.npz`.

    Args:
      path: output file (must not exist: nothing is overwritten).
      g, d: `(module, variables)` pairs. One network is written with plain
        official keys, two with `g/` and `d/` prefixes.
    """
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists: choose another name (nothing is overwritten)")
    nets = {k: v for k, v in (("g", g), ("d", d)) if v is not None}
    if not nets:
        raise ValueError("save_official_npz: give g=, d= or both")
    arrays = {}
    for prefix, (module, variables) in nets.items():
        for k, v in to_official(module, variables).items():
            arrays[f"{prefix}/{k}" if len(nets) > 1 else k] = v
    np.savez(path, **arrays)
