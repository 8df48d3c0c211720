"""Files kept between runs only to save time (fastgan_jax/cachefile.py): optional, and never half-written."""

import numpy as np
import pytest

from fastgan_jax import cachefile
from fastgan_jax.interop import weights


def save(value):
    return lambda f: np.save(f, value)


def test_a_write_is_whole_or_absent(tmp_path):
    path = tmp_path / "c" / "x.npy"
    assert cachefile.write(path, save(np.arange(3)), "test cache")
    np.testing.assert_array_equal(cachefile.read(path, np.load, "test cache"), np.arange(3))

    def interrupted(f):
        f.write(b"\x93NUMPY half")
        raise KeyboardInterrupt  # a Ctrl-C in the middle of the write

    with pytest.raises(KeyboardInterrupt):
        cachefile.write(path, interrupted, "test cache")
    np.testing.assert_array_equal(cachefile.read(path, np.load, "test cache"), np.arange(3))  # the old file
    assert [p.name for p in path.parent.iterdir()] == ["x.npy"]  # no temporary file left


def test_a_damaged_file_is_one_warning_deleted_and_none(tmp_path):
    path = tmp_path / "x.npy"
    path.write_bytes(b"\x93NUMPY half")
    with pytest.warns(UserWarning, match=rf"^test cache {path} is unreadable \(.*\); deleted, making it again$"):
        assert cachefile.read(path, np.load, "test cache") is None
    assert not path.exists()


def test_an_unwritable_folder_is_one_warning(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.warns(UserWarning, match=r"^cannot write the test cache .*file/x.npy \(.*\); continuing without it$"):
        assert not cachefile.write(tmp_path / "file" / "x.npy", save(np.arange(3)), "test cache")


def test_the_weights_cache_is_optional_and_rebuilt_when_damaged(tmp_path):
    (tmp_path / "file").write_text("")  # a read-only cache, for the purpose: no folder can be made there
    with pytest.warns(UserWarning, match=r"^cannot write the weights cache .*; continuing without it$"):
        expected = weights.lpips_params("vgg", cache_dir=tmp_path / "file")
    weights.lpips_params("vgg", cache_dir=tmp_path / "c")
    (path,) = (tmp_path / "c" / "weights").iterdir()
    path.write_bytes(path.read_bytes()[:1000])  # a write cut short by a crash
    with pytest.warns(UserWarning, match=rf"^weights cache {path} is unreadable"):
        again = weights.lpips_params("vgg", cache_dir=tmp_path / "c")
    for a, b in zip(np.asarray(list(_leaves(again))), np.asarray(list(_leaves(expected))), strict=True):
        np.testing.assert_array_equal(a, b)
    assert weights.lpips_params("vgg", cache_dir=tmp_path / "c") is not None  # read back, no warning


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield np.asarray(tree).sum()
