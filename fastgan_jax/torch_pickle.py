"""Reads PyTorch zip checkpoints (`torch.save`, PyTorch >= 1.6) without torch.

A `.pth` file is a zip holding `data.pkl` and one raw file per storage. The
pickle is read by a restricted unpickler that resolves only the few globals
a tensor needs (the tensor rebuild functions, storage types, OrderedDict), so
loading a file can never run code from it. Tensors come back as numpy arrays
(bfloat16 as float32).
"""

import collections
import io
import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    del requires_grad, hooks, metadata
    itemsize = storage.itemsize
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    del requires_grad, hooks
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class ScriptObject:
    """An inert stand-in for a TorchScript module (`__torch__.*`): its pickled attributes, nothing else."""

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"<{type(self).__name__} {sorted(self.__dict__)}>"


def _as_list(x):
    return list(x)


# torch.jit._pickle helpers that TorchScript archives use for typed containers.
_JIT_PICKLE = {"build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "build_genericlist"}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global that a tensor file never needs."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, read_storage, script_objects=False):
        super().__init__(io.BytesIO(data))
        self._read_storage = read_storage
        self._script_objects = script_objects

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if self._script_objects and (module == "__torch__" or module.startswith("__torch__.")):
            return type(name, (ScriptObject,), {"__module__": module})  # a new inert class, never torch's
        if self._script_objects and module == "torch.jit._pickle" and name in _JIT_PICKLE:
            return _as_list
        raise UnsafePickleError(f"refusing to load global {module}.{name}: not a plain tensor file")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r}")
        return self._read_storage(str(key), _STORAGE_DTYPES[storage_type.name])


def load(path, pickle_name: str = "data.pkl", *, script_objects: bool = False):
    """Loads `pickle_name` of a PyTorch zip file with tensors as numpy arrays.

    With `script_objects`, a TorchScript archive's modules (`__torch__.*`)
    load as inert `ScriptObject`s holding their attributes; their code is
    never run.

    Raises:
      ValueError: the file is not a PyTorch zip checkpoint.
      UnsafePickleError: the pickle refers to anything but tensors and containers.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a PyTorch zip checkpoint (files saved by torch < 1.6 are not supported: "
            "re-save it with a current torch)"
        )
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.split("/")[-1] == pickle_name and n.count("/") == 1]
        if not pkl:
            raise ValueError(f"{path}: no {pickle_name} inside: not a PyTorch checkpoint")
        prefix = pkl[0].split("/")[0]
        cache = {}

        def read_storage(key, dtype):
            if key not in cache:
                raw = zf.read(f"{prefix}/data/{key}")
                if dtype == "bfloat16":
                    bits = np.frombuffer(raw, np.uint16).astype(np.uint32) << 16
                    cache[key] = bits.view(np.float32)
                else:
                    cache[key] = np.frombuffer(raw, dtype)
            return cache[key]

        return _Unpickler(zf.read(pkl[0]), read_storage, script_objects).load()
