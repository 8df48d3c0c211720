import functools
import json
import pathlib
import re
import runpy
import subprocess
import sys

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import fastgan_jax as fj
from fastgan_jax import images
from fastgan_jax.commands import upscale as upscale_cli
from fastgan_jax.nn.models import noise_shapes
from fastgan_jax.sr import candidates, degrade, ilo, pulse
from fastgan_jax.sr import files as sr_files
from fastgan_jax.train import trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]

KEY = jax.random.key(3)


generator = helpers.tiny_generator


@functools.cache
def generated():
    """Two 64 px images G(z*) with fixed noise, in [-1, 1]."""
    G, v = generator()
    z = pulse._project(jax.random.normal(jax.random.key(5), (2, G.nz)))
    noise = [jax.random.normal(jax.random.key(9), s) for s in noise_shapes(64, 2)]
    hr, _ = G.apply(v, z, noise=noise)
    return hr


@functools.cache
def targets():
    """LR images (8x8, factor 8) made from `generated`, in [-1, 1]."""
    return fj.area_downsample(generated(), 8)


@functools.cache
def search(restarts=3, offset=0, batch=2):
    G, v = generator()
    return jax.device_get(
        fj.upscale(
            G,
            v,
            targets()[offset : offset + batch],
            key=KEY,
            search=pulse.Search(restarts=restarts, steps=100),
            image_offset=offset,
        )
    )


def test_schedule_is_pulses_linear1cycledrop():
    s = pulse.pulse_schedule(100, 0.4)
    lrs = np.array([float(s(jnp.asarray(i))) for i in (0, 45, 89, 90, 99, 100)])
    np.testing.assert_allclose(
        lrs, [0.04, 0.4, 0.4 * (0.1 + 0.9 * 2 / 90), 0.04, 0.04 + 0.9 * (0.0004 - 0.04), 0.0004], rtol=1e-5
    )


@pytest.mark.slow
def test_lr_from_the_generator_is_matched_on_the_sphere():
    res = search()
    assert res.images.shape == (2, 3, 64, 64, 3) and res.best.shape == (2, 64, 64, 3)
    assert res.history.shape == (2, 3, 100) and res.lr_mse.shape == (2, 3)
    assert res.success.any(axis=1).all(), res.lr_mse  # each LR is matched within eps by some restart
    assert (res.history[:, :, -1] < res.history[:, :, 0] / 20).all()
    np.testing.assert_allclose(np.linalg.norm(res.latents, axis=-1), np.sqrt(16), rtol=1e-4)
    assert (res.sphere_error < 1e-5).all()  # z and every noise map back on its sphere after every step
    np.testing.assert_array_equal(res.best_index, np.argmin(res.lr_mse, axis=1))
    # The reported MSE is the MSE of the returned [-1, 1] image, on PULSE's [0, 1] scale.
    assert -1 <= res.images.min() and res.images.max() <= 1
    down = images.to_unit(fj.area_downsample(jnp.asarray(res.images[:, 0]), 8))
    mse = np.mean((down - images.to_unit(targets())) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(mse, res.lr_mse[:, 0], rtol=1e-3)


def test_result_renders_again_from_its_latents_and_noise_maps():
    G, v = generator()
    res = search()
    assert [m.shape for m in res.noise] == [(2, 3, *s[1:]) for s in noise_shapes(64, 1)]
    maps = [m.reshape(6, *m.shape[2:]) for m in res.noise]
    img, _ = G.apply(v, res.latents.reshape(6, -1), train=False, noise=maps)
    np.testing.assert_allclose(img.reshape(res.images.shape), res.images, atol=1e-6)
    np.testing.assert_allclose(candidates.render(G, v, res), res.images, atol=1e-6)


@pytest.mark.slow
def test_fixed_and_zero_noise_maps_are_returned_as_used():
    G, v = generator()
    fixed = fj.upscale(G, v, targets()[:1], key=KEY, search=pulse.Search(restarts=2, steps=3, noise="fixed"))
    trained = fj.upscale(G, v, targets()[:1], key=KEY, search=pulse.Search(restarts=2, steps=3))
    np.testing.assert_allclose(candidates.render(G, v, fixed), fixed.images, atol=1e-6)
    for m in fixed.noise:  # drawn once, on the sphere, not optimised
        np.testing.assert_allclose(jnp.mean(jnp.square(m), axis=(2, 3, 4)), 1, rtol=1e-4)
    assert any(not np.allclose(a, b) for a, b in zip(fixed.noise, trained.noise, strict=True))
    zero = fj.upscale(G, v, targets()[:1], key=KEY, search=pulse.Search(restarts=2, steps=3, noise="zero"))
    assert all((np.asarray(m) == 0).all() for m in zero.noise)
    np.testing.assert_allclose(candidates.render(G, v, zero), zero.images, atol=1e-6)


def test_uint8_and_float_inputs_give_the_same_search():
    G, v = generator()
    lr_u8 = images.to_uint8(targets())
    a = fj.upscale(G, v, lr_u8, key=KEY, search=pulse.Search(restarts=2, steps=5))
    b = fj.upscale(G, v, images.to_float(lr_u8), key=KEY, search=pulse.Search(restarts=2, steps=5))
    np.testing.assert_allclose(a.latents, b.latents, atol=1e-5)
    np.testing.assert_allclose(a.lr_mse, b.lr_mse, rtol=1e-4)


def test_projection_onto_the_sphere():
    x = jax.random.normal(KEY, (4, 8, 8, 1)) * 3
    p = pulse._project(x)
    np.testing.assert_allclose(jnp.sum(p**2, axis=(1, 2, 3)), 64, rtol=1e-5)


@pytest.mark.slow
def test_same_seed_same_result_independent_of_grouping():
    a, b = search(), search()
    np.testing.assert_array_equal(a.images, b.images)
    alone = search(restarts=2, offset=1, batch=1)  # image 1 alone, fewer restarts
    np.testing.assert_allclose(alone.latents[0], a.latents[1, :2], atol=2e-4)
    np.testing.assert_allclose(alone.lr_mse[0], a.lr_mse[1, :2], rtol=1e-2, atol=1e-7)


def test_gan_inversion_at_factor_one_and_zero_noise():
    G, v = generator()
    hr = jnp.repeat(jnp.linspace(-0.6, 0.6, 64)[None, :, None, None], 64, axis=2) * jnp.ones((1, 64, 64, 3))
    res = fj.upscale(G, v, hr, key=KEY, search=pulse.Search(restarts=2, steps=30, noise="zero"))
    assert res.images.shape == (1, 2, 64, 64, 3)
    assert float(res.history[0, :, -1].min()) < float(res.history[0, :, 0].min())


@pytest.mark.slow
def test_gan_inversion_with_lpips_reaches_a_low_error():
    G, v = generator()
    hr = generated()[:1]  # factor 1: invert a 64 px image of the generator; VGG makes each step slow on a CPU
    res = fj.upscale(
        G, v, hr, key=KEY, search=pulse.Search(restarts=1, steps=30, lpips=1.0), lpips_variables=lpips_vgg()
    )
    plain = fj.upscale(G, v, hr, key=KEY, search=pulse.Search(restarts=1, steps=30))
    assert float(res.history[0, 0, 0]) > float(plain.history[0, 0, 0])  # same start, plus the LPIPS term
    assert float(res.lr_mse[0, 0]) < 5e-3, res.lr_mse  # an RMS error of ~18 of 255 levels after 30 steps
    assert res.history[0, 0, -1] < res.history[0, 0, 0] / 5


def lpips_vgg():
    from fastgan_jax.metrics import lpips

    return lpips.lpips_variables("vgg")


def test_lpips_only_at_factor_one():
    G, v = generator()
    with pytest.raises(ValueError, match="lpips: the LPIPS term is for GAN inversion .* got 8x8x3"):
        fj.upscale(G, v, targets(), key=KEY, search=pulse.Search(lpips=1.0))


@pytest.mark.parametrize(
    "lr, match",
    [
        (np.zeros((1, 8, 4, 3), np.float32), "lr_images: LR images must be square, got 8x4"),
        (np.zeros((1, 12, 12, 3), np.float32), "lr_images: the generator's 64px is not a whole multiple of the 12px"),
        (np.full((1, 8, 8, 3), 200.0, np.float32), r"lr_images: float images must lie in \[-1, 1\]"),
        (np.zeros((1, 8, 8, 1), np.float32), r"lr_images: expected float images of shape \[B, H, W, 3\]"),
        (np.zeros((1, 8, 8, 1), np.uint8), r"lr_images: expected uint8 images of shape"),
        (np.zeros((8, 8, 3), np.float32), "lr_images: expected float images of shape"),
        (np.zeros((1, 8, 8, 3), np.int32), "lr_images: expected float images in \\[-1, 1\\], got dtype int32"),
        (np.zeros((0, 8, 8, 3), np.float32), "lr_images: the batch is empty"),
    ],
)
def test_bad_lr_images_are_one_line_errors(lr, match):
    G, v = generator()
    with pytest.raises(ValueError, match=match) as e:
        fj.upscale(G, v, lr, key=KEY)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"noise": "random"}, "noise must be one of"),
        ({"restarts": 0}, "restarts and steps must be at least 1"),
        ({"eps": -1}, "eps must be > 0"),
        ({"lr": 0}, "lr must be > 0"),
        ({"l1": -1}, "l1 and lpips must be >= 0"),
    ],
)
def test_bad_settings_are_one_line_errors(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        pulse.Search(**bad)
    assert "\n" not in str(e.value)


def test_load_lr_conversions_and_fitting(tmp_path):
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "g16.png")
    Image.new("P", (16, 16)).save(tmp_path / "pal.png")
    Image.new("RGB", (20, 12), (9, 9, 9)).save(tmp_path / "wide.png")
    Image.new("RGB", (12, 12), (9, 9, 9)).save(tmp_path / "odd.png")
    assert sr_files.load_lr(tmp_path / "rgba.png", 64).dtype == np.uint8
    np.testing.assert_array_equal(sr_files.load_lr(tmp_path / "rgba.png", 64)[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(sr_files.load_lr(tmp_path / "g16.png", 64)[0, 0], [255, 255, 255])
    assert sr_files.load_lr(tmp_path / "pal.png", 64).shape == (16, 16, 3)
    with pytest.raises(sr_files.InputError, match=r"wide.png is 20x12, not square; pass --fit crop \(its centre\)"):
        sr_files.load_lr(tmp_path / "wide.png", 64)
    odd = "odd.png is 12px, which does not divide the generator's 64px: --fit resize area-downscales it to 8px, "
    with pytest.raises(
        sr_files.InputError, match=re.escape(odd + "--fit crop takes its centre, --fit pad pads it to 16px")
    ):
        sr_files.load_lr(tmp_path / "odd.png", 64)
    assert sr_files.load_lr(tmp_path / "wide.png", 64, "crop").shape == (8, 8, 3)
    assert sr_files.load_lr(tmp_path / "wide.png", 64, "pad").shape == (32, 32, 3)
    assert sr_files.load_lr(tmp_path / "odd.png", 64, "pad").shape == (16, 16, 3)
    with pytest.raises(sr_files.InputError, match="not square: --fit resize keeps the shape"):
        sr_files.load_lr(tmp_path / "wide.png", 64, "resize")


def test_fit_resize_area_downscales_to_the_largest_size_that_divides():
    big = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with pytest.raises(
        sr_files.InputError, match="is 128px, .*--fit resize area-downscales it to 64px.*than the generator"
    ):
        sr_files.fit_lr(big, 64, "none", "big.png")
    np.testing.assert_array_equal(  # a 128 px LR for a 64 px generator: GAN inversion of the whole image
        sr_files.fit_lr(big, 64, "resize"), np.asarray(Image.fromarray(big).resize((64, 64), Image.BOX))
    )
    assert sr_files.fit_lr(big[:12, :12], 64, "resize").shape == (8, 8, 3)
    assert sr_files.fit_lr(big[:16, :16], 64, "resize") is not None  # a size that divides stays as it is
    np.testing.assert_array_equal(sr_files.fit_lr(big[:16, :16], 64, "resize"), big[:16, :16])


@pytest.mark.slow
def test_upscale_cli_end_to_end(tmp_path):
    run = tmp_path / "run"
    cfg = helpers.tiny_config(tmp_path / "cache", num_steps=1)
    trainer.train_and_evaluate(cfg, run)
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
    assert res.returncode == 2 and "wide.png is 10x16, not square" in res.stderr.strip().splitlines()[-1]
    res = subprocess.run(cmd + ["--fit", "pad"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "done: " in res.stdout
    report = json.loads((tmp_path / "out" / "face_png.json").read_text())
    assert len(report["candidates"]) == 2 and report["sr_size"] == 64 and report["lr_size"] == 16
    assert (tmp_path / "out" / "face_png_sr.png").exists()
    assert (tmp_path / "out" / "face_png_candidates" / "r1.png").exists()
    with Image.open(tmp_path / "out" / "face_png_compare.png") as fig:
        figure = np.asarray(fig)
    assert figure.shape[1] == 5 * 66 + 2 and figure.shape[0] > 66 + 2 + 20  # 5 tiles, 3 lines of labels below
    labels = figure[68:].min(axis=-1) < 128  # dark text on white
    assert all(labels[:, 2 + 66 * i : 66 * (i + 1)].any() for i in range(5))  # under every tile
    lines = res.stdout.splitlines()
    assert any(line.endswith("wide.png: 10x16 -> 16px (--fit pad), factor x4") for line in lines), res.stdout
    face = [line for line in lines if "face.png: x4 (16 -> 64px), best LR MSE " in line]
    assert len(face) == 1 and face[0].endswith(
        f"eps 0.002 (restart {report['best_restart']}): {tmp_path / 'out' / 'face_png_sr.png'}"
    )
    assert report["factor"] == 4 and report["fit"] == "pad"


def cli(tmp_path, *flags):
    """upscale_cli.main in-process on the tiny generator (no run to train)."""
    return upscale_cli.main(["--workdir", str(tmp_path / "unused"), "--out", str(tmp_path / "out"), *flags])


@pytest.fixture
def tiny_generator(monkeypatch):
    monkeypatch.setattr(upscale_cli, "load_generator", lambda args: generator())


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--restarts", "0"], "argument --restarts: must be at least 1, got 0"),
        (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
        (["--eps", "-1"], "argument --eps: must be > 0, got -1"),
        (["--eps", "0"], "argument --eps: must be > 0, got 0"),
        (["--lpips", "-1"], "argument --lpips: must be >= 0, got -1"),
    ],
)
def test_upscale_cli_bad_numbers_are_one_line_errors(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, "--input", str(tmp_path), *flags)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")


def test_upscale_cli_out_that_is_a_file_fails_before_the_search(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(upscale_cli, "load_generator", lambda args: pytest.fail("loaded before checking --out"))
    (tmp_path / "out").write_text("")
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, "--input", str(tmp_path))
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("is a file; give a folder for the results")


@pytest.mark.slow
def test_upscale_cli_same_stems_unreadable_files_and_reruns(tmp_path, capsys, monkeypatch, tiny_generator):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8), (200, 180, 20)).save(tmp_path / "in" / "face.png")
    Image.new("RGB", (8, 8), (20, 40, 200)).save(tmp_path / "in" / "face.jpg")
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "in" / "huge.png")
    with monkeypatch.context() as m:
        m.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is a decompression bomb, as 14000x13000 is
        cli(tmp_path, "--input", str(tmp_path / "in"), "--mode", "exact", "--restarts", "3", "--steps", "2")
    out = capsys.readouterr()
    warning = [line for line in out.err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 2 and all(w.endswith("skipped") for w in warning), warning
    assert "broken.png: not a readable image" in warning[0] and "huge.png: not a readable image" in warning[1]
    assert "decompression-bomb limit" in warning[1]
    assert "done: " in out.out and "2 input(s)" in out.out
    png, jpg = (json.loads((tmp_path / "out" / f"face_{e}.json").read_text()) for e in ("png", "jpg"))
    assert png["input"].endswith("face.png") and jpg["input"].endswith("face.jpg")
    with Image.open(tmp_path / "out" / "face_png_sr.png") as a, Image.open(tmp_path / "out" / "face_jpg_sr.png") as b:
        assert np.asarray(a).tolist() != np.asarray(b).tolist()  # two searches, two results
    cli(tmp_path, "--input", str(tmp_path / "in" / "face.png"), "--mode", "exact", "--restarts", "2", "--steps", "2")
    assert sorted(p.name for p in (tmp_path / "out" / "face_png_candidates").iterdir()) == ["r0.png", "r1.png"]
    alone = helpers.error_line(capsys, cli, tmp_path, "--input", str(tmp_path / "in" / "broken.png"))
    assert "broken.png: not a readable image" in alone  # a single input is not skipped
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    huge = helpers.error_line(capsys, cli, tmp_path, "--input", str(tmp_path / "in" / "huge.png"))
    assert re.match(r"error: --input \S*huge.png: not a readable image \(more than", huge), huge


def test_upscale_cli_lpips_is_for_inversion_only(tmp_path, capsys, tiny_generator):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8), (200, 180, 20)).save(tmp_path / "in" / "lr.png")
    line = helpers.error_line(capsys, cli, tmp_path, "--input", str(tmp_path / "in"), "--lpips", "1")
    assert re.match(r"error: --lpips is for GAN inversion .*lr\.png is 8px", line), line


@pytest.mark.slow
def test_upscale_cli_layers_record_each_candidates_stage_and_bad_layers_are_one_line(tmp_path, capsys, tiny_generator):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 64), (200, 180, 20)).save(tmp_path / "in" / "lr.png")  # factor 1: GAN inversion
    flags = ["--input", str(tmp_path / "in"), "--restarts", "2", "--steps", "5"]
    cli(tmp_path, *flags, "--layers", "8,16", "--layer-radius", "0.2", "--layer-steps", "4", "--layer-lr", "0.05")
    report = json.loads((tmp_path / "out" / "lr_png.json").read_text())
    assert report["factor"] == 1 and report["layers"] == {
        "resolutions": [8, 16],
        "radii": [0.2, 0.2],
        "steps": 4,
        "lr": 0.05,
    }
    assert {c["stage"] for c in report["candidates"]} <= {0, 1, 2}
    assert all(c["stage"] > 0 for c in report["candidates"]), report  # the features fit better than the latent
    line = helpers.error_line(capsys, cli, tmp_path, *flags, "--layers", "8,64")
    assert line == "error: --layers 8,64: resolutions must be below the generator's 64px, got (8, 64)", line
    line = helpers.error_line(capsys, cli, tmp_path, *flags, "--layers", "8,x")
    assert line.startswith("error: --layers 8,x: invalid literal for int()"), line


@pytest.mark.slow
def test_upscale_cli_restores_a_blurred_gray_noisy_partly_known_input(tmp_path, capsys, tiny_generator):
    (tmp_path / "in").mkdir()
    Image.new("L", (16, 16), 120).save(tmp_path / "in" / "gray.png")
    known = np.zeros((16, 16), np.uint8)
    known[:, :8] = 255  # the left half is known
    Image.fromarray(known).save(tmp_path / "known.png")
    np.savetxt(tmp_path / "motion.txt", np.eye(3) / 3)  # a diagonal motion blur of the user's
    flags = ["--input", str(tmp_path / "in"), "--restarts", "2", "--steps", "3", "--gray", "--blur", "1"]
    kernel = ["--blur-kernel", str(tmp_path / "motion.txt")]
    cli(tmp_path, *flags, *kernel, "--noise-sigma", "0.05", "--mask", str(tmp_path / "known.png"))
    report = json.loads((tmp_path / "out" / "gray_png.json").read_text())
    assert report["factor"] == 4 and report["gray"] and report["blur"] == 1 and report["mask"].endswith("known.png")
    assert report["blur_kernel"].endswith("motion.txt")
    for c in report["candidates"]:  # eps plus the noise's floor
        assert c["success"] == (c["lr_mse"] <= 2e-3 + 0.05**2)
    with Image.open(tmp_path / "out" / "gray_png_sr.png") as sr:
        assert sr.size == (64, 64) and sr.mode == "RGB"
    Image.new("L", (8, 8), 255).save(tmp_path / "small.png")
    line = helpers.error_line(capsys, cli, tmp_path, *flags, "--mask", str(tmp_path / "small.png"))
    assert line.endswith("small.png: 8x8, not the input's 16x16"), line
    np.save(tmp_path / "even.npy", np.ones((2, 2)) / 4)
    (tmp_path / "words.txt").write_text("a b c\n")
    for name, reason in [
        ("even.npy", "a square kernel of odd size is needed, got 2x2"),
        ("words.txt", "not a .npy array or a text of numbers"),
        ("none.npy", "no such file"),
    ]:
        line = helpers.error_line(capsys, cli, tmp_path, *flags, "--blur-kernel", str(tmp_path / name))
        assert line.startswith(f"error: --blur-kernel {tmp_path / name}: {reason}"), line
    line = helpers.error_line(capsys, cli, tmp_path, *flags, "--lpips", "1")
    assert line.startswith("error: --lpips is for GAN inversion of a clean colour image"), line


@pytest.mark.slow
def test_restore_counts_only_the_known_pixels_of_a_mask_and_each_image_alone():
    """Inpainting: per-image masks; what is in the unknown pixels changes nothing, nor do the other images."""
    G, v = generator()
    known = jnp.zeros((2, 64, 64)).at[0, :, :32].set(1.0).at[1, 16:48, 16:48].set(1.0)
    op = degrade.Mask(known)
    settings = {"key": KEY, "search": pulse.Search(restarts=2, steps=4)}
    res = fj.restore(G, v, generated(), op, **settings)
    scrambled = jnp.where(known[..., None] > 0, generated(), -generated())  # the unknown pixels replaced
    again = fj.restore(G, v, scrambled, op, **settings)
    np.testing.assert_array_equal(res.images, again.images)
    second = fj.restore(G, v, generated()[1:], degrade.Mask(known[1:]), **settings, image_offset=1)
    np.testing.assert_allclose(second.images[0], res.images[1], atol=1e-5)
    err = degrade.observed_mse(op, res.images[:, 0], generated())
    np.testing.assert_allclose(res.lr_mse[:, 0], err, rtol=1e-4)  # lr_mse: the known pixels' MSE on [0, 1]


def test_restore_colourisation_with_noise_and_its_one_line_errors():
    G, v = generator()
    sigma = 0.05
    op = degrade.chain(degrade.Grayscale(), degrade.Noise(sigma))
    gray = op(generated()) + 2 * sigma * jax.random.normal(jax.random.key(4), (2, 64, 64, 1))  # [-1, 1]: 2 sigma
    res = fj.restore(G, v, jnp.clip(gray, -1, 1), op, key=KEY, search=pulse.Search(restarts=2, steps=4, eps=1e-3))
    assert res.images.shape == (2, 2, 64, 64, 3)  # colour images from gray observations
    np.testing.assert_array_equal(res.success, res.lr_mse <= 1e-3 + sigma**2)  # eps plus the noise's floor
    with pytest.raises(
        ValueError, match=r"^observed: the operator makes 64x64x1 of the generator's 64px images, got 64x64x3$"
    ):
        fj.restore(G, v, generated(), op, key=KEY)
    with pytest.raises(ValueError, match=r"lpips: the LPIPS term is for GAN inversion"):
        fj.restore(G, v, generated(), degrade.Mask(jnp.ones((64, 64))), key=KEY, search=pulse.Search(lpips=1.0))


def test_l1_ball_projection_is_the_euclidean_projection():
    v = jax.random.normal(jax.random.key(0), (5, 40))
    radius = jnp.array([1.0, 5.0, 20.0, 100.0, 0.5])
    w = np.asarray(ilo.project_l1_ball(v, radius), np.float64)
    for row, out, r in zip(np.asarray(v, np.float64), w, np.asarray(radius), strict=True):
        if np.abs(row).sum() <= r:
            np.testing.assert_array_equal(out, row)  # inside: unchanged
            continue
        lo, hi = 0.0, np.abs(row).max()  # the projection soft-thresholds at the theta where the L1 norm is r
        for _ in range(100):
            theta = (lo + hi) / 2
            lo, hi = (theta, hi) if np.maximum(np.abs(row) - theta, 0).sum() > r else (lo, theta)
        np.testing.assert_allclose(out, np.sign(row) * np.maximum(np.abs(row) - theta, 0), atol=1e-5)
        assert np.abs(out).sum() == pytest.approx(r, rel=1e-5)


def test_the_generator_continues_from_its_own_intermediate_features():
    G, v = generator()
    z = pulse._project(jax.random.normal(jax.random.key(5), (2, G.nz)))
    noise = [jax.random.normal(jax.random.key(9), s) for s in noise_shapes(64, 2)]
    feats = G.apply(v, z, noise=noise, stop_at=16)
    assert sorted(feats) == [4, 8, 16] and feats[16].shape[:3] == (2, 16, 16)
    img, _ = G.apply(v, None, noise=noise, features=feats)
    np.testing.assert_allclose(img, G.apply(v, z, noise=noise)[0], atol=1e-6)


@pytest.mark.slow
def test_ilo_improves_on_the_latent_search_and_renders_again_exactly():
    G, v = generator()
    settings = {"key": KEY, "search": pulse.Search(restarts=2, steps=5)}
    layers = ilo.Layers(resolutions=(8, 16), radii=(0.2,), steps=4, lr=0.05)
    plain = fj.upscale(G, v, targets(), **settings)
    res = fj.upscale(G, v, targets(), **settings, layers=layers)
    np.testing.assert_array_equal(res.latents, plain.latents)  # the latent search is the same
    assert np.all(res.lr_mse <= plain.lr_mse) and np.any(res.stage > 0), (res.lr_mse, plain.lr_mse, res.stage)
    assert set(np.unique(res.stage)) <= {0, 1, 2} and res.history.shape == (2, 2, 5 + 2 * 4)
    assert sorted(res.features) == [4, 8, 16] and res.features[16].shape[:4] == (2, 2, 16, 16)
    np.testing.assert_allclose(candidates.render(G, v, res), res.images, atol=1e-5)
    # The held-out benchmark reads plain PULSE's answer from ILO's first stage instead of searching twice.
    heldout = runpy.run_path(str(ROOT / "benchmarks" / "restore_heldout.py"))
    pulse_best = heldout["latent_best"](G, v, res, degrade.Downsample(8), targets())
    np.testing.assert_allclose(pulse_best, plain.best, atol=1e-5)
    err = degrade.observed_mse(degrade.Downsample(8), res.images[:, 0], targets())
    np.testing.assert_allclose(res.lr_mse[:, 0], err, rtol=1e-4, atol=1e-7)
    one = fj.upscale(G, v, targets()[1:], **settings, layers=layers, image_offset=1)
    # Each image alone: the same, up to float rounding that the feature steps carry on (a batch of 1 and of 2
    # are programs of their own; Adam divides by the gradients' root mean square).
    np.testing.assert_allclose(one.images[0], res.images[1], atol=1e-4)
    with pytest.raises(ValueError, match=r"layers: resolutions must be below the generator's 64px"):
        fj.upscale(G, v, targets(), **settings, layers=ilo.Layers(resolutions=(8, 64)))
