"""PSNR against LPIPS per task from benchmarks/restore_heldout.py's JSON: the fidelity knob's curves (PIL only).

    python benchmarks/plot_restoration.py runs/robust8.json --reference runs/ref8.json --png curves.png

One panel per task: the classical baseline (bicubic), the reference run's
methods (e.g. today's exact-mode ILO, red) and the main run's methods
(blue), each joined to its knob points (rows METHOD_fW[_inI]) in the order
given by --fidelity: realism (low LPIPS) at one end, PSNR at the other. Also prints
one Markdown table per task (method, PSNR, SSIM, LPIPS, obs. MSE). Numbers
only: no image of the data set is drawn.
"""

import argparse
import json
import pathlib

from PIL import Image, ImageDraw

BASELINE, REFERENCE, OURS = (90, 90, 90), (200, 60, 40), (30, 90, 200)


def points(report: dict, task: str) -> dict:
    """method -> (LPIPS, PSNR) of one task of a report."""
    rows = report["tasks"].get(task, {})
    return {m: (s["lpips_alex"], s["psnr"]) for m, s in rows.items() if isinstance(s, dict)}


def panel(draw, box, title, groups) -> None:
    """One task's axes at box (left, top, width, height): groups [(colour, [(label, (lpips, psnr))], joined)]."""
    left, top, w, h = box
    xy = [p for _, pts, _ in groups for _, p in pts]
    lo_x, hi_x = min(x for x, _ in xy) - 0.02, max(x for x, _ in xy) + 0.02
    lo_y, hi_y = min(y for _, y in xy) - 0.3, max(y for _, y in xy) + 0.3

    def at(p):
        return left + (p[0] - lo_x) / (hi_x - lo_x) * w, top + h - (p[1] - lo_y) / (hi_y - lo_y) * h

    draw.rectangle((left, top, left + w, top + h), outline=(180, 180, 180))
    draw.text((left + 5, top + 3), title, fill=(0, 0, 0))
    draw.text((left, top + h + 4), f"LPIPS {lo_x:.2f}", fill=(0, 0, 0))
    draw.text((left + w - 70, top + h + 4), f"{hi_x:.2f}", fill=(0, 0, 0))
    draw.text((left - 55, top), f"PSNR {hi_y:.1f}", fill=(0, 0, 0))
    draw.text((left - 55, top + h - 10), f"{lo_y:.1f}", fill=(0, 0, 0))
    for colour, pts, joined in groups:
        where = [at(p) for _, p in pts]
        if joined and len(where) > 1:
            draw.line(where, fill=colour, width=2)
        for (label, _), (x, y) in zip(pts, where, strict=True):
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
            draw.text((x + 5, y - 12), label, fill=colour)


def table(task: str, report: dict, reference: dict | None) -> str:
    """Markdown rows of one task: the baseline, the reference's methods, the report's methods."""
    lines = [f"| {task} | PSNR | SSIM | LPIPS (alex) | obs. MSE |", "|---|---|---|---|---|"]
    sources = [("", report)] if reference is None else [("", report), ("exact ", reference)]
    for prefix, rep in sources:
        for m, s in rep["tasks"].get(task, {}).items():
            if isinstance(s, dict) and not (prefix and m == "baseline"):
                lines.append(
                    f"| {prefix}{m} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['lpips_alex']:.3f} | {s['obs_mse']:.1e} |"
                )
    return "\n".join(lines)


def curves(methods: dict, colour, prefix: str = "", knob_labels: bool = True) -> list:
    """`panel`'s groups of one run: a point per method, joined to its knob points (METHOD_fW[_inI]) in order,
    labelled fW[_inI] unless `knob_labels` is False."""
    groups = []
    for method in [m for m in methods if "_f" not in m]:
        knob = [
            (m.removeprefix(method + "_") if knob_labels else "", p)
            for m, p in methods.items()
            if m.startswith(method + "_f")
        ]
        groups.append((colour, [(prefix + method, methods[method]), *knob], bool(knob)))
    return groups


def plot(report: dict, reference: dict | None, path, width=420, height=300) -> None:
    tasks = list(report["tasks"])
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    img = Image.new("RGB", (cols * width, rows * height), "white")
    draw = ImageDraw.Draw(img)
    for i, task in enumerate(tasks):
        ours = points(report, task)
        groups = [(BASELINE, [("bicubic", ours.pop("baseline"))], False)]
        if reference is not None:
            ref = points(reference, task)
            ref.pop("baseline", None)
            groups += curves(ref, REFERENCE, "exact ", knob_labels=False)  # the same points as ours: unlabelled
        groups += curves(ours, OURS)
        box = (60, 25, width - 90, height - 60)
        panel(draw, (box[0] + (i % cols) * width, box[1] + (i // cols) * height, *box[2:]), task, groups)
    img.save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", help="restore_heldout.py's --json")
    p.add_argument("--reference", help="another run's --json on the same images (e.g. the exact mode)")
    p.add_argument("--png", help="the curves' PNG to write")
    args = p.parse_args()
    report = json.loads(pathlib.Path(args.report).read_text())
    reference = json.loads(pathlib.Path(args.reference).read_text()) if args.reference else None
    for task in report["tasks"]:
        print(table(task, report, reference), end="\n\n")
    if args.png:
        plot(report, reference, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
