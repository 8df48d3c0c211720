"""Decoded images per second of the streaming pipeline (`--config.data.stream_from=files`), beside what training eats.

    python benchmarks/data_speed.py --im-size 256 1024 --workers 1 2 0   # 0: every CPU core

Times `pipeline.batches` over `data.file_source(--data)` (default: the
embedded 512 px smileys, decoded, cropped and Lanczos-resized as training
does; `--data tfds:NAME` reads a prepared TFDS split's array_record files)
with 1, 2 and all CPU cores decoding in Grain worker processes, after the
workers have started, and prints img/s next to the images per second
that one training step consumes on the reference GPU (the official FastGAN
on an H100 at batch 8: 46.8 img/s at 256, 30.4 at 1024; `--consumed
SIZE=IMG_S` gives another figure, e.g. ours from benchmarks/RESULTS.md). A
pipeline slower than the consumption bounds the run: use more cores, or
`stream_from=memory` when the decoded set fits in host memory.
"""

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from fastgan_jax import data
from fastgan_jax.train import pipeline

OFFICIAL_H100 = {256: 46.8, 1024: 30.4}  # img/s of the official step, ../shared/reference


def measure(source, *, batch: int, batches: int, workers: int) -> float:
    """img/s of `batches` batches after the first (which waits for the workers to start)."""
    iterator = pipeline.batches(source, batch_size=batch, seed=0, start_step=0, num_steps=batches + 1, workers=workers)
    try:
        next(iterator)
        t0 = time.perf_counter()
        n = sum(len(b) for b in iterator)
        return n / (time.perf_counter() - t0)
    finally:
        iterator.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(data.DEFAULT_DATA), help="image folder, or tfds:NAME[:SPLIT]")
    p.add_argument("--tfds-data-dir", default=None, help="where TFDS data sets are prepared (default: TFDS's)")
    p.add_argument("--im-size", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 0], help="decoding processes; 0 = every core")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=20, help="batches timed per setting")
    p.add_argument("--consumed", nargs="*", default=[], help="SIZE=IMG_S: what training eats (default: official)")
    p.add_argument("--json", default=None, help="append one JSON line per setting to this file")
    args = p.parse_args(argv)
    consumed = OFFICIAL_H100 | {int(k): float(v) for k, v in (c.split("=") for c in args.consumed)}
    cores = os.cpu_count() or 1
    for im_size in args.im_size:
        source = data.file_source(args.data, im_size, tfds_data_dir=args.tfds_data_dir)
        for w in args.workers:
            workers = w or cores
            img_s = measure(source, batch=args.batch, batches=args.batches, workers=workers)
            eats = consumed.get(im_size)
            verdict = "n/a" if eats is None else ("keeps up" if img_s >= eats else "bounds the run")
            print(
                f"{im_size}px | {workers} worker(s) of {cores} cores | {img_s:.1f} img/s decoded | "
                f"training eats {eats if eats is not None else 'n/a'} img/s | {verdict}",
                flush=True,
            )
            if args.json:
                row = {"im_size": im_size, "workers": workers, "cores": cores, "img_per_s": img_s, "consumed": eats}
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
