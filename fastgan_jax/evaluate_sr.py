"""Super-resolution benchmark: PULSE through a run's generator against bicubic.

    python -m fastgan_jax.evaluate_sr --workdir RUN --hr DIR --factor 8 [--n 100 --restarts 8 --steps 100]

Each HR image (the run's preprocessing, at the generator's resolution) is
area-downscaled by `--factor`, then enlarged back by PULSE and by bicubic
interpolation. Reported for both, side by side: the share of images whose
result downscales to within eps of the LR (LR MSE on the [0, 1] scale), PSNR,
SSIM and LPIPS (AlexNet) against the HR image, and the FID of the SR set
against the HR set. Written as JSON (default RUN/eval/sr_x<factor>.json).
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from fastgan_jax import checkpoints, data, inception, pulse, similarity, superres, training
from fastgan_jax.downsample import area_downsample
from fastgan_jax.images import from_unit
from fastgan_jax.lpips import lpips_distance


def bicubic_up(lr01, size):
    """PIL bicubic enlargement of [B, h, w, 3] images on [0, 1]."""
    return np.stack([superres.enlarge(img, size, Image.BICUBIC) for img in np.asarray(lr01)]).astype(np.float32) / 255


def _scores(sr, hr, lr, lpips, eps):
    lr_mse = np.asarray(jnp.mean((area_downsample(jnp.asarray(sr), lr.shape[1]) - lr) ** 2, axis=(1, 2, 3)))
    return {
        "lr_mse": lr_mse,
        "psnr": np.asarray(similarity.psnr(from_unit(sr), from_unit(hr))),
        "ssim": np.asarray(similarity.ssim(from_unit(sr), from_unit(hr))),
        "lpips": np.asarray(lpips(jnp.asarray(sr) * 2 - 1, jnp.asarray(hr) * 2 - 1)),
        "within_eps": lr_mse <= eps,
    }


def evaluate_sr(workdir, hr_source, factor, *, n=None, restarts=8, steps=100, eps=2e-3, seed=0, batch=4):
    G, variables = training.load_generator(workdir)
    cfg = checkpoints.saved_config(checkpoints.manager(workdir, create=False))
    size = G.im_size
    if size % factor:
        raise ValueError(f"--factor {factor} does not divide the generator's {size}px")
    hr_u8 = data.load(hr_source, size, aspect=cfg["aspect"], background=tuple(cfg["background"]))[:n]
    hr = hr_u8.astype(np.float32) / 255
    lr = np.asarray(area_downsample(jnp.asarray(hr), size // factor))
    lpips = lpips_distance("alex")
    t0 = time.perf_counter()
    sr = []
    for i in range(0, len(lr), batch):
        res = pulse.upscale(
            G,
            variables,
            lr[i : i + batch],
            key=jax.random.key(seed),
            restarts=restarts,
            steps=steps,
            eps=eps,
            image_offset=i,
        )
        sr.append(np.asarray(res.best))
    pulse_seconds = time.perf_counter() - t0
    results = {"pulse": np.concatenate(sr), "bicubic": bicubic_up(lr, size)}
    hr_feats = inception.inception_features(hr_u8)
    report = {
        "n": len(hr),
        "factor": factor,
        "size": size,
        "restarts": restarts,
        "steps": steps,
        "eps": eps,
        "pulse_seconds": round(pulse_seconds, 1),
    }
    for name, images in results.items():
        s = _scores(images, hr, lr, lpips, eps)
        feats = inception.inception_features(from_unit(images))
        report[name] = {
            "within_eps": float(s["within_eps"].mean()),
            "lr_mse": float(s["lr_mse"].mean()),
            "psnr": float(s["psnr"].mean()),
            "ssim": float(s["ssim"].mean()),
            "lpips_alex": float(s["lpips"].mean()),
            "fid": inception.fid(feats, hr_feats) if len(hr) > 1 else float("nan"),
        }
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--hr", required=True, help="folder of high-resolution images (or tfds:NAME)")
    p.add_argument("--factor", type=int, required=True)
    p.add_argument("--n", type=int, default=None, help="use the first n images")
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eps", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        report = evaluate_sr(
            args.workdir,
            args.hr,
            args.factor,
            n=args.n,
            restarts=args.restarts,
            steps=args.steps,
            eps=args.eps,
            seed=args.seed,
        )
    except (FileNotFoundError, data.DataError, ValueError) as e:
        sys.exit(f"error: {e}")
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" / f"sr_x{args.factor}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{report['n']} images, x{args.factor} ({report['size'] // args.factor}px -> {report['size']}px):")
    print(f"{'':10s}{'within eps':>12s}{'PSNR':>8s}{'SSIM':>8s}{'LPIPS':>8s}{'FID':>9s}")
    for name in ("pulse", "bicubic"):
        r = report[name]
        print(
            f"{name:10s}{r['within_eps']:>12.2f}{r['psnr']:>8.2f}{r['ssim']:>8.3f}{r['lpips_alex']:>8.3f}{r['fid']:>9.2f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
