"""Image grids, PNG and GIF output (host side, numpy + PIL)."""

import math
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fastgan_jax import images as images_lib


def grid(images, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles images [N, H, W, 3] into one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, 3] image.

    Args:
      images: uint8 data or float images in [-1, 1].
      ncols: images per row (default: a square grid).
      pad: white pixels between and around the tiles.
    """
    x = images_lib.to_uint8(images_lib.check_any(np.asarray(images), "images"))
    n, h, w, c = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = x[i]
    return out


def labelled_row(tiles, labels: list[list[str]], pad: int = 2) -> np.ndarray:
    """Tiles [N, H, W, 3] in one row (as `grid`) with lines of text centred under each, in black on white.

    Args:
      tiles: uint8 data or float images in [-1, 1].
      labels: N lists of lines, one list per tile.

    Returns:
      uint8 [H + 2 * pad + text height, N * (W + pad) + pad, 3].
    """
    row = grid(tiles, ncols=len(labels), pad=pad)
    w = np.asarray(tiles).shape[2]
    font = ImageFont.load_default(size=max(10, w // 12))  # Pillow's own font: no file to find
    line = font.getbbox("Ag")[3] + 2
    strip = Image.new("RGB", (row.shape[1], line * max(len(lines) for lines in labels) + pad), "white")
    draw = ImageDraw.Draw(strip)
    for i, lines in enumerate(labels):
        centre = pad + i * (w + pad) + w / 2
        for k, text in enumerate(lines):
            draw.text((centre, k * line), text, fill="black", font=font, anchor="ma")
    return np.concatenate([row, np.asarray(strip)])


def labelled_rows(images, labels: list[str], pad: int = 2) -> np.ndarray:
    """Tiles [N, H, W, 3] in `len(labels)` rows (as `grid`), each row's label to its left, in black on white.

    Returns:
      uint8 [rows * (H + pad) + pad, label width + cols * (W + pad) + pad, 3].
    """
    x = np.asarray(images)
    rows = grid(x, ncols=len(x) // len(labels), pad=pad)
    h = x.shape[1]
    font = ImageFont.load_default(size=max(10, min(h // 6, 24)))  # Pillow's own font: no file to find
    width = max(int(font.getlength(text)) for text in labels) + 2 * pad
    margin = Image.new("RGB", (width, rows.shape[0]), "white")
    draw = ImageDraw.Draw(margin)
    for r, text in enumerate(labels):
        draw.text((width - pad, pad + r * (h + pad) + h / 2), text, fill="black", font=font, anchor="rm")
    return np.concatenate([np.asarray(margin), rows], axis=1)


def save_png(path, image: np.ndarray) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(path, frames, duration_ms: int = 80) -> pathlib.Path:
    """An animated, looping GIF of uint8 frames [T, H, W, 3], played forth and back."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.fromarray(np.asarray(f)) for f in frames]
    frames = frames + frames[-2:0:-1]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path
