"""Files in, files out for `upscale.py`: LR images, fitting, figures, reports.

LR images are loaded as uint8 data [s, s, 3] (what `pulse.upscale` accepts
besides [-1, 1] floats); search results come back as [-1, 1] floats and are
written as 8-bit PNGs.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil

import numpy as np
from PIL import Image

from fastgan_jax import data, visual
from fastgan_jax import images as images_lib
from fastgan_jax.data import EXTENSIONS

FITS = ("none", "resize", "crop", "pad")


class InputError(ValueError):
    """An LR image that cannot be searched as it is."""


class UnreadableImage(InputError):
    """A file that is not a readable image (skipped in a folder of inputs)."""


NAME_MAX = 255  # bytes in a file name: ext4, XFS, btrfs, APFS, NTFS (in UTF-16 units)
OUTPUT_SUFFIXES = ("_sr.png", "_compare.png", "_candidates", ".json")  # what `write_outputs` adds to NAME
RESULT = re.compile(r"(.*)(_sr\.png|_compare\.png)$")


def find_inputs(path, out=None) -> list[pathlib.Path]:
    """The input file, or the image files of a folder (sorted by name). With `out`, the results folder, the
    results of earlier runs that lie in the input folder (NAME_sr.png, NAME_compare.png beside NAME.json) are
    not inputs.

    Raises:
      InputError: no such path, or a folder without image files.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"--input {path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file())
    if out is not None and pathlib.Path(out).is_dir() and path.resolve() == pathlib.Path(out).resolve():
        files = [p for p in files if not _is_result(p)]
    if not files:
        raise InputError(f"--input {path}: no {'/'.join(e[1:] for e in EXTENSIONS)} images in this folder")
    return files


def _is_result(path: pathlib.Path) -> bool:
    """Whether `path` is a result this command wrote (its report NAME.json lies beside it)."""
    match = RESULT.fullmatch(path.name)
    return bool(match) and (path.parent / f"{match.group(1)}.json").is_file()


def _sizes_dividing(im_size):
    return [s for s in range(1, im_size + 1) if im_size % s == 0]


def output_name(path) -> str:
    """The stem of an input's outputs: its file name with the dot replaced, `face.png` -> `face_png`.

    Keeping the extension means `face.png` and `face.jpg` in one folder never
    overwrite each other's results (extensions have no underscore, so two
    different file names never give the same stem).

    A name so long that NAME plus its longest suffix would pass the file
    system's limit (255 bytes) is cut and ends in 8 hex digits of a hash of
    the whole name, so that two long names stay apart.
    """
    path = pathlib.Path(path)
    name = f"{path.stem}_{path.suffix[1:]}" if path.suffix else path.name
    room = NAME_MAX - max(len(s) for s in OUTPUT_SUFFIXES)
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:8]
    cut = raw[: room - len(digest) - 1]
    stem = cut.decode("utf-8", "ignore") if _utf8(raw) else os.fsdecode(cut)  # no half a UTF-8 character
    return f"{stem}-{digest}"


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def read_lr(path, background=(255, 255, 255)) -> np.ndarray:
    """An input image as uint8 data [h, w, 3], read as training reads images (`data.read_image`): RGB, with
    every form of transparency composited over `background`.

    Raises:
      UnreadableImage: not an image file PIL can read, or too large to decode (a decompression bomb).
    """
    try:
        img = data.read_image(path, background)  # the one reader: training skips the same files for the same reasons
    except data.UnreadableImageError as e:
        raise UnreadableImage(f"--input {path}: not a readable image ({e.reason})") from None
    return np.asarray(img, np.uint8)


def fit_lr(arr: np.ndarray, im_size: int, fit: str = "none", path="image") -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [s, s, 3] with s dividing `im_size`, as `fit` says.

    'none' takes a square image whose size divides the generator's as it is
    and refuses any other; 'resize' area-downscales (PIL BOX, as
    `area_downsample`) a square image to the largest size that divides the
    generator's and is not larger than it (a 128 px LR for a 64 px generator
    becomes 64 px: GAN inversion; a 12 px one 8 px); 'crop' takes the centre
    square of the largest such size; 'pad' pads with edge pixels to the
    smallest such size.

    Raises:
      InputError: the wrong size or shape for `fit`, naming `path` and the fits that would take it.
    """
    h, w = arr.shape[:2]
    if h == w and im_size % h == 0:
        return arr
    below = max(s for s in _sizes_dividing(im_size) if s <= min(h, w))
    above = [s for s in _sizes_dividing(im_size) if s >= max(h, w)]
    if fit == "none":
        if h != w:
            raise InputError(f"--input {path} is {w}x{h}, not square; pass --fit crop (its centre) or --fit pad")
        pad = f", --fit pad pads it to {above[0]}px" if above else f" (larger than the generator's {im_size}px)"
        raise InputError(
            f"--input {path} is {h}px, which does not divide the generator's {im_size}px: --fit resize "
            f"area-downscales it to {below}px, --fit crop takes its centre{pad}"
        )
    if fit == "resize":
        if h != w:
            raise InputError(f"--input {path} is {w}x{h}, not square: --fit resize keeps the shape; crop or pad it")
        return np.asarray(Image.fromarray(arr).resize((below, below), Image.BOX))
    if fit == "crop":
        top, left = (h - below) // 2, (w - below) // 2
        return arr[top : top + below, left : left + below]
    if fit == "pad":
        if not above:
            raise InputError(f"--input {path} is {w}x{h}, larger than the generator's {im_size}px; use --fit resize")
        side = above[0]
        top, left = (side - h) // 2, (side - w) // 2
        return np.pad(arr, ((top, side - h - top), (left, side - w - left), (0, 0)), mode="edge")
    raise ValueError(f"fit must be one of {FITS}, got {fit!r}")


def load_lr(path, im_size: int, fit: str = "none", background=(255, 255, 255)) -> np.ndarray:
    """An LR image as uint8 data [s, s, 3], s dividing `im_size`: `read_lr`, then `fit_lr`.

    Raises:
      UnreadableImage: not an image file PIL can read, or too large to decode (a decompression bomb).
      InputError: the wrong size or shape for `fit`.
    """
    return fit_lr(read_lr(path, background), im_size, fit, path)


def enlarge(lr, size, method) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [size, size, 3] with a PIL resampling `method`."""
    return np.asarray(Image.fromarray(images_lib.check_uint8(lr, "lr", ndim=3)).resize((size, size), method))


def task(factor: int, *, blurred: bool = False, gray: bool = False, masked: bool = False, noisy: bool = False) -> str:
    """What a restoration undid, from what was observed: `x4`, `x4, gray`, `gray, masked, noisy`; `inversion`
    for an input at the generator's size with no degradation (GAN inversion)."""
    words = [f"x{factor}"] * (factor > 1)
    words += [w for w, on in (("blurred", blurred), ("gray", gray), ("masked", masked), ("noisy", noisy)) if on]
    return ", ".join(words) or "inversion"


def comparison(
    lr, candidates, best_down, lr_mse, success, what: str | None = None, best: int | None = None
) -> np.ndarray:
    """One labelled row: the input (nearest), its bicubic enlargement, every candidate with its LR MSE against
    eps, and the best one degraded again (nearest), which is what was compared with the input. `what` (`task`)
    labels the input; by default the factor says it.

    Args:
      lr: uint8 [h, w, 3].
      candidates: [R, H, W, 3] float in [-1, 1].
      best_down: [h, w, 3] float in [-1, 1].
      lr_mse: [R] each candidate's LR MSE ([0, 1] scale).
      success: [R] whether it is within eps (the search's own verdict).
      best: the answer's candidate (None: the lowest LR MSE).
    """
    size, best = candidates.shape[1], int(np.argmin(lr_mse)) if best is None else best
    tiles = [enlarge(lr, size, Image.NEAREST), enlarge(lr, size, Image.BICUBIC)]
    tiles += list(images_lib.to_uint8(candidates))
    tiles += [enlarge(images_lib.to_uint8(best_down), size, Image.NEAREST)]
    factor = size // lr.shape[0]
    what = what or task(factor)
    if factor > 1:
        labels = [[f"LR {lr.shape[0]}px", *([what] if what != f"x{factor}" else []), "nearest"]]
        labels.append(["bicubic", f"x{factor}"])
    else:  # nothing to enlarge: the input twice, the second time as the task
        labels = [[f"input {lr.shape[0]}px", what], ["input", "as given"]]
    for r, (m, ok) in enumerate(zip(lr_mse, success, strict=True)):
        mse = f"{m:.1e}".replace("e-0", "e-")
        labels.append([f"r{r} (best)" if r == best else f"r{r}", f"mse {mse}", "within eps" if ok else "above eps"])
    labels.append([f"r{best}", "downscaled" if what == f"x{factor}" else "degraded"])
    return visual.labelled_row(np.stack(tiles), labels)


def write_outputs(
    out_dir,
    path,
    *,
    lr,
    images,
    best,
    best_down,
    lr_mse,
    success,
    seconds,
    settings,
    stage=None,
    best_restart=None,
    what=None,
) -> dict:
    """Writes NAME_sr.png, NAME_candidates/rK.png, NAME_compare.png and NAME.json, NAME = `output_name(path)`.

    NAME_candidates/ is replaced as a whole, so a rerun with fewer restarts
    leaves no stale candidates.

    Args:
      out_dir: the output folder.
      path: the input file.
      lr: uint8 [h, w, 3] the LR image.
      images: [R, H, W, 3] float in [-1, 1], the candidates.
      best: [H, W, 3] float in [-1, 1], the answer (the best candidate, or its blend with the mean of
        several at a fidelity knob).
      best_down: [h, w, 3] float in [-1, 1], the answer degraded again.
      lr_mse, success: [R] per candidate (LR MSE on the [0, 1] scale).
      seconds: the search time.
      settings: recorded in the report.
      stage: [R] where each candidate comes from (0: the latent search, k: the
        k-th intermediate-layer stage); None: all 0.
      best_restart: the best candidate's index (None: the lowest lr_mse).
      what: the restoration, as `task` says (default: the factor alone).

    Returns:
      The report written to NAME.json.
    """
    out_dir, name = pathlib.Path(out_dir), output_name(path)
    visual.save_png(out_dir / f"{name}_sr.png", images_lib.to_uint8(best))
    shutil.rmtree(out_dir / f"{name}_candidates", ignore_errors=True)
    for r, img in enumerate(images):
        visual.save_png(out_dir / f"{name}_candidates" / f"r{r}.png", images_lib.to_uint8(img))
    visual.save_png(
        out_dir / f"{name}_compare.png", comparison(lr, images, best_down, lr_mse, success, what, best_restart)
    )
    factor = int(best.shape[0]) // int(lr.shape[0])
    report = {
        "input": str(path),
        "task": what or task(factor),
        "lr_size": int(lr.shape[0]),
        "sr_size": int(best.shape[0]),
        "factor": factor,
        "candidates": [
            {"restart": r, "lr_mse": float(m), "success": bool(s), "stage": int(k)}
            for r, (m, s, k) in enumerate(
                zip(lr_mse, success, np.zeros(len(lr_mse)) if stage is None else stage, strict=True)
            )
        ],
        "best_restart": int(np.argmin(lr_mse) if best_restart is None else best_restart),
        "seconds": round(float(seconds), 3),
        **settings,
    }
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    return report
