"""Damaged and crafted checkpoint files: one clear OfficialCheckpointError each, never a crash.

The fuzz tests call `convert._read`, the file-reading half of the importers:
a file that reads to the same arrays converts to the same networks, and one
that does not read raises before any conversion.
"""

import collections
import dataclasses
import io
import pathlib
import pickle
import pickletools
import re
import zipfile

import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax.interop import convert, torch_pickle

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
PTH = DATA / "tiny_all_3.pth"
NPZ = DATA / "tiny_official.npz"

# ----------------------------------------------------------------------------- writing .pth files without torch


def rebuild_tensor_v2(*args):
    """A stand-in that pickles by reference; `pth_bytes` renames the reference to torch's."""
    raise AssertionError("never called")


class FloatStorage:
    """Pickled by reference, renamed to torch.<storage_type> by `pth_bytes`."""


@dataclasses.dataclass
class Storage:
    key: str
    numel: int


@dataclasses.dataclass
class Tensor:
    storage: object
    offset: object
    size: object
    stride: object

    def __reduce__(self):
        return rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return ("storage", FloatStorage, obj.key, "cpu", obj.numel) if isinstance(obj, Storage) else None


def pth_bytes(obj, records, storage_type="FloatStorage", pickle_bytes=None):
    """A zip laid out as torch.save writes one: `obj` as archive/data.pkl, `records` {name: bytes} beside it."""
    if pickle_bytes is None:
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(obj)
        pickle_bytes = buf.getvalue()
        for ours, theirs in (
            ("FloatStorage", f"torch\n{storage_type}"),
            ("rebuild_tensor_v2", "torch._utils\n_rebuild_tensor_v2"),
        ):
            pickle_bytes = pickle_bytes.replace(f"c{__name__}\n{ours}\n".encode(), f"c{theirs}\n".encode())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        if pickle_bytes is not False:
            zf.writestr("archive/data.pkl", pickle_bytes)
        for name, raw in records.items():
            zf.writestr(f"archive/{name}", raw)
    return out.getvalue()


def write(path, data):
    path.write_bytes(data)
    return path


def floats(n, order="<"):
    return np.arange(n, dtype=f"{order}f4").tobytes()


def raises_about(path, reason):
    """pytest.raises for an OfficialCheckpointError whose message names `path` and then `reason`."""
    return pytest.raises(fj.OfficialCheckpointError, match=f"^{re.escape(str(path))}: .*{re.escape(reason)}")


# ----------------------------------------------------------------------------- tensors and storages


def test_crafted_views_read_as_torch_lays_them_out(tmp_path):
    s = Storage("0", 12)
    state = {
        "a": Tensor(s, 0, (3, 4), (4, 1)),
        "t": Tensor(s, 0, (4, 3), (1, 4)),
        "scalar": Tensor(s, 5, (), ()),
        "ones": Tensor(s, 11, (1, 1), (99, 7)),  # a size-1 dimension's stride never moves
        "empty": Tensor(s, 12, (0, 3), (3, 1)),
        "broadcast": Tensor(s, 2, (2, 3), (0, 1)),
    }
    a = np.arange(12, dtype=np.float32)
    for order, byteorder in (("<", b"little"), (">", b"big")):
        path = write(tmp_path / f"{order}.pth", pth_bytes(state, {"data/0": floats(12, order), "byteorder": byteorder}))
        got = torch_pickle.load(path)
        np.testing.assert_array_equal(got["a"], a.reshape(3, 4))
        np.testing.assert_array_equal(got["t"], a.reshape(3, 4).T)
        assert got["scalar"].shape == () and got["scalar"] == 5
        np.testing.assert_array_equal(got["ones"], [[11]])
        assert got["empty"].shape == (0, 3)
        np.testing.assert_array_equal(got["broadcast"], [[2, 3, 4], [2, 3, 4]])
        assert all(v.dtype == np.float32 and v.dtype.isnative for v in got.values())


@pytest.mark.parametrize(
    "offset, size, stride, reason",
    [
        (0, (13,), (1,), "reaches element 12 of storage 0, which holds 12"),
        (12, (), (), "reaches element 12 of storage 0"),
        (0, (4, 4), (4, 1), "reaches element 15 of storage 0"),
        (1, (2,), (11,), "reaches element 12 of storage 0"),
        (-1, (2,), (1,), "offset must be a non-negative integer, got -1"),
        (0, (-2,), (1,), "size must be non-negative integers"),
        (0, (2,), (-1,), "stride must be non-negative integers"),
        (0, (2.0,), (1,), "size must be non-negative integers"),
        (0, (True,), (1,), "size must be non-negative integers"),
        (0, 12, 1, "size is not a tuple"),
        (0, (2, 2), (1,), "size [2, 2] and stride [1] differ in length"),
        (0, (2**40, 2**40), (0, 0), f"has more than {torch_pickle.MAX_ELEMENTS} elements"),
        (0, (2**30,), (0,), "the tensors add up to more than 4 times the 12 elements of their storages"),
        (13, (0,), (1,), "empty tensor at offset 13 past storage 0"),
    ],
)
def test_views_outside_their_storage_are_refused(tmp_path, offset, size, stride, reason):
    # Before the checks, the first four read past the storage (a crafted file crashed Python).
    path = write(
        tmp_path / "bad.pth", pth_bytes({"w": Tensor(Storage("0", 12), offset, size, stride)}, {"data/0": floats(12)})
    )
    with raises_about(path, reason):
        fj.generator_from_official(path)


@pytest.mark.parametrize(
    "state, records, storage_type, reason",
    [
        (
            {"w": Tensor(Storage("0", 12), 0, (2,), (1,))},
            {"data/0": floats(12)[:-1]},
            "FloatStorage",
            "storage archive/data/0 has 47 bytes, not a whole number of FloatStorage elements",
        ),
        (
            {"w": Tensor(Storage("0", 12), 0, (2,), (1,))},
            {},
            "FloatStorage",
            "storage record archive/data/0 is missing",
        ),
        (
            {"w": Tensor(Storage("0", 10), 0, (2,), (1,))},
            {"data/0": floats(12)},
            "FloatStorage",
            "storage 0 holds 12 elements, the pickle says 10",
        ),
        (
            {"w": Tensor(Storage("0", 6), 0, (2,), (1,))},
            {"data/0": floats(12)},
            "ComplexFloatStorage",
            "refusing to load global torch.ComplexFloatStorage",
        ),
        (
            {"w": Tensor("0", 0, (2,), (1,))},
            {"data/0": floats(12)},
            "FloatStorage",
            "a tensor is built from str, not a storage",
        ),
    ],
    ids=["ragged", "missing", "numel", "dtype", "not-a-storage"],
)
def test_storage_problems(tmp_path, state, records, storage_type, reason):
    path = write(tmp_path / "bad.pth", pth_bytes(state, records, storage_type))
    with raises_about(path, reason):
        fj.generator_from_official(path)


def test_pickle_cannot_rewrite_a_storage(tmp_path):
    # BUILD after the storage's persistent id: the pickle sets a state (here {}) on the storage object.
    data = pth_bytes({"w": Tensor(Storage("0", 12), 0, (2,), (1,))}, {})
    pkl = zipfile.ZipFile(io.BytesIO(data)).read("archive/data.pkl")
    at = next(pos for op, _, pos in pickletools.genops(pkl) if op.name == "BINPERSID") + 1
    path = write(
        tmp_path / "build.pth", pth_bytes(None, {"data/0": floats(12)}, pickle_bytes=pkl[:at] + b"}b" + pkl[at:])
    )
    with raises_about(path, "refusing to set the state of a _Storage"):
        fj.generator_from_official(path)


# ----------------------------------------------------------------------------- damaged files


def _record_data_offset(data, name):
    """Where the bytes of record `name` start in the zip `data`."""
    at = zipfile.ZipFile(io.BytesIO(data)).getinfo(name).header_offset
    return at + 30 + _u16(data, at + 26) + _u16(data, at + 28)  # the local header, its name and extra field


def _u16(data, at):
    return int.from_bytes(data[at : at + 2], "little")


def _hide_records(data):
    """The zip with its first directory entry's comment swallowing the entries after it."""
    start = data.index(b"PK\x01\x02")
    end = data.index(b"PK\x05\x06")
    fixed = 46 + _u16(data, start + 28) + _u16(data, start + 30)  # the entry up to its comment
    return data[: start + 32] + (end - start - fixed).to_bytes(2, "little") + data[start + 34 :]


def _damaged_pth():
    orig = PTH.read_bytes()
    crc = bytearray(orig)
    crc[_record_data_offset(orig, "tiny_all_3/data/5") + 3] ^= 0xFF
    return {
        "truncated": (orig[: len(orig) // 2], "a truncated or damaged zip archive (no end-of-archive record)"),
        "crc": (bytes(crc), "damaged zip archive: Bad CRC-32 for file 'tiny_all_3/data/5'"),
        "empty": (b"", "an empty file"),
        "random": (np.random.default_rng(0).bytes(4096), "neither a zip archive nor a legacy torch file"),
        "legacy": (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "a legacy one (saved by torch < 1.6"),
        "no-pickle": (pth_bytes(None, {"data/0": floats(4)}, pickle_bytes=False), "no data.pkl inside"),
        "hidden": (
            _hide_records(pth_bytes({}, {"data/0": floats(4), "data/1": floats(4)})),
            "the directory lists 1 records, the end record 3",
        ),
        "broken-pickle": (pth_bytes(None, {}, pickle_bytes=pickle.dumps({"g": 1}, 2)[:-3]), "damaged data.pkl"),
        "memo-bomb": (
            pth_bytes(None, {}, pickle_bytes=b"\x80\x02}r\xff\xff\xff\x7f."),
            "damaged data.pkl: memo index 2147483647 of LONG_BINPUT",
        ),
        "list": (
            pth_bytes([Tensor(Storage("0", 4), 0, (4,), (1,))], {"data/0": floats(4)}),
            "holds a list, not a FastGAN state dict",
        ),
        "int-key": (pth_bytes({3: 1.0}, {}), "has the key 3, not a FastGAN state dict"),
        "nested-int-key": (pth_bytes({"g": {3: 1.0}}, {}), "'g' has the key 3, not a FastGAN state dict"),
        "other-net": (
            pth_bytes({"encoder.weight": Tensor(Storage("0", 4), 0, (4,), (1,))}, {"data/0": floats(4)}),
            "not a FastGAN generator state dict",
        ),
    }


@pytest.mark.parametrize("case", list(_damaged_pth()))
def test_damaged_pth_says_why(tmp_path, case):
    data, reason = _damaged_pth()[case]
    path = write(tmp_path / "bad.pth", data)
    with raises_about(path, reason):
        fj.generator_from_official(path)


def _npy(header_shape, payload, descr="<f4"):
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": header_shape})
    return out.getvalue() + payload


def _zip(records):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, raw in records.items():
            zf.writestr(name, raw)
    return out.getvalue()


def _damaged_npz():
    orig = NPZ.read_bytes()
    crc = bytearray(orig)
    crc[_record_data_offset(orig, "g/init.init.1.weight.npy") + 130] ^= 0xFF
    objects, strings = io.BytesIO(), io.BytesIO()
    np.savez(objects, a=np.array([{"x": 1}], dtype=object))
    np.savez(strings, a=np.array(["abc"]))
    return {
        "truncated": (orig[: len(orig) // 3], "a truncated or damaged zip archive (no end-of-archive record)"),
        "crc": (bytes(crc), "damaged zip archive: Bad CRC-32 for file 'g/init.init.1.weight.npy'"),
        "random": (np.random.default_rng(0).bytes(4096), "not an .npz archive: not a zip"),
        "objects": (objects.getvalue(), "a.npy is an object array (pickled Python objects), not numbers"),
        "strings": (strings.getvalue(), "a.npy holds <U3, not numbers"),
        "oversized": (
            _zip({"a.npy": _npy((10**12,), floats(4))}),
            "a.npy has shape [1000000000000] (4000000000000 bytes) but holds 16 bytes",
        ),
        "short": (_zip({"a.npy": _npy((5,), floats(4))}), "a.npy has shape [5] (20 bytes) but holds 16 bytes"),
        "not-npy": (_zip({"a.npy": b"hello"}), "a.npy is not a .npy array"),
        "hidden": (
            _hide_records(_zip({"a.npy": _npy((1,), floats(1)), "b.npy": _npy((1,), floats(1))})),
            "the directory lists 1 records, the end record 2",
        ),
    }


def test_npz_reads_as_np_load_does(tmp_path):
    arrays = {
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "scalar": np.int64(3),
        "big_endian": np.arange(4, dtype=">f4"),
        "flags": np.array([True, False]),
        "half": np.ones(3, np.float16),
        "empty": np.zeros((0, 3), np.float32),
    }
    np.savez(tmp_path / "ok.npz", **arrays)
    got = convert._read(tmp_path / "ok.npz")[0]
    with np.load(tmp_path / "ok.npz") as want:
        assert sorted(got) == sorted(want.files)
        for k in want.files:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("case", list(_damaged_npz()))
def test_damaged_npz_says_why(tmp_path, case):
    data, reason = _damaged_npz()[case]
    path = write(tmp_path / "bad.npz", data)
    with raises_about(path, reason):
        fj.discriminator_from_official(path)


# ----------------------------------------------------------------------------- fuzzing


def _leaves(tree):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from ((f"{k}/{p}", x) for p, x in _leaves(v))
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from ((f"{i}/{p}", x) for p, x in _leaves(v))
    else:
        yield "", tree


def _read_or_error(path):
    """convert._read's entries, or None after an OfficialCheckpointError that names the file on one line."""
    try:
        return convert._read(path)[0]
    except fj.OfficialCheckpointError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e), str(e)
        return None


def _assert_same(got, want):
    got, want = dict(_leaves(got)), dict(_leaves(want))
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            np.testing.assert_array_equal(got[k], v, err_msg=k)
        else:
            assert got[k] == v, k


def _mutations(rng, data, n, tail):
    """`n` copies of `data` with 1-4 bytes overwritten: half anywhere, half in the last `tail` (zip directory)."""
    for _ in range(n):
        b = bytearray(data)
        for _ in range(rng.integers(1, 5)):
            lo = 0 if rng.random() < 0.5 else len(b) - tail
            b[rng.integers(lo, len(b))] = rng.integers(256)
        yield bytes(b)
    for _ in range(n // 4):  # and truncations
        yield data[: rng.integers(len(data))]


@pytest.mark.parametrize("name, n", [("tiny_all_3.pth", 100), ("tiny_official.npz", 120)])
def test_fuzzed_file_reads_unchanged_or_fails_cleanly(tmp_path, name, n):
    # The zip's CRCs catch a changed record; a change anywhere else (the
    # directory, headers) is caught as damage or is one the reader ignores.
    data = (DATA / name).read_bytes()
    want = convert._read(DATA / name)[0]
    last = max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda info: info.header_offset)
    tail = len(data) - _record_data_offset(data, last.filename) - last.compress_size  # the zip's directory
    path = tmp_path / name
    loaded = 0
    for mutated in _mutations(np.random.default_rng(0), data, n, tail):
        got = _read_or_error(write(path, mutated))
        if got is not None:
            _assert_same(got, want)
            loaded += 1
    assert 0 < loaded < n  # both outcomes were exercised


def _small_checkpoint():
    """A state dict laid out as official train.py's all_N.pth, over two storages of 0, 1, 2, ... ."""
    a, b = Storage("0", 64), Storage("1", 16)
    net = collections.OrderedDict(
        [
            ("conv.weight_orig", Tensor(a, 0, (2, 2, 3, 3), (18, 9, 3, 1))),
            ("conv.weight_u", Tensor(a, 36, (2,), (1,))),
            ("conv.weight_v", Tensor(a, 38, (18,), (1,))),
            ("bn.weight", Tensor(b, 0, (4,), (1,))),
            ("bn.running_var", Tensor(b, 4, (4,), (1,))),
            ("bn.num_batches_tracked", Tensor(b, 15, (), ())),
        ]
    )
    opt = {
        "state": {0: {"step": Tensor(b, 8, (), ()), "exp_avg": Tensor(a, 56, (2, 4), (1, 2))}},
        "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0]}],
    }
    state = {"g": net, "g_ema": [Tensor(a, 0, (36,), (1,)), Tensor(b, 0, (2, 2), (2, 1))], "opt_g": opt}
    return state, {"data/0": floats(64), "data/1": floats(16)}


def test_fuzzed_pickle_in_a_sound_zip_never_reads_outside_storages(tmp_path):
    # The CRC is right, so every change reaches the unpickler and the tensor checks.
    state, records = _small_checkpoint()
    pkl = zipfile.ZipFile(io.BytesIO(pth_bytes(state, records))).read("archive/data.pkl")
    rng = np.random.default_rng(0)
    path = tmp_path / "p.pth"
    loaded = 0
    for _ in range(250):
        b = bytearray(pkl)
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(len(b))] = rng.integers(256)
        got = _read_or_error(write(path, pth_bytes(None, records, pickle_bytes=bytes(b))))
        if got is not None:
            loaded += 1
            for key, leaf in _leaves(got):
                if isinstance(leaf, np.ndarray):  # every element is one of the storages' 0, 1, ..., 63
                    inside = (leaf >= 0) & (leaf < 64) & (leaf == np.round(leaf))
                    assert leaf.dtype == np.float32 and inside.all(), key
    assert loaded > 10


def test_changed_numbers_in_a_sound_zip_read_with_the_same_layout(tmp_path):
    # A changed stored number that the CRC vouches for is data: it reads, as the same shapes and dtypes.
    state, records = _small_checkpoint()
    want = convert._read(write(tmp_path / "ok.pth", pth_bytes(state, records)))[0]
    with np.load(NPZ) as z:
        npz = {k: z[k].tobytes() for k in list(z.files)[:20]}
        headers = {k: _npy(z[k].shape, b"", z[k].dtype.str) for k in npz}
    want_npz = convert._read(write(tmp_path / "ok.npz", _zip({f"{k}.npy": headers[k] + v for k, v in npz.items()})))[0]
    rng = np.random.default_rng(0)
    for _ in range(20):
        changed = {k: bytes(rng.integers(0, 256, len(v), np.uint8)) for k, v in records.items()}
        got = convert._read(write(tmp_path / "p.pth", pth_bytes(state, changed)))[0]
        assert [(k, v.shape, v.dtype) for k, v in _leaves(got) if isinstance(v, np.ndarray)] == [
            (k, v.shape, v.dtype) for k, v in _leaves(want) if isinstance(v, np.ndarray)
        ]
        changed = {f"{k}.npy": headers[k] + bytes(rng.integers(0, 256, len(v), np.uint8)) for k, v in npz.items()}
        got = convert._read(write(tmp_path / "p.npz", _zip(changed)))[0]
        assert [(k, v.shape, v.dtype) for k, v in _leaves(got)] == [(k, v.shape, v.dtype) for k, v in _leaves(want_npz)]
