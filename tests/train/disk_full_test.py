"""A disk that fills up at a checkpoint: the user sees the one promised line, not Orbax's writer threads'
tracebacks, and the previous checkpoint is intact."""

import pathlib
import subprocess
import sys

import helpers
import jax
import pytest

from fastgan_jax.train import runs

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = {"ngf": 8, "ndf": 8, "nz": 16, "dec_width": 4, "batch_size": 4, "recon": "l1", "num_steps": 4}
TINY |= {"log_every": 2, "checkpoint_every": 2, "sample_every": 4, "num_samples": 4}
TINY |= {"recalib_samples": 8, "recalib_batch": 4}

# fastgan-train whose every Orbax file write fails with ENOSPC once checkpoint 2 is in (what a full disk does to
# the writes of checkpoint 4: each of Orbax's threads and tasks fails on its own).
FULL_AFTER_2 = """
import errno, pathlib, sys
from orbax.checkpoint._src.path import async_path
from fastgan_jax.commands import launch

checkpoints = pathlib.Path(sys.argv[sys.argv.index("--workdir") + 1]) / "checkpoints"
for name in ("write_text", "write_bytes"):
    def full(*args, _write=getattr(async_path, name), **kwargs):
        if (checkpoints / "2").is_dir():
            raise OSError(errno.ENOSPC, "No space left on device")
        return _write(*args, **kwargs)
    setattr(async_path, name, full)
launch.run("train")
"""


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_is_the_one_line_the_user_sees(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    env = helpers.subprocess_env(jax.config.jax_compilation_cache_dir or cache / "jax", fast_compile=False)
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-c", FULL_AFTER_2, "--workdir", str(run), "--config", "cpu_quick"]
    cmd += [helpers.flag(k, v) for k, v in TINY.items()] + [f"--config.data.cache_dir={cache / 'data'}"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    err = helpers.own_stderr(res.stderr).strip().splitlines()
    assert res.returncode == 1, res.stderr[-3000:]
    assert err == [
        f"error: {run / 'checkpoints'}: no space left on device; checkpoint 2 is intact; free space and run the "
        "same command to continue"
    ], res.stderr[-5000:]
    assert runs.load_run(run).step == 2
