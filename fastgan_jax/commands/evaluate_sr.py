"""Restoration benchmark: PULSE (and ILO) through a run's generator against the classical baseline.

    fastgan-evaluate-sr --workdir RUN --hr DIR --factor 8 [--n 100 --restarts 8 --steps 100]
    fastgan-evaluate-sr --workdir RUN --hr DIR --factor 4 --blur 1.5 --layers 8,16,32
    fastgan-evaluate-sr --workdir RUN --hr DIR --factor 1 --inpaint 0.5     # inpainting, also --gray, --noise-sigma
    fastgan-evaluate-sr --workdir RUN --hr DIR --factor 4 --mode robust --fidelity 0.5 --tune-steps 50
    python -m fastgan_jax.commands.evaluate_sr ...  (the same)

Each HR image (the run's preprocessing, at the generator's resolution) is
degraded as `fastgan-upscale` assumes its input was (`--blur SIGMA`, `--blur-kernel FILE`, area
downscaling by `--factor`, `--gray`, `--noise-sigma`, and with `--inpaint
FRACTION` that share of an 8x8 grid of blocks unknown, drawn per image from
`--seed`; `fastgan_jax/sr/degrade.py`), then restored by PULSE and by the
classical baseline (`fastgan_jax/sr/baseline.py`: bicubic enlargement,
biharmonic inpainting, the gray or the noisy image). Reported side by side:
the share of images whose result degrades to within eps of the observation
(its MSE over the known pixels on the [0, 1] scale, eps plus the noise's
variance), PSNR, SSIM and LPIPS (AlexNet) against the HR image, and the FID of
the restored set against the HR set (with a warning under 50 images, where
FID is mostly noise). Written as JSON (default RUN/eval/sr_x<factor>.json),
and the images to look at beside it (RUN/eval/sr_x<factor>/: hr/, observed/,
pulse/, ilo/, baseline/, one PNG per image, the same name in each). With `--layers 8,16,32`, a third method: the
same search continued in the generator's intermediate features (ILO,
`fastgan_jax/sr/ilo.py`).

The inputs here are made by the degradation that the search assumes, so
`--mode exact` is the default; `--mode robust` measures `fastgan-upscale`'s
default for real inputs on them (`pulse.ROBUST`, the blur searched, ILO at
radius 0.1: see `fastgan-upscale --help`). `--fidelity W` (and `--fidelity-k`,
`--fidelity-input`) scores the blend of the best candidate, the mean of the
best ones and the input's bicubic upsampling (`candidates.Fidelity`),
`--tune-steps N` the generator tuned per image after the search.
"""

import argparse
import dataclasses
import json
import pathlib
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fastgan_jax import data, visual
from fastgan_jax import images as images_lib
from fastgan_jax.commands import launch, restore_options
from fastgan_jax.commands.evaluate import FEW_IMAGES
from fastgan_jax.metrics import inception, similarity
from fastgan_jax.metrics import lpips as lpips_lib
from fastgan_jax.metrics.lpips import lpips_distance
from fastgan_jax.sr import baseline, degrade, pulse
from fastgan_jax.sr import files as sr_files
from fastgan_jax.train import runs


def _scores(restored, hr, op, observed, lpips, eps):
    """Per image; restored, hr [B, H, W, 3] and observed (op's output) in [-1, 1]; the error on the [0, 1] scale."""
    restored, hr = jnp.asarray(restored), jnp.asarray(hr)
    err = np.asarray(degrade.observed_mse(op, restored, jnp.asarray(observed)))
    return {
        "lr_mse": err,
        "psnr": np.asarray(similarity.psnr(restored, hr)),
        "ssim": np.asarray(similarity.ssim(restored, hr)),
        "lpips": np.asarray(lpips(restored, hr)),
        "within_eps": err <= eps + degrade.noise_variance(op),
    }


def _load_hr(source, size, cfg) -> np.ndarray:
    try:
        return data.load(source, size, aspect=cfg["data"]["aspect"], background=tuple(cfg["data"]["background"]))
    except data.DataError as e:  # data.load names the training flag
        raise data.DataError(str(e).replace("--data", "--hr", 1)) from None


def _search(G, variables, op, observed, *, search, lpips_variables, seed, batch, progress, layers=None, **extra):
    restored = []
    desc = "PULSE search" if layers is None else "ILO search"
    settings = {"key": jax.random.key(seed), "search": search, "layers": layers, "lpips_variables": lpips_variables}
    settings |= extra  # tuning, fidelity
    with tqdm.tqdm(total=len(observed), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(observed), batch):
            chunk = observed[i : i + batch]
            res = pulse.restore(G, variables, chunk, degrade.take(op, i, i + batch), **settings, image_offset=i)
            restored.append(np.asarray(res.estimate))
            bar.update(len(restored[-1]))
    return np.concatenate(restored)


def _check(how, size: int) -> None:
    if size % how.factor:
        raise ValueError(f"--factor {how.factor} does not divide the generator's {size}px")
    if how.inpaint and (size // how.factor) % 8:
        raise ValueError(f"--inpaint: the {size // how.factor}px observation does not split into 8x8 blocks")
    if how.inpaint:
        baseline.check(degrade.Mask(None))  # its baseline needs scikit-image


def degraded(hr, size, how: degrade.Degradation, seed: int):
    """(operator, observations) of [N, size, size, 3] HR images in [-1, 1]; noise and masks drawn from `seed`."""
    _check(how, size)
    known = None
    if how.inpaint:
        known = degrade.block_mask(jax.random.key(seed + 1), len(hr), size // how.factor, unknown=how.inpaint)
    op = how.operator(known)
    return op, np.asarray(degrade.observe(op, jnp.asarray(hr), jax.random.key(seed + 2)))


def evaluate_sr(
    workdir,
    hr_source,
    factor,
    *,
    n=None,
    search: pulse.Search | None = None,
    seed=0,
    batch=4,
    progress=False,
    layers=None,
    degradation: degrade.Degradation | None = None,
    blind: bool = False,
    tuning=None,
    fidelity=None,
    save_to=None,
) -> dict:
    """PULSE (and with `layers`, ILO) and the classical baseline restoring a run's degraded HR images.

    Args:
      workdir: the run (its EMA generator and preprocessing).
      hr_source: folder of HR images or tfds:NAME.
      factor: the downscaling factor, dividing the generator's resolution (1: no downscaling).
      n: use the first n images (default: all).
      search: the search's settings (`pulse.Search`; None: its defaults); eps on the [0, 1] scale.
      seed: draws the candidates (`pulse.restore`'s key), the noise and the masks.
      batch: images per search call.
      progress: show progress bars (stderr) for the search and the Inception features.
      layers: `ilo.Layers`: also the search continued in the intermediate
        features (method "ilo"; its latent search is PULSE's, with the same keys).
      degradation: blur, gray, noise and inpainting besides the factor (its own factor is ignored).
      blind: the search assumes a blur of unknown width before the downscaling (`degrade.blind`; the robust
        mode), while the images are degraded as `degradation` says.
      tuning: `tune.Tuning`: the generator tuned per image after each search (None: not).
      fidelity: each method's answer at this knob: a `candidates.Fidelity`, a dict of some of its fields or
        None, the others the search's default for the operator (`pulse.fidelity_for`).
      save_to: a folder for the images: hr/, observed/ (the degraded input) and one
        folder per method, `00000.png` ... in each (None: none written).

    Returns:
      The report: per method (pulse, ilo, baseline) within_eps, lr_mse (the observation's error, [0, 1]
      scale), psnr, ssim, lpips_alex, fid; "baseline_method" names the baseline (e.g. "bicubic").

    Raises:
      ValueError: a factor that does not divide the resolution, an inpainting grid that does not fit.
      ImportError: inpainting without scikit-image (its baseline).
    """
    how = dataclasses.replace(degradation or degrade.Degradation(), factor=factor)
    search = pulse.Search() if search is None else search
    if factor < 1:
        raise ValueError(f"--factor must be a whole number >= 1, got {factor}")
    run = runs.load_run(workdir)
    G, variables, cfg = run.generator, run.g_variables, run.config
    size = G.im_size
    _check(how, size)  # before the images load
    hr_u8 = _load_hr(hr_source, size, cfg)[:n]
    hr = np.asarray(images_lib.to_float(hr_u8))
    op, observed = degraded(hr, size, how, seed)
    lpips_vgg = lpips_lib.lpips_variables("vgg") if search.lpips else None  # loaded once, not per batch
    settings = {"search": search, "lpips_variables": lpips_vgg, "seed": seed, "batch": batch, "progress": progress}
    fidelity = pulse.fidelity_for(search, observed, op, fidelity)
    settings |= {"tuning": tuning, "fidelity": fidelity}
    searched = degrade.blind(op) if blind else op
    t0 = time.perf_counter()
    methods = {"pulse": _search(G, variables, searched, observed, **settings)}
    pulse_seconds = time.perf_counter() - t0
    if layers is not None:
        methods["ilo"] = _search(G, variables, searched, observed, **settings, layers=layers)
    methods["baseline"] = np.asarray(baseline.classical(op, observed, size))
    if save_to is not None:
        _save_images(pathlib.Path(save_to), hr_u8, observed, methods)
    if len(hr) < FEW_IMAGES:
        where = f"; look at the images in {save_to}" if save_to is not None else ""
        warnings.warn(f"FID from {len(hr)} images is mostly noise (fewer than {FEW_IMAGES}){where}", stacklevel=2)
    report = {
        "n": len(hr),
        "factor": factor,
        "size": size,
        "degradation": dataclasses.asdict(how)
        | {"kernel": None if how.kernel is None else np.asarray(how.kernel).tolist()},
        "baseline_method": baseline.name(op),
        "search": dataclasses.asdict(search),
        "pulse_seconds": round(pulse_seconds, 1),
        "layers": layers and dataclasses.asdict(layers),
        "blind": blind,
        "tuning": tuning and dataclasses.asdict(tuning),
        "fidelity": dataclasses.asdict(fidelity),
    }
    lpips = lpips_distance("alex")
    hr_feats = inception.inception_features(hr_u8, progress="HR features" if progress else None)
    for name, images in methods.items():
        s = _scores(images, hr, op, observed, lpips, search.eps + search.floor)
        report[name] = {
            "within_eps": float(s["within_eps"].mean()),
            "lr_mse": float(s["lr_mse"].mean()),
            "psnr": float(s["psnr"].mean()),
            "ssim": float(s["ssim"].mean()),
            "lpips_alex": float(s["lpips"].mean()),
            "fid": _fid(images, hr_feats, f"{name} features" if progress else None),
        }
    return report


def _save_images(folder: pathlib.Path, hr_u8, observed, methods: dict) -> None:
    """One PNG per image and kind: the HR image, what the methods saw, and each method's result."""
    observed = np.asarray(observed)
    observed = np.repeat(observed, 3, axis=-1) if observed.shape[-1] == 1 else observed  # gray: [N, h, w, 1]
    kinds = {"hr": np.asarray(hr_u8), "observed": images_lib.to_uint8(observed)}
    kinds |= {name: images_lib.to_uint8(images) for name, images in methods.items()}
    for kind, images in kinds.items():
        for i, image in enumerate(np.asarray(images)):
            visual.save_png(folder / kind / f"{i:05d}.png", image)


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


def _share(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def main(argv=None):
    """The `fastgan-evaluate-sr` command."""
    p = argparse.ArgumentParser(prog="fastgan-evaluate-sr", description=__doc__, formatter_class=launch.HelpFormatter)
    p.add_argument("--workdir", required=True, help="run folder written by fastgan-train / train.py")
    p.add_argument("--hr", required=True, help="folder of high-resolution images (or tfds:NAME)")
    p.add_argument("--factor", type=_positive_int, required=True, help="dividing the generator's resolution")
    p.add_argument("--n", type=_positive_int, default=None, help="use the first n images (None: all)")
    restore_options.add_search_options(p)
    restore_options.add_mode_options(p, default="exact")
    p.add_argument("--seed", type=int, default=0, help="draws the candidates, the noise and the masks")
    p.add_argument("--out", default=None, help="JSON output (None: RUN/eval/sr_x<factor>.json)")
    restore_options.add_degradation_options(p)
    p.add_argument(
        "--inpaint", type=_share, default=0.0, help="this share of an 8x8 grid of blocks of each image is unknown"
    )
    restore_options.add_layer_options(p)
    args = p.parse_args(argv)
    out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval" / f"sr_x{args.factor}.json")
    try:
        kernel = restore_options.read_kernel(args)
        how = degrade.Degradation(args.factor, args.blur, args.gray, args.noise_sigma, args.inpaint, kernel=kernel)
        report = evaluate_sr(
            args.workdir,
            args.hr,
            args.factor,
            n=args.n,
            search=restore_options.parse_search(args),
            seed=args.seed,
            progress=True,
            layers=restore_options.parse_layers(args, None),
            degradation=how,
            blind=args.mode == "robust" and not (args.blur or kernel is not None),
            tuning=restore_options.parse_tuning(args),
            fidelity=restore_options.parse_fidelity(args),
            save_to=out.with_suffix(""),
        )
    except (FileNotFoundError, data.DataError, ValueError, ImportError, sr_files.InputError) as e:
        launch.fail(str(e))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    side = report["size"] // args.factor
    print(f"{report['n']} images, {_describe(how)} ({side}px -> {report['size']}px):")
    print(f"{'':22s}{'within eps':>12s}{'PSNR':>8s}{'SSIM':>8s}{'LPIPS':>8s}{'FID':>9s}")
    for name in ("pulse", "ilo", "baseline"):
        if name not in report:
            continue
        r = report[name]
        label = f"baseline ({report['baseline_method']})" if name == "baseline" else name
        print(
            f"{label:22s}{r['within_eps']:>12.2f}{r['psnr']:>8.2f}{r['ssim']:>8.3f}{r['lpips_alex']:>8.3f}{r['fid']:>9.2f}"
        )
    print(f"wrote {out}, and the images in {out.with_suffix('')}")


def _describe(how) -> str:
    parts = [f"blur {how.blur}"] if how.blur else []
    parts += ["blur kernel"] if how.kernel is not None else []
    parts.append(f"x{how.factor}")
    parts += ["gray"] if how.gray else []
    parts += [f"noise {how.noise_sigma}"] if how.noise_sigma else []
    parts += [f"{how.inpaint:.0%} unknown"] if how.inpaint else []
    return ", ".join(parts)


if __name__ == "__main__":
    main()
