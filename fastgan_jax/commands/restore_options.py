"""The options of the restoration commands (`fastgan-upscale`, `fastgan-evaluate-sr`) and what they parse to:
the search (`pulse.Search`, the robust mode), the degradation (`degrade`), ILO's layers, the tuning and the
fidelity knob. Each default is written once, in the value it fills.
"""

import argparse
import pathlib

import jax.numpy as jnp
import numpy as np

from fastgan_jax.sr import degrade, ilo, pulse, tune
from fastgan_jax.sr import files as sr_files


def number(kind, test, what):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


POSITIVE_INT = number(int, lambda v: v >= 1, "at least 1")
POSITIVE = number(float, lambda v: v > 0, "> 0")
NON_NEGATIVE = number(float, lambda v: v >= 0, ">= 0")
NON_NEGATIVE_INT = number(int, lambda v: v >= 0, ">= 0")


def add_search_options(p: argparse.ArgumentParser) -> None:
    """--restarts, --steps, --eps, --noise, --l1, --lpips: the search's settings, defaults from `pulse.Search`."""
    default = pulse.Search()
    p.add_argument("--restarts", type=POSITIVE_INT, default=default.restarts, help="candidates searched per input")
    p.add_argument("--steps", type=POSITIVE_INT, default=default.steps, help="Adam steps per candidate")
    p.add_argument("--eps", type=POSITIVE, default=default.eps, help="success threshold on the LR MSE ([0, 1] scale)")
    p.add_argument(
        "--noise", default=default.noise, choices=pulse.NOISE_MODES, help="the noise maps: searched, drawn once, or 0"
    )
    p.add_argument("--l1", type=NON_NEGATIVE, default=default.l1, help="weight of an extra L1 term")
    p.add_argument(
        "--lpips",
        type=NON_NEGATIVE,
        default=default.lpips,
        help="weight of an LPIPS-VGG term (GAN inversion, factor 1 only)",
    )


MODES = ("robust", "exact")


def add_mode_options(p: argparse.ArgumentParser, default: str) -> None:
    """--mode, --floor, the knob's --fidelity, --fidelity-k, --fidelity-input and the tuning's --tune-steps,
    --tune-radius, --tune-lr."""
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
        type=NON_NEGATIVE,
        default=None,
        help=f"the observation's error floor (MSE, [0, 1] scale): fits within it are not improved on "
        f"(default {pulse.ROBUST.floor:g} in robust mode, 0 in exact mode)",
    )
    knob = pulse.ROBUST_FIDELITY
    p.add_argument(
        "--fidelity",
        type=number(float, lambda v: 0 <= v <= 1, "in [0, 1]"),
        default=None,
        help=f"the answer: (1 - W) x the best candidate + W x the mean of the --fidelity-k best (0: the best "
        f"candidate, realistic; 1: the mean, higher PSNR; default {knob.weight:g} in robust mode, 0 in exact mode)",
    )
    p.add_argument(
        "--fidelity-k",
        type=NON_NEGATIVE_INT,
        default=None,
        help=f"--fidelity's mean takes the k best candidates (0: all; default {knob.k} in robust mode, 0 in exact)",
    )
    p.add_argument(
        "--fidelity-input",
        type=number(float, lambda v: 0 <= v <= 1, "in [0, 1]"),
        default=None,
        help=f"the share of the input's own bicubic upsampling in the answer (0: none; more: PSNR towards and past "
        f"bicubic's, realism down; RGB inputs without a mask; default {knob.input:g} in robust mode, 0 in exact)",
    )
    p.add_argument(
        "--tune-steps",
        type=NON_NEGATIVE_INT,
        default=0,
        help="after the search, tune the generator per input for this many steps (0: no tuning)",
    )
    p.add_argument(
        "--tune-radius",
        type=POSITIVE,
        default=tune.Tuning.radius,
        help="--tune-steps: the largest change of each weight tensor, relative to its norm",
    )
    p.add_argument("--tune-lr", type=POSITIVE, default=tune.Tuning.lr, help="--tune-steps: Adam's learning rate")


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


def parse_fidelity(args) -> dict:
    """--fidelity, --fidelity-k and --fidelity-input as the `candidates.Fidelity` fields given: `pulse.restore`
    takes the others from the search's default for the input's operator (`pulse.fidelity_for`)."""
    given = {"weight": args.fidelity, "k": args.fidelity_k, "input": args.fidelity_input}
    return {k: v for k, v in given.items() if v is not None}


def add_degradation_options(p: argparse.ArgumentParser) -> None:
    """--blur, --gray, --noise-sigma: how the input was degraded besides the factor (`degrade.Degradation`)."""
    p.add_argument(
        "--blur",
        type=NON_NEGATIVE,
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
        type=NON_NEGATIVE,
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


def seen(op, images):
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
        type=POSITIVE,
        default=None,
        help=f"--layers: the largest mean absolute change of a feature value in a stage (the L1 ball; default "
        f"{pulse.ROBUST_LAYERS.radii[0]:g} in robust mode, {ilo.Layers.radii[0]:g} in exact mode)",
    )
    p.add_argument("--layer-steps", type=POSITIVE_INT, default=ilo.Layers.steps, help="--layers: Adam steps per stage")
    p.add_argument("--layer-lr", type=POSITIVE, default=ilo.Layers.lr, help="--layers: Adam's learning rate")


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
