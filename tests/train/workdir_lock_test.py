"""One training per run folder: a second start on a held workdir is one line before anything slow; a lock left
by a killed process never blocks."""

import os
import pathlib
import signal
import subprocess
import sys

import helpers
import pytest

from fastgan_jax.train import workdir

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_held_workdir_refuses_a_second_training_in_one_line(tmp_path):
    run = tmp_path / "run"
    with workdir.locked(run):
        assert f"process {os.getpid()} on " in (run / workdir.LOCK).read_text()
        with pytest.raises(workdir.WorkdirBusyError, match=f"process {os.getpid()} on "), workdir.locked(run):
            pass
        cmd = [sys.executable, str(ROOT / "train.py"), "--workdir", str(run), "--config", "cpu_quick"]
        res = subprocess.run(cmd, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True)
        err = helpers.own_stderr(res.stderr).strip().splitlines()
        assert res.returncode == 2 and len(err) == 1, res.stderr[-3000:]
        assert err[0].startswith(f"error: --workdir {run} is in use by another training (process {os.getpid()} on ")
        assert sorted(os.listdir(run)) == [workdir.LOCK]  # nothing of a run was written
    with workdir.locked(run):  # released at the end
        pass


@pytest.mark.slow
def test_a_killed_holder_leaves_no_lock_that_blocks(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # a run folder with something in it keeps its lock file
    script = (
        "import pathlib, time\nfrom fastgan_jax.train import workdir\n"
        f"with workdir.locked(pathlib.Path({str(run)!r})):\n    print('held', flush=True)\n    time.sleep(60)"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env) as holder:
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(workdir.WorkdirBusyError, match=f"process {holder.pid} on "), workdir.locked(run):
                pass
        finally:
            holder.send_signal(signal.SIGKILL)
    assert (run / workdir.LOCK).exists()  # the file stays; the kernel's lock died with its process
    with workdir.locked(run):
        pass


def test_a_start_that_wrote_nothing_leaves_no_folder(tmp_path):
    with pytest.raises(KeyboardInterrupt), workdir.locked(tmp_path / "new"):
        raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()
