import contextlib
import copy
import io
import json
import re

import helpers
import numpy as np
import pytest
from PIL import Image

from fastgan_jax.commands import evaluate, evaluate_sr
from fastgan_jax.train import trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained for 4 steps on six generated images, the checkpoints of steps 3 and 4 kept (in
    tmp / "run"), and its config with FID every 2 steps (for the test of FID during training)."""
    tmp = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    (tmp / "data").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(tmp / "data" / f"img{i}.png")
    cfg = helpers.tiny_config(
        tmp / "cache",
        source=str(tmp / "data"),
        num_steps=4,
        checkpoint_every=1,
        keep_checkpoints=1,
        fid_every=2,
        fid_samples=8,
        sample_every=4,
        log_every=2,
        on_device="no",  # streamed: the program of training_test's streaming test, compiled once
    )
    plain = copy.deepcopy(cfg)
    plain.log.fid_every = 0
    plain.log.keep_checkpoints = 2  # for --step all
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train_and_evaluate(plain, tmp / "run")
    return tmp, cfg


@pytest.mark.slow
def test_fid_during_training_keeps_the_best_checkpoint(run, capsys):
    tmp, cfg = run
    trainer.train_and_evaluate(cfg, tmp / "fid_run")
    out = capsys.readouterr().out
    fids = {int(s): float(v) for s, v in re.findall(r"step (\d+): FID ([\d.]+)", out)}
    assert sorted(fids) == [2, 4]
    kids = {int(s) for s in re.findall(r"step (\d+): FID [\d.]+, KID -?[\d.]+ \(8 samples\)", out)}
    logged = [json.loads(line) for line in (tmp / "fid_run" / "metrics.jsonl").read_text().splitlines()]
    assert kids == {2, 4} == {r["step"] for r in logged if "kid" in r and "fid" in r}
    kept = sorted(int(p.name) for p in (tmp / "fid_run" / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == sorted({4, min(fids, key=fids.get)})  # the latest and the best


@pytest.mark.slow
def test_evaluate_cli(run, capsys):
    tmp, _ = run
    with pytest.warns(UserWarning, match="from 8 generated and 6 real images are mostly noise"):
        evaluate.main(["--workdir", str(tmp / "run"), "--n", "8"])
    result = json.loads((tmp / "run" / "eval" / "fid_4.json").read_text())
    assert result["n_generated"] == 8 and result["n_real"] == 6 and result["fid"] > 0
    out = capsys.readouterr()
    assert "FID" in out.out and "generated images: 100%" in out.err  # a progress bar while it works
    # Every kept checkpoint in one call, each to its own file.
    with pytest.warns(UserWarning, match="mostly noise"):
        evaluate.main(["--workdir", str(tmp / "run"), "--n", "8", "--step", "all"])
    assert re.findall(r"^step (\d+): FID", capsys.readouterr().out, re.MULTILINE) == ["3", "4"]
    assert json.loads((tmp / "run" / "eval" / "fid_3.json").read_text())["step"] == 3
    again = json.loads((tmp / "run" / "eval" / "fid_4.json").read_text())
    again.pop("seconds"), result.pop("seconds")
    assert again == result  # the same samples, the same figures
    for bad, says in (
        (["--step", "-1"], "give a checkpoint step >= 0 or `all`"),
        (["--step", "all", "--out", "x"], "--out names one file"),
    ):
        with pytest.raises(SystemExit):
            evaluate.main(["--workdir", str(tmp / "run"), *bad])
        assert says in capsys.readouterr().err
    # Against other data: a file of its own, named by what it compared, never over the run's own evaluation.
    other = evaluate.result_path(tmp / "run", 4, tmp / "other images")
    assert re.fullmatch(r"fid_4_other-images-[0-9a-f]{8}\.json", other.name), other.name
    assert other != evaluate.result_path(tmp / "run", 4, tmp / "elsewhere" / "other images")  # same name, other path
    assert evaluate.result_path(tmp / "run", 4) == tmp / "run" / "eval" / "fid_4.json"
    assert "nothing: no such folder" in helpers.error_line(capsys, evaluate.main, ["--workdir", str(tmp / "nothing")])


@pytest.mark.slow
def test_evaluate_sr_cli(run, capsys):
    tmp, _ = run
    with pytest.warns(UserWarning, match=f"FID from 2 images is mostly noise .*look at the images in {tmp / 'sr'}$"):
        _evaluate_sr_2(tmp)
    report = json.loads((tmp / "sr.json").read_text())
    for kind in ("hr", "observed", "pulse", "ilo", "baseline"):  # the images to look at
        assert sorted(p.name for p in (tmp / "sr" / kind).iterdir()) == ["00000.png", "00001.png"], kind
    out, err = capsys.readouterr()
    assert "PULSE search: 100%" in err and "ILO search: 100%" in err  # progress while it searches
    for name in ("pulse", "ilo", "baseline"):
        assert set(report[name]) == {"within_eps", "lr_mse", "psnr", "ssim", "lpips_alex", "fid"}
        assert 0 <= report[name]["within_eps"] <= 1 and report[name]["psnr"] > 0
    assert report["baseline_method"] == "bicubic" and "baseline (bicubic)" in out
    # ILO continues PULSE's own search (the same keys) and keeps only what fits the LR better.
    assert report["ilo"]["lr_mse"] <= report["pulse"]["lr_mse"] and report["layers"]["resolutions"] == [8]
    args = ["--workdir", str(tmp / "run"), "--hr", str(tmp / "data"), "--factor", "3"]
    assert "--factor 3 does not divide" in helpers.error_line(capsys, evaluate_sr.main, args)
    args = ["--workdir", str(tmp / "run"), "--hr", str(tmp / "nothing"), "--factor", "4"]
    assert re.fullmatch(r"error: --hr \S*nothing: no such folder", helpers.error_line(capsys, evaluate_sr.main, args))


def _evaluate_sr_2(tmp):
    evaluate_sr.main(
        [
            "--workdir",
            str(tmp / "run"),
            "--hr",
            str(tmp / "data"),
            "--factor",
            "4",
            "--n",
            "2",
            "--restarts",
            "2",
            "--steps",
            "3",
            "--out",
            str(tmp / "sr.json"),
            *["--layers", "8", "--layer-steps", "3"],
        ]
    )


@pytest.mark.slow
def test_evaluate_sr_other_degradations_and_their_baselines(run, capsys):
    tmp, _ = run
    common = ["--workdir", str(tmp / "run"), "--hr", str(tmp / "data"), "--n", "2", "--restarts", "2", "--steps", "3"]
    with pytest.warns(UserWarning, match="FID from 2 images is mostly noise"):
        evaluate_sr.main([*common, "--factor", "1", "--gray", "--noise-sigma", "0.05", "--inpaint", "0.5"])
    report = json.loads((tmp / "run" / "eval" / "sr_x1.json").read_text())
    assert report["baseline_method"] == "biharmonic+gray"
    assert report["degradation"] == {
        "factor": 1,
        "blur": 0.0,
        "gray": True,
        "noise_sigma": 0.05,
        "inpaint": 0.5,
        "downsample": "area",
        "kernel": None,
    }
    # The baseline keeps the known (noisy, gray) pixels as they are: it reproduces the observation exactly.
    assert report["baseline"]["lr_mse"] < 1e-6 and report["baseline"]["within_eps"] == 1.0
    assert "x1, gray, noise 0.05, 50% unknown (64px -> 64px)" in capsys.readouterr().out
    bad = [*common, "--factor", "16", "--inpaint", "0.5"]
    assert helpers.error_line(capsys, evaluate_sr.main, bad) == (
        "error: --inpaint: the 4px observation does not split into 8x8 blocks"
    )


@pytest.mark.parametrize("factor", ["0", "-2"])
def test_evaluate_sr_factor_must_be_positive(tmp_path, capsys, factor):
    with pytest.raises(SystemExit) as e:
        evaluate_sr.main(["--workdir", str(tmp_path), "--hr", str(tmp_path), "--factor", factor])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"error: argument --factor: must be at least 1, got {factor}")
