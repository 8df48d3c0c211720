"""Two processes of two CPU devices each (gloo collectives) train as one process of four devices does.

The commands are README "Many devices and hosts"'s, on localhost. After one
step the states agree to float32 rounding; after three, within a bound that
Adam's step size gives (GAN training amplifies reduction-order
differences), also when the 2-process run was resumed from its checkpoint
on the way (exact resume itself: fault_injection_test.py, pipeline_test.py).
"""

import os
import pathlib
import socket
import subprocess
import sys

import helpers
import jax
import numpy as np

from fastgan_jax import runs

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = {"ngf": 8, "ndf": 8, "nz": 16, "dec_width": 4, "batch_size": 4, "recon": "l1", "data_on_device": "yes"}
TINY |= {"log_every": 1, "checkpoint_every": 1, "sample_every": 100, "num_samples": 4}
TINY |= {"recalib_samples": 8, "recalib_batch": 4}
# Without LLVM's optimisations XLA's CPU compiles in half the time; both runs here use the same flags.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train(workdir, cache, devices, steps, *, process=None):
    """Starts train.py on `devices` CPU devices; `process` = (port, index) for one of two processes."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices} {FAST_COMPILE}"
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, str(ROOT / "train.py"), "--workdir", str(workdir), "--config", "cpu_quick"]
    cmd += [f"--config.{k}={v}" for k, v in TINY.items()]
    cmd += [f"--config.num_steps={steps}", f"--config.cache_dir={cache / 'data'}"]
    if process is not None:
        port, index = process
        cmd += ["--coordinator_address", f"localhost:{port}", "--num_processes", "2", "--process_id", str(index)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(*procs):
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    return out


def _two_processes(workdir, cache, steps):
    port = _free_port()
    outs = [_train(workdir, cache, 2, steps, process=(port, i)) for i in (0, 1)]
    lead, other = outs
    printed = _wait(lead)
    quiet = [line for line in _wait(other).splitlines() if "peer ranks" not in line]  # gloo's own lines
    assert quiet == []  # process 1 prints nothing: the run's lines come from process 0
    return printed


def _leaves(workdir, step, params_only=False):
    state = runs.load_run(workdir, step).state
    tree = (state.g_params, state.d_params, state.ema_params) if params_only else state
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_two_processes_train_as_one_process_of_four_devices_and_resume(tmp_path):
    cache = tmp_path / "cache"
    one, two = tmp_path / "one", tmp_path / "two"
    _wait(_train(one, cache, 4, 3))
    _two_processes(two, cache, 2)
    printed = _two_processes(two, cache, 3)  # resumed from its checkpoint at step 2
    assert "4 device(s)" in printed and "steps 2 -> 3" in printed and printed.count("step 3/3") == 1, printed

    # The same program up to the order of its reductions (helpers.assert_close_but_for_adam_flips).
    # Parameters: an Adam step moves each by about lr at most, whatever its gradient's rounding.
    helpers.assert_close_but_for_adam_flips(_leaves(one, 1, True), _leaves(two, 1, True), tight=2e-5, steps=1)
    helpers.assert_close_but_for_adam_flips(_leaves(one, 3, True), _leaves(two, 3, True), tight=5e-4, steps=3)
    assert {"samples_0000002.png", "samples_0000003.png"} <= set(os.listdir(two / "samples"))
