"""Our figures beside the official PyTorch FastGAN's, from one GPU run, as Markdown tables.

    python benchmarks/compare.py --ours out/train_speed.jsonl --ours-pulse out/upscale_speed.jsonl \\
        --official out/official.jsonl
    python benchmarks/compare.py --memory benchmarks/memory_cpu.jsonl   # README "Memory"

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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory", default=None, help="train_speed.py --compile-only --json output: print its table")
    p.add_argument("--ours", default=None, help="train_speed.py --json output")
    p.add_argument("--ours-pulse", default=None, help="upscale_speed.py --json output")
    p.add_argument("--official", default=None, help="bench_official.py output (training and PULSE lines)")
    args = p.parse_args(argv)
    if args.memory:
        print("\n".join(memory_table(read_jsonl(args.memory))))
        return
    if not (args.ours and args.official):
        p.error("give --memory FILE, or --ours FILE and --official FILE")
    official = read_jsonl(args.official)
    print("\n".join(train_table(read_jsonl(args.ours), official)))
    if args.ours_pulse:
        print()
        print("\n".join(pulse_table(read_jsonl(args.ours_pulse), official)))


if __name__ == "__main__":
    main()
