"""One process of four devices and two processes of two devices each (gloo) train alike; so does one device.

The commands are docs/training.md "Many devices and hosts"'s (`fastgan-train` with
`--coordinator_address --num_processes --process_id`), on localhost. After
one step the states and losses agree to float32 rounding; after three,
within a bound that Adam's step size gives (GAN training amplifies
reduction-order differences), also when the 2-process run was resumed from
its checkpoint on the way (exact resume itself: fault_injection_test.py,
pipeline_test.py). One device trains in this process meanwhile: its program
is the suite's usual tiny run.
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import helpers
import jax
import numpy as np
import pytest

from fastgan_jax.train import runs, trainer

pytestmark = pytest.mark.slow

TRAIN = str(pathlib.Path(sys.executable).parent / "fastgan-train")  # the installed command
TINY = {"ngf": 8, "ndf": 8, "nz": 16, "dec_width": 4, "batch_size": 4, "recon": "l1", "on_device": "yes"}
TINY |= {"log_every": 1, "checkpoint_every": 1, "sample_every": 100, "num_samples": 4}
TINY |= {"recalib_samples": 8, "recalib_batch": 4}
# What gloo prints to stdout as it connects, piece by piece (its threads' lines interleave, std::endl included).
GLOO_PIECES = re.compile(
    r"\[Gloo\] Rank | is connected to | peer ranks\. |Expected number of connected peer ranks is : |\d+|\s"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(workdir, tmp_path, devices, steps, *, process=None, **overrides):
    """Starts fastgan-train on `devices` CPU devices; `process` = (port, index) for one of two processes.

    Its output goes to files (a pipe nobody reads while another process is awaited could fill and stall it).
    """
    env = helpers.subprocess_env(tmp_path / "jax_cache", devices=devices)
    cmd = [TRAIN, "--workdir", str(workdir), "--config", "cpu_quick"]
    cmd += [helpers.flag(k, v) for k, v in (TINY | overrides).items()]
    cmd += [f"--config.train.num_steps={steps}", f"--config.data.cache_dir={tmp_path / 'data'}"]
    name = f"{workdir.name}_{steps}"
    if process is not None:
        port, index = process
        cmd += ["--coordinator_address", f"localhost:{port}", "--num_processes", "2", "--process_id", str(index)]
        name += f"_{index}"
    out, err = (open(tmp_path / f"{name}.{kind}", "w+") for kind in ("out", "err"))
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=err), out, err


def _wait(*started):
    """Each started process's output, once all have ended well; a failure stops the others."""
    try:
        for proc, _, err in started:
            proc.wait(timeout=600)
            err.seek(0)
            assert proc.returncode == 0, err.read()[-3000:]
        return [out.seek(0) or out.read() for _, out, _ in started]
    finally:
        for proc, out, err in started:
            proc.kill()
            proc.wait()
            out.close(), err.close()


def _two_processes(workdir, tmp_path, steps, **overrides):
    port = _free_port()
    return [_train(workdir, tmp_path, 2, steps, process=(port, i), **overrides) for i in (0, 1)]


def _leaves(workdir, step):
    state = runs.load_run(workdir, step).state
    return [np.asarray(x) for x in jax.tree.leaves((state.g_params, state.d_params, state.ema_params))]


def _losses(workdir, step):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["step"] == step)
    return {k: v for k, v in row.items() if k not in ("img_per_s", "lr")}


def test_one_four_devices_and_two_processes_train_alike_and_resume(tmp_path):
    one, four, two = tmp_path / "one", tmp_path / "four", tmp_path / "two"
    _wait(*_two_processes(two, tmp_path, 1))
    # The 2-process run resumes from its checkpoint at step 1 (none until its last step) while one process of
    # four devices, and one device in this process, train from scratch. (Process 1 compiles again: JAX's cache
    # keeps process 0's programs only, and on the CPU a key differs between processes. Two cores stay busy
    # throughout this way.)
    started = [*_two_processes(two, tmp_path, 3, checkpoint_every=100), _train(four, tmp_path, 4, 3)]
    trainer.train_and_evaluate(helpers.tiny_config(tmp_path / "data", **TINY, num_steps=3), one)
    printed, other, _ = _wait(*started)
    assert "4 device(s)" in printed and "steps 1 -> 3" in printed and printed.count("step 3/3") == 1, printed
    assert GLOO_PIECES.sub("", other) == "", other  # process 1 prints nothing of its own

    # The same program up to the order of its reductions (helpers.assert_close_but_for_adam_flips).
    # Parameters: an Adam step moves each by about lr at most, whatever its gradient's rounding.
    for other in (one, two):
        assert _losses(other, 1) == pytest.approx(_losses(four, 1), rel=1e-4, abs=1e-6)
        helpers.assert_close_but_for_adam_flips(_leaves(four, 1), _leaves(other, 1), tight=2e-5, steps=1)
        helpers.assert_close_but_for_adam_flips(_leaves(four, 3), _leaves(other, 3), tight=5e-4, steps=3)
    assert {"samples_0000001.png", "samples_0000003.png"} <= set(os.listdir(two / "samples"))
    assert sorted(os.listdir(two / "checkpoints")) == ["1", "3"]
