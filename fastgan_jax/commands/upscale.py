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
with the mean of the best ones (`pulse.Fidelity`): higher PSNR, less
realism. `--tune-steps N` tunes the generator per input after the search
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
from fastgan_jax.commands import launch
from fastgan_jax.interop import convert
from fastgan_jax.metrics import lpips as lpips_lib
from fastgan_jax.sr import degrade, ilo, pulse, tune
from fastgan_jax.sr import files as sr_files
from fastgan_jax.sr.downsample import DOWNSAMPLERS
from fastgan_jax.train import checkpoints, runs
from fastgan_jax.train.step import recalibrate


def _number(kind, test, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_POSITIVE_INT = _number(int, lambda v: v >= 1, "at least 1")
_POSITIVE = _number(float, lambda v: v > 0, "> 0")
_NON_NEGATIVE = _number(float, lambda v: v >= 0, ">= 0")
_NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, ">= 0")


def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    p = argparse.ArgumentParser(prog="fastgan-upscale", description=__doc__, formatter_class=launch.HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a run of train.py (its EMA generator)")
    src.add_argument("--official", help="an official FastGAN checkpoint (.pth or .npz)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of --workdir (None: the latest)")
    p.add_argument("--input", required=True, help="an LR image or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    add_search_options(p)
    add_mode_options(p, default="robust")
    p.add_argument("--downsample", default="area", choices=sorted(DOWNSAMPLERS), help="how the LR was made")
    p.add_argument(
        "--fit",
        default="none",
        choices=sr_files.FITS,
        help="an LR that is not square or whose size does not divide the generator's: refuse it (none), "
        "area-downscale it to the largest size that does (resize), take its centre (crop) or pad it (pad)",
    )
    p.add_argument(
        "--recalibrate", type=_NON_NEGATIVE_INT, default=2048, help="--official: z for BatchNorm recalibration (0: off)"
    )
    p.add_argument("--seed", type=int, default=0, help="draws the candidates' starting latents and noise")
    add_layer_options(p)
    add_degradation_options(p)
    p.add_argument(
        "--mask", default=None, help="inpainting: an image of the input's size, white where pixels are known"
    )
    return p


def add_search_options(p: argparse.ArgumentParser) -> None:
    """--restarts, --steps, --eps, --noise, --l1, --lpips: the search's settings, defaults from `pulse.Search`."""
    default = pulse.Search()
    p.add_argument("--restarts", type=_POSITIVE_INT, default=default.restarts, help="candidates searched per input")
    p.add_argument("--steps", type=_POSITIVE_INT, default=default.steps, help="Adam steps per candidate")
    p.add_argument("--eps", type=_POSITIVE, default=default.eps, help="success threshold on the LR MSE ([0, 1] scale)")
    p.add_argument(
        "--noise", default=default.noise, choices=pulse.NOISE_MODES, help="the noise maps: searched, drawn once, or 0"
    )
    p.add_argument("--l1", type=_NON_NEGATIVE, default=default.l1, help="weight of an extra L1 term")
    p.add_argument(
        "--lpips",
        type=_NON_NEGATIVE,
        default=default.lpips,
        help="weight of an LPIPS-VGG term (GAN inversion, factor 1 only)",
    )


MODES = ("robust", "exact")


def add_mode_options(p: argparse.ArgumentParser, default: str) -> None:
    """--mode, --floor, --fidelity, --fidelity-k and the tuning's --tune-steps, --tune-radius, --tune-lr."""
    p.add_argument(
        "--mode",
        default=default,
        choices=MODES,
        help="robust: for inputs of unknown origin (pulse.ROBUST's loss and floor, a blur of unknown width "
        "searched, ILO 8,16,32 at radius 0.1 unless --layers/--layer-radius); exact: PULSE as the flags say, for "
        "inputs made exactly by the assumed degradation",
    )
    p.add_argument(
        "--floor",
        type=_NON_NEGATIVE,
        default=None,
        help=f"the observation's error floor (MSE, [0, 1] scale): fits within it are not improved on "
        f"(default {pulse.ROBUST.floor:g} in robust mode, 0 in exact mode)",
    )
    p.add_argument(
        "--fidelity",
        type=_number(float, lambda v: 0 <= v <= 1, "in [0, 1]"),
        default=0.0,
        help="the answer: (1 - W) x the best candidate + W x the mean of the --fidelity-k best (0: the best "
        "candidate, realistic; 1: the mean, higher PSNR)",
    )
    p.add_argument(
        "--fidelity-k", type=_NON_NEGATIVE_INT, default=0, help="--fidelity's mean takes the k best candidates (0: all)"
    )
    p.add_argument(
        "--tune-steps",
        type=_NON_NEGATIVE_INT,
        default=0,
        help="after the search, tune the generator per input for this many steps (0: no tuning)",
    )
    p.add_argument(
        "--tune-radius",
        type=_POSITIVE,
        default=tune.Tuning.radius,
        help="--tune-steps: the largest change of each weight tensor, relative to its norm",
    )
    p.add_argument("--tune-lr", type=_POSITIVE, default=tune.Tuning.lr, help="--tune-steps: Adam's learning rate")


def parse_search(args) -> pulse.Search:
    """The flags of `add_search_options` (and --mode, --floor) as one `pulse.Search` (argparse has checked
    their ranges)."""
    robust = getattr(args, "mode", "exact") == "robust"
    floor = getattr(args, "floor", None)
    return pulse.Search(
        restarts=args.restarts,
        steps=args.steps,
        eps=args.eps,
        noise=args.noise,
        l1=args.l1,
        lpips=args.lpips,
        loss=pulse.ROBUST.loss if robust else "mse",
        floor=(pulse.ROBUST.floor if robust else 0.0) if floor is None else floor,
    )


def parse_tuning(args) -> tune.Tuning | None:
    """--tune-steps, --tune-radius, --tune-lr as `tune.Tuning` (None without --tune-steps)."""
    if not args.tune_steps:
        return None
    return tune.Tuning(steps=args.tune_steps, lr=args.tune_lr, radius=args.tune_radius)


def parse_fidelity(args) -> pulse.Fidelity:
    """--fidelity and --fidelity-k as `pulse.Fidelity`."""
    return pulse.Fidelity(weight=args.fidelity, k=args.fidelity_k)


def add_degradation_options(p: argparse.ArgumentParser) -> None:
    """--blur, --gray, --noise-sigma: how the input was degraded besides the factor (`degrade.Degradation`)."""
    p.add_argument(
        "--blur",
        type=_NON_NEGATIVE,
        default=0.0,
        help="the input was blurred (Gaussian, sigma in HR pixels) before it was downscaled",
    )
    p.add_argument(
        "--blur-kernel",
        default=None,
        help="the input was blurred with this kernel (.npy, or text rows of numbers; square, odd size) before it "
        "was downscaled, after --blur if both",
    )
    p.add_argument("--gray", action="store_true", help="the input is grayscale: colourise it (ITU-R 601 luma)")
    p.add_argument(
        "--noise-sigma",
        type=_NON_NEGATIVE,
        default=0.0,
        help="the input carries Gaussian noise of this sigma ([0, 1] scale): denoise",
    )


def operator(args, factor: int, known=None, kernel=None):
    """The degradation that made the input from a generator image: blur, downscale, gray, noise, mask; in
    robust mode without a blur given, a blur of unknown width before the downscaling (`degrade.blind`)."""
    how = degrade.Degradation(factor, args.blur, args.gray, args.noise_sigma, downsample=args.downsample, kernel=kernel)
    op = how.operator(known)
    return degrade.blind(op) if getattr(args, "mode", "exact") == "robust" else op


def read_kernel(args):
    """--blur-kernel as a [k, k] float32 array (None without it): a .npy file or text of k rows of k numbers
    (numpy.loadtxt). InputError unless it is square, of odd size and finite."""
    if args.blur_kernel is None:
        return None
    path = pathlib.Path(args.blur_kernel)
    try:
        kernel = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=2)
    except (OSError, ValueError) as e:
        reason = "no such file" if not path.is_file() else f"not a .npy array or a text of numbers ({e})"
        raise sr_files.InputError(f"--blur-kernel {path}: {reason}") from None
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        shape = "x".join(map(str, kernel.shape))
        raise sr_files.InputError(f"--blur-kernel {path}: a square kernel of odd size is needed, got {shape}")
    if not np.all(np.isfinite(kernel)):
        raise sr_files.InputError(f"--blur-kernel {path}: the kernel has values that are not finite")
    return kernel


def _seen(op, images):
    """What the degradation makes of `images`, as RGB for the figures (noise and mask left out: what was
    compared with the known pixels)."""
    ops = [
        o
        for o in (op.ops if isinstance(op, degrade.Chain) else (op,))
        if not isinstance(o, degrade.Noise | degrade.Mask)
    ]
    out = degrade.chain(*ops)(images)
    return jnp.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def read_mask(args, size: int):
    """--mask as [size, size] 1 where known (white), else 0; None without --mask. InputError for a bad file."""
    if args.mask is None:
        return None
    try:
        mask = sr_files.read_lr(args.mask)
    except sr_files.UnreadableImage as e:
        raise sr_files.InputError(str(e).replace("--input", "--mask", 1)) from None
    if mask.shape[:2] != (size, size):
        raise sr_files.InputError(f"--mask {args.mask}: {mask.shape[1]}x{mask.shape[0]}, not the input's {size}x{size}")
    known = mask.mean(axis=-1) >= 128
    if not known.any():
        raise sr_files.InputError(
            f"--mask {args.mask}: no known pixel (all black); white marks the pixels of the input to keep"
        )
    return jnp.asarray(known, jnp.float32)


def add_layer_options(p: argparse.ArgumentParser) -> None:
    """--layers, --layer-radius, --layer-steps, --layer-lr (intermediate layer optimisation)."""
    p.add_argument(
        "--layers",
        default=None,
        help="after the latent search, optimise the generator's features at these resolutions, coarse to fine "
        "(intermediate layer optimisation, e.g. 8,16,32; '': the latent search alone, PULSE; default: "
        "8,16,32 in robust mode, '' in exact mode)",
    )
    p.add_argument(
        "--layer-radius",
        type=_POSITIVE,
        default=None,
        help=f"--layers: the largest mean absolute change of a feature value in a stage (the L1 ball; default "
        f"{pulse.ROBUST_LAYERS.radii[0]:g} in robust mode, {ilo.Layers.radii[0]:g} in exact mode)",
    )
    p.add_argument("--layer-steps", type=_POSITIVE_INT, default=ilo.Layers.steps, help="--layers: Adam steps per stage")
    p.add_argument("--layer-lr", type=_POSITIVE, default=ilo.Layers.lr, help="--layers: Adam's learning rate")


def parse_layers(args, im_size: int | None) -> ilo.Layers | None:
    """--layers and its options as `ilo.Layers` (None without --layers), checked against a generator of
    `im_size` when given; InputError for a bad value."""
    robust = getattr(args, "mode", "exact") == "robust"
    preset = pulse.ROBUST_LAYERS if robust else ilo.Layers()
    wanted = args.layers if args.layers is not None else ",".join(map(str, preset.resolutions)) if robust else ""
    if not wanted:
        return None
    try:
        resolutions = tuple(int(r) for r in wanted.split(","))
        radius = preset.radii[0] if args.layer_radius is None else args.layer_radius
        layers = ilo.Layers(resolutions, (radius,), args.layer_steps, args.layer_lr)
        if im_size is not None:
            layers.check(im_size)
    except ValueError as e:
        raise sr_files.InputError(f"--layers {wanted}: {str(e).removeprefix('layers: ')}") from None
    return layers


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
    tuning, fidelity = parse_tuning(args), parse_fidelity(args)
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
    best_down = np.asarray(_seen(op, res.estimate))[0]
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
            "fidelity": dataclasses.asdict(fidelity),
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
        layers = parse_layers(args, G.im_size)
        masks = {size: read_mask(args, size) for size in sorted({lr.shape[0] for _, lr in inputs})}
        kernel = read_kernel(args)
    except (
        sr_files.InputError,
        FileNotFoundError,  # incl. missing weights
        convert.OfficialCheckpointError,
        checkpoints.DamagedCheckpointError,
    ) as e:
        launch.fail(str(e))
    _hint_gray(args, inputs)
    search = parse_search(args)
    print(f"{len(inputs)} input(s), generator {G.im_size}px, {search.restarts} restarts x {search.steps} steps")
    names = ("restarts", "steps", "eps", "downsample", "noise", "l1", "lpips", "fit", "seed", "mode")
    names += ("blur", "blur_kernel", "gray", "noise_sigma", "mask")
    settings = {k: getattr(args, k) for k in names}
    successes = 0
    for i, (path, lr) in enumerate(tqdm.tqdm(inputs, unit="image", disable=None)):
        known = masks[lr.shape[0]]
        op = operator(args, G.im_size // lr.shape[0], known, kernel)
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
