"""Super-resolution benchmark: PULSE through a run's generator against bicubic.

    fastgan-evaluate-sr --workdir RUN --hr DIR --factor 8 [--n 100 --restarts 8 --steps 100]
    python -m fastgan_jax.commands.evaluate_sr ...  (the same)

Each HR image (the run's preprocessing, at the generator's resolution) is
area-downscaled by `--factor`, then enlarged back by PULSE and by bicubic
interpolation. Reported for both, side by side: the share of images whose
result downscales to within eps of the LR (LR MSE on the [0, 1] scale), PSNR,
SSIM and LPIPS (AlexNet) against the HR image, and the FID of the SR set
against the HR set. Written as JSON (default RUN/eval/sr_x<factor>.json).
With `--layers 8,16,32`, a third method: the same search continued in the
generator's intermediate features (ILO, `fastgan_jax/sr/ilo.py`).
"""

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from PIL import Image

from fastgan_jax import data
from fastgan_jax import images as images_lib
from fastgan_jax.commands import launch, upscale
from fastgan_jax.metrics import inception, similarity
from fastgan_jax.metrics.lpips import lpips_distance
from fastgan_jax.sr import files as sr_files
from fastgan_jax.sr import pulse
from fastgan_jax.sr.downsample import area_downsample
from fastgan_jax.train import runs


def bicubic_up(lr, size) -> np.ndarray:
    """PIL bicubic enlargement of [B, h, w, 3] images in [-1, 1] (quantised to uint8 first, as a saved LR is)."""
    lr_u8 = images_lib.to_uint8(lr)
    return np.asarray(images_lib.to_float(np.stack([sr_files.enlarge(img, size, Image.BICUBIC) for img in lr_u8])))


def _scores(sr, hr, lr, lpips, eps):
    """Per image; sr, hr [B, H, W, 3] and lr [B, h, w, 3] in [-1, 1], the LR MSE on PULSE's [0, 1] scale."""
    sr, hr = jnp.asarray(sr), jnp.asarray(hr)
    down = images_lib.to_unit(area_downsample(sr, lr.shape[1]))
    lr_mse = np.asarray(jnp.mean((down - images_lib.to_unit(jnp.asarray(lr))) ** 2, axis=(1, 2, 3)))
    return {
        "lr_mse": lr_mse,
        "psnr": np.asarray(similarity.psnr(sr, hr)),
        "ssim": np.asarray(similarity.ssim(sr, hr)),
        "lpips": np.asarray(lpips(sr, hr)),
        "within_eps": lr_mse <= eps,
    }


def _load_hr(source, size, cfg) -> np.ndarray:
    try:
        return data.load(source, size, aspect=cfg["aspect"], background=tuple(cfg["background"]))
    except data.DataError as e:  # data.load names the training flag
        raise data.DataError(str(e).replace("--data", "--hr", 1)) from None


def _pulse(G, variables, lr, *, restarts, steps, eps, seed, batch, progress, layers=None):
    sr = []
    desc = "PULSE search" if layers is None else "ILO search"
    with tqdm.tqdm(total=len(lr), desc=desc, unit="img", disable=not progress) as bar:
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
                layers=layers,
            )
            sr.append(np.asarray(res.best))
            bar.update(len(sr[-1]))
    return np.concatenate(sr)


def evaluate_sr(
    workdir, hr_source, factor, *, n=None, restarts=8, steps=100, eps=2e-3, seed=0, batch=4, progress=False, layers=None
) -> dict:
    """PULSE (and with `layers`, ILO) and bicubic super-resolution of a run's HR images, side by side.

    Args:
      workdir: the run (its EMA generator and preprocessing).
      hr_source: folder of HR images or tfds:NAME.
      factor: the downscaling factor, dividing the generator's resolution.
      n: use the first n images (default: all).
      restarts, steps, eps, seed: the PULSE search (`pulse.upscale`); eps on the [0, 1] scale.
      batch: images per search call.
      progress: show progress bars (stderr) for the search and the Inception features.
      layers: `ilo.Layers`: also the search continued in the intermediate
        features (method "ilo"; its latent search is PULSE's, with the same keys).

    Returns:
      The report: per method (pulse, ilo, bicubic) within_eps, lr_mse ([0, 1] scale), psnr, ssim,
      lpips_alex, fid.
    """
    if factor < 1:
        raise ValueError(f"--factor must be a whole number >= 1, got {factor}")
    run = runs.load_run(workdir)
    G, variables, cfg = run.generator, run.g_variables, run.config
    size = G.im_size
    if size % factor:
        raise ValueError(f"--factor {factor} does not divide the generator's {size}px")
    hr_u8 = _load_hr(hr_source, size, cfg)[:n]
    hr = np.asarray(images_lib.to_float(hr_u8))
    lr = np.asarray(area_downsample(jnp.asarray(hr), size // factor))
    search = {"restarts": restarts, "steps": steps, "eps": eps, "seed": seed, "batch": batch, "progress": progress}
    t0 = time.perf_counter()
    methods = {"pulse": _pulse(G, variables, lr, **search)}
    pulse_seconds = time.perf_counter() - t0
    if layers is not None:
        methods["ilo"] = _pulse(G, variables, lr, **search, layers=layers)
    methods["bicubic"] = bicubic_up(lr, size)
    report = {
        "n": len(hr),
        "factor": factor,
        "size": size,
        "restarts": restarts,
        "steps": steps,
        "eps": eps,
        "pulse_seconds": round(pulse_seconds, 1),
        "layers": layers and dataclasses.asdict(layers),
    }
    lpips = lpips_distance("alex")
    hr_feats = inception.inception_features(hr_u8, progress="HR features" if progress else None)
    for name, images in methods.items():
        s = _scores(images, hr, lr, lpips, eps)
        report[name] = {
            "within_eps": float(s["within_eps"].mean()),
            "lr_mse": float(s["lr_mse"].mean()),
            "psnr": float(s["psnr"].mean()),
            "ssim": float(s["ssim"].mean()),
            "lpips_alex": float(s["lpips"].mean()),
            "fid": _fid(images, hr_feats, f"{name} features" if progress else None),
        }
    return report


def _fid(images, hr_feats, progress) -> float:
    if len(images) < 2:
        return float("nan")
    return inception.fid(inception.inception_features(images, progress=progress), hr_feats)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def main(argv=None):
    """The `fastgan-evaluate-sr` command."""
    p = argparse.ArgumentParser(prog="fastgan-evaluate-sr", description=__doc__, formatter_class=launch.HelpFormatter)
    p.add_argument("--workdir", required=True, help="run folder written by fastgan-train / train.py")
    p.add_argument("--hr", required=True, help="folder of high-resolution images (or tfds:NAME)")
    p.add_argument("--factor", type=_positive_int, required=True, help="dividing the generator's resolution")
    p.add_argument("--n", type=_positive_int, default=None, help="use the first n images (None: all)")
    p.add_argument("--restarts", type=_positive_int, default=8, help="PULSE candidates per image")
    p.add_argument("--steps", type=_positive_int, default=100, help="Adam steps per candidate")
    p.add_argument("--eps", type=float, default=2e-3, help="success threshold on the LR MSE ([0, 1] scale)")
    p.add_argument("--seed", type=int, default=0, help="draws the candidates' starting latents and noise")
    p.add_argument("--out", default=None, help="JSON output (None: RUN/eval/sr_x<factor>.json)")
    upscale.add_layer_options(p)
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
            progress=True,
            layers=upscale.parse_layers(args, None),
        )
    except (FileNotFoundError, data.DataError, ValueError, sr_files.InputError) as e:
        launch.fail(str(e))
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" / f"sr_x{args.factor}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{report['n']} images, x{args.factor} ({report['size'] // args.factor}px -> {report['size']}px):")
    print(f"{'':10s}{'within eps':>12s}{'PSNR':>8s}{'SSIM':>8s}{'LPIPS':>8s}{'FID':>9s}")
    for name in ("pulse", "ilo", "bicubic"):
        if name not in report:
            continue
        r = report[name]
        print(
            f"{name:10s}{r['within_eps']:>12.2f}{r['psnr']:>8.2f}{r['ssim']:>8.3f}{r['lpips_alex']:>8.3f}{r['fid']:>9.2f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
