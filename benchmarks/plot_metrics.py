"""Loss curves of a run as a PNG (PIL only): python benchmarks/plot_metrics.py RUN/metrics.jsonl out.png"""

import json
import sys

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


if __name__ == "__main__":
    rows = [json.loads(line) for line in open(sys.argv[1])]
    plot([r for r in rows if "d_real" in r], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
