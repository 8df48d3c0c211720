"""Runs as objects (load_run, generate), fine-tuning (init_from), resume rules, extra loss terms."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax import data
from fastgan_jax.train import checkpoints, runs, state, trainer

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"


def tiny_config(tmp_path, **overrides):
    return helpers.tiny_config(tmp_path / "cache", **overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    trainer.train_and_evaluate(tiny_config(tmp), tmp / "run")
    return tmp / "run"


def test_load_run_gives_modules_variables_and_config(run_dir):
    run = fj.load_run(run_dir)
    assert run.step == 2 and run.config["model"]["ngf"] == 8 and run.generator.nz == 16
    assert run.generator.dtype == jnp.float32 and run.discriminator.im_size == 64
    assert run.g_variables["params"] is run.state.ema_params  # EMA by default
    raw = fj.load_run(run_dir, step=2, ema=False)
    assert raw.g_variables["params"] is raw.state.g_params
    z = jax.random.normal(jax.random.key(0), (3, run.generator.nz))
    images = fj.generate(run.generator, run.g_variables, z, jax.random.key(1))
    assert images.shape == (3, 64, 64, 3) and float(jnp.abs(images).max()) <= 1.0
    # Eval mode: an image depends only on its latent and noise, not on the batch around it.
    one = fj.generate(run.generator, run.g_variables, z[:1], jax.random.key(1))
    np.testing.assert_allclose(one, images[:1], atol=1e-5)
    with pytest.raises(ValueError, match=r"z must be latents of shape \[B, 16\]"):
        fj.generate(run.generator, run.g_variables, z[:, :8], jax.random.key(1))
    with pytest.raises(runs.RunNotFoundError, match="no checkpoint at step 7"):
        fj.load_run(run_dir, step=7)
    with pytest.raises(runs.RunNotFoundError, match="no checkpoint here"):
        fj.load_run(run_dir / "samples")


def test_a_run_saved_with_the_flat_config_loads_and_resumes(run_dir, tmp_path):
    # Before 2026-12-02 a run's config was saved flat, with what it resolved (remat, data_fingerprint) in it.
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    step_dir = old / "checkpoints" / "2"
    nested = json.loads((step_dir / "config" / "metadata").read_text())
    meta = json.loads((step_dir / "meta" / "metadata").read_text())
    renamed = {"data.source": "data", "data.on_device": "data_on_device", "data.workers": "data_workers"}
    flat = {renamed.get(f"{g}.{k}", k): v for g, fields in nested.items() for k, v in fields.items()} | meta
    (step_dir / "config" / "metadata").write_text(json.dumps(flat))
    shutil.rmtree(step_dir / "meta")
    mngr = checkpoints.manager(old)
    checkpoints.write_manifest(mngr, 2)  # as the old run wrote it, whole
    assert checkpoints.saved_config(mngr) == nested and checkpoints.saved_meta(mngr) == meta
    mngr.close()
    run = fj.load_run(old)
    assert run.step == 2 and run.config == nested
    exp, start = trainer.setup(tiny_config(tmp_path, num_steps=3), old)  # resumes: the same recipe
    exp.mngr.close()
    assert int(start.step) == 2 and exp.meta == meta


def test_fine_tuning_from_a_run_starts_from_its_weights_with_fresh_optimizer(run_dir, tmp_path):
    source = fj.load_run(run_dir).state
    cfg = tiny_config(tmp_path, init_from=str(run_dir), num_steps=1)
    exp, start = trainer.setup(cfg, tmp_path / "tuned")  # the state the loop starts from (no step compiled)
    exp.mngr.close()
    assert int(start.step) == 0
    for name in ("g_params", "g_stats", "d_params", "d_stats", "ema_params", "ema_stats"):
        jax.tree.map(np.testing.assert_array_equal, getattr(start, name), getattr(source, name))
    assert int(jax.tree.leaves(source.g_opt)[0]) == 2 and int(jax.tree.leaves(start.g_opt)[0]) == 0  # Adam anew
    assert not any(np.any(np.asarray(x)) for x in jax.tree.leaves(start.d_opt))


@pytest.mark.slow
def test_fine_tuning_from_an_official_checkpoint_and_a_mismatch(tmp_path):
    pth = DATA / "tiny_all_3.pth"
    G, D = state.make_models(im_size=256, ngf=2, ndf=4, nz=8, dec_width=2)
    tx = state.make_optimizer()
    fresh = state.create_train_state(G, D, jax.random.key(0), tx_g=tx, tx_d=tx)
    warm = runs.warm_start(fresh, pth)
    _, g = fj.generator_from_official(pth, ema=False)
    _, ema = fj.generator_from_official(pth, ema=True)
    _, d = fj.discriminator_from_official(pth)
    jax.tree.map(np.testing.assert_array_equal, warm.g_params, g["params"])
    jax.tree.map(np.testing.assert_array_equal, warm.ema_params, ema["params"])
    jax.tree.map(np.testing.assert_array_equal, warm.d_stats, d["batch_stats"])
    assert int(warm.step) == 0
    jax.tree.map(np.testing.assert_array_equal, warm.g_opt, fresh.g_opt)

    G, D = state.make_models(im_size=256, ngf=4, ndf=4, nz=8, dec_width=2)
    other = jax.eval_shape(lambda k: state.create_train_state(G, D, k, tx_g=tx, tx_d=tx), jax.random.key(0))
    with pytest.raises(runs.WarmStartError, match=r"init_from .*tiny_all_3.pth: its g_params does not fit"):
        runs.warm_start(other, pth)
    with pytest.raises(runs.WarmStartError, match="no such run folder or checkpoint file"):
        runs.warm_start(other, tmp_path / "missing.pth")


def test_resume_follows_a_moved_image_folder_by_its_images(tmp_path, capsys):
    images, work = tmp_path / "images", tmp_path / "w"
    shutil.copytree(data.DEFAULT_DATA, images)  # the smileys: the suite's tiny program
    trainer.train_and_evaluate(tiny_config(tmp_path, source=str(images)), work)
    moved = tmp_path / "elsewhere" / "images"
    moved.parent.mkdir()
    images.rename(moved)
    exp, resumed = trainer.setup(tiny_config(tmp_path, source=str(moved), num_steps=3), work)
    exp.mngr.close()
    assert int(resumed.step) == 2
    assert f"the run's images moved from {images} to {moved} (the same files): resuming" in capsys.readouterr().out
    first = sorted(moved.glob("*.png"))[0]
    first.write_bytes(sorted(moved.glob("*.png"))[1].read_bytes())  # other images: another run's data
    listing = sorted(str(p) for p in work.rglob("*"))
    with pytest.raises(checkpoints.ConfigMismatchError, match=f"data.source: '{images}' -> '{moved}'") as e:
        trainer.setup(tiny_config(tmp_path, source=str(moved), num_steps=3), work)
    assert "\n" not in str(e.value)
    assert sorted(str(p) for p in work.rglob("*")) == listing  # nothing written


@pytest.mark.slow
def test_resume_accepts_lr_and_a_relative_data_path_and_refuses_the_rest(run_dir, tmp_path, capsys):
    work = tmp_path / "w"
    data_dir = data.DEFAULT_DATA
    trainer.train_and_evaluate(tiny_config(tmp_path, source=str(data_dir)), work)
    relative = os.path.relpath(data_dir, pathlib.Path.cwd())
    # The resumed run's start (a step at another lr is a program of its own, and adds nothing here).
    exp, resumed = trainer.setup(tiny_config(tmp_path, source=relative, lr=1e-4, num_steps=3), work)
    exp.mngr.close()
    assert int(resumed.step) == 2
    assert "resuming with lr 0.0001 (was 0.0002)" in capsys.readouterr().out
    params = {"w": jnp.zeros(3)}
    update, _ = exp.tx.update({"w": jnp.ones(3)}, exp.tx.init(params), params)
    np.testing.assert_allclose(update["w"], -1e-4, rtol=1e-4)  # Adam's first step is -lr * sign(gradient)
    listing = sorted(str(p) for p in work.rglob("*"))
    with pytest.raises(checkpoints.ConfigMismatchError, match="beta1"):
        trainer.train_and_evaluate(tiny_config(tmp_path, beta1=0.0, num_steps=4), work)
    assert sorted(str(p) for p in work.rglob("*")) == listing  # nothing written


@pytest.mark.slow
def test_step_metrics_and_extra_loss_terms(tmp_path):
    # The same first step (seed, batch, keys) with and without docs/api.md's extra terms.
    plain, m = helpers.first_step(*helpers.tiny_setup(tmp_path / "plain"))
    logits_and_norms = {"logit_real", "logit_fake", "d_grad_norm", "g_grad_norm"}
    assert set(m) == {"d_real", "d_fake", "rec", "g", "skipped"} | logits_and_norms
    assert all(np.isfinite(float(v)) for v in m.values()) and float(m["g_grad_norm"]) > 0

    extra, m2 = helpers.first_step(*helpers.tiny_setup(tmp_path / "extra", **helpers.EXTRA_LOSSES))
    assert {"g_extra", "d_extra"} <= set(m2)
    np.testing.assert_allclose(m2["d_real"], m["d_real"], rtol=1e-6)  # same batch, same D before the update
    # docs/api.md's brightness term is small: it moves G's gradient norm by about 3e-4, far above float32 noise.
    assert float(m2["g_grad_norm"]) != pytest.approx(float(m["g_grad_norm"]), rel=1e-5)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, extra.g_params, plain.g_params))


def test_train_step_refuses_float_images():
    s, step = helpers.tiny_step()
    with pytest.raises(ValueError, match="train_step images: expected uint8 data"):
        step(s, jnp.zeros((4, 64, 64, 3), jnp.float32), jax.random.key(2), None)
    with pytest.raises(ValueError, match=r"train_step images: expected uint8 images of shape \[B, 64, 64, 3\]"):
        step(s, jnp.zeros((4, 32, 32, 3), jnp.uint8), jax.random.key(2), None)


def test_metrics_jsonl_has_the_new_scalars(run_dir):
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"logit_real", "logit_fake", "d_grad_norm", "g_grad_norm", "img_per_s"} <= set(logged[0])


@pytest.mark.slow
def test_cli_init_from_that_does_not_fit_is_one_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "fastgan_jax.commands.train",
        "--workdir",
        str(tmp_path / "w"),
        "--config",
        "cpu_quick",
        f"--config.train.init_from={DATA / 'tiny_all_3.pth'}",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --config.train.init_from ")
    assert "does not fit this run's networks" in result.stderr
