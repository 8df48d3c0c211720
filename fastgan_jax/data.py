"""Image folders -> uint8 arrays [N, H, W, 3] -> batches.

A folder is searched recursively for jpg/jpeg/png/webp/bmp files, following
symbolic links to folders and files (each real folder is searched once, so a
link cycle ends), decoded once in parallel threads (EXIF orientation applied;
RGBA, LA and palette transparency composited on a background; grayscale, CMYK
and 16-bit converted to 8-bit RGB), resized with Lanczos (`center_crop` or
`stretch`), and cached on disk under a key made of the files' paths, sizes and
modification times and the preprocessing settings, so a restart does not
decode again. Files that cannot be read are skipped with one warning that
says why, on every run, cached or not.

The cache is best effort (`decode_cache`): one `.npz` per key, the images
and the skipped files with their reasons.
"""

import concurrent.futures
import contextlib
import hashlib
import os
import pathlib
import warnings

import numpy as np
from PIL import Image, ImageOps

from fastgan_jax import decode_cache
from fastgan_jax.decode_cache import reason as _reason

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
ASPECTS = ("center_crop", "stretch")
DEFAULT_DATA = pathlib.Path(__file__).resolve().parent / "assets" / "noto-smileys-512"


class DataError(ValueError):
    """The data source cannot give any training image."""


def default_cache_dir() -> pathlib.Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(root) / "fastgan_jax"


def find_images(folder) -> list[pathlib.Path]:
    """Image files under `folder`, recursively, in a stable order.

    Symbolic links to folders and files are followed; a real folder reached
    twice (a link cycle, or two links to one folder) is searched once, at the
    first path in sorted depth-first order.

    Raises:
      DataError: `folder` is missing, not a folder, unlistable, or holds no image file.
    """
    return _walk(folder)[0]


def fingerprint(folder, *, contents: bool = True) -> str:
    """SHA-256 of the image files under `folder` (as `find_images` finds them): each one's path relative to
    `folder` and its bytes, or with `contents=False` its size only (for sets too large to read at a start).
    The same images in another folder give the same fingerprint.

    Raises:
      DataError: as `find_images`.
    """
    folder = pathlib.Path(folder)
    h = hashlib.sha256(b"contents" if contents else b"sizes")
    for path in find_images(folder):
        h.update(os.fsencode(path.relative_to(folder).as_posix()) + b"\0")  # a name need not be UTF-8
        if contents:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        h.update(f"\0{os.path.getsize(path)}\n".encode())
    return h.hexdigest()


def _may_be_images(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in EXTENSIONS or not suffix  # no suffix: a link to a folder, most likely


def _walk(folder):
    """`find_images`, plus (path, why) for each broken link or unlistable folder that may have held images."""
    folder = pathlib.Path(folder)
    if not folder.exists():
        raise DataError(f"--data {folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"--data {folder}: not a folder (give a folder of images, or tfds:NAME)")
    files, skipped, seen = [], [], set()
    stack = [folder]
    while stack:
        d = stack.pop()
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if d == folder:
                raise DataError(f"--data {folder}: cannot list the folder ({_reason(e, d)})") from None
            skipped.append((d, f"cannot list the folder ({_reason(e, d)})"))
            continue
        subdirs = []
        for e in entries:
            p = d / e.name
            try:
                if e.is_dir():  # follows links
                    if e.name != ".fastgan":
                        subdirs.append(p)
                elif e.is_file():
                    if p.suffix.lower() in EXTENSIONS:
                        files.append(p)
                elif e.is_symlink() and _may_be_images(e.name):
                    skipped.append((p, f"broken symbolic link to {os.readlink(p)}"))
            except OSError as err:  # e.g. a link to itself: too many levels of symbolic links
                if _may_be_images(e.name):
                    skipped.append((p, _reason(err, p)))
        stack.extend(reversed(subdirs))  # depth first, in name order
    if not files:
        raise DataError(f"--data {folder}: no {'/'.join(e[1:] for e in EXTENSIONS)} images in this folder")
    return sorted(files), skipped


class UnreadableImageError(DataError):
    """An image file that cannot be read; `reason` says why in a few words, without the path."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = pathlib.Path(path), reason


# What PIL raises for files it cannot decode: not an image, truncated, corrupt (too many pixels: see _reading).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


def read_image(path, background=(255, 255, 255)) -> Image.Image:
    """The image reader of every command (training, streaming, evaluation, upscaling): one file as 8-bit RGB.

    EXIF orientation is applied; every form of transparency (an alpha
    channel in RGBA/LA/PA, a palette's transparent entries, a transparent
    colour key of an RGB, L or 16-bit image) is composited on `background`
    (RGB, 0-255); grayscale, palette, CMYK and 16-bit images become 8-bit RGB.

    Raises:
      UnreadableImageError: an empty, missing, truncated or otherwise
        undecodable file, or one with more pixels than PIL's
        decompression-bomb limit (2 * `PIL.Image.MAX_IMAGE_PIXELS`).
    """
    with _reading(path), _open(path) as img:
        img.load()
        return to_rgb8(ImageOps.exif_transpose(img), background)


def _open(path) -> Image.Image:
    if os.path.getsize(path) == 0:
        raise UnreadableImageError(path, "empty file (0 bytes)")
    return Image.open(path)


@contextlib.contextmanager
def _reading(path):
    """PIL's and the file system's errors while reading `path` as UnreadableImageError, one short reason."""
    try:
        yield
    except UnreadableImageError:
        raise
    except Image.DecompressionBombError:
        limit = 2 * Image.MAX_IMAGE_PIXELS
        reason = f"more than {limit:,} pixels (PIL's decompression-bomb limit); downscale it first"
        raise UnreadableImageError(path, reason) from None
    except _READ_ERRORS as e:
        raise UnreadableImageError(path, _reason(e, path)) from None


def _colour_key_alpha(img: Image.Image) -> Image.Image | None:
    """The alpha mask [H, W] of an RGB, L or I;16 image with a transparent colour (PNG tRNS), else None."""
    key = img.info.get("transparency")
    if key is None or img.mode not in ("RGB", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"):
        return None
    arr = np.asarray(img)
    if arr.ndim == 3:  # RGB: the key is an (r, g, b) tuple
        transparent = np.all(arr == np.asarray(key, arr.dtype)[:3], axis=-1)
    else:
        transparent = arr == key
    return Image.fromarray(np.where(transparent, 0, 255).astype(np.uint8), "L")


def to_rgb8(img: Image.Image, background) -> Image.Image:
    """Any PIL image as 8-bit RGB, transparency (alpha, palette or colour key) composited on `background`."""
    key_alpha = _colour_key_alpha(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if key_alpha is not None:
        img = img.convert("RGB")
        img.putalpha(key_alpha)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, tuple(background) + (255,))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def preprocess(img: Image.Image, im_size: int, aspect: str = "center_crop", background=(255, 255, 255)):
    """One image as uint8 [im_size, im_size, 3]; also whether it was upscaled."""
    return _fit_square(to_rgb8(ImageOps.exif_transpose(img), background), im_size, aspect)


def _fit_square(img: Image.Image, im_size: int, aspect: str):
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
    """((uint8 image, upscaled), None), or (None, why the file cannot be read)."""
    try:
        return _fit_square(read_image(path, background), im_size, aspect), None
    except UnreadableImageError as e:
        return None, e.reason


def _decode_all(folder, files, im_size, aspect, background, num_threads):
    threads = num_threads or min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda f: _decode(f, im_size, aspect, background), files))
    good = [r for r, _ in results if r is not None]
    failed = [(f.relative_to(folder), why) for f, (r, why) in zip(files, results, strict=True) if r is None]
    if not good:
        name, why = failed[0]
        raise DataError(f"--data {folder}: none of the {len(files)} image files could be read (e.g. {name}: {why})")
    return np.stack([arr for arr, _ in good]), failed, sum(up for _, up in good)


def _skipped_message(folder, skipped, show: int = 10) -> str:
    n_dirs = sum(why.startswith("cannot list the folder") for _, why in skipped)
    head = f"skipped {len(skipped) - n_dirs} unreadable image file(s)"
    if n_dirs:
        head += f" and {n_dirs} unreadable folder(s)"
    lines = [f"{head} in {folder}:"] + [f"  {p}: {why}" for p, why in skipped[:show]]
    if len(skipped) > show:
        lines.append(f"  and {len(skipped) - show} more")
    return "\n".join(lines)


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

    Unreadable files (and broken links, unlistable subfolders) are skipped
    with one warning that names each with the reason, up to ten; smaller
    images are upscaled with one warning. Both warnings repeat when the
    images come from the cache. The result is cached in `cache_dir`
    (default: ~/.cache/fastgan_jax; `False` disables the cache).

    Raises:
      DataError: a missing folder, a folder without images, or no readable image.
    """
    if aspect not in ASPECTS:
        raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
    folder = pathlib.Path(folder)
    files, unreachable = _walk(folder)
    background = tuple(int(c) for c in background)
    cache = cached = None
    if cache_dir is not False:
        name = f"{decode_cache.key(files, im_size, aspect, background)}.npz"
        cache = pathlib.Path(cache_dir or default_cache_dir()) / name
        cached = decode_cache.read(cache, im_size)
    if cached is not None:
        images, failed, upscaled = cached
    else:
        images, failed, upscaled = _decode_all(folder, files, im_size, aspect, background, num_threads)
        if cache is not None:
            decode_cache.write(cache, images, failed, upscaled)
    # Broken links and unlistable folders are not in the cache key, so they come from this run's search.
    skipped = sorted([(p.relative_to(folder), why) for p, why in unreachable] + failed)
    if skipped:
        warnings.warn(_skipped_message(folder, skipped), stacklevel=2)
    if upscaled:
        warnings.warn(f"{upscaled} image(s) smaller than {im_size}px were upscaled", stacklevel=2)
    return images


class FileSource:
    """Random access to image files, decoded and preprocessed on each read as `data.load` does."""

    def __init__(self, files, im_size: int, *, aspect="center_crop", background=(255, 255, 255)):
        self.files = [pathlib.Path(f) for f in files]
        self.im_size, self.aspect, self.background = im_size, aspect, tuple(int(c) for c in background)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        path = self.files[i]
        decoded, why = _decode(path, self.im_size, self.aspect, self.background)
        if decoded is None:  # it was readable when the run started (see `file_source`)
            raise DataError(f"{path}: {why}; remove or replace the file and run the same command")
        return decoded[0]


def file_source(folder, im_size: int, *, aspect="center_crop", background=(255, 255, 255), tfds_data_dir=None):
    """The image files under `folder` whose headers open, with one warning naming the others; for a
    `tfds:NAME[:SPLIT]` spec, the split's array_record files (`tfds_source`). Images decode on each read.

    Raises:
      DataError: a missing folder, or no readable image (see `tfds_source` for TFDS).
    """
    if str(folder).startswith("tfds:"):
        return tfds_source(str(folder), im_size, aspect=aspect, background=background, data_dir=tfds_data_dir)
    folder = pathlib.Path(folder)
    files, unreachable = _walk(folder)
    readable, failed = [], []
    for f in files:  # headers only: a fraction of a millisecond per file, not a decode
        try:
            with _reading(f), _open(f):
                readable.append(f)
        except UnreadableImageError as e:
            failed.append((f.relative_to(folder), e.reason))
    if not readable:
        raise DataError(f"--data {folder}: no readable image file among {len(files)}")
    skipped = sorted([(p.relative_to(folder), why) for p, why in unreachable] + failed)
    if skipped:
        warnings.warn(_skipped_message(folder, skipped), stacklevel=2)
    return FileSource(readable, im_size, aspect=aspect, background=background)


def load(source, im_size: int, *, tfds_data_dir=None, **kwargs) -> np.ndarray:
    """Loads `--data`: a folder (see `load_folder`), or `tfds:NAME[:SPLIT]` (see `load_tfds`)."""
    source = str(source)
    if source.startswith("tfds:"):
        kw = {k: v for k, v in kwargs.items() if k in ("aspect", "background")}
        return load_tfds(source, im_size, data_dir=tfds_data_dir, **kw)
    return load_folder(source, im_size, **kwargs)


def load_tfds(spec: str, im_size: int, *, aspect="center_crop", background=(255, 255, 255), data_dir=None):
    """Reads the `image` feature of a TFDS dataset, decoded and preprocessed as a folder's images.

    `spec` is `tfds:NAME[:SPLIT]` (split defaults to `train`); the dataset
    must be prepared already in `data_dir` (default: TFDS's own,
    ~/tensorflow_datasets) as array_record files; reading needs no
    TensorFlow (see `tfds_source`).
    """
    source = tfds_source(spec, im_size, aspect=aspect, background=background, data_dir=data_dir)
    return np.stack([source[i] for i in range(len(source))])


def _open_tfds(spec: str, data_dir):
    """`tfds.data_source` of `spec`'s split: random access to its examples (array_record files)."""
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
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises many kinds for a missing or unprepared dataset
        first = (str(e).strip().splitlines() or [""])[0]  # a missing dataset's message lists the whole catalogue
        raise DataError(f"--data {spec}: cannot open the dataset ({type(e).__name__}: {first[:200]})") from None


class TfdsSource:
    """Random access to a prepared TFDS split's images, decoded and preprocessed on each read.

    Picklable for Grain's worker processes: each process opens the split's
    array_record files itself on its first read.
    """

    def __init__(self, spec: str, im_size: int, *, aspect="center_crop", background=(255, 255, 255), data_dir=None):
        self.spec, self.im_size, self.data_dir = spec, im_size, data_dir
        self.aspect, self.background = aspect, tuple(int(c) for c in background)
        self._examples = _open_tfds(spec, data_dir)
        self._len = len(self._examples)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_examples"}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> np.ndarray:
        if getattr(self, "_examples", None) is None:
            self._examples = _open_tfds(self.spec, self.data_dir)
        example = self._examples[i]
        if "image" not in example:
            raise DataError(f"--data {self.spec}: the dataset has no 'image' feature")
        arr = np.asarray(example["image"])
        img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr)
        return preprocess(img, self.im_size, self.aspect, self.background)[0]


def tfds_source(spec: str, im_size: int, *, aspect="center_crop", background=(255, 255, 255), data_dir=None):
    """A `TfdsSource` over `spec` (`tfds:NAME[:SPLIT]`), checked: the split opens, is not empty, has images.

    Raises:
      DataError: a malformed spec, tensorflow-datasets missing, an unprepared dataset, an empty split or no
        `image` feature.
    """
    source = TfdsSource(spec, im_size, aspect=aspect, background=background, data_dir=data_dir)
    if not len(source):
        raise DataError(f"--data {spec}: the split is empty")
    source[0]  # the first example has an image: one decode, before anything slow starts
    return source
