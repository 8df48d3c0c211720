import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import types

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict
from PIL import Image

from fastgan_jax.commands import sample
from fastgan_jax.nn.models import noise_shapes
from fastgan_jax.train import checkpoints, runs, safeguards, trainer
from fastgan_jax.train.loss_scale import all_finite
from fastgan_jax.train.state import make_models
from fastgan_jax.train.step import recalibrate, recon_params

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tiny_config(tmp_path, **overrides):
    return helpers.tiny_config(tmp_path / "cache", **overrides)


def leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True) for x, y in zip(la, lb, strict=True))


def assert_one_step_updated_everything(before, state, metrics, ema_decay):
    assert int(state.step) == int(before.step) + 1
    logits_and_norms = {"logit_real", "logit_fake", "d_grad_norm", "g_grad_norm"}
    assert set(metrics) == {"d_real", "d_fake", "rec", "g", "skipped"} | logits_and_norms
    assert all(np.isfinite(float(v)) for v in metrics.values()) and float(metrics["skipped"]) == 0.0
    for name in ("g_params", "g_stats", "d_params", "d_stats", "g_opt", "d_opt", "ema_params"):
        assert not leaves_equal(getattr(before, name), getattr(state, name)), name
    # EMA: decay * init + (1 - decay) * updated params.
    jax.tree.map(
        lambda e, p0, p: np.testing.assert_allclose(
            e, ema_decay * p0 + (1 - ema_decay) * np.asarray(p), rtol=1e-5, atol=1e-7
        ),
        state.ema_params,
        before.g_params,
        state.g_params,
    )


def test_train_step_updates_everything(tmp_path):
    exp, state = helpers.tiny_setup(tmp_path / "r")  # the suite's tiny run (l1): a program compiled once
    before = jax.tree.map(np.asarray, state)
    state, metrics = helpers.first_step(exp, state)
    assert_one_step_updated_everything(before, state, metrics, exp.cfg.optim.ema_decay)


@pytest.mark.slow
def test_the_default_lpips_reconstruction_step_updates_everything():
    state, step = helpers.tiny_step(recon="lpips", policy="color,translation", batch_size=4)
    before = jax.tree.map(np.asarray, state)
    data = jax.random.randint(jax.random.key(1), (10, 64, 64, 3), 0, 256).astype(jnp.uint8)
    state, metrics = step(state, data, jax.random.key(2), recon_params("lpips"))
    assert_one_step_updated_everything(before, state, metrics, 0.999)


@pytest.mark.slow
def test_recalibrated_stats_make_eval_mode_match_a_large_batch():
    G, _ = make_models(im_size=64, ngf=8, ndf=8, nz=16)
    from fastgan_jax.nn.models import init_generator

    v = init_generator(G, jax.random.key(0))
    # 32 passes: also enough power iterations for the (fresh, slowly converging) spectral norms.
    stats = recalibrate(G, v["params"], v["batch_stats"], jax.random.key(1), num_samples=2048, batch=64)
    z = jax.random.normal(jax.random.key(2), (256, G.nz))
    noise = [jnp.zeros(s) for s in noise_shapes(64, 256)]
    (train_img, _), _ = G.apply(
        {"params": v["params"], "batch_stats": stats}, z, train=True, noise=noise, mutable=["batch_stats"]
    )
    eval_img, _ = G.apply({"params": v["params"], "batch_stats": stats}, z, noise=noise)
    err = float(jnp.abs(eval_img - train_img).mean())
    fresh, _ = G.apply(v, z, noise=noise)  # the init's stats are far off
    assert err < 0.03 < 0.5 < float(jnp.abs(fresh - train_img).mean())
    one, _ = G.apply({"params": v["params"], "batch_stats": stats}, z[:1], noise=[n[:1] for n in noise])
    np.testing.assert_allclose(one, eval_img[:1], atol=1e-5)  # independent of the batch


@pytest.mark.slow
def test_resume_is_exact_and_a_foreign_config_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    trainer.train_and_evaluate(tiny_config(tmp_path), a)
    resumed = trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=4), a)
    straight = trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=4), b)
    assert int(resumed.step) == int(straight.step) == 4
    assert leaves_equal(resumed, straight)
    assert sorted(p.name for p in (a / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert (a / "samples" / "samples_0000004.png").exists()
    assert (a / "samples" / "reconstructions_0000002.png").exists()
    assert any(p.name.startswith("events.out.tfevents") for p in a.iterdir())
    logged = [json.loads(line) for line in (a / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4] and {"d_real", "d_fake", "g", "rec"} <= set(logged[0])

    sample.main(["--workdir", str(a), "-n", "4", "--out", str(tmp_path / "grid.png")])
    sample.main(
        [
            "--workdir",
            str(a),
            "--interpolate",
            "2",
            "--frames",
            "3",
            "--out",
            str(tmp_path / "lerp.png"),
            "--gif",
            str(tmp_path / "lerp.gif"),
        ]
    )
    with Image.open(tmp_path / "grid.png") as grid, Image.open(tmp_path / "lerp.png") as strip:
        assert grid.size == (2 * 66 + 2, 2 * 66 + 2) and strip.size == (3 * 66 + 2, 2 * 66 + 2)
    with Image.open(tmp_path / "lerp.gif") as gif:
        assert gif.n_frames == 4  # 3 frames forth, 1 back

    listing = sorted(str(p) for p in a.rglob("*"))
    with pytest.raises(checkpoints.ConfigMismatchError, match="ngf: 8 -> 16") as e:
        trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=6, ngf=16, ndf=16, nz=32, batch_size=8), a)
    message = str(e.value)  # every differing field, and how the run was made
    assert all(f in message for f in ("ndf: 8 -> 16", "nz: 16 -> 32", "batch_size: 4 -> 8")), message
    assert "the run was made with --config cpu_quick " in message and " --config.model.ngf=8 " in message, message
    assert "--config.train.num_steps" not in message and "\n" not in message  # schedule fields may change
    assert sorted(str(p) for p in a.rglob("*")) == listing  # nothing written


def test_a_non_finite_step_is_skipped_not_applied(tmp_path):
    exp, state = helpers.tiny_setup(tmp_path / "r")  # the suite's tiny program
    placed = jax.tree.map(lambda x: x.sharding, state.d_params)  # new leaves go where the step expects them
    finite = jax.tree.map(np.asarray, state.d_params)
    broken = jax.tree.map(lambda x: x.at[..., 0].set(jnp.nan) if x.ndim == 4 else x, state.d_params)  # NaN filters
    state = state.replace(d_params=jax.device_put(broken, placed))
    before = jax.tree.map(np.asarray, state)
    state, metrics = helpers.first_step(exp, state)
    assert float(metrics["skipped"]) == 1.0 and int(state.nonfinite) == 1 and int(state.step) == 1
    for name in ("g_params", "g_stats", "d_params", "d_stats", "g_opt", "d_opt", "ema_params"):
        assert leaves_equal(getattr(before, name), getattr(state, name)), name
    # Finite again (the NaN was in D, not in anything the step did): applied, the count reset.
    state = state.replace(d_params=jax.device_put(finite, placed))
    state, metrics = helpers.first_step(exp, state)
    assert float(metrics["skipped"]) == 0.0 and int(state.nonfinite) == 0 and int(state.step) == 2
    assert not leaves_equal(before.g_params, state.g_params)


def nan_from(first_step, *, only_at_full_lr):
    def extra(d_params, inputs):
        bad = inputs.step >= first_step
        if only_at_full_lr:
            bad &= inputs.lr_scale == 1.0
        return jnp.where(bad, jnp.nan, 0.0)

    return extra


@pytest.mark.slow
def test_nan_rolls_back_to_the_last_checkpoint_at_half_lr_and_recovers(tmp_path, capsys):
    cfg = tiny_config(tmp_path, num_steps=16, log_every=4, checkpoint_every=4, sample_every=16)
    state = trainer.train_and_evaluate(cfg, tmp_path / "r", d_extra_loss=nan_from(6, only_at_full_lr=True))
    out = capsys.readouterr().out
    assert (
        "step 16: 10 consecutive non-finite steps; rolled back to step 12 with the learning rate scaled by 0.5" in out
    )
    assert int(state.step) == 16 and float(state.lr_scale) == 0.5 and int(state.nonfinite) == 0
    assert bool(all_finite(state))
    for step in (8, 12, 16):  # every kept checkpoint is finite
        assert bool(all_finite(runs.load_run(tmp_path / "r", step).state))
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 16 and logged[-1]["lr_scale"] == 0.5 and logged[-1]["skipped"] == 0.0


@pytest.mark.slow
def test_nan_that_never_ends_stops_with_the_truth_and_no_nan_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, num_steps=3, log_every=1, checkpoint_every=1, sample_every=3)
    with pytest.raises(safeguards.NonFiniteError, match="stayed non-finite at step 3 after 3 rollbacks") as e:
        trainer.train_and_evaluate(cfg, tmp_path / "n", d_extra_loss=nan_from(2, only_at_full_lr=False))
    assert "the last finite checkpoint is step 2" in str(e.value) and "\n" not in str(e.value)
    assert "precision" not in str(e.value)  # a float32 run is not told to use float32
    for step in (1, 2):
        assert bool(all_finite(runs.load_run(tmp_path / "n", step).state))


def test_nan_stop_line_without_a_checkpoint_and_at_float16():
    exp = types.SimpleNamespace(
        mngr=types.SimpleNamespace(latest_step=lambda: None),
        workdir="w",
        cfg=ConfigDict({"model": {"precision": "float16"}}),
    )
    state = types.SimpleNamespace(step=3, lr_scale=0.125)
    with pytest.raises(safeguards.NonFiniteError) as e:
        safeguards.roll_back(exp, state, safeguards.MAX_ROLLBACKS)
    assert "no checkpoint was written; start again with a lower --config.optim.lr" in str(e.value)
    assert str(e.value).endswith("or --config.model.precision=float32")


@pytest.mark.slow
def test_cli_quick_start_and_bad_input(tmp_path):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--workdir",
        str(run),
        "--config",
        str(ROOT / "configs/cpu_quick.py"),
        "--config.train.num_steps=1",
        *helpers.TINY_FLAGS,
        f"--config.data.cache_dir={tmp_path / 'cache'}",
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done: steps 0 -> 1" in res.stdout
    assert (run / "samples" / "samples_0000001.png").exists() and (run / "checkpoints" / "1").exists()
    saved = json.loads((run / "checkpoints" / "1" / "config" / "metadata").read_text())
    assert saved["model"]["ngf"] == 8

    cmd[cmd.index(str(run))] = str(tmp_path / "run2")
    res = subprocess.run(cmd + ["--data", str(tmp_path / "missing")], env=env, capture_output=True, text=True)
    assert res.returncode == 2  # the user's input, as a bad flag
    assert res.stderr.strip().splitlines()[-1] == f"error: --data {tmp_path / 'missing'}: no such folder"
    assert not (tmp_path / "run2").exists()  # no empty run folder left behind


@pytest.mark.slow
def test_streaming_from_host_memory(tmp_path):
    state = trainer.train_and_evaluate(tiny_config(tmp_path, on_device="no", num_steps=1), tmp_path / "s")
    assert int(state.step) == 1 and (tmp_path / "s" / "checkpoints" / "1").exists()


def test_slerp_stays_on_the_sphere_and_hits_the_ends():
    z = jax.random.normal(jax.random.key(0), (2, 3, 16))
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True) * 4.0
    path = sample.slerp(z[0], z[1], jnp.linspace(0, 1, 5))
    assert path.shape == (5, 3, 16)
    np.testing.assert_allclose(jnp.linalg.norm(path, axis=-1), 4.0, rtol=1e-5)
    np.testing.assert_allclose(path[0], z[0], atol=1e-5)
    np.testing.assert_allclose(path[-1], z[1], atol=1e-5)
    same = sample.slerp(z[0], z[0], jnp.linspace(0, 1, 3))  # degenerate: no NaN
    np.testing.assert_allclose(same, jnp.broadcast_to(z[0], (3, 3, 16)), atol=1e-5)


@pytest.mark.slow
def test_time_limit_stops_with_a_checkpoint_and_resumes(tmp_path, capsys):
    cfg = tiny_config(tmp_path, num_steps=50, time_limit_s=1e-9)  # stops after its first step
    state = trainer.train_and_evaluate(cfg, tmp_path / "t")
    assert int(state.step) == 1 and (tmp_path / "t" / "checkpoints" / "1").exists()
    assert "time limit; run again to continue to 50" in capsys.readouterr().out
    state = trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=2), tmp_path / "t")
    assert int(state.step) == 2


@pytest.mark.slow
def test_resumed_logs_equal_an_uninterrupted_runs_and_final_samples_come_back(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    trainer.train_and_evaluate(tiny_config(tmp_path), a)
    with open(a / "metrics.jsonl", "a") as f:  # what a segment killed after its checkpoint at 2 had logged
        f.write(json.dumps({"step": 3, "g": 1.0}) + "\n" + '{"step": 4, "g"')
    trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=4), a)
    trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=4), b)
    steps = [[json.loads(line)["step"] for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (a, b)]
    assert steps[0] == steps[1] == [1, 2, 3, 4]
    (a / "samples" / "samples_0000004.png").unlink()  # killed between the final checkpoint and its samples
    trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=4), a)
    assert (a / "samples" / "samples_0000004.png").exists()


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer.train_and_evaluate(tiny_config(tmp_path), tmp_path / "d")
    save = checkpoints.save

    def full(mngr, step, *args, **kwargs):
        (mngr.directory / f"{step}.orbax-checkpoint-tmp").mkdir()  # what a failed write leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "save", full)
    with pytest.raises(safeguards.DiskFullError) as e:
        trainer.train_and_evaluate(tiny_config(tmp_path, num_steps=4), tmp_path / "d")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'd' / 'checkpoints'}: no space left on device")
    assert "checkpoint 2 is intact" in message
    monkeypatch.setattr(checkpoints, "save", save)
    assert runs.load_run(tmp_path / "d").step == 2


SIGINT_SCRIPT = """
import sys
from fastgan_jax.commands import train as train_cli
train_cli.main(sys.argv)
"""


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_says_so_in_one_line(tmp_path):
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "", PYTHONPATH=str(ROOT))
    work = tmp_path / "c"
    cmd = [sys.executable, "-u", "-c", SIGINT_SCRIPT, "--workdir", str(work), "--config", "cpu_quick"]
    cmd += [helpers.flag(k, v) for k, v in {"ngf": 8, "ndf": 8, "nz": 16, "dec_width": 4, "batch_size": 4}.items()]
    cmd += ["--config.train.num_steps=100000", "--config.log.log_every=1", "--config.log.checkpoint_every=100000"]
    cmd += ["--config.log.num_samples=4", "--config.log.recalib_samples=8", "--config.log.recalib_batch=4"]
    cmd += ["--config.log.sample_every=100000", f"--config.data.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until training runs
        if line.startswith("step 2/"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("SIGINT: stopped at step ") and last.endswith("run the same command to continue")
    step = int(last.split("step ")[1].split(" ")[0])
    assert runs.load_run(work).step == step >= 2
    assert (work / "samples" / f"samples_{step:07d}.png").exists()


@pytest.mark.slow
def test_float16_scales_losses_and_an_overflow_skips_the_step_and_halves_the_scale():
    state, step = helpers.tiny_step(precision="float16")
    huge = state.d_scale.replace(scale=jnp.float32(2.0**100))  # scaled gradients overflow float16
    state = state.replace(d_scale=huge)
    before = jax.tree.map(np.asarray, state)
    data = jax.random.randint(jax.random.key(1), (4, 64, 64, 3), 0, 256).astype(jnp.uint8)
    state, m = step(state, data, jax.random.key(2), None)
    assert float(m["d_overflow"]) == 1.0 and float(m["g_overflow"]) == 0.0 and float(m["skipped"]) == 0.0
    assert float(state.d_scale.scale) == 2.0**99 and int(state.d_scale.good_steps) == 0
    assert leaves_equal(before.d_params, state.d_params) and leaves_equal(before.d_opt, state.d_opt)
    assert not leaves_equal(before.g_params, state.g_params)  # G's own step went ahead
    assert float(state.g_scale.scale) == 2.0**15 and int(state.g_scale.good_steps) == 1
    assert all(np.isfinite(float(v)) for v in m.values())
    assert jax.tree.leaves(state.g_params)[0].dtype == jnp.float32  # float32 parameters
