"""A run's curves from its metrics.jsonl (PIL only).

    python benchmarks/plot_metrics.py RUN/metrics.jsonl out.png     # the losses as a PNG
    python benchmarks/plot_metrics.py --fid-table RUN/metrics.jsonl [--batch 8]   # FID, KID against steps, time
    python benchmarks/plot_metrics.py --fid-table RUN/metrics.jsonl --evals RUN/eval   # checkpoints evaluated later

The table's time is the training's own (the sum of the logged intervals,
each `log_every * batch / img_per_s` seconds): compilation before the first
step is left out, the FID and KID evaluations between logs are in.
"""

import argparse
import json
import pathlib

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"d_real": (200, 30, 30), "d_fake": (30, 30, 200), "g": (30, 150, 30), "rec": (150, 100, 0)}


def plot(rows, path, width=900, height=300):
    keys = [k for k in COLORS if any(k in r for r in rows)]
    img = Image.new("RGB", (width, height * len(keys)), "white")
    draw = ImageDraw.Draw(img)
    for i, key in enumerate(keys):
        pts = np.array([(r["step"], r[key]) for r in rows if key in r], np.float64)
        top, left, w, h = i * height + 20, 60, width - 80, height - 50
        lo, hi = float(pts[:, 1].min()), float(pts[:, 1].max()) or 1.0
        hi = hi if hi > lo else lo + 1
        x = left + (pts[:, 0] - pts[0, 0]) / max(pts[-1, 0] - pts[0, 0], 1) * w
        y = top + h - (pts[:, 1] - lo) / (hi - lo) * h
        draw.rectangle((left, top, left + w, top + h), outline=(180, 180, 180))
        draw.line(list(zip(x.tolist(), y.tolist(), strict=True)), fill=COLORS[key], width=1)
        draw.text((left + 5, top + 3), f"{key}  (steps {int(pts[0, 0])}-{int(pts[-1, 0])})", fill=COLORS[key])
        draw.text((5, top), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((5, top + h - 10), f"{lo:.3g}", fill=(0, 0, 0))
    img.save(path)


def fid_table(rows, batch: int, evals: dict | None = None) -> str:
    """Markdown: step, training minutes so far, FID and KID at every evaluation of `rows`, and of `evals`
    ({step: fastgan-evaluate's JSON}: checkpoints evaluated after the run) at their steps (with the minutes
    of the last log at or before them)."""
    lines = ["| step | minutes | FID | KID x 1000 |", "|---|---|---|---|"]
    seconds, last = 0.0, 0
    evals = dict(evals or {})
    logged = {r["step"] for r in rows}
    rows = sorted([*rows, *({"step": s} for s in evals if s not in logged)], key=lambda r: r["step"])  # stable
    for r in rows:
        r = {**r, **{k: v for k, v in evals.pop(r["step"], {}).items() if k in ("fid", "kid")}}
        if "img_per_s" in r and r["img_per_s"] > 0:
            seconds += (r["step"] - last) * batch / r["img_per_s"]
            last = r["step"]
        if "fid" in r:
            kid = f"{1000 * r['kid']:.2f}" if "kid" in r else "n/a"
            lines.append(f"| {r['step']} | {seconds / 60:.1f} | {r['fid']:.2f} | {kid} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics", help="RUN/metrics.jsonl")
    p.add_argument("png", nargs="?", help="the losses' PNG to write")
    p.add_argument("--fid-table", action="store_true", help="print FID and KID against steps and time instead")
    p.add_argument("--batch", type=int, default=8, help="the run's batch size (for --fid-table's time)")
    p.add_argument("--evals", help="--fid-table: also RUN/eval's fid_<step>.json (fastgan-evaluate's results)")
    args = p.parse_args()
    rows = [json.loads(line) for line in open(args.metrics)]
    if args.fid_table:
        print(f"FID and KID against the training images ({args.metrics}):\n")
        evals = {}
        for path in sorted(pathlib.Path(args.evals).glob("fid_*.json")) if args.evals else ():
            result = json.loads(path.read_text())
            evals[result["step"]] = result
        print(fid_table(rows, args.batch, evals))
    elif args.png:
        plot([r for r in rows if "d_real" in r], args.png)
        print(f"wrote {args.png}")
    else:
        p.error("give the PNG to write, or --fid-table")


if __name__ == "__main__":
    main()
