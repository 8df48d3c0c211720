"""Samples and latent interpolations from a trained run (the EMA generator unless --raw).

    fastgan-sample --workdir RUN -n 64 --out grid.png
    fastgan-sample --workdir RUN -n 16 --individual samples/      # samples/000000.png, 000001.png, ...
    fastgan-sample --workdir RUN --latents z.npy --out mine.png   # your latents, float [N, nz]
    fastgan-sample --workdir RUN --interpolate 8 --out lerp.png --gif lerp.gif

`python -m fastgan_jax.commands.sample` is the same command. Images depend only on
their latent, the noise (from --seed) and the checkpoint, never on the rest
of the batch.
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from PIL import Image

from fastgan_jax import images, visual
from fastgan_jax.commands import launch
from fastgan_jax.nn.models import generate_batches
from fastgan_jax.train import runs


def slerp(z0, z1, t):
    """Spherical interpolation between latents [..., nz] at fractions t [T] -> [T, ..., nz]."""
    t = jnp.asarray(t)[(...,) + (None,) * z0.ndim]
    n0, n1 = jnp.linalg.norm(z0, axis=-1, keepdims=True), jnp.linalg.norm(z1, axis=-1, keepdims=True)
    cos = jnp.clip(jnp.sum(z0 * z1, -1, keepdims=True) / (n0 * n1), -1.0, 1.0)
    omega = jnp.arccos(cos)
    so = jnp.sin(omega)
    safe = so > 1e-6
    w0 = jnp.where(safe, jnp.sin((1 - t) * omega) / jnp.where(safe, so, 1.0), 1 - t)
    w1 = jnp.where(safe, jnp.sin(t * omega) / jnp.where(safe, so, 1.0), t)
    return w0 * z0 + w1 * z1


def load_latents(path, nz: int) -> np.ndarray:
    """The latents of a .npy file as float32 [N, nz].

    Raises:
      ValueError: a missing or unreadable file, or an array that is not finite floats of shape [N, nz].
    """
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"--latents {path}: cannot read a .npy array ({e})") from None
    if not np.issubdtype(z.dtype, np.floating):
        raise ValueError(f"--latents {path}: dtype {z.dtype}, expected floats")
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] != nz:
        raise ValueError(f"--latents {path}: shape {list(z.shape)}, expected [N, {nz}] (N >= 1) for this run")
    if not np.isfinite(z).all():
        raise ValueError(f"--latents {path}: holds NaN or infinite values")
    return z.astype(np.float32)


def interpolation_latents(key, rows: int, frames: int, nz: int) -> jax.Array:
    """`rows` slerp strips of `frames` latents between random ends, row-major: [rows * frames, nz]."""
    ends = jax.random.normal(key, (2, rows, nz))
    z = slerp(ends[0], ends[1], jnp.linspace(0, 1, frames))  # [T, R, nz]
    return jnp.swapaxes(z, 0, 1).reshape(-1, nz)


def _writable(path: str) -> bool:
    """Whether PIL can write an image named `path` (its suffix names a format PIL saves)."""
    return Image.registered_extensions().get(pathlib.Path(path).suffix.lower()) in Image.SAVE


class _Parser(argparse.ArgumentParser):
    """Bad input exits with one line, `error: ...`, as the other commands do."""

    def error(self, message):
        launch.fail(message)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line of `fastgan-sample`; bad input exits with a one-line error."""
    p = _Parser(prog="fastgan-sample", description=__doc__, formatter_class=launch.HelpFormatter)
    p.add_argument("--workdir", required=True, help="run folder written by fastgan-train / train.py")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (None: the latest)")
    p.add_argument("-n", type=int, default=64, help="number of samples")
    p.add_argument("--out", default=None, help="grid (or strip) PNG (None: samples.png unless --individual)")
    p.add_argument("--individual", default=None, metavar="DIR", help="also write every image as DIR/000000.png, ...")
    p.add_argument("--raw", action="store_true", help="the raw generator instead of its EMA")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents and the noise maps")
    p.add_argument("--latents", default=None, metavar="FILE", help="a .npy of float latents [N, nz] instead of -n")
    p.add_argument("--interpolate", type=int, default=0, metavar="ROWS", help="ROWS slerp strips instead of samples")
    p.add_argument("--frames", type=int, default=10, help="frames per interpolation strip")
    p.add_argument("--gif", default=None, help="also write the interpolation as an animated GIF")
    args = p.parse_args(argv)
    problems = [
        (args.n < 1, f"-n {args.n}: give at least 1"),
        (args.interpolate < 0, f"--interpolate {args.interpolate}: give a number of rows >= 1"),
        (args.frames < 2, f"--frames {args.frames}: give at least 2"),
        (args.gif and not args.interpolate, "--gif needs --interpolate ROWS"),
        (args.latents and args.interpolate, "--latents cannot be combined with --interpolate (random ends)"),
        (args.out and not _writable(args.out), f"--out {args.out}: not an image file name (.png, .jpg, ...)"),
    ]
    for bad, message in problems:
        if bad:
            p.error(message)
    if args.out is None and args.individual is None:
        args.out = "samples.png"
    return args


def _write(imgs: np.ndarray, args: argparse.Namespace, ncols: int | None) -> None:
    if args.out:
        print(f"wrote {visual.save_png(args.out, visual.grid(imgs, ncols=ncols))}")
    if args.individual:
        folder = pathlib.Path(args.individual)
        for i, image in enumerate(images.to_uint8(imgs)):
            visual.save_png(folder / f"{i:06d}.png", image)
        print(f"wrote {len(imgs)} images to {folder}")
    if args.gif:
        frames = images.to_uint8(imgs).reshape(args.interpolate, args.frames, *imgs.shape[1:])
        strips = [visual.grid(frames[:, t], ncols=args.interpolate) for t in range(args.frames)]
        print(f"wrote {visual.save_gif(args.gif, strips)}")


def _latents(args: argparse.Namespace, nz: int, key) -> jax.Array | np.ndarray:
    if args.interpolate:
        return interpolation_latents(key, args.interpolate, args.frames, nz)
    if args.latents:
        return load_latents(args.latents, nz)
    return jax.random.normal(key, (args.n, nz))


def main(argv=None) -> None:
    """The `fastgan-sample` command."""
    args = parse_args(argv)
    k_z, k_noise = jax.random.split(jax.random.key(args.seed))
    try:
        run = runs.load_run(args.workdir, args.step, ema=not args.raw)
        z = _latents(args, run.generator.nz, k_z)
    except (runs.RunNotFoundError, ValueError) as e:
        launch.fail(str(e))
    # Interpolation strips share their noise maps, so that only the latent moves.
    with tqdm.tqdm(total=len(z), desc="sampling", unit="img") as bar:
        imgs = generate_batches(
            run.generator, run.g_variables, z, k_noise, shared_noise=bool(args.interpolate), progress=bar.update
        )
    try:
        _write(imgs, args, ncols=args.frames if args.interpolate else None)
    except OSError as e:
        launch.fail(f"cannot write the output: {e}")


if __name__ == "__main__":
    main()
