"""kill -9 at random moments of a small run, then a rerun: the same final state and logs as an uninterrupted run.

A run resumes from its latest committed checkpoint; a kill during a step, a
checkpoint (Orbax commits by renaming a finished temporary folder), the
sample grids or the log leaves nothing that the rerun would read differently.
"""

import json
import os
import pathlib
import random
import subprocess
import sys
import time

import helpers
import jax
import numpy as np
import pytest

from fastgan_jax.train import runs

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = {"ngf": 8, "ndf": 8, "nz": 16, "dec_width": 4, "batch_size": 4, "recon": "l1"}
TINY |= {"num_steps": 40, "log_every": 4, "checkpoint_every": 4, "sample_every": 20, "num_samples": 4}
TINY |= {"recalib_samples": 8, "recalib_batch": 4}
KILLS = 3


def _start(workdir, cache):
    # The suite's compilation cache and XLA's usual flags: the programs are the in-process tests' tiny run's
    # (often compiled already), and restarts load them instead of compiling.
    env = helpers.subprocess_env(jax.config.jax_compilation_cache_dir or cache / "jax", fast_compile=False)
    cmd = [sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir), "--config", "cpu_quick"]
    cmd += [helpers.flag(k, v) for k, v in TINY.items()] + [f"--config.data.cache_dir={cache / 'data'}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _committed(workdir) -> int:
    folder = workdir / "checkpoints"
    steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(steps, default=0)


def _finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _logged(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "img_per_s"} for row in rows]  # timing differs


def test_kill_9_at_random_moments_then_rerun_equals_an_uninterrupted_run(tmp_path):
    cache, killed, whole = tmp_path / "cache", tmp_path / "killed", tmp_path / "whole"
    rng = random.Random(0)
    for _ in range(KILLS):
        proc, start = _start(killed, cache), _committed(killed)
        while proc.poll() is None and _committed(killed) <= start:  # training runs: a new checkpoint is in
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(rng.uniform(0.0, 0.3))  # then anywhere: a step, a checkpoint, samples, the log
        proc.kill()
        proc.communicate()  # reaps it and closes its pipe
    _finish(_start(killed, cache))
    _finish(_start(whole, cache))

    a, b = runs.load_run(whole), runs.load_run(killed)
    assert a.step == b.step == TINY["num_steps"]
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert _logged(whole) == _logged(killed)
    assert sorted(os.listdir(whole / "samples")) == sorted(os.listdir(killed / "samples"))
    assert not [p for p in (killed / "checkpoints").iterdir() if not p.name.isdigit()]  # no temporary left
