"""Restoration through a trained generator, measured on images it never saw: PULSE, ILO and a classical baseline.

    pip install scikit-image   # the inpainting baseline (biharmonic)
    python benchmarks/restore_heldout.py --data ../shared/data/pokemon-256 --workdir runs/heldout \\
        --json benchmarks/restore_heldout.json --figures benchmarks/figures

The prior: `cpu_quick`'s networks at 64 px trained on the CPU (--steps,
EMA 0.995) on the data's images but a fixed tenth (every tenth file in name
order), which is held out and used only here. A finished run in --workdir is
reused (train.py's resume rule). Then, for every task, every held-out image is
degraded by the task's operator (`fastgan_jax/sr/degrade.py`) and restored by
plain PULSE (the latent search), by ILO (the same search continued in the
generator's intermediate features, `fastgan_jax/sr/ilo.py`) and by the
classical baseline:

| task | operator | baseline |
|---|---|---|
| x4, x8 | area downsampling | bicubic (PIL) |
| blur_x4 | Gaussian blur (sigma 1.5 px) then x4 area | bicubic |
| inpaint | half of the 8x8 blocks unknown, at random | biharmonic (scikit-image) |
| colourise | ITU-R 601 luma | the gray image |
| denoise | Gaussian noise, sigma 0.1 ([0, 1] scale) | the noisy image |

Reported per task and method: the share within eps of the observation (its
MSE over the known pixels on the [0, 1] scale <= eps + the noise's
variance), PSNR, SSIM and LPIPS (AlexNet) against the true image. The table
prints as Markdown; --figures writes one PNG per task (rows: input,
baseline, PULSE, ILO, truth; the first 8 held-out images).
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fastgan_jax import data, visual
from fastgan_jax import images as images_lib
from fastgan_jax.configs import cpu_quick
from fastgan_jax.metrics import similarity
from fastgan_jax.metrics.lpips import lpips_distance
from fastgan_jax.sr import degrade, ilo, pulse
from fastgan_jax.sr.files import enlarge
from fastgan_jax.train import loop, runs

SIZE = 64
BLOCK = 8  # inpainting: blocks of 8x8 pixels, half of them unknown
NOISE = 0.1  # denoising: sigma on the [0, 1] scale


def split(folder) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """(training files, held-out files): every tenth image file in name order is held out."""
    files = sorted(data.find_images(folder))
    return [f for i, f in enumerate(files) if i % 10], files[::10]


def linked(files, folder) -> pathlib.Path:
    """A folder of symbolic links to `files` (what train.py and data.load read)."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    return folder


def train_prior(train_folder, workdir, steps):
    cfg = cpu_quick.get_config()
    cfg.update(data=str(train_folder), num_steps=steps, ema_decay=0.995, sample_every=1000, checkpoint_every=1000)
    loop.train_and_evaluate(cfg, workdir)
    return runs.load_run(workdir)


def block_mask(n, seed=0) -> jax.Array:
    """[n, 64, 64] 1 where known: half of the 8x8 blocks of each image, drawn at random."""
    k = SIZE // BLOCK
    keep = jax.vmap(lambda key: jax.random.permutation(key, k * k) < k * k // 2)(
        jax.random.split(jax.random.key(seed), n)
    )
    return jnp.repeat(jnp.repeat(keep.reshape(n, k, k), BLOCK, 1), BLOCK, 2).astype(jnp.float32)


def tasks(hr) -> dict:
    """name -> (operator, observation in [-1, 1], baseline restoration [N, 64, 64, 3] in [-1, 1])."""
    n, out = len(hr), {}
    for name, op in {
        "x4": degrade.Downsample(4),
        "x8": degrade.Downsample(8),
        "blur_x4": degrade.chain(degrade.GaussianBlur(1.5), degrade.Downsample(4)),
    }.items():
        y = op(hr)
        out[name] = (op, y, bicubic(y))
    known = block_mask(n)
    out["inpaint"] = (degrade.Mask(known), hr * known[..., None], biharmonic(hr, known))
    gray = degrade.Grayscale()(hr)
    out["colourise"] = (degrade.Grayscale(), gray, jnp.repeat(gray, 3, axis=-1))
    noisy = jnp.clip(hr + 2 * NOISE * jax.random.normal(jax.random.key(1), hr.shape), -1, 1)
    out["denoise"] = (degrade.Noise(NOISE), noisy, noisy)
    return out


def bicubic(y) -> jax.Array:
    u8 = images_lib.to_uint8(y)
    return images_lib.to_float(jnp.asarray(np.stack([enlarge(im, SIZE, Image.BICUBIC) for im in u8])))


def biharmonic(hr, known) -> jax.Array:
    try:
        from skimage.restoration import inpaint_biharmonic
    except ImportError:
        raise SystemExit("error: the inpainting baseline needs scikit-image: pip install scikit-image") from None
    x, unknown = np.asarray(hr, np.float64), np.asarray(known) == 0
    return jnp.asarray(np.stack([inpaint_biharmonic(im, m, channel_axis=-1) for im, m in zip(x, unknown, strict=True)]))


def search(G, variables, op, y, layers, batch=8) -> jax.Array:
    """The best candidate per image, [N, 64, 64, 3]; images searched `batch` at a time (the same results)."""
    best = []
    for i in range(0, len(y), batch):
        chunk = op if not isinstance(op, degrade.Mask) else degrade.Mask(op.known[i : i + batch])
        res = pulse.restore(G, variables, y[i : i + batch], chunk, key=jax.random.key(0), image_offset=i, layers=layers)
        best.append(res.best)
    return jnp.concatenate(best)


def scores(op, x, y, hr, lpips, eps) -> dict:
    err = degrade.observed_mse(op, x, y)
    return {
        "within_eps": float(jnp.mean(err <= eps + degrade.noise_variance(op))),
        "psnr": float(jnp.mean(similarity.psnr(x, hr))),
        "ssim": float(jnp.mean(similarity.ssim(x, hr))),
        "lpips_alex": float(jnp.mean(lpips(x, hr))),
    }


def figure(y, rows, path) -> None:
    """Rows input, baseline, PULSE, ILO, truth for the first 8 images (gray inputs in gray, small ones enlarged
    with nearest neighbours so that their pixels show)."""
    shown = jnp.repeat(y[:8], 3, -1) if y.shape[-1] == 1 else y[:8]
    if shown.shape[1] != SIZE:
        shown = jnp.repeat(jnp.repeat(shown, SIZE // shown.shape[1], 1), SIZE // shown.shape[2], 2)
    tiles = jnp.concatenate([shown, *(r[:8] for r in rows)])
    visual.save_png(path, visual.grid(tiles, ncols=min(8, len(y))))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the image folder (a tenth is held out)")
    p.add_argument("--workdir", required=True, help="the prior's run (trained here unless finished)")
    p.add_argument("--steps", type=int, default=4000, help="training steps of the prior")
    p.add_argument("--n", type=int, default=None, help="the first n held-out images (default: all)")
    p.add_argument("--eps", type=float, default=2e-3)
    p.add_argument("--layers", default="8,16,32", help="ILO's stages")
    p.add_argument("--layer-radius", type=float, default=ilo.Layers.radii[0])
    p.add_argument("--tasks", default="x4,x8,blur_x4,inpaint,colourise,denoise")
    p.add_argument("--json", default=None, help="write the figures here")
    p.add_argument("--figures", default=None, help="write one PNG per task in this folder")
    args = p.parse_args()
    workdir = pathlib.Path(args.workdir)
    train_files, held_out = split(args.data)
    run = train_prior(linked(train_files, workdir / "train_images"), workdir, args.steps)
    hr_u8 = data.load(str(linked(held_out, workdir / "held_out_images")), SIZE)[: args.n]
    hr = images_lib.to_float(jnp.asarray(hr_u8))
    layers = ilo.Layers(tuple(int(r) for r in args.layers.split(",")), (args.layer_radius,))
    lpips = lpips_distance("alex")
    report = {"n": len(hr), "train_images": len(train_files), "steps": args.steps, "eps": args.eps, "tasks": {}}
    print(f"{len(train_files)} training images, {len(hr)} held out; prior: {run.workdir} step {run.step}")
    print("| task | method | within eps | PSNR | SSIM | LPIPS (alex) |\n|---|---|---|---|---|---|")
    wanted = args.tasks.split(",")
    for name, (op, y, baseline) in tasks(hr).items():
        if name not in wanted:
            continue
        pulse_x = search(run.generator, run.g_variables, op, y, None)
        ilo_x = search(run.generator, run.g_variables, op, y, layers)
        methods = {"baseline": baseline, "pulse": pulse_x, "ilo": ilo_x}
        report["tasks"][name] = {m: scores(op, x, y, hr, lpips, args.eps) for m, x in methods.items()}
        for m, s in report["tasks"][name].items():
            print(
                f"| {name} | {m} | {s['within_eps']:.2f} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['lpips_alex']:.3f} |"
            )
        if args.figures:
            figure(y, [baseline, pulse_x, ilo_x, hr], pathlib.Path(args.figures) / f"restore_{name}.png")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
