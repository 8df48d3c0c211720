"""Restoration through a trained generator, measured on images it never saw: PULSE, ILO and a classical baseline.

    pip install scikit-image   # the inpainting baseline (biharmonic)
    python benchmarks/restore_heldout.py --data path/to/pokemon-256 --workdir runs/heldout \\
        --n 16 --layer-radius 0.1,0.3 --json runs/heldout.json --figures runs/figures

The prior: `cpu_quick`'s networks at 64 px trained on the CPU (--steps,
EMA 0.995) on the data's images but a fixed tenth (every tenth file in name
order), which is held out and used only here. A finished run in --workdir is
reused (train.py's resume rule); `--prior RUN` restores with another run
trained on the same split instead (gpu_session.sh's 256 px quality run). Then, for every task, every held-out image is
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
| PIPELINE_x4, PIPELINE_x8 | a pipeline of `sr/realistic.py`; the search assumes x4, x8 area | bicubic |

The pipelines (`fastgan_jax/sr/realistic.py`; `--tasks real` runs all of
them at x4 and x8) work on uint8 images with PIL and NumPy, seeded per
image: PIL's antialiased bicubic and Lanczos resizing, JPEG at quality 75
and 50 after bicubic (a web thumbnail), a Gaussian blur of unknown width
before bicubic, Poisson-Gaussian sensor noise, and Real-ESRGAN's
second-order chain (blur, resize, noise, JPEG, twice).

These "real" inputs come from pipelines the search does not model, as a
real thumbnail does, so no image degrades exactly to them, not even the
true one. Reported per task and method: the observation's error (obs. MSE:
the MSE of the restored image's degradation by the assumed operator
against the input, over the known pixels, on the [0, 1] scale; beside it
the true image's own, the error floor of a perfect restoration), the share
within eps, PSNR, SSIM and LPIPS (AlexNet) against the true image. Within
eps means obs. MSE <= eps + floor per image, where the floor is what the
truth itself scores: sigma^2 for the noise task, 0 for the other synthetic
tasks (as before), and for a real input the MSE between the area-downsampled
true image and the input. So a result within eps fits the input about as
well as the truth does; one far below the floor fits the pipeline's
artifacts (JPEG blocks, noise) that the truth does not have. The table
prints as Markdown; --json is written after every task (with each task's
seconds); --figures writes one PNG per task (rows: input, baseline, PULSE,
ILO for each radius, truth; the first 8 held-out images).
Figures of pokemon-256 show its copyrighted images: keep them out of the
repository (`runs/` is ignored).

ILO's first stage is PULSE's own search with the same keys, so PULSE's
answer is read from it (`latent_best`) rather than searched again. Cost on a
2-core CPU: the prior about 21 minutes (4000 steps); then, per task and ILO
radius, 8 to 10 minutes per 16 images (8 restarts x 100 latent steps and 3
stages x 50 feature steps; x4 and x8 on all 71 held-out pokemon-256 images:
44 and 40 minutes).
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
from fastgan_jax.configs import cpu_quick

from fastgan_jax import data, visual
from fastgan_jax import images as images_lib
from fastgan_jax.metrics import similarity
from fastgan_jax.metrics.lpips import lpips_distance
from fastgan_jax.sr import baseline, candidates, degrade, ilo, pulse, realistic, tune
from fastgan_jax.train import runs, trainer

SIZE = 64
SYNTHETIC = ("x4", "x8", "blur_x4", "inpaint", "colourise", "denoise")
REAL = [f"{pipeline}_x{factor}" for pipeline in realistic.PIPELINES for factor in (4, 8)]
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
    cfg.data.source, cfg.train.num_steps, cfg.optim.ema_decay = str(train_folder), steps, 0.995
    cfg.log.update(sample_every=1000, checkpoint_every=1000)
    trainer.train_and_evaluate(cfg, workdir)
    return runs.load_run(workdir)


def tasks(hr_u8, wanted) -> dict:
    """name -> (operator the search assumes, observation in [-1, 1], classical baseline [N, 64, 64, 3] in
    [-1, 1], [N] error floor added to eps), for the task names in `wanted`."""
    hr = images_lib.to_float(jnp.asarray(hr_u8))
    n = len(hr)
    known = degrade.block_mask(jax.random.key(0), n, SIZE, blocks=SIZE // BLOCK, unknown=0.5)
    ops = {
        "x4": degrade.Downsample(4),
        "x8": degrade.Downsample(8),
        "blur_x4": degrade.chain(degrade.GaussianBlur(1.5), degrade.Downsample(4)),
        "inpaint": degrade.Mask(known),
        "colourise": degrade.Grayscale(),
        "denoise": degrade.Noise(NOISE),
    }
    out = {}
    for name in wanted:
        if name in ops:  # synthetic: made by the operator that the search assumes
            op = ops[name]
            y = degrade.observe(op, hr, jax.random.key(1))
            floor = jnp.full((n,), degrade.noise_variance(op))
        else:  # real: made by a pipeline the search does not know; the search still assumes area downsampling
            pipeline, factor = name.rsplit("_x", 1)
            op = degrade.Downsample(int(factor))
            y = images_lib.to_float(jnp.asarray(realistic.make(pipeline, hr_u8, SIZE // int(factor))))
            floor = degrade.observed_mse(op, hr, y)  # the true image's own error under the assumed operator
        out[name] = (op, y, baseline.classical(op, y, SIZE), floor)
    return out


def latent_best(G, variables, res, op, y) -> jax.Array:
    """[B, 64, 64, 3]: the best of a result's latent-search candidates (its latents and noise maps, which
    ILO keeps from its first stage), rendered again without the optimised features: plain PULSE's answer."""
    images = candidates.render(G, variables, res.replace(features=None))
    b, r = images.shape[:2]
    flat = images.reshape(b * r, *images.shape[2:])
    err = degrade.observed_mse(degrade.repeat(op, r), flat, jnp.repeat(y, r, axis=0)).reshape(b, r)
    return images[jnp.arange(b), jnp.argmin(err, axis=1)]


def search(G, variables, op, y, ilos, settings: pulse.Search, batch=8, *, tuning=None, fidelity=()) -> dict:
    """method -> the best candidate per image, [N, 64, 64, 3], for "pulse" and every ILO setting in `ilos`;
    for each `candidates.Fidelity` f in `fidelity`, "METHOD_" + knob_name(f) too: its estimate from the same
    search.

    ILO's first stage is PULSE's own search with the same keys, so with `ilos` PULSE's answer is read from
    the first ILO result (`latent_best`) rather than searched again (not with the robust loss, whose
    candidates are ranked by their score). Images go `batch` at a time (the same results: candidates never
    interact).
    """
    out = {"pulse": [], **{m: [] for m in ilos}}
    out |= {f"{m}_{knob_name(f)}": [] for m in (ilos or ["pulse"]) for f in fidelity}
    for i in range(0, len(y), batch):
        chunk_op, chunk_y = degrade.take(op, i, i + batch), y[i : i + batch]
        same = {"key": jax.random.key(0), "search": settings, "image_offset": i, "tuning": tuning}
        res = None
        for m, layers in ilos.items():
            res = pulse.restore(G, variables, chunk_y, chunk_op, **same, layers=layers)
            out[m].append(res.best)
            for f in fidelity:
                out[f"{m}_{knob_name(f)}"].append(candidates.estimate(res.images, res.score, f, chunk_y))
        if res is None:
            res = pulse.restore(G, variables, chunk_y, chunk_op, **same)
            out["pulse"].append(res.best)
            for f in fidelity:
                out[f"pulse_{knob_name(f)}"].append(candidates.estimate(res.images, res.score, f, chunk_y))
        elif settings.loss == "mse" and tuning is None:
            out["pulse"].append(latent_best(G, variables, res, chunk_op, chunk_y))
    return {m: jnp.concatenate(best) for m, best in out.items() if best}


def knob_name(f: candidates.Fidelity) -> str:
    """'fW' for the knob's weight W, 'fW_inI' with a share I of the input."""
    return f"f{f.weight:g}" + (f"_in{f.input:g}" if f.input else "")


def parse_knobs(text: str, k: int) -> list[candidates.Fidelity]:
    """--fidelity's 'W' or 'W:I' items as `candidates.Fidelity(W, k, I)`."""
    knobs = []
    for item in filter(None, text.split(",")):
        weight, _, share = item.partition(":")
        knobs.append(candidates.Fidelity(float(weight), k, float(share or 0)))
    return knobs


def scores(op, x, y, hr, lpips, eps, floor) -> dict:
    """Means over the images: within eps (the observation's MSE <= eps + `floor`), the observation's MSE, PSNR,
    SSIM and LPIPS against the truth."""
    err = degrade.observed_mse(op, x, y)
    return {
        "within_eps": float(jnp.mean(err <= eps + floor)),
        "obs_mse": float(jnp.mean(err)),
        "psnr": float(jnp.mean(similarity.psnr(x, hr))),
        "ssim": float(jnp.mean(similarity.ssim(x, hr))),
        "lpips_alex": float(jnp.mean(lpips(x, hr))),
    }


TABLE_HEAD = (
    "| task | method | within eps | obs. MSE (truth's) | PSNR | SSIM | LPIPS (alex) |\n|---|---|---|---|---|---|---|"
)


def table_row(task, method, s, truth_obs_mse) -> str:
    """One Markdown row of `scores`; the observation's MSE beside the true image's own."""
    return (
        f"| {task} | {method} | {s['within_eps']:.2f} | {s['obs_mse']:.1e} ({truth_obs_mse:.1e}) | {s['psnr']:.2f} "
        f"| {s['ssim']:.3f} | {s['lpips_alex']:.3f} |"
    )


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
    p.add_argument(
        "--prior",
        default=None,
        help="a finished run trained on the same split's training files, restored with instead of the cpu_quick "
        "prior; its size is the restoration's (--workdir then holds only the held-out links)",
    )
    p.add_argument("--n", type=int, default=None, help="the first n held-out images (default: all)")
    p.add_argument("--eps", type=float, default=pulse.Search.eps)
    p.add_argument("--restarts", type=int, default=pulse.Search.restarts, help="the latent search's candidates")
    p.add_argument("--search-steps", type=int, default=pulse.Search.steps, help="the latent search's Adam steps")
    p.add_argument("--layers", default="8,16,32", help="ILO's stages ('': PULSE alone)")
    p.add_argument(
        "--layer-radius", default=None, help=f"ILO's L1 radius (default {ilo.Layers.radii[0]}); several: a sweep"
    )
    p.add_argument("--layer-steps", type=int, default=ilo.Layers.steps, help="ILO's Adam steps per stage")
    p.add_argument(
        "--tasks",
        default=",".join(SYNTHETIC),
        help=f"comma-separated, in order: {', '.join(SYNTHETIC)} (made by the operator the search assumes) and "
        f"PIPELINE_x4 or PIPELINE_x8 for a pipeline of fastgan_jax/sr/realistic.py ({', '.join(realistic.PIPELINES)}); "
        "'real': all of those at x4 and x8",
    )
    p.add_argument(
        "--mode",
        default="exact",
        choices=("exact", "robust"),
        help="exact: the search as given (PULSE's loss, the assumed operator); robust: pulse.ROBUST's loss and "
        "floor, the operator made blind (degrade.blind) and ILO's radius pulse.ROBUST_LAYERS's unless "
        "--layer-radius is given; the methods are then named robust_*",
    )
    p.add_argument(
        "--fidelity",
        default="",
        help="comma-separated knob points W or W:I (candidates.Fidelity(W, --fidelity-k, I)): rows METHOD_fW "
        "(the blend of the best candidate and the mean of the --fidelity-k best, weight W in [0, 1]) or "
        "METHOD_fW_inI (that, with a share I of the input's bicubic upsampling), from the same search (no extra "
        "search)",
    )
    p.add_argument("--fidelity-k", type=int, default=0, help="the knob's mean takes the k best candidates (0: all)")
    p.add_argument("--tune-steps", type=int, default=0, help="tune the generator per image after ILO (0: no)")
    p.add_argument("--tune-radius", type=float, default=tune.Tuning.radius, help="the tuning's relative radius")
    p.add_argument("--json", default=None, help="write the figures here (after every task)")
    p.add_argument("--figures", default=None, help="write one PNG per task in this folder")
    args = p.parse_args()
    wanted = [t for name in args.tasks.split(",") for t in (REAL if name == "real" else [name])]
    if unknown := [t for t in wanted if t not in SYNTHETIC and t not in REAL]:
        p.error(f"--tasks: unknown {', '.join(unknown)}; see --help")
    workdir = pathlib.Path(args.workdir)
    train_files, held_out = split(args.data)
    if args.prior:  # e.g. gpu_session.sh's 256 px quality run, trained on `split`'s training files
        global SIZE
        run = runs.load_run(args.prior)
        SIZE = run.generator.im_size
    else:
        run = train_prior(linked(train_files, workdir / "train_images"), workdir, args.steps)
    hr_u8 = data.load(str(linked(held_out, workdir / "held_out_images")), SIZE)[: args.n]
    hr = images_lib.to_float(jnp.asarray(hr_u8))
    resolutions = tuple(int(r) for r in args.layers.split(",") if r)
    robust = args.mode == "robust"
    default_radius = (pulse.ROBUST_LAYERS if robust else ilo.Layers).radii[0]
    radii = [float(r) for r in (args.layer_radius or str(default_radius)).split(",")]
    ilos = {  # none with --layers '': PULSE alone
        ("ilo" if len(radii) == 1 else f"ilo_r{r:g}"): ilo.Layers(resolutions, (r,), args.layer_steps)
        for r in (radii if resolutions else [])
    }
    lpips = lpips_distance("alex")
    settings = pulse.Search(restarts=args.restarts, steps=args.search_steps, eps=args.eps)
    if robust:
        settings = dataclasses.replace(settings, loss=pulse.ROBUST.loss, floor=pulse.ROBUST.floor)
    tuning = tune.Tuning(steps=args.tune_steps, radius=args.tune_radius) if args.tune_steps else None
    fidelity = parse_knobs(args.fidelity, args.fidelity_k)
    report = {
        "n": len(hr),
        "train_images": len(train_files),
        "steps": args.steps,
        "search": dataclasses.asdict(settings),
        "layers": {name: dataclasses.asdict(layers) for name, layers in ilos.items()},
        "mode": args.mode,
        "tuning": tuning and dataclasses.asdict(tuning),
        "fidelity": [dataclasses.asdict(f) for f in fidelity],
        "tasks": {},
    }
    print(f"{len(train_files)} training images, {len(hr)} held out; prior: {run.workdir} step {run.step}")
    print(TABLE_HEAD, flush=True)
    for name, (op, y, classical, floor) in tasks(hr_u8, wanted).items():
        t0 = time.perf_counter()
        found = search(
            run.generator,
            run.g_variables,
            degrade.blind(op) if robust else op,
            y,
            ilos,
            settings,
            tuning=tuning,
            fidelity=fidelity,
        )
        methods = {"baseline": classical, **{(f"robust_{m}" if robust else m): x for m, x in found.items()}}
        report["tasks"][name] = {m: scores(op, x, y, hr, lpips, args.eps, floor) for m, x in methods.items()}
        report["tasks"][name]["truth_obs_mse"] = float(jnp.mean(floor))
        report["tasks"][name]["seconds"] = round(time.perf_counter() - t0)
        for m, s in report["tasks"][name].items():
            if isinstance(s, dict):
                print(table_row(name, m, s, float(jnp.mean(floor))), flush=True)
        if args.figures:
            rows = [x for m, x in methods.items() if m != "baseline" and "_f" not in m]
            rows = [classical, *rows, hr]
            figure(y, rows, pathlib.Path(args.figures) / f"restore_{name}.png")
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
