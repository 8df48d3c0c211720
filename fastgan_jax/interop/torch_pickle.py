"""Reads PyTorch zip checkpoints (`torch.save`, PyTorch >= 1.6) without torch.

A `.pth` file is a zip holding `data.pkl` and one raw file per storage. The
pickle is read by a restricted unpickler that resolves only the few globals
a tensor needs (the tensor rebuild functions, storage types, OrderedDict), so
loading a file can never run code from it. Tensors come back as numpy arrays
(bfloat16 as float32).

Nothing in the file is trusted: every tensor's size, stride and offset are
checked against its storage before a view is made, and every way a damaged
or crafted file can fail (truncation, a bad CRC, a missing record, a broken
pickle) raises `CheckpointFormatError` with the reason and the file name.
"""

import collections
import io
import lzma
import pickle
import pickletools
import struct
import zipfile
import zlib

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
_ITEMSIZE = {name: 2 if dt == "bfloat16" else np.dtype(dt).itemsize for name, dt in _STORAGE_DTYPES.items()}

# A tensor may not hold more elements than this, and a whole file may not
# expand to more than _MAX_EXPANSION times the elements of its storages (plus
# _SMALL), so a few bytes can never ask for gigabytes through stride-0 views.
MAX_ELEMENTS = 2**33
_MAX_EXPANSION = 4
_SMALL = 2**20

# What zipfile and its decompressors raise on a damaged archive (convert reads .npz with it too).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,  # an unknown compression method
    RuntimeError,  # an encrypted record
    OverflowError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


class CheckpointFormatError(ValueError):
    """The file is not a well-formed PyTorch zip checkpoint (the message names the file and the reason)."""


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a global that a tensor file never needs."""


class _Frozen:
    """What `find_class` and `persistent_load` hand the pickle: a BUILD opcode must not rewrite it."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"refusing to set the state of a {type(self).__name__}")


class _StorageType(_Frozen):
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _Storage(_Frozen):
    """One storage record, as flat elements; only these can back a tensor."""

    __slots__ = ("key", "type_name", "array")

    def __init__(self, key, type_name, array):
        self.key, self.type_name, self.array = key, type_name, array


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


def _ints(name, values):
    if not isinstance(values, tuple | list) or len(values) > 64:
        raise CheckpointFormatError(f"tensor {name} is not a tuple of at most 64 integers: {values!r:.80}")
    if not all(type(v) is int and v >= 0 for v in values):  # bool is an int too: refuse it
        raise CheckpointFormatError(f"tensor {name} must be non-negative integers, got {values!r:.80}")
    return tuple(values)


def _check_view(storage, offset, size, stride):
    """Raises unless the view lies inside the storage; returns its number of elements."""
    if type(offset) is not int or offset < 0:
        raise CheckpointFormatError(f"tensor offset must be a non-negative integer, got {offset!r:.80}")
    size, stride = _ints("size", size), _ints("stride", stride)
    if len(size) != len(stride):
        raise CheckpointFormatError(f"tensor size {list(size)} and stride {list(stride)} differ in length")
    numel = 1
    for n in size:  # Python ints cannot overflow; stop as soon as the product is absurd
        numel *= n
        if numel > MAX_ELEMENTS:
            raise CheckpointFormatError(f"tensor of size {list(size)} has more than {MAX_ELEMENTS} elements")
    length = len(storage.array)
    if numel == 0:
        if offset > length:
            raise CheckpointFormatError(f"empty tensor at offset {offset} past storage {storage.key} ({length})")
        return 0
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= length:
        raise CheckpointFormatError(
            f"tensor of size {list(size)}, stride {list(stride)}, offset {offset} reaches element {last} "
            f"of storage {storage.key}, which holds {length}"
        )
    return numel


class _Unpickler(pickle.Unpickler):
    def __init__(self, data, read_storage, script_objects=False):
        super().__init__(io.BytesIO(data))
        self._read_storage = read_storage
        self._script_objects = script_objects
        self._storage_elements = 0  # elements of the distinct storages read so far
        self._tensor_elements = 0  # elements of the tensors built so far

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return self._rebuild_parameter
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
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
            raise UnsafePickleError(f"unexpected persistent id {pid!r:.80}")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"unexpected storage type {storage_type!r:.80}")
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise CheckpointFormatError(f"storage key {key!r:.80} is not a name")
        storage, new = self._read_storage(str(key), storage_type.name)
        if new:
            self._storage_elements += len(storage.array)
        if len(pid) >= 5 and type(pid[4]) is int and pid[4] != len(storage.array):
            raise CheckpointFormatError(f"storage {key} holds {len(storage.array)} elements, the pickle says {pid[4]}")
        return storage

    def _rebuild_parameter(self, data, requires_grad=False, hooks=None):  # a method: BUILD cannot set its attributes
        del requires_grad, hooks
        return data

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        del requires_grad, hooks, metadata
        if not isinstance(storage, _Storage):
            raise CheckpointFormatError(f"a tensor is built from {type(storage).__name__}, not a storage")
        numel = _check_view(storage, offset, size, stride)
        self._tensor_elements += numel
        if self._tensor_elements > _MAX_EXPANSION * self._storage_elements + _SMALL:
            raise CheckpointFormatError(
                f"the tensors add up to more than {_MAX_EXPANSION} times the {self._storage_elements} elements "
                "of their storages"
            )
        array = storage.array
        if numel == 0:
            return np.zeros(size, array.dtype)
        # Strides of size-1 dimensions never move, so they may be anything: zero them for numpy.
        strides = tuple(s * array.itemsize if n > 1 else 0 for n, s in zip(size, stride, strict=True))
        view = np.lib.stride_tricks.as_strided(array[offset:], shape=tuple(size), strides=strides, writeable=False)
        return np.array(view)


def _scan_opcodes(data, pickle_name):
    """Walks the pickle's opcodes without running them.

    The C unpickler allocates from numbers in the stream before it reads what
    they describe (a memo index of 2**32 makes it clear a 32 GiB table). So
    every counted length must lie inside the data (`genops` checks that), and
    memo indices and frame lengths may not exceed the opcodes and bytes there are.
    """
    try:
        for count, (op, arg, pos) in enumerate(pickletools.genops(data)):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET") and arg > count:
                raise CheckpointFormatError(f"memo index {arg} of {op.name} at byte {pos}")
            if op.name == "FRAME" and arg > len(data) - pos:
                raise CheckpointFormatError(f"frame of {arg} bytes at byte {pos}")
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f"damaged {pickle_name}: {e}") from None
    except Exception as e:  # genops raises ValueError for unknown opcodes and truncated arguments
        raise CheckpointFormatError(f"damaged {pickle_name}: {_one_line(f'{type(e).__name__}: {e}')}") from None


def _not_zip_reason(path):
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle protocol header: torch.save's format before 1.6
        return (
            "not a PyTorch zip checkpoint but a legacy one (saved by torch < 1.6, unsupported): "
            "re-save it with a current torch"
        )
    if head == b"PK\x03\x04":
        return "a truncated or damaged zip archive (no end-of-archive record)"
    return "not a PyTorch checkpoint (neither a zip archive nor a legacy torch file)"


def open_zip(path) -> zipfile.ZipFile:
    """Opens a zip archive whose directory lists every record its end record counts.

    zipfile stops reading the central directory at its stated size, so one
    damaged length field there would silently hide the records after it.

    Raises:
      zipfile.BadZipFile (or another of `ZIP_ERRORS`): a damaged archive.
    """
    zf = zipfile.ZipFile(path)
    end_record = getattr(zipfile, "_EndRecData", None)  # private, but what ZipFile itself read the directory with
    try:
        if end_record is not None:
            with open(path, "rb") as f:
                end = end_record(f)
            promised = end[zipfile._ECD_ENTRIES_TOTAL] if end else len(zf.infolist())
            if promised != len(zf.infolist()):
                raise zipfile.BadZipFile(f"the directory lists {len(zf.infolist())} records, the end record {promised}")
    except BaseException:
        zf.close()
        raise
    return zf


def load(path, pickle_name: str = "data.pkl", *, script_objects: bool = False):
    """Loads `pickle_name` of a PyTorch zip file with tensors as numpy arrays.

    With `script_objects`, a TorchScript archive's modules (`__torch__.*`)
    load as inert `ScriptObject`s holding their attributes; their code is
    never run.

    Raises:
      CheckpointFormatError: the file is not a well-formed PyTorch zip
        checkpoint (truncated, a bad CRC, a missing record, a broken pickle,
        a tensor outside its storage, ...).
      UnsafePickleError: the pickle refers to anything but tensors and containers.
    """
    if not zipfile.is_zipfile(path):
        raise CheckpointFormatError(f"{path}: {_not_zip_reason(path)}")
    try:
        with open_zip(path) as zf:
            return _load_zip(zf, pickle_name, script_objects)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f"{path}: {e}") from None
    except UnsafePickleError:
        raise
    except ZIP_ERRORS as e:
        raise CheckpointFormatError(f"{path}: damaged zip archive: {_one_line(e)}") from None


def _one_line(text):
    return " ".join(str(text).split())


def _load_zip(zf, pickle_name, script_objects):
    names = set(zf.namelist())
    pkl = sorted(n for n in names if n.split("/")[-1] == pickle_name and n.count("/") == 1)
    if not pkl:
        raise CheckpointFormatError(f"no {pickle_name} inside: not a PyTorch checkpoint")
    prefix = pkl[0].split("/")[0]
    order = zf.read(f"{prefix}/byteorder") if f"{prefix}/byteorder" in names else b"little"
    if order not in (b"little", b"big"):
        raise CheckpointFormatError(f"unknown byte order {order[:20]!r}")
    cache = {}

    def read_storage(key, type_name):
        if key in cache:
            if cache[key].type_name != type_name:
                raise CheckpointFormatError(f"storage {key} is read as both {cache[key].type_name} and {type_name}")
            return cache[key], False
        name = f"{prefix}/data/{key}"
        if name not in names:
            raise CheckpointFormatError(f"storage record {name} is missing")
        try:
            raw = zf.read(name)
        except ZIP_ERRORS as e:  # from inside the unpickler, where any other exception means a broken pickle
            raise CheckpointFormatError(f"damaged zip archive: {_one_line(e)}") from None
        if len(raw) % _ITEMSIZE[type_name]:
            raise CheckpointFormatError(
                f"storage {name} has {len(raw)} bytes, not a whole number of {type_name} elements"
            )
        dtype = _STORAGE_DTYPES[type_name]
        endian = ">" if order == b"big" else "<"
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, endian + "u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype is np.bool_:
            array = np.frombuffer(raw, np.uint8) != 0  # any byte but 0 is True, as in torch
        else:
            array = np.frombuffer(raw, np.dtype(dtype).newbyteorder(endian)).astype(dtype, copy=False)
        cache[key] = _Storage(key, type_name, array)
        return cache[key], True

    data = zf.read(pkl[0])
    _scan_opcodes(data, pickle_name)
    try:
        return _Unpickler(data, read_storage, script_objects).load()
    except (CheckpointFormatError, UnsafePickleError):
        raise
    except Exception as e:  # a broken pickle can raise whatever its opcodes and the allowed callables raise
        raise CheckpointFormatError(f"damaged {pickle_name}: {_one_line(f'{type(e).__name__}: {e}')}") from None
