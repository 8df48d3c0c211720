"""PULSE super-resolution with a FastGAN generator (`python upscale.py`, `fastgan-upscale`).

    python upscale.py --workdir RUN --input LR.png --out DIR      # robust mode: a real thumbnail, JPEG'd, resized
    python upscale.py --workdir RUN --input LR.png --out DIR --fidelity 0.5    # towards PSNR, away from realism
    python upscale.py --workdir RUN --input LR.png --out DIR --mode exact      # an input made by area downscaling
    python upscale.py --official all_50000.pth --input LR_DIR --out DIR --restarts 8 --steps 100
    python upscale.py --workdir RUN --input HR.png --out DIR --lpips 1    # GAN inversion (factor 1)
    python upscale.py --workdir RUN --input LR.png --out DIR --blur 1.5 --layers 8,16,32   # blurred, then ILO
    python upscale.py --workdir RUN --input GRAY.png --out DIR --gray --mask KNOWN.png --noise-sigma 0.05
    python upscale.py --workdir RUN --input LR.png --out DIR --blur-kernel motion.npy   # a kernel of yours

Per input file, outputs are named after the file name with its dot replaced
(NAME = face_png for face.png, so face.png and face.jpg never collide):
NAME_sr.png (the best candidate), NAME_candidates/rK.png (replaced as a
whole on every run), NAME_compare.png (the input, bicubic, the candidates,
the best one degraded again) and NAME.json (what was restored, each
candidate's LR MSE, success flag and stage, the time taken). Each input gets
one line: what was restored (`x4`, `gray, masked`, `x4, noisy`, ...), the
best MSE against eps, and the result's path. A results folder inside the
input folder is fine: what this command wrote is never taken as an input. An unreadable file in an
input folder is skipped with a warning.

The input is taken as the generator's image degraded (`fastgan_jax/sr/degrade.py`):
blurred (`--blur SIGMA`, in HR pixels, and/or `--blur-kernel FILE`), downscaled by the factor (area, or
`--downsample bicubic`), made gray (`--gray`: colourisation), noisy
(`--noise-sigma`: eps grows by sigma^2) and partly unknown (`--mask`: an
image of the input's size, white where pixels are known: inpainting); the
search matches that degradation of its candidates to the input's known
pixels. `--layers 8,16,32` continues the search in the generator's
intermediate features (ILO, `fastgan_jax/sr/ilo.py`).

`--mode robust` (the default) is for inputs of unknown origin (a JPEG'd
thumbnail, a resized photo): the robust loss and error floor of
`pulse.ROBUST`, a blur of unknown width searched with the image before the
downscaling (`degrade.blind`, unless --blur or --blur-kernel says the blur),
and ILO at 8,16,32 with radius 0.1 (`pulse.ROBUST_LAYERS`) unless --layers
and --layer-radius are given. `--mode exact` is the search as the flags
say (PULSE's MSE, no floor, no ILO unless --layers): for inputs made exactly
by the assumed operator. `--fidelity W` in [0, 1] blends the best candidate
with the mean of the --fidelity-k best ones, and `--fidelity-input I` takes
a share I of the input's own bicubic upsampling (`candidates.Fidelity`):
higher PSNR, less realism (docs/restoration_real.md: the curves). The
robust mode's default knob is `pulse.ROBUST_FIDELITY` (the mean of the 4
best with a third of the input: PSNR near bicubic's); `--fidelity 0
--fidelity-input 0` gives the sharpest, most realistic answer.
`--tune-steps N` tunes the generator per input after the search
(`fastgan_jax/sr/tune.py`, within --tune-radius of each weight tensor).
"""

import argparse
import dataclasses
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fastgan_jax import images as images_lib
from fastgan_jax.commands import launch, restore_options
from fastgan_jax.interop import convert
from fastgan_jax.metrics import lpips as lpips_lib
from fastgan_jax.sr import degrade, pulse
from fastgan_jax.sr import files as sr_files
from fastgan_jax.sr.downsample import DOWNSAMPLERS
from fastgan_jax.train import checkpoints, runs
from fastgan_jax.train.step import recalibrate


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    p = argparse.ArgumentParser(prog="fastgan-upscale", description=__doc__, formatter_class=launch.HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a run of train.py (its EMA generator)")
    src.add_argument("--official", help="an official FastGAN checkpoint (.pth or .npz)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of --workdir (None: the latest)")
    p.add_argument("--input", required=True, help="an LR image or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    restore_options.add_search_options(p)
    restore_options.add_mode_options(p, default="robust")
    p.add_argument("--downsample", default="area", choices=sorted(DOWNSAMPLERS), help="how the LR was made")
    p.add_argument(
        "--fit",
        default="none",
        choices=sr_files.FITS,
        help="an LR that is not square or whose size does not divide the generator's: refuse it (none), "
        "area-downscale it to the largest size that does (resize), take its centre (crop) or pad it (pad)",
    )
    p.add_argument(
        "--recalibrate",
        type=restore_options.NON_NEGATIVE_INT,
        default=2048,
        help="--official: z for BatchNorm recalibration (0: off)",
    )
    p.add_argument("--seed", type=int, default=0, help="draws the candidates' starting latents and noise")
    restore_options.add_layer_options(p)
    restore_options.add_degradation_options(p)
    p.add_argument(
        "--mask", default=None, help="inpainting: an image of the input's size, white where pixels are known"
    )
    return p


def load_generator(args):
    """(Generator, variables) of --workdir or --official, in eval mode."""
    if args.workdir:
        run = runs.load_run(args.workdir, args.step)
        return run.generator, run.g_variables
    G, variables = convert.generator_from_official(args.official)
    if args.recalibrate:  # the official g_ema comes with g's running statistics
        stats = recalibrate(
            G, variables["params"], variables["batch_stats"], jax.random.key(args.seed), num_samples=args.recalibrate
        )
        variables = {"params": variables["params"], "batch_stats": stats}
    return G, variables


def load_inputs(paths, im_size: int, fit: str, *, skip_unreadable: bool) -> list[tuple[pathlib.Path, np.ndarray]]:
    """(path, uint8 LR image) per input; unreadable files are skipped with a warning when `skip_unreadable`.
    An input that `fit` changed is said in one line (its size before and after)."""
    inputs = []
    for path in paths:
        try:
            image = sr_files.read_lr(path)
        except sr_files.UnreadableImage as e:
            if not skip_unreadable:
                raise
            print(f"warning: {e}; skipped", file=sys.stderr)
            continue
        lr = sr_files.fit_lr(image, im_size, fit, path)
        if lr.shape != image.shape:
            h, w = image.shape[:2]
            print(f"{path}: {w}x{h} -> {lr.shape[0]}px (--fit {fit}), factor x{im_size // lr.shape[0]}")
        inputs.append((path, lr))
    if not inputs:
        raise sr_files.InputError(f"--input {paths[0].parent}: none of the {len(paths)} image files could be read")
    return inputs


def _lpips_variables(args, inputs, im_size):
    """LPIPS-VGG weights for --lpips, which is GAN inversion: every input at the generator's size."""
    if not args.lpips:
        return None
    if args.gray or args.mask or args.blur or args.noise_sigma:
        raise sr_files.InputError(
            "--lpips is for GAN inversion of a clean colour image, not with --gray, --mask, --blur or --noise-sigma"
        )
    for path, lr in inputs:
        if lr.shape[0] != im_size:
            raise sr_files.InputError(
                f"--lpips is for GAN inversion (inputs at the generator's {im_size}px); {path} is {lr.shape[0]}px"
            )
    return lpips_lib.lpips_variables("vgg")


def _upscale_one(G, variables, search, layers, lpips_variables, op, path, lr, index, args, settings) -> dict:
    tuning, fidelity = restore_options.parse_tuning(args), restore_options.parse_fidelity(args)
    t0 = time.perf_counter()
    observed = images_lib.to_float(jnp.asarray(lr[None]))
    observed = degrade.Grayscale()(observed) if args.gray else observed  # a gray file reads as R = G = B
    key = jax.random.key(args.seed)
    res = pulse.restore(
        G,
        variables,
        observed,
        op,
        key=key,
        search=search,
        layers=layers,
        tuning=tuning,
        fidelity=fidelity,
        image_offset=index,
        lpips_variables=lpips_variables,
    )
    res = jax.device_get(res)
    seconds = time.perf_counter() - t0
    op = degrade.with_unknowns(op, tuple(e[:, res.best_index[0]] for e in res.estimates))  # the best's blur
    best_down = np.asarray(restore_options.seen(op, res.estimate))[0]
    return sr_files.write_outputs(
        args.out,
        path,
        lr=lr,
        images=res.images[0],
        best=res.estimate[0],
        best_down=best_down,
        lr_mse=res.lr_mse[0],
        success=res.success[0],
        stage=res.stage[0],
        what=_task(args, G.im_size // lr.shape[0]),
        seconds=seconds,
        best_restart=int(res.best_index[0]),
        settings=settings
        | {
            "layers": layers and dataclasses.asdict(layers),
            "loss": search.loss,
            "floor": search.floor,
            "tuning": tuning and dataclasses.asdict(tuning),
            "fidelity": dataclasses.asdict(res.fidelity),
            "blur_estimate": [float(e[0, res.best_index[0]]) for e in res.estimates],
        },
    )


def main(argv=None):
    """Runs the command: `argv` as sys.argv[1:] (default: those of the process)."""
    p = build_parser()
    args = p.parse_args(argv)
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        launch.fail(f"--out {out} is a file; give a folder for the results")
    try:
        paths = sr_files.find_inputs(args.input, out)  # never the results of an earlier run into the same folder
        G, variables = load_generator(args)
        inputs = load_inputs(paths, G.im_size, args.fit, skip_unreadable=pathlib.Path(args.input).is_dir())
        lpips_variables = _lpips_variables(args, inputs, G.im_size)
        layers = restore_options.parse_layers(args, G.im_size)
        masks = {size: restore_options.read_mask(args, size) for size in sorted({lr.shape[0] for _, lr in inputs})}
        kernel = restore_options.read_kernel(args)
    except (
        sr_files.InputError,
        FileNotFoundError,  # incl. missing weights
        convert.OfficialCheckpointError,
        checkpoints.DamagedCheckpointError,
    ) as e:
        launch.fail(str(e))
    _hint_gray(args, inputs)
    search = restore_options.parse_search(args)
    print(f"{len(inputs)} input(s), generator {G.im_size}px, {search.restarts} restarts x {search.steps} steps")
    names = ("restarts", "steps", "eps", "downsample", "noise", "l1", "lpips", "fit", "seed", "mode")
    names += ("blur", "blur_kernel", "gray", "noise_sigma", "mask")
    settings = {k: getattr(args, k) for k in names}
    successes = 0
    for i, (path, lr) in enumerate(tqdm.tqdm(inputs, unit="image", disable=None)):
        known = masks[lr.shape[0]]
        op = restore_options.operator(args, G.im_size // lr.shape[0], known, kernel)
        report = _upscale_one(G, variables, search, layers, lpips_variables, op, path, lr, i, args, settings)
        successes += any(c["success"] for c in report["candidates"])
        tqdm.tqdm.write(_result_line(path, report, args))
    print(f"done: {successes}/{len(inputs)} input(s) matched within eps {args.eps}; results in {args.out}")


def _hint_gray(args, inputs) -> None:
    """One line when inputs are gray (R = G = B) and --gray was not given: the search would match a gray image."""
    if args.gray:
        return
    gray = [
        path for path, lr in inputs if np.array_equal(lr[..., 0], lr[..., 1]) and np.array_equal(lr[..., 1], lr[..., 2])
    ]
    if gray:
        which = f"{gray[0]} is" if len(gray) == 1 else f"{len(gray)} of the inputs ({gray[0]}, ...) are"
        print(f"note: {which} gray (R = G = B): --gray colourises; without it the result is a gray image")


def _task(args, factor: int) -> str:
    """What this input's restoration undoes, from the flags that say what was observed (`sr_files.task`)."""
    blurred = bool(args.blur or args.blur_kernel)
    return sr_files.task(factor, blurred=blurred, gray=args.gray, masked=bool(args.mask), noisy=args.noise_sigma > 0)


def _result_line(path, report: dict, args) -> str:
    """One input's outcome: what was restored, the best MSE against eps, and the file that is the answer."""
    best = report["candidates"][report["best_restart"]]
    verdict = "within" if best["success"] else "above"
    answer = pathlib.Path(args.out) / f"{sr_files.output_name(path)}_sr.png"
    against = "LR MSE" if report["factor"] > 1 else "MSE to the input"
    return (
        f"{path}: {report['task']} ({report['lr_size']} -> {report['sr_size']}px), best {against} "
        f"{best['lr_mse']:.2e} {verdict} eps {args.eps:g} (restart {report['best_restart']}): {answer}"
    )


if __name__ == "__main__":
    main()
