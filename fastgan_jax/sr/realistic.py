"""Real low-resolution inputs: degradation pipelines that the search does not model, on uint8 images.

The search assumes one operator (`degrade.py`, e.g. area downsampling) and
is tested on inputs made by exactly that operator: the "inverse crime" of
the restoration literature. A real thumbnail was made by something else.
These pipelines make such inputs from uint8 [N, H, W, 3] images with PIL and
NumPy, outside the search, as a web page, a camera or an image library
would:

- `pil_bicubic`, `pil_lanczos`: PIL's antialiased bicubic / Lanczos resize
  (`Image.resize`).
- `jpeg75`, `jpeg50`: PIL bicubic, then saved as JPEG at quality 75 / 50
  (a web thumbnail).
- `unknown_blur`: a Gaussian blur of sigma drawn in [0.5, 2] HR pixels
  (PIL), then PIL bicubic.
- `sensor_noise`: PIL bicubic, then Poisson-Gaussian noise on the [0, 1]
  scale (variance gain * x + sigma^2, gain drawn in [1e-3, 5e-3], sigma in
  [0.005, 0.02]), quantised to uint8.
- `second_order`: Real-ESRGAN's second-order degradation: twice blur
  (sigma drawn), resize (bicubic, bilinear or box, drawn), Gaussian noise
  (sigma drawn in [1, 8] of 255 levels), JPEG (quality drawn in [50, 95]);
  the first pass to twice the final size, the second to the final size.

Random draws (blur widths, noise, filters, qualities) come from
`numpy.random.default_rng((seed, index, size, crc32(pipeline name)))` per
image, `index` its position in the whole set: the same image gets the
same input whatever else is made with it, in any process. References:
Wang et al., Real-ESRGAN (ICCVW 2021), section 3; Foi et al., "Practical
Poissonian-Gaussian noise modeling" (IEEE TIP 2008).
"""

import io
import zlib

import numpy as np
from PIL import Image, ImageFilter

_FILTERS = (Image.BICUBIC, Image.BILINEAR, Image.BOX)


def _resize(im: Image.Image, size: int, resample=Image.BICUBIC) -> Image.Image:
    return im.resize((size, size), resample)


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=int(quality))
    return Image.open(buffer).convert("RGB")


def _blur(im: Image.Image, sigma: float) -> Image.Image:
    return im.filter(ImageFilter.GaussianBlur(float(sigma)))  # PIL's radius is the Gaussian's sigma


def _noise(im: Image.Image, rng, *, gain: float = 0.0, sigma: float = 0.0) -> Image.Image:
    """Poisson noise of `gain` (variance gain * x) plus Gaussian noise of `sigma`, on [0, 1], quantised."""
    x = np.asarray(im, np.float64) / 255
    if gain:
        x = rng.poisson(x / gain) * gain
    x = x + rng.normal(0.0, sigma, x.shape)
    return Image.fromarray(np.clip(np.round(x * 255), 0, 255).astype(np.uint8))


def pil_bicubic(im, size, rng):
    return _resize(im, size, Image.BICUBIC)


def pil_lanczos(im, size, rng):
    return _resize(im, size, Image.LANCZOS)


def jpeg75(im, size, rng):
    return _jpeg(_resize(im, size), 75)


def jpeg50(im, size, rng):
    return _jpeg(_resize(im, size), 50)


def unknown_blur(im, size, rng):
    return _resize(_blur(im, rng.uniform(0.5, 2.0)), size)


def sensor_noise(im, size, rng):
    return _noise(_resize(im, size), rng, gain=rng.uniform(1e-3, 5e-3), sigma=rng.uniform(0.005, 0.02))


def second_order(im, size, rng):
    for sigma, to in ((rng.uniform(0.2, 1.5), 2 * size), (rng.uniform(0.2, 0.8), size)):
        im = _resize(_blur(im, sigma), to, _FILTERS[rng.integers(len(_FILTERS))])
        im = _noise(im, rng, sigma=rng.uniform(1, 8) / 255)
        im = _jpeg(im, rng.integers(50, 96))
    return im


PIPELINES = {
    f.__name__: f for f in (pil_bicubic, pil_lanczos, jpeg75, jpeg50, unknown_blur, sensor_noise, second_order)
}


def make(name: str, images, size: int, *, seed: int = 0, offset: int = 0) -> np.ndarray:
    """Low-resolution inputs made from `images` by the pipeline `name` (the table above).

    Args:
      name: a key of `PIPELINES`.
      images: uint8 [N, H, W, 3], square, H >= 2 * size for `second_order`.
      size: the side of the results in pixels.
      seed: draws the pipeline's random choices, with each image's index.
      offset: the index of `images[0]` in the whole set.

    Returns:
      uint8 [N, size, size, 3].

    Raises:
      ValueError: an unknown pipeline, or images that are not uint8 [N, H, W, 3].
    """
    if name not in PIPELINES:
        raise ValueError(f"pipeline must be one of {sorted(PIPELINES)}, got {name!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: uint8 [N, H, W, 3] expected, got {images.dtype} {list(images.shape)}")
    tag = zlib.crc32(name.encode())
    out = []
    for i, image in enumerate(images):
        rng = np.random.default_rng((seed, offset + i, size, tag))
        out.append(np.asarray(PIPELINES[name](Image.fromarray(image), size, rng), np.uint8))
    return np.stack(out)
