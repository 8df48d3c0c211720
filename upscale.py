"""PULSE super-resolution with a FastGAN generator.

    python upscale.py --workdir RUN --input LR.png --out DIR
    python upscale.py --official all_50000.pth --input LR_DIR --out DIR --restarts 8 --steps 100

Per input NAME: NAME_sr.png (the best candidate), NAME_candidates/rK.png,
NAME_compare.png (LR, bicubic, the candidates, the best one downscaled again)
and NAME.json (each candidate's LR MSE and success flag, the time taken).
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np
import tqdm

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from fastgan_jax import convert, pulse, superres, training  # noqa: E402
from fastgan_jax.downsample import DOWNSAMPLERS  # noqa: E402


def load_generator(args):
    if args.workdir:
        return training.load_generator(args.workdir, args.step)
    G, variables = convert.generator_from_official(args.official)
    if args.recalibrate:  # the official g_ema comes with g's running statistics
        stats = training.recalibrate(
            G, variables["params"], variables["batch_stats"], jax.random.key(args.seed), num_samples=args.recalibrate
        )
        variables = {"params": variables["params"], "batch_stats": stats}
    return G, variables


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workdir", help="a run of train.py (its EMA generator)")
    src.add_argument("--official", help="an official FastGAN checkpoint (.pth or .npz)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step of --workdir (default: latest)")
    p.add_argument("--input", required=True, help="an LR image or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eps", type=float, default=2e-3, help="success threshold on the LR MSE ([0, 1] scale)")
    p.add_argument("--downsample", default="area", choices=sorted(DOWNSAMPLERS), help="how the LR was made")
    p.add_argument("--noise", default="trainable", choices=pulse.NOISE_MODES)
    p.add_argument("--l1", type=float, default=0.0, help="weight of an extra L1 term")
    p.add_argument("--fit", default="none", choices=superres.FITS, help="non-square or odd-sized LR: crop or pad")
    p.add_argument("--recalibrate", type=int, default=2048, help="--official: z for BatchNorm recalibration (0: off)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    try:
        inputs = superres.find_inputs(args.input)
        G, variables = load_generator(args)
        lrs = [superres.load_lr(f, G.im_size, args.fit) for f in inputs]
    except (superres.InputError, FileNotFoundError, convert.OfficialCheckpointError) as e:
        sys.exit(f"error: {e}")
    print(f"{len(inputs)} input(s), generator {G.im_size}px, {args.restarts} restarts x {args.steps} steps")
    key = jax.random.key(args.seed)
    settings = {k: getattr(args, k) for k in ("restarts", "steps", "eps", "downsample", "noise", "l1", "seed")}
    successes = 0
    for i, (path, lr) in enumerate(tqdm.tqdm(list(zip(inputs, lrs, strict=True)), unit="image", disable=None)):
        t0 = time.perf_counter()
        res = pulse.upscale(
            G,
            variables,
            lr[None],
            key=key,
            restarts=args.restarts,
            steps=args.steps,
            eps=args.eps,
            noise=args.noise,
            downsample=args.downsample,
            l1_weight=args.l1,
            image_offset=i,
        )
        res = jax.device_get(res)
        seconds = time.perf_counter() - t0
        best_down = np.asarray(DOWNSAMPLERS[args.downsample](res.best, lr.shape[0]))[0]
        report = superres.write_outputs(
            args.out,
            path.stem,
            lr=lr,
            images=res.images[0],
            best=res.best[0],
            best_down=best_down,
            lr_mse=res.lr_mse[0],
            success=res.success[0],
            seconds=seconds,
            settings=settings,
        )
        successes += any(c["success"] for c in report["candidates"])
    print(f"done: {successes}/{len(inputs)} input(s) matched within eps {args.eps}; results in {args.out}")


if __name__ == "__main__":
    main()
