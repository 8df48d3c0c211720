import functools
import json
import pathlib
import subprocess
import sys

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import fastgan_jax as fj
from fastgan_jax import pulse, superres, training
from fastgan_jax.models import init_generator, noise_shapes

ROOT = pathlib.Path(__file__).resolve().parent.parent

KEY = jax.random.key(3)


@functools.cache
def generator():
    """A tiny 64 px generator in eval mode with recalibrated statistics and non-zero noise weights."""
    G, _ = training.make_models(im_size=64, ngf=8, ndf=8, nz=16)
    v = init_generator(G, jax.random.key(0))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if "noise" in jax.tree_util.keystr(p) else x, v["params"]
    )
    stats = training.recalibrate(G, params, v["batch_stats"], jax.random.key(1), num_samples=2048, batch=64)
    return G, {"params": params, "batch_stats": stats}


@functools.cache
def targets():
    """LR images (8x8, factor 8) made from G(z*) with fixed noise."""
    G, v = generator()
    z = pulse._project(jax.random.normal(jax.random.key(5), (2, G.nz)))
    noise = [jax.random.normal(jax.random.key(9), s) for s in noise_shapes(64, 2)]
    hr, _ = G.apply(v, z, noise=noise)
    return fj.area_downsample((hr + 1) / 2, 8)


@functools.cache
def search(restarts=3, offset=0, batch=2):
    G, v = generator()
    return jax.device_get(
        fj.upscale(G, v, targets()[offset : offset + batch], key=KEY, restarts=restarts, steps=100, image_offset=offset)
    )


def test_schedule_is_pulses_linear1cycledrop():
    s = pulse.pulse_schedule(100, 0.4)
    lrs = np.array([float(s(jnp.asarray(i))) for i in (0, 45, 89, 90, 99, 100)])
    np.testing.assert_allclose(
        lrs, [0.04, 0.4, 0.4 * (0.1 + 0.9 * 2 / 90), 0.04, 0.04 + 0.9 * (0.0004 - 0.04), 0.0004], rtol=1e-5
    )


def test_lr_from_the_generator_is_matched_on_the_sphere():
    res = search()
    assert res.images.shape == (2, 3, 64, 64, 3) and res.best.shape == (2, 64, 64, 3)
    assert res.history.shape == (2, 3, 100) and res.lr_mse.shape == (2, 3)
    assert res.success.any(axis=1).all(), res.lr_mse  # each LR is matched within eps by some restart
    assert (res.history[:, :, -1] < res.history[:, :, 0] / 20).all()
    np.testing.assert_allclose(np.linalg.norm(res.latents, axis=-1), np.sqrt(16), rtol=1e-4)
    assert (res.sphere_error < 1e-5).all()  # z and every noise map back on its sphere after every step
    np.testing.assert_array_equal(res.best_index, np.argmin(res.lr_mse, axis=1))
    # The reported MSE is the MSE of the returned image.
    down = fj.area_downsample(jnp.asarray(res.images[:, 0]), 8)
    np.testing.assert_allclose(np.mean((down - targets()) ** 2, axis=(1, 2, 3)), res.lr_mse[:, 0], rtol=1e-3)


def test_projection_onto_the_sphere():
    x = jax.random.normal(KEY, (4, 8, 8, 1)) * 3
    p = pulse._project(x)
    np.testing.assert_allclose(jnp.sum(p**2, axis=(1, 2, 3)), 64, rtol=1e-5)


def test_same_seed_same_result_independent_of_grouping():
    a, b = search(), search()
    np.testing.assert_array_equal(a.images, b.images)
    alone = search(restarts=2, offset=1, batch=1)  # image 1 alone, fewer restarts
    np.testing.assert_allclose(alone.latents[0], a.latents[1, :2], atol=2e-4)
    np.testing.assert_allclose(alone.lr_mse[0], a.lr_mse[1, :2], rtol=1e-2, atol=1e-7)


def test_gan_inversion_at_factor_one_and_zero_noise():
    G, v = generator()
    hr = jnp.repeat(jnp.linspace(0.2, 0.8, 64)[None, :, None, None], 64, axis=2) * jnp.ones((1, 64, 64, 3))
    res = fj.upscale(G, v, hr, key=KEY, restarts=2, steps=30, noise="zero")
    assert res.images.shape == (1, 2, 64, 64, 3)
    assert float(res.history[0, :, -1].min()) < float(res.history[0, :, 0].min())


def test_bad_inputs():
    G, v = generator()
    with pytest.raises(ValueError, match="must be square"):
        fj.upscale(G, v, jnp.zeros((1, 8, 4, 3)), key=KEY)
    with pytest.raises(ValueError, match="not a whole multiple of the 12px"):
        fj.upscale(G, v, jnp.zeros((1, 12, 12, 3)), key=KEY)
    with pytest.raises(ValueError, match="noise must be one of"):
        fj.upscale(G, v, jnp.zeros((1, 8, 8, 3)), key=KEY, noise="random")


def test_load_lr_conversions_and_fitting(tmp_path):
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "g16.png")
    Image.new("P", (16, 16)).save(tmp_path / "pal.png")
    Image.new("RGB", (20, 12), (9, 9, 9)).save(tmp_path / "wide.png")
    Image.new("RGB", (12, 12), (9, 9, 9)).save(tmp_path / "odd.png")
    np.testing.assert_allclose(superres.load_lr(tmp_path / "rgba.png", 64)[0, 0], [1, 1, 1])
    np.testing.assert_allclose(superres.load_lr(tmp_path / "g16.png", 64)[0, 0], [1, 1, 1])
    assert superres.load_lr(tmp_path / "pal.png", 64).shape == (16, 16, 3)
    with pytest.raises(superres.InputError, match="wide.png is 20x12, not square; pass --fit crop or --fit pad"):
        superres.load_lr(tmp_path / "wide.png", 64)
    with pytest.raises(superres.InputError, match="odd.png is 12px: 64 / 12 is not a whole factor"):
        superres.load_lr(tmp_path / "odd.png", 64)
    assert superres.load_lr(tmp_path / "wide.png", 64, "crop").shape == (8, 8, 3)
    assert superres.load_lr(tmp_path / "wide.png", 64, "pad").shape == (32, 32, 3)
    assert superres.load_lr(tmp_path / "odd.png", 64, "pad").shape == (16, 16, 3)


def test_upscale_cli_end_to_end(tmp_path):
    run = tmp_path / "run"
    cfg = helpers.tiny_config(tmp_path / "cache", num_steps=1)
    training.train_and_evaluate(cfg, run)
    (tmp_path / "in").mkdir()
    Image.new("RGB", (16, 16), (200, 180, 20)).save(tmp_path / "in" / "face.png")
    Image.new("RGB", (10, 16), (200, 180, 20)).save(tmp_path / "in" / "wide.png")
    cmd = [
        sys.executable,
        str(ROOT / "upscale.py"),
        "--workdir",
        str(run),
        "--input",
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--restarts",
        "2",
        "--steps",
        "5",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 1 and "wide.png is 10x16, not square" in res.stderr.strip().splitlines()[-1]
    res = subprocess.run(cmd + ["--fit", "pad"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done: " in res.stdout
    report = json.loads((tmp_path / "out" / "face.json").read_text())
    assert len(report["candidates"]) == 2 and report["sr_size"] == 64 and report["lr_size"] == 16
    assert (tmp_path / "out" / "face_sr.png").exists() and (tmp_path / "out" / "face_candidates" / "r1.png").exists()
    with Image.open(tmp_path / "out" / "face_compare.png") as fig:
        assert fig.size == (5 * 66 + 2, 66 + 2)  # LR, bicubic, 2 candidates, best downscaled
