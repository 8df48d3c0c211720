"""Image folders -> uint8 arrays [N, H, W, 3] -> batches.

A folder is searched recursively for jpg/jpeg/png/webp/bmp files, decoded
once in parallel threads (EXIF orientation applied; RGBA, LA and palette
transparency composited on a background; grayscale, CMYK and 16-bit converted
to 8-bit RGB), resized with Lanczos (`center_crop` or `stretch`), and cached
on disk under a key made of the files' paths, sizes and modification times
and the preprocessing settings, so a restart does not decode again.
"""

import concurrent.futures
import hashlib
import json
import os
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
ASPECTS = ("center_crop", "stretch")
DEFAULT_DATA = pathlib.Path(__file__).resolve().parent / "assets" / "noto-smileys-512"


class DataError(ValueError):
    """The data source cannot give any training image."""


def default_cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(root) / "fastgan_jax"


def find_images(folder) -> list[pathlib.Path]:
    """Image files under `folder`, recursively, in a stable order."""
    folder = pathlib.Path(folder)
    if not folder.exists():
        raise DataError(f"--data {folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"--data {folder}: not a folder (give a folder of images, or tfds:NAME)")
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file() and ".fastgan" not in p.parts
    )
    if not files:
        raise DataError(f"--data {folder}: no {'/'.join(e[1:] for e in EXTENSIONS)} images in this folder")
    return files


def to_rgb8(img: Image.Image, background) -> Image.Image:
    """Any PIL image as 8-bit RGB, transparency composited on `background`."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, tuple(background) + (255,))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def preprocess(img: Image.Image, im_size: int, aspect: str = "center_crop", background=(255, 255, 255)):
    """One image as uint8 [im_size, im_size, 3]; also whether it was upscaled."""
    img = to_rgb8(ImageOps.exif_transpose(img), background)
    w, h = img.size
    if aspect == "center_crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    elif aspect != "stretch":
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    upscaled = min(img.size) < im_size
    if img.size != (im_size, im_size):
        img = img.resize((im_size, im_size), Image.LANCZOS)
    return np.asarray(img, np.uint8), upscaled


def _decode(path, im_size, aspect, background):
    try:
        with Image.open(path) as img:
            img.load()
            return preprocess(img, im_size, aspect, background)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _cache_key(files, im_size, aspect, background) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([im_size, aspect, list(background), 1]).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_folder(
    folder,
    im_size: int,
    *,
    aspect: str = "center_crop",
    background=(255, 255, 255),
    cache_dir=None,
    num_threads: int | None = None,
) -> np.ndarray:
    """Decodes every image under `folder` into uint8 [N, im_size, im_size, 3].

    Unreadable files are skipped with one warning; smaller images are
    upscaled with one warning. The result is cached in `cache_dir`
    (default: ~/.cache/fastgan_jax; `False` disables the cache).

    Raises:
      DataError: a missing folder, a folder without images, or no readable image.
    """
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    files = find_images(folder)
    background = tuple(int(c) for c in background)
    cache = None
    if cache_dir is not False:
        cache = pathlib.Path(cache_dir or default_cache_dir()) / f"{_cache_key(files, im_size, aspect, background)}.npy"
        if cache.exists():
            return np.load(cache)

    threads = num_threads or min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda f: _decode(f, im_size, aspect, background), files))
    bad = [f for f, r in zip(files, results, strict=True) if r is None]
    good = [r for r in results if r is not None]
    if not good:
        raise DataError(f"--data {folder}: none of the {len(files)} image files could be read")
    if bad:
        names = ", ".join(str(b) for b in bad[:3]) + (", ..." if len(bad) > 3 else "")
        warnings.warn(f"skipped {len(bad)} unreadable image file(s): {names}", stacklevel=2)
    small = sum(up for _, up in good)
    if small:
        warnings.warn(f"{small} image(s) smaller than {im_size}px were upscaled", stacklevel=2)
    images = np.stack([arr for arr, _ in good])
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, images)
        os.replace(tmp, cache)
    return images


def load(source, im_size: int, *, tfds_data_dir=None, **kwargs) -> np.ndarray:
    """Loads `--data`: a folder (see `load_folder`), or `tfds:NAME[:SPLIT]` (see `load_tfds`)."""
    source = str(source)
    if source.startswith("tfds:"):
        kw = {k: v for k, v in kwargs.items() if k in ("aspect", "background")}
        return load_tfds(source, im_size, data_dir=tfds_data_dir, **kw)
    return load_folder(source, im_size, **kwargs)


def load_tfds(spec: str, im_size: int, *, aspect="center_crop", background=(255, 255, 255), data_dir=None):
    """Reads the `image` feature of a TFDS dataset through `tfds.data_source`.

    `spec` is `tfds:NAME[:SPLIT]` (split defaults to `train`); the dataset
    must be prepared already in `data_dir` (default: TFDS's own,
    ~/tensorflow_datasets) as array_record files; reading needs no
    TensorFlow. Images get the same preprocessing as a folder's.
    """
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise DataError(f"--data {spec}: expected tfds:NAME or tfds:NAME:SPLIT")
    name, split = parts[1], parts[2] if len(parts) == 3 else "train"
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            f"--data {spec}: tensorflow-datasets is not installed (pip install tensorflow-datasets)"
        ) from None
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises many kinds for a missing or unprepared dataset
        raise DataError(f"--data {spec}: cannot open the dataset ({type(e).__name__}: {e})") from None
    out = []
    for i in range(len(source)):
        example = source[i]
        if "image" not in example:
            raise DataError(f"--data {spec}: the dataset has no 'image' feature")
        arr = np.asarray(example["image"])
        img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
        out.append(preprocess(img, im_size, aspect, background)[0])
    if not out:
        raise DataError(f"--data {spec}: the split is empty")
    return np.stack(out)
