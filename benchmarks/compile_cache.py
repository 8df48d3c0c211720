"""Time to the first training step, on a first and a second start of the same run (the compilation cache).

    python benchmarks/compile_cache.py                       # cpu_quick: a 1-step run, then its resume
    python benchmarks/compile_cache.py --config default --compile-only   # the 256 px step, compiled twice

Each start is a fresh process; both share one empty compilation cache
(`FASTGAN_JAX_COMPILE_CACHE`, fastgan_jax/commands/compile_cache.py): the
first start compiles and writes it, the second reads it back. The first
start trains one step into a new workdir (`train.py --config.train.num_steps=1`:
imports, data, initialisation, the compiled step, then its checkpoint and
sample grid); the second starts the same run again for one more step
(`num_steps=2`: it resumes from the checkpoint). A start's time to its
first step is from the process's launch to the step's log line
(`log_every=1`: printed once the step's losses are back); its time to exit
is printed beside it. "Programs compiled" counts what each start wrote to
the cache (every compiled program is written): a second start that
compiles nothing it compiled before writes none. With `--compile-only`
each start is `train_speed.py --compile-only` at the config's size (the
training step alone, compiled as training compiles it on this machine),
timed from launch to exit. The decoded images are cached by the first start
as well, as for a user. Prints one line and the ratio; `--json` appends it.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


STEP_LINE = re.compile(r"^step \d+/\d+ ")  # the trainer's log line of a step (fastgan_jax/train/writer.py)


def _command(args, workdir: pathlib.Path, steps: int) -> list[str]:
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
        f"--config.train.num_steps={steps}",
        "--config.log.log_every=1",
    ]


def start(command: list[str], cache: pathlib.Path) -> dict:
    """One start: {"first_step_s": seconds from launch to the first step's log line (None: no step logged),
    "exit_s": to its exit (which must succeed), "compiled": programs it wrote to the cache}."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    env |= {"FASTGAN_JAX_COMPILE_CACHE": str(cache), "XDG_CACHE_HOME": str(cache.parent / "xdg")}
    env |= {"PYTHONUNBUFFERED": "1"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    before, first_step = len(list(cache.glob("*-cache"))), None
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            for line in proc.stdout:
                if first_step is None and STEP_LINE.match(line):
                    first_step = time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"error: a start failed (exit {proc.returncode}):\n{err.read()[-2000:]}")
    compiled = len(list(cache.glob("*-cache"))) - before
    return {"first_step_s": first_step, "exit_s": seconds, "compiled": compiled}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="cpu_quick", help="a bundled config name or file")
    p.add_argument("--compile-only", action="store_true", help="time compiling the config's training step only")
    p.add_argument("--json", default=None, help="append one JSON line with both starts to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        cache, run = tmp / "jax_cache", tmp / "run"
        cache.mkdir()
        first = start(_command(args, run, steps=1), cache)
        second = start(_command(args, run, steps=2), cache)
    key = "exit_s" if args.compile_only else "first_step_s"
    a, b = first[key], second[key]
    if a is None or b is None:
        sys.exit("error: a start printed no 'step N/M ...' line (benchmarks/compile_cache.py's STEP_LINE)")
    if args.compile_only:
        what = f"compile only, launch to exit: first start {a:.1f} s, second start {b:.1f} s"
    else:
        what = (
            f"time to the first step: first start {a:.1f} s, second start (resuming the run) {b:.1f} s; "
            f"to exit {first['exit_s']:.1f} s and {second['exit_s']:.1f} s"
        )
    print(
        f"{args.config} ({what}): {a / b:.1f}x faster; programs compiled: {first['compiled']} by the first start, "
        f"{second['compiled']} by the second"
    )
    if args.json:
        with open(args.json, "a") as f:
            row = {"config": args.config, "what": "compile only" if args.compile_only else "first step"}
            row |= {"first_s": round(a, 2), "second_s": round(b, 2)}
            row |= {"first_exit_s": round(first["exit_s"], 2), "second_exit_s": round(second["exit_s"], 2)}
            f.write(json.dumps(row | {"compiled": [first["compiled"], second["compiled"]]}) + "\n")


if __name__ == "__main__":
    main()
