"""Samples and latent interpolations from a trained run's EMA generator.

python -m fastgan_jax.sample --workdir RUN -n 64 --out grid.png
python -m fastgan_jax.sample --workdir RUN --interpolate 8 --out lerp.png --gif lerp.gif
"""

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fastgan_jax import images, models, training, visual
from fastgan_jax.models import noise_shapes


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


def generate(G, variables, z, key, *, batch=32, shared_noise=False):
    """Images in [-1, 1] for latents z [N, nz], in batches, eval mode, as float32 numpy.

    With `shared_noise` every image gets the same noise maps, so that images
    differ only through their latents (for interpolations).
    """
    maps = None
    if shared_noise:
        maps = [jax.random.normal(jax.random.fold_in(key, i), s) for i, s in enumerate(noise_shapes(G.im_size, 1))]
    out = [
        np.asarray(models.generate(G, variables, z[i : i + batch], jax.random.fold_in(key, i), maps), np.float32)
        for i in range(0, len(z), batch)
    ]
    return np.concatenate(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="run folder written by train.py")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    p.add_argument("-n", type=int, default=64, help="number of samples in the grid")
    p.add_argument("--out", default="samples.png", help="output PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--interpolate",
        type=int,
        default=0,
        metavar="ROWS",
        help="instead of a grid, ROWS slerp strips between random latents",
    )
    p.add_argument("--frames", type=int, default=10, help="frames per interpolation strip")
    p.add_argument("--gif", default=None, help="also write the interpolation as an animated GIF")
    args = p.parse_args(argv)
    try:
        G, variables = training.load_generator(args.workdir, args.step)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    key = jax.random.key(args.seed)
    k_z, k_noise = jax.random.split(key)
    if args.interpolate:
        ends = jax.random.normal(k_z, (2, args.interpolate, G.nz))
        z = slerp(ends[0], ends[1], jnp.linspace(0, 1, args.frames))  # [T, R, nz]
        z = jnp.swapaxes(z, 0, 1).reshape(-1, G.nz)  # row-major strips
        imgs = generate(G, variables, z, k_noise, shared_noise=True)  # only the latent moves
        path = visual.save_png(args.out, visual.grid(imgs, ncols=args.frames))
        if args.gif:
            frames = images.to_uint8(imgs).reshape(args.interpolate, args.frames, *imgs.shape[1:])
            strips = [visual.grid(frames[:, t], ncols=args.interpolate) for t in range(args.frames)]
            print(f"wrote {visual.save_gif(args.gif, strips)}")
    else:
        z = jax.random.normal(k_z, (args.n, G.nz))
        path = visual.save_png(args.out, visual.grid(generate(G, variables, z, k_noise)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
