import errno
import io
import os
import re

import helpers
import numpy as np
import pytest
from PIL import Image

from fastgan_jax import data


def save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_modes_are_converted(tmp_path):
    save(tmp_path / "rgba.png", Image.new("RGBA", (40, 40), (255, 0, 0, 0)))  # fully transparent red
    save(tmp_path / "sub" / "la.png", Image.new("LA", (40, 40), (0, 128)))  # half-transparent black
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 0, 255] * 256)
    save(tmp_path / "pal.png", pal, transparency=0)  # transparent via palette index
    save(tmp_path / "gray.bmp", Image.new("L", (40, 40), 77))
    save(tmp_path / "g16.png", Image.fromarray(np.full((40, 40), 65535, np.uint16)))
    save(tmp_path / "cmyk.jpg", Image.new("CMYK", (40, 40), (0, 255, 255, 0)))
    save(tmp_path / "x.webp", Image.new("RGB", (40, 40), (0, 200, 0)))
    (tmp_path / "notes.txt").write_text("not an image")
    images = data.load_folder(tmp_path, 32, cache_dir=False)
    assert images.shape == (7, 32, 32, 3) and images.dtype == np.uint8
    files = [p.stem for p in data.find_images(tmp_path)]
    by_name = dict(zip(files, images, strict=True))
    np.testing.assert_array_equal(by_name["rgba"][0, 0], [255, 255, 255])  # white background
    assert abs(int(by_name["la"][0, 0, 0]) - 127) <= 1
    np.testing.assert_array_equal(by_name["pal"][0, 0], [255, 255, 255])
    np.testing.assert_array_equal(by_name["gray"][0, 0], [77, 77, 77])
    np.testing.assert_array_equal(by_name["g16"][0, 0], [255, 255, 255])
    assert by_name["cmyk"][0, 0, 0] > 200 and by_name["cmyk"][0, 0, 1] < 50  # red
    assert by_name["x"][0, 0, 1] > 180


def test_colour_key_transparency_gets_the_background(tmp_path):
    # PNG optimisers write icons as RGB or L with a transparent colour (tRNS) instead of an alpha channel.
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:] = (255, 0, 255)  # magenta key
    rgb[16:48, 16:48] = (0, 0, 255)  # a blue square
    save(tmp_path / "k.png", Image.fromarray(rgb), transparency=(255, 0, 255))
    gray = np.full((64, 64), 7, np.uint8)
    gray[16:48, 16:48] = 100
    save(tmp_path / "g.png", Image.fromarray(gray), transparency=7)
    g16 = np.full((64, 64), 300, np.uint16)
    g16[16:48, 16:48] = 65535
    save(tmp_path / "g16.png", Image.fromarray(g16), transparency=300)
    with Image.open(tmp_path / "k.png") as k:
        assert k.mode == "RGB" and "transparency" in k.info  # what the test is about
        out, _ = data.preprocess(k, 64)
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[32, 32], [0, 0, 255])
    for name, inside in (("g", 100), ("g16", 255)):
        with Image.open(tmp_path / f"{name}.png") as img:
            assert "transparency" in img.info, name
        out = np.asarray(data.read_image(tmp_path / f"{name}.png", background=(10, 20, 30)))
        np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
        np.testing.assert_array_equal(out[32, 32], [inside] * 3)


def test_every_reader_refuses_a_decompression_bomb_with_one_reason(tmp_path, monkeypatch):
    # A 14000x13000 PNG is 570 KB on disk; a 64x64 one over a lowered limit takes the same path in PIL.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    save(tmp_path / "huge.png", Image.new("RGB", (64, 64)))
    save(tmp_path / "ok.png", Image.new("RGB", (8, 8), (1, 2, 3)))
    with pytest.raises(data.UnreadableImageError, match="decompression-bomb limit") as e:
        data.read_image(tmp_path / "huge.png")
    reason = e.value.reason
    assert reason == "more than 2,000 pixels (PIL's decompression-bomb limit); downscale it first"
    with pytest.warns(UserWarning, match=re.escape(f"huge.png: {reason}")):
        assert len(data.load_folder(tmp_path, 8, cache_dir=False)) == 1
    with pytest.warns(UserWarning, match=re.escape(f"huge.png: {reason}")):
        assert len(data.file_source(tmp_path, 8)) == 1


def test_background_is_configurable(tmp_path):
    save(tmp_path / "a.png", Image.new("RGBA", (8, 8), (0, 0, 0, 0)))
    out = data.load_folder(tmp_path, 8, background=(10, 20, 30), cache_dir=False)
    np.testing.assert_array_equal(out[0, 0, 0], [10, 20, 30])


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    save(tmp_path / "r.jpg", img, exif=exif, quality=100)
    out = data.load_folder(tmp_path, 20, aspect="stretch", cache_dir=False)[0]
    # Displayed upright the white half is on top.
    assert out[:8].mean() > 200 and out[12:].mean() < 50


def test_center_crop_and_stretch(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (20, 0, 40, 20))  # white middle third
    save(tmp_path / "wide.png", img)
    crop = data.load_folder(tmp_path, 16, cache_dir=False)[0]
    assert crop.min() > 240  # only the white centre is kept
    stretch = data.load_folder(tmp_path, 16, aspect="stretch", cache_dir=False)[0]
    assert stretch[:, 0].max() < 20 and stretch[:, 8].min() > 240
    with pytest.raises(ValueError, match="aspect must be one of"):
        data.load_folder(tmp_path, 16, aspect="pad", cache_dir=False)


def test_errors(tmp_path):
    with pytest.raises(data.DataError, match="nowhere: no such folder"):
        data.load_folder(tmp_path / "nowhere", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no jpg/jpeg/png/webp/bmp images"):
        data.load_folder(tmp_path / "empty", 32)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(data.DataError, match="not a folder"):
        data.load_folder(tmp_path / "file.png", 32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"garbage")
    with pytest.raises(data.DataError, match="none of the 1 image files could be read"):
        data.load_folder(bad, 32, cache_dir=False)


def _broken_files(folder, n_garbage):
    """Unreadable files of three kinds: garbage, a truncated JPEG, an empty PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_garbage):
        (folder / f"broken{i:02d}.jpg").write_bytes(b"\xff\xd8 not really")
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "empty.png").write_bytes(b"")


def test_corrupt_files_are_skipped_with_their_reasons_cached_or_not(tmp_path, monkeypatch):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    _broken_files(folder, 3)
    save(folder / "good.png", Image.new("RGB", (64, 64), (9, 9, 9)))
    for run, cache_dir in enumerate((False, cache, cache)):  # uncached, first cached run, cache hit
        if run == 2:
            monkeypatch.setattr(data, "_decode", None)  # the cache hit must not decode
        with pytest.warns(UserWarning, match=r"skipped 5 unreadable image file\(s\) in ") as rec:
            out = data.load_folder(folder, 32, cache_dir=cache_dir)
        assert len(rec) == 1 and out.shape == (1, 32, 32, 3)
        lines = str(rec[0].message).splitlines()
        assert lines[1:5] == [
            "  broken00.jpg: cannot identify image file",
            "  broken01.jpg: cannot identify image file",
            "  broken02.jpg: cannot identify image file",
            "  empty.png: empty file (0 bytes)",
        ]
        assert lines[5].startswith("  truncated.jpg: image file is truncated") and len(lines) == 6


def test_long_skipped_list_is_capped(tmp_path):
    _broken_files(tmp_path, 12)
    good = save(tmp_path / "sub" / "good.png", Image.new("RGB", (8, 8)))
    with pytest.warns(UserWarning, match=r"skipped 14 unreadable image file\(s\)") as rec:
        data.load_folder(tmp_path, 8, cache_dir=False)
    lines = str(rec[0].message).splitlines()
    assert len(lines) == 12 and lines[-1] == "  and 4 more"
    good.unlink()
    with pytest.raises(data.DataError, match=r"none of the 14 image files could be read \(e.g. broken00.jpg: cannot"):
        data.load_folder(tmp_path, 8, cache_dir=False)


def test_small_images_are_upscaled_with_a_warning(tmp_path):
    save(tmp_path / "tiny.png", Image.new("RGB", (10, 10), (5, 5, 5)))
    save(tmp_path / "big.png", Image.new("RGB", (64, 64), (5, 5, 5)))
    with pytest.warns(UserWarning, match=r"1 image\(s\) smaller than 32px were upscaled"):
        out = data.load_folder(tmp_path, 32, cache_dir=False)
    assert out.shape == (2, 32, 32, 3)


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    save(folder / "a.png", Image.new("RGB", (32, 32), (100, 0, 0)))
    first = data.load_folder(folder, 16, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def no_decode(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(data, "_decode", no_decode)
    np.testing.assert_array_equal(data.load_folder(folder, 16, cache_dir=cache), first)
    monkeypatch.undo()
    save(folder / "b.png", Image.new("RGB", (32, 32), (0, 100, 0)))  # the folder changed
    assert data.load_folder(folder, 16, cache_dir=cache).shape == (2, 16, 16, 3)
    assert data.load_folder(folder, 8, cache_dir=cache).shape == (2, 8, 8, 3)  # another size
    assert len(list(cache.glob("*.npz"))) == 3


def test_embedded_default_set():
    files = data.find_images(data.DEFAULT_DATA)
    assert len(files) == 111
    assert (data.DEFAULT_DATA / "LICENSE").exists()


def test_tfds_spec_errors(tmp_path):
    with pytest.raises(data.DataError, match="expected tfds:NAME"):
        data.load("tfds:", 32)
    with pytest.raises(data.DataError) as e:  # TFDS's own message lists its whole catalogue, hundreds of lines
        data.load("tfds:no_such_name", 32, tfds_data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and "Dataset no_such_name not found" in str(e.value), str(e.value)[:500]


def test_tfds_source(tmp_path, monkeypatch):
    helpers.prepare_tfds_images(tmp_path, monkeypatch)
    out = data.load("tfds:fastgan_test_images", 16, tfds_data_dir=str(tmp_path))
    assert out.shape == (6, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(np.sort(out[:, 0, 0, 0]), [0, 40, 80, 120, 160, 200])  # TFDS shuffles
    assert data.load("tfds:fastgan_test_images:test", 16, tfds_data_dir=str(tmp_path)).shape == (2, 16, 16, 3)
    with pytest.raises(data.DataError, match="tfds:no_such_set: cannot open the dataset"):
        data.load("tfds:no_such_set", 16, tfds_data_dir=str(tmp_path))


def test_symlinked_folders_and_files_are_followed_once(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    save(root / "a.png", Image.new("RGB", (8, 8)))
    save(elsewhere / "x.png", Image.new("RGB", (8, 8)))
    save(elsewhere / "deep" / "y.png", Image.new("RGB", (8, 8)))
    (root / "more").symlink_to(elsewhere, target_is_directory=True)
    (root / "zz_same").symlink_to(elsewhere, target_is_directory=True)  # reached twice: searched once
    (root / "loop").symlink_to(".", target_is_directory=True)  # a cycle to the root
    (elsewhere / "back").symlink_to(root, target_is_directory=True)  # a cycle through the link
    (root / "one.png").symlink_to(elsewhere / "x.png")
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "notes.txt").symlink_to(tmp_path / "nowhere.txt")  # not an image: ignored silently
    rel = [str(p.relative_to(root)) for p in data.find_images(root)]
    assert rel == ["a.png", "more/deep/y.png", "more/x.png", "one.png"]
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable") as rec:
        assert data.load_folder(root, 8, cache_dir=False).shape == (4, 8, 8, 3)
    assert str(rec[0].message).splitlines()[1] == f"  gone.png: broken symbolic link to {tmp_path / 'nowhere.png'}"


def _one_image(folder):
    save(folder / "a.png", Image.new("RGB", (16, 16), (100, 0, 0)))
    return data.load_folder(folder, 8, cache_dir=False)


def test_cache_write_failures_are_warnings_and_leave_no_temp_file(tmp_path, monkeypatch):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    expected = _one_image(folder)

    def disk_full(f, **arrays):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def cannot_rename(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    failures = [(np, "savez", disk_full, "No space left"), (os, "replace", cannot_rename, "cross")]
    for module, name, fake, reason in failures:
        with monkeypatch.context() as m:
            m.setattr(module, name, fake)
            with pytest.warns(UserWarning, match=f"cannot write the decode cache {cache}.*{reason}.*without it") as rec:
                np.testing.assert_array_equal(data.load_folder(folder, 8, cache_dir=cache), expected)
        assert len(rec) == 1 and "\n" not in str(rec[0].message)
        assert list(cache.iterdir()) == []
    (tmp_path / "file").write_text("")  # a cache folder that cannot be made
    with pytest.warns(UserWarning, match="cannot write the decode cache .*Not a directory"):
        np.testing.assert_array_equal(data.load_folder(folder, 8, cache_dir=tmp_path / "file" / "c"), expected)


def test_damaged_cache_is_named_deleted_and_rebuilt(tmp_path):
    folder, cache = tmp_path / "imgs", tmp_path / "cache"
    expected = _one_image(folder)
    data.load_folder(folder, 8, cache_dir=cache)
    (path,) = cache.iterdir()
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[good.index(bytes([100, 0, 0]) * 4)] ^= 1  # one bit of a pixel
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((2, 8, 8, 3), np.uint8), meta=np.array('{"n": 1, "failed": [], "upscaled": 0}'))
    damages = {"truncated": good[: len(good) // 2], "CRC": bytes(flipped), "shape": buf.getvalue(), "empty": b""}
    for damage in damages.values():
        path.write_bytes(damage)
        with pytest.warns(UserWarning, match=f"decode cache {path} is unreadable .*deleted, decoding again") as rec:
            np.testing.assert_array_equal(data.load_folder(folder, 8, cache_dir=cache), expected)
        assert len(rec) == 1 and "\n" not in str(rec[0].message)
        assert list(cache.iterdir()) == [path]  # rebuilt
        with np.load(path) as z:
            np.testing.assert_array_equal(z["images"], expected)
