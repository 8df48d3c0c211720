"""`fastgan-upscale` and `fastgan-evaluate-sr` with the robust mode, the fidelity knob and the tuning, on the
tiny generator."""

import json
import types

import helpers
import numpy as np
import pytest
from PIL import Image

from fastgan_jax.commands import evaluate_sr
from fastgan_jax.commands import upscale as upscale_cli
from fastgan_jax.sr import candidates as candidates_lib
from fastgan_jax.sr import pulse

FAST = ["--restarts", "2", "--steps", "3", "--layer-steps", "2"]


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The upscale command on the tiny generator, with one 16 px input (x4) in tmp_path/in."""
    monkeypatch.setattr(upscale_cli, "load_generator", lambda args: helpers.tiny_generator())
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in" / "thumb.png")

    def cli(*flags):
        out = tmp_path / "out"
        args = ["--workdir", str(tmp_path / "unused"), "--input", str(tmp_path / "in"), "--out", str(out)]
        upscale_cli.main([*args, *FAST, *flags])
        return json.loads((out / "thumb_png.json").read_text()), out

    return cli


@pytest.mark.slow
def test_upscale_is_robust_by_default_and_exact_on_request(tiny, capsys):
    report, _ = tiny()
    assert report["mode"] == "robust" and report["loss"] == "robust" and report["floor"] == pulse.ROBUST.floor
    assert report["layers"]["resolutions"] == [8, 16, 32] and report["layers"]["radii"] == [0.1] * 3
    (sigma,) = report["blur_estimate"]  # the blur of unknown width, estimated with the image
    assert 0.3 <= sigma <= 3.0
    assert report["fidelity"] == {"weight": 1.0, "k": 4, "input": 0.33} and report["tuning"] is None  # ROBUST_FIDELITY
    report, _ = tiny("--mode", "exact")
    assert report["loss"] == "mse" and report["floor"] == 0 and report["layers"] is None
    assert report["fidelity"] == {"weight": 0.0, "k": 0, "input": 0.0}  # the best candidate
    assert report["blur_estimate"] == [] and {c["stage"] for c in report["candidates"]} == {0}
    # Flags given win over the mode's defaults.
    report, _ = tiny("--layers", "8", "--layer-radius", "0.2", "--floor", "0")
    assert report["layers"]["resolutions"] == [8] and report["layers"]["radii"] == [0.2] and report["floor"] == 0
    assert "best LR MSE" in capsys.readouterr().out


@pytest.mark.slow
def test_upscale_fidelity_writes_the_blend_and_tuning_is_recorded(tiny):
    flags = ["--fidelity", "1", "--fidelity-k", "2", "--fidelity-input", "0"]
    flags += ["--tune-steps", "2", "--tune-radius", "0.02"]
    report, out = tiny(*flags)
    assert report["fidelity"] == {"weight": 1.0, "k": 2, "input": 0.0}
    assert report["tuning"] == {"steps": 2, "lr": 1e-3, "radius": 0.02}
    assert {c["stage"] for c in report["candidates"]} <= {0, 1, 2, 3, 4}  # 4: the tuned generator
    candidates = [np.asarray(Image.open(out / "thumb_png_candidates" / f"r{r}.png"), np.float32) for r in (0, 1)]
    answer = np.asarray(Image.open(out / "thumb_png_sr.png"), np.float32)
    assert np.abs(answer - (candidates[0] + candidates[1]) / 2).max() <= 1.0  # the mean, up to uint8 rounding


@pytest.mark.slow
def test_upscale_fidelity_input_one_is_the_inputs_bicubic_upsampling(tiny, tmp_path):
    report, out = tiny("--fidelity-input", "1")
    assert report["fidelity"] == {"weight": 1.0, "k": 4, "input": 1.0}
    lr = np.asarray(Image.open(tmp_path / "in" / "thumb.png"), np.float32) / 127.5 - 1
    want = (np.asarray(candidates_lib.upsampled(lr[None], 64))[0] + 1) * 127.5
    answer = np.asarray(Image.open(out / "thumb_png_sr.png"), np.float32)
    assert np.abs(answer - want).max() <= 1.0  # up to uint8 rounding


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--fidelity", "1.5"], "argument --fidelity: must be in [0, 1], got 1.5"),
        (["--fidelity-k", "-1"], "argument --fidelity-k: must be >= 0, got -1"),
        (["--fidelity-input", "2"], "argument --fidelity-input: must be in [0, 1], got 2"),
        (["--floor", "-1"], "argument --floor: must be >= 0, got -1"),
        (["--tune-radius", "0"], "argument --tune-radius: must be > 0, got 0"),
        (["--mode", "fast"], "argument --mode: invalid choice: 'fast'"),
    ],
)
def test_upscale_bad_mode_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    args = ["--workdir", str(tmp_path), "--input", str(tmp_path), "--out", str(tmp_path / "out"), *flags]
    with pytest.raises(SystemExit) as e:
        upscale_cli.main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.slow
def test_evaluate_sr_takes_the_robust_mode_the_knob_and_the_tuning(tmp_path, monkeypatch, capsys):
    G, variables = helpers.tiny_generator()
    config = {"data": {"aspect": "center_crop", "background": [255, 255, 255]}}
    run = types.SimpleNamespace(generator=G, g_variables=variables, config=config)
    monkeypatch.setattr(evaluate_sr.runs, "load_run", lambda workdir: run)
    (tmp_path / "hr").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "hr" / f"{i}.png")
    args = ["--workdir", str(tmp_path), "--hr", str(tmp_path / "hr"), "--factor", "4", *FAST, "--layers", "8"]
    args += ["--mode", "robust", "--fidelity", "0.5", "--tune-steps", "2", "--out", str(tmp_path / "sr.json")]
    with pytest.warns(UserWarning, match="mostly noise"):  # 2 images: FID says little
        evaluate_sr.main(args)
    report = json.loads((tmp_path / "sr.json").read_text())
    assert report["blind"] and report["search"]["loss"] == "robust" and report["search"]["floor"] == 1e-3
    assert report["fidelity"] == {"weight": 0.5, "k": 4, "input": 0.33} and report["tuning"]["steps"] == 2
    assert report["layers"]["radii"] == [0.1]
    assert all(np.isfinite(report[m]["psnr"]) for m in ("pulse", "ilo", "baseline"))
    assert "baseline (bicubic)" in capsys.readouterr().out
