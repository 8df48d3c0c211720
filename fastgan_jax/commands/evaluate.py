"""FID and KID of a run's EMA samples against an image folder.

    fastgan-evaluate --workdir RUN [--data DIR] [--n 5000] [--step STEP | --step all]
    python -m fastgan_jax.commands.evaluate ...  (the same)

Real images get the training preprocessing (the run's im_size, aspect and
background); their Inception features are cached per folder and size.
Shows progress, prints the figures and writes them as JSON (default
RUN/eval/fid_<step>.json; with --data, fid_<step>_<data>-<hash>.json).
`--step all` evaluates every kept checkpoint in one process: the Inception
compiled once, the real images' features computed once (each checkpoint
reads them back from their cache).
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import time
import warnings

import jax

from fastgan_jax import data
from fastgan_jax.commands import launch
from fastgan_jax.metrics import inception
from fastgan_jax.train import runs

# Below this many images on either side FID and KID are dominated by sampling noise (FID's covariance of
# 2048-d features is then estimated from a handful of points); the figures are printed with a warning.
FEW_IMAGES = 50


def evaluate(workdir, *, data_source=None, n=5000, step=None, seed=0, cache_dir=None, progress=False):
    """{'fid', 'kid', ...} of the run's EMA generator against its data (or `data_source`).

    `progress`: show progress bars (stderr) for the real and the generated images' features.
    """
    run = runs.load_run(workdir, step)  # a clear error when there is no run
    G, variables, cfg, step = run.generator, run.g_variables, run.config, run.step
    source = data_source or cfg["data"]["source"]
    t0 = time.perf_counter()
    real = inception.real_features(
        source,
        cfg["model"]["im_size"],
        aspect=cfg["data"]["aspect"],
        background=tuple(cfg["data"]["background"]),
        cache_dir=cache_dir,
        progress="real images" if progress else None,
    )
    fake = inception.generated_features(
        G, variables, n, jax.random.key(seed), progress="generated images" if progress else None
    )
    if min(n, len(real)) < FEW_IMAGES:
        warnings.warn(
            f"FID and KID from {n} generated and {len(real)} real images are mostly noise (fewer than {FEW_IMAGES})",
            stacklevel=2,
        )
    return {
        "step": int(step),
        "fid": inception.fid(fake, real),
        "kid": inception.kid(fake, real),
        "n_generated": int(n),
        "n_real": int(len(real)),
        "data": str(source),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def result_path(workdir, step: int, data_source=None) -> pathlib.Path:
    """RUN/eval/fid_<step>.json against the run's own data; fid_<step>_<data>.json against another source, named
    by its folder (or TFDS name) and a hash of its path, so that evaluations against different data never
    overwrite each other."""
    name = f"fid_{step}"
    if data_source:
        spec = str(data_source)
        resolved = spec if spec.startswith("tfds:") else str(pathlib.Path(spec).expanduser().resolve())
        label = re.sub(r"[^A-Za-z0-9_.-]+", "-", pathlib.PurePath(resolved.rstrip("/")).name or resolved).strip("-")
        name += f"_{label}-{hashlib.sha256(os.fsencode(resolved)).hexdigest()[:8]}"
    return pathlib.Path(workdir) / "eval" / f"{name}.json"


def _summary(result: dict) -> str:
    return (
        f"step {result['step']}: FID {result['fid']:.2f}  KID {1000 * result['kid']:.2f}e-3  "
        f"({result['n_generated']} samples vs {result['n_real']} real images from {result['data']})"
    )


def main(argv=None) -> None:
    """The `fastgan-evaluate` command."""
    p = argparse.ArgumentParser(prog="fastgan-evaluate", description=__doc__, formatter_class=launch.HelpFormatter)
    p.add_argument("--workdir", required=True, help="run folder written by fastgan-train / train.py")
    p.add_argument("--data", default=None, help="real images (None: the run's --data)")
    p.add_argument("--n", type=int, default=5000, help="generated samples (about 6 min per 500 on two CPU cores)")
    p.add_argument("--step", default=None, help="checkpoint step, or `all`: every kept checkpoint (None: the latest)")
    p.add_argument("--seed", type=int, default=0, help="draws the generated samples' latents and noise")
    p.add_argument(
        "--out",
        default=None,
        help="JSON output (None: RUN/eval/fid_<step>.json; with --data, fid_<step>_<data>-<hash>.json)",
    )
    args = p.parse_args(argv)
    if args.n < 2:
        p.error(f"--n {args.n}: FID and KID need at least 2 generated samples")
    if args.step not in (None, "all"):
        if not (args.step.isascii() and args.step.isdigit()):  # "-1", "x", "²": no checkpoint step
            p.error(f"--step {args.step}: give a checkpoint step >= 0 or `all` (default: the latest)")
        args.step = int(args.step)
    if args.step == "all" and args.out:
        p.error("--out names one file: with --step all each checkpoint's figures go to RUN/eval/fid_<step>.json")
    try:
        steps = runs.checkpoint_steps(args.workdir) if args.step == "all" else [args.step]
        for step in steps:
            result = evaluate(args.workdir, data_source=args.data, n=args.n, step=step, seed=args.seed, progress=True)
            out = pathlib.Path(args.out) if args.out else result_path(args.workdir, result["step"], args.data)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
            print(f"{_summary(result)}; wrote {out}", flush=True)
    except (FileNotFoundError, data.DataError, ValueError) as e:  # ValueError: a damaged checkpoint
        launch.fail(str(e))


if __name__ == "__main__":
    main()
