"""Ctrl-C while a training starts: during the first compile it ends the start at once (exit 130, one line), and
the run's folder is left as it was (a new one is not left behind, empty); once the step is compiled, as in
training (the step, a checkpoint, one line)."""

import pathlib
import signal
import subprocess
import sys
import time

import helpers
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = {"ngf": 8, "ndf": 8, "nz": 16, "dec_width": 4, "batch_size": 4, "recon": "l1", "num_steps": 2}
TINY |= {"num_samples": 4, "recalib_samples": 8, "recalib_batch": 4}


def _tiny_run(run, tmp_path) -> list[str]:
    """train.py's arguments for the tiny run in `run`, its decoded images cached in `tmp_path`."""
    args = ["--workdir", str(run), "--config", "cpu_quick", *(helpers.flag(k, v) for k, v in TINY.items())]
    return [*args, f"--config.data.cache_dir={tmp_path / 'data'}"]


# Starts the command with SIGINT as given (exec keeps an ignored signal ignored): a script's background job has
# SIGINT ignored, and so had this test's command when pytest itself ran as one.
WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_{}); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.mark.slow
@pytest.mark.parametrize("sigint", ["DFL", "IGN"])
def test_ctrl_c_during_the_first_compile_ends_the_start_at_once_and_leaves_no_folder(tmp_path, sigint):
    run = tmp_path / "run"
    env = helpers.subprocess_env(tmp_path / "jax", fast_compile=False)  # an empty cache: the step compiles
    launcher = [sys.executable, "-c", WITH_SIGINT.format(sigint)]
    cmd = [*launcher, str(ROOT / "train.py"), *_tiny_run(run, tmp_path)]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if line.startswith("training "):  # printed right before the step compiles
                break
        time.sleep(0.5)
        assert proc.poll() is None and not (run / "checkpoints" / "1").exists()
        proc.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        _, err = proc.communicate(timeout=300)
        waited = time.perf_counter() - sent
    assert proc.returncode == 130, err[-3000:]
    assert helpers.own_stderr(err).strip().splitlines()[-1] == "interrupted"
    assert waited < 3, waited  # not after the compile and a step
    assert not run.exists()  # nothing was trained: no run folder, no empty checkpoints/ inside it


# train.py's command with the start grids' writer wrapped: once they are written, the process sends itself SIGINT,
# the moment between the first compile's end and the first step.
SIGINT_AFTER_START_GRIDS = """
import os, signal, sys
from fastgan_jax.train import trainer
from fastgan_jax.commands import launch
write = trainer.write_start_grids
def write_then_ctrl_c(*args):
    write(*args)
    os.kill(os.getpid(), signal.SIGINT)
trainer.write_start_grids = write_then_ctrl_c
sys.argv = ["train.py", *sys.argv[1:]]
launch.run("train")
"""


@pytest.mark.slow
def test_ctrl_c_once_the_step_is_compiled_is_handled_as_in_training(tmp_path):
    run = tmp_path / "run"
    env = helpers.subprocess_env(tmp_path / "jax")
    cmd = [sys.executable, "-c", SIGINT_AFTER_START_GRIDS, *_tiny_run(run, tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = helpers.own_stderr(done.stderr).strip().splitlines()[-1]
    assert last == "SIGINT: stopped at step 1 with a checkpoint; run the same command to continue", last
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["1"]
    assert (run / "samples" / "reals.png").exists() and (run / "samples" / "samples_0000001.png").exists()
