"""Time to the first training step, on a first and a second start of the same run (the compilation cache).

    python benchmarks/compile_cache.py                       # cpu_quick: two 1-step runs, then the ratio
    python benchmarks/compile_cache.py --config default --compile-only   # the 256 px step, compiled twice

Each start is a fresh process with an empty workdir, sharing one empty
compilation cache (`FASTGAN_JAX_COMPILE_CACHE`, fastgan_jax/commands/compile_cache.py):
the first start compiles and writes it, the second reads it back. A start is
timed from the process's launch to its exit: `train.py --config.train.num_steps=1`
(imports, data, initialisation, the compiled step, its checkpoint and sample
grid), or with `--compile-only` `train_speed.py --compile-only` at the
config's size (the training step alone, compiled as training compiles it on
this machine). The decoded images are cached by the first start as well, as
for a user. Prints one line per start and the ratio; `--json` appends them.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _command(args, workdir: pathlib.Path) -> list[str]:
    if args.compile_only:
        sys.path.insert(0, str(ROOT))
        from fastgan_jax import configs

        c = configs.load(args.config)
        return [
            sys.executable,
            str(ROOT / "benchmarks" / "train_speed.py"),
            "--compile-only",
            "--compile-cache",
            "--im-size",
            str(c.model.im_size),
            "--precision",
            c.model.precision,
            "--remat",
            "none" if c.model.remat == "auto" else c.model.remat,
            "--ngf",
            str(c.model.ngf),
            "--ndf",
            str(c.model.ndf),
            "--nz",
            str(c.model.nz),
            "--dec-width",
            str(c.model.dec_width),
            "--recon",
            c.loss.recon,
            "--batch",
            str(c.optim.batch_size),
        ]
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        args.config,
        "--workdir",
        str(workdir),
        "--config.train.num_steps=1",
    ]


def start(args, cache: pathlib.Path, workdir: pathlib.Path) -> float:
    """Seconds from launching one start to its exit (which must succeed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    env |= {"FASTGAN_JAX_COMPILE_CACHE": str(cache), "XDG_CACHE_HOME": str(cache.parent / "xdg")}
    env.setdefault("JAX_PLATFORMS", "cpu")
    t0 = time.perf_counter()
    done = subprocess.run(_command(args, workdir), env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"error: a start failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cpu_quick", help="a bundled config name or file")
    p.add_argument("--compile-only", action="store_true", help="time compiling the config's training step only")
    p.add_argument("--json", default=None, help="append one JSON line with both starts to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cache = tmp / "jax_cache"
        first = start(args, cache, tmp / "run1")
        second = start(args, cache, tmp / "run2")
        entries = len(list(cache.glob("*-cache")))
    what = "compile only" if args.compile_only else "1-step run"
    print(
        f"{args.config} ({what}): first start {first:.1f} s, second start {second:.1f} s "
        f"({first / second:.1f}x faster; {entries} programs cached)"
    )
    if args.json:
        with open(args.json, "a") as f:
            row = {"config": args.config, "what": what, "first_s": round(first, 2), "second_s": round(second, 2)}
            f.write(json.dumps(row | {"cached_programs": entries}) + "\n")


if __name__ == "__main__":
    main()
