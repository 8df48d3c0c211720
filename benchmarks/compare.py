"""Our figures beside the official PyTorch FastGAN's, from one GPU run, as Markdown tables.

    python benchmarks/compare.py --ours out/train_speed.jsonl --ours-pulse out/upscale_speed.jsonl \\
        --official out/official.jsonl
    python benchmarks/compare.py --memory benchmarks/memory_cpu.jsonl   # docs/memory.md
    python benchmarks/compare.py --memory-gpu benchmarks/memory_gpu.jsonl   # docs/memory.md, per card

Reads the JSON lines of `train_speed.py --json`, `upscale_speed.py --json`
and `../shared/reference/official-bench/bench_official.py` (its other lines
are skipped), and prints one table for the training step and one for the
PULSE search: our img/s (or s per 100 steps) for every precision and remat
measured, the official's default variant (float32, TF32 convolutions) at the
same size, the ratio, and the peak memory of both. `benchmarks/RESULTS.md`
keeps these tables with the date, card and versions.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import targets  # noqa: E402

from fastgan_jax.train import memory  # noqa: E402

# Per card architecture, the precisions it runs fast, best first: bfloat16 needs no loss scale.
FAST = {6: ("float32",), 7: ("float16", "float32"), 8: ("bfloat16", "float16", "float32")}


def read_jsonl(path) -> list[dict]:
    """The JSON objects among the lines of `path` (other lines, e.g. a version banner, are skipped)."""
    rows = []
    for line in pathlib.Path(path).read_text().splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return rows


def _gib(x) -> str:
    return f"{x:.2f}" if x is not None else "n/a"


def train_table(ours: list[dict], official: list[dict]) -> list[str]:
    """Markdown rows: im_size, precision, remat, our img/s, the official's, the ratio, both peaks (GiB)."""
    ref = {r["im_size"]: r for r in official if r.get("variant") == "official"}
    lines = [
        "| im_size | precision | remat | ours img/s | official img/s | ratio | ours peak GiB | official peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ours:
        if "img_per_s" not in r:  # a --compile-only line
            continue
        o = ref.get(r["im_size"])
        ratio = f"{r['img_per_s'] / o['img_per_s']:.1f}x" if o else "n/a"
        lines.append(
            f"| {r['im_size']} | {r['precision']} | {r['remat']} | {r['img_per_s']:.1f} | "
            f"{o['img_per_s'] if o else 'n/a'} | {ratio} | {_gib(r.get('peak_gib'))} | "
            f"{_gib(o.get('peak_mem_GiB')) if o else 'n/a'} |"
        )
    return lines


def pulse_table(ours: list[dict], official: list[dict]) -> list[str]:
    """Markdown rows: im_size, precision, our s / 100 steps, the official's (float32), the ratio."""
    ref = {r["pulse_im_size"]: r for r in official if "pulse_im_size" in r and not r.get("amp_bf16")}
    lines = [
        "| im_size | precision | restarts | ours s/100 steps | official s/100 steps | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in ours:
        o = ref.get(r["im_size"])
        ratio = f"{o['s_per_100_steps'] / r['s_per_100_steps']:.1f}x" if o else "n/a"
        lines.append(
            f"| {r['im_size']} | {r['precision']} | {r['restarts']} | {r['s_per_100_steps']:.3f} | "
            f"{o['s_per_100_steps'] if o else 'n/a'} | {ratio} |"
        )
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    """Markdown rows of `train_speed.py --compile-only --json` lines: XLA's compiled GiB and GFLOP per step."""
    lines = [
        "| im_size | precision | remat | GiB (args + out + temp - aliased) | temp GiB | GFLOP/step |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = {k: v / 2**30 for k, v in r["memory_bytes"].items()}
        lines.append(
            f"| {r['im_size']} | {r['precision']} | {r['remat']} | {m['total']:.2f} | {m['temp']:.2f} | "
            f"{r['gflop_per_step']:.0f} |"
        )
    return lines


def gap_table(ours: list[dict], deviceless: list[dict]) -> list[str]:
    """Markdown rows: a setting's real peak on the GPU beside XLA's analysis on that GPU and the deviceless
    compile's for its target (train_speed.py --target), for the settings timed with a peak of their own."""
    lines = [
        "| im_size | precision | remat | real peak GiB | XLA on the GPU GiB | deviceless XLA:GPU GiB | target |",
        "|---|---|---|---|---|---|---|",
    ]
    key = ("im_size", "batch", "precision", "remat")
    for d in deviceless:
        for r in ours:
            if all(r.get(k) == d.get(k) for k in key) and r.get("peak_gib") is not None:
                for name, g in d.get("gpu", {}).items():
                    lines.append(
                        f"| {r['im_size']} | {r['precision']} | {r['remat']} | {r['peak_gib']:.2f} | "
                        f"{r['memory_bytes']['total'] / 2**30:.2f} | {g['memory_bytes']['total'] / 2**30:.2f} | "
                        f"{name} |"
                    )
    return lines


def _gpu_rows(rows: list[dict]) -> dict:
    """{(target, im_size, precision): {remat: total bytes}} of train_speed.py --target lines (batch 8 only)."""
    out = {}
    for r in rows:
        for name, g in r.get("gpu", {}).items():
            if "batch" in r and r["remat"] != memory.AUTO:
                out.setdefault((name, r["im_size"], r["precision"]), {})[r["remat"]] = g["memory_bytes"]
    return out


def _card(name: str) -> str:
    card, size = targets.describe(name)
    return f"{card.removeprefix('NVIDIA ').removeprefix('GeForce ')} ({size / 2**30:.0f} GiB)"


def _auto(name, figures) -> str:
    """What remat=auto takes on that card from these figures ('-' when even full does not fit)."""
    try:
        limit = targets.limit(targets.describe(name)[1])
        return memory.choose_remat(figures.__getitem__, limit, batch_size=8).remat
    except memory.StepDoesNotFitError:
        return "-"
    except KeyError:  # a setting not compiled yet
        return "?"


def gpu_memory_table(rows: list[dict]) -> list[str]:
    """Markdown rows: per card, size and precision, XLA:GPU's GiB for each remat and remat=auto's choice."""
    lines = [
        "| card | im_size | precision | none GiB | blocks GiB | full GiB | remat=auto takes |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, im_size, precision), figures in _gpu_rows(rows).items():
        gib = [f"{figures[r]['total'] / 2**30:.2f}" if r in figures else "n/a" for r in ("none", "blocks", "full")]
        lines.append(f"| {_card(name)} | {im_size} | {precision} | {' | '.join(gib)} | {_auto(name, figures)} |")
    return lines


def pulse_memory_table(rows: list[dict]) -> list[str]:
    """Markdown rows of upscale_speed.py --target lines: per card, the search's GiB (XLA:GPU, and the CPU's)."""
    lines = ["| card | im_size | precision | restarts | search GiB | CPU's GiB |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "restarts" not in r:
            continue
        for name, g in r.get("gpu", {}).items():
            lines.append(
                f"| {_card(name)} | {r['im_size']} | {r['precision']} | {r['restarts']} | "
                f"{g['memory_bytes']['total'] / 2**30:.2f} | {r['memory_bytes']['total'] / 2**30:.2f} |"
            )
    return lines


def recommendations(rows: list[dict]) -> list[str]:
    """Markdown rows: per card and size, the fastest setting that fits (the card's best precision, then the
    least recomputation), from XLA:GPU's figures."""
    table = _gpu_rows(rows)
    names = list(dict.fromkeys(name for name, _, _ in table))
    sizes = sorted({im_size for _, im_size, _ in table})
    lines = ["| card | " + " | ".join(f"{s} px" for s in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for name in names:
        cells = []
        for im_size in sizes:
            fits = [(p, _auto(name, table[name, im_size, p])) for p in _fast(name) if (name, im_size, p) in table]
            fits = [(p, r) for p, r in fits if r not in ("-", "?")]
            if fits:
                p, r = fits[0]
                cells.append(f"`{p}`, `remat={r}` ({table[name, im_size, p][r]['total'] / 2**30:.2f} GiB)")
            else:
                cells.append("does not fit")
        lines.append(f"| {_card(name)} | " + " | ".join(cells) + " |")
    return lines


def _fast(name) -> tuple:
    spec = (targets.FOLDER / f"{name}.txtpb").read_text()
    major = int(spec.split("cuda_compute_capability {")[1].split("major:")[1].split()[0])
    return FAST[min(major, 8)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory", default=None, help="train_speed.py --compile-only --json output: print its table")
    p.add_argument(
        "--memory-gpu",
        nargs="+",
        default=None,
        help="train_speed.py / upscale_speed.py --target --json outputs: per-card tables and recommendations",
    )
    p.add_argument("--ours", default=None, help="train_speed.py --json output")
    p.add_argument("--ours-pulse", default=None, help="upscale_speed.py --json output")
    p.add_argument("--official", default=None, help="bench_official.py output (training and PULSE lines)")
    p.add_argument(
        "--deviceless",
        default=None,
        help="train_speed.py --gpu-only --target output for settings in --ours: the real peak beside it",
    )
    args = p.parse_args(argv)
    if args.memory:
        print("\n".join(memory_table(read_jsonl(args.memory))))
        return
    if args.memory_gpu:
        rows = [r for path in args.memory_gpu for r in read_jsonl(path)]
        tables = [gpu_memory_table(rows), recommendations(rows), pulse_memory_table(rows)]
        print("\n\n".join("\n".join(t) for t in tables if len(t) > 2))
        return
    if not (args.ours and args.official):
        p.error("give --memory FILE, or --ours FILE and --official FILE")
    official = read_jsonl(args.official)
    print("\n".join(train_table(read_jsonl(args.ours), official)))
    if args.ours_pulse:
        print()
        print("\n".join(pulse_table(read_jsonl(args.ours_pulse), official)))
    if args.deviceless and pathlib.Path(args.deviceless).exists():
        print()
        print("\n".join(gap_table(read_jsonl(args.ours), read_jsonl(args.deviceless))))


if __name__ == "__main__":
    main()
