"""fastgan-upscale on what users hand it: names at the file system's limit, results written next to the inputs
and run again, a mask with no known pixel, a file as --out, a gray input without --gray."""

import json
import os
import shlex

import helpers
import pytest
from PIL import Image

from fastgan_jax.commands import upscale as upscale_cli
from fastgan_jax.sr import files as sr_files

# Files, names and labels: the exact mode's plain search (compiled in seconds; the modes: robust_cli_test.py).
QUICK = ["--mode", "exact", "--restarts", "2", "--steps", "2"]


@pytest.fixture
def tiny_generator(monkeypatch):
    monkeypatch.setattr(upscale_cli, "load_generator", lambda args: helpers.tiny_generator())


def _lr(path, colour=(200, 180, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


@pytest.mark.slow
def test_a_name_at_the_limit_gets_outputs_that_fit_and_the_next_input_runs(tmp_path, capsys, tiny_generator):
    long = _lr(tmp_path / "in" / ("x" * 246 + ".png"))  # 250 bytes: legal; its NAME_compare.png would not be
    _lr(tmp_path / "in" / "zz.png", (20, 40, 200))
    other = "é" * 124 + ".png"  # 252 bytes of two-byte characters: cut at a character's boundary
    _lr(tmp_path / "in" / other, (90, 90, 40))
    upscale_cli.main(["--workdir", "unused", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *QUICK])
    assert "3 input(s)" in capsys.readouterr().out
    names = os.listdir(tmp_path / "out")
    assert max(len(os.fsencode(n)) for n in names) <= 255 and len(names) == 3 * 4
    stem = sr_files.output_name(long)
    assert len(stem) == 255 - 12 and stem.startswith("x" * 200) and (tmp_path / "out" / f"{stem}_sr.png").is_file()
    assert json.loads((tmp_path / "out" / f"{stem}.json").read_text())["input"] == str(long)
    assert (tmp_path / "out" / "zz_png_sr.png").is_file()  # the folder's next input
    assert sr_files.output_name(tmp_path / other).encode().decode()  # valid UTF-8
    assert sr_files.output_name(tmp_path / "face.png") == "face_png"  # short names as before


@pytest.mark.slow
def test_results_next_to_the_inputs_never_become_inputs(tmp_path, capsys, tiny_generator):
    _lr(tmp_path / "in" / "face.png")
    _lr(tmp_path / "in" / "user_sr.png", (20, 40, 200))  # a user's own file that merely looks like a result
    for _ in range(2):
        upscale_cli.main(
            ["--workdir", "unused", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "in"), *QUICK]
        )
        assert "2 input(s)" in capsys.readouterr().out
    assert not list((tmp_path / "in").glob("*_png_sr_png*"))


def test_a_mask_with_no_known_pixel_is_one_line_before_the_search(tmp_path, capsys, monkeypatch, tiny_generator):
    _lr(tmp_path / "in" / "lr.png")
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    monkeypatch.setattr(upscale_cli, "_upscale_one", lambda *a: pytest.fail("searched"))
    line = helpers.error_line(
        capsys,
        upscale_cli.main,
        ["--workdir", "unused", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--mask"]
        + [str(tmp_path / "black.png")],
    )
    assert line == f"error: --mask {tmp_path / 'black.png'}: no known pixel (all black); white marks the pixels of " + (
        "the input to keep"
    )


def test_a_file_as_out_is_one_line_without_usage(tmp_path, capsys):
    (tmp_path / "out").write_text("")
    with pytest.raises(SystemExit) as e:
        upscale_cli.main(["--workdir", "unused", "--input", str(tmp_path), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --out {tmp_path / 'out'} is a file; give a folder for the results"
    ]


@pytest.mark.slow
def test_a_gray_input_without_gray_gets_a_hint(tmp_path, capsys, tiny_generator):
    _lr(tmp_path / "in" / "g.png", (90, 90, 90))
    upscale_cli.main(["--workdir", "unused", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *QUICK])
    assert f"note: {tmp_path / 'in' / 'g.png'} is gray (R = G = B): --gray colourises" in capsys.readouterr().out


def test_a_misspelt_workdir_says_the_folder_does_not_exist(tmp_path, capsys):
    from fastgan_jax.commands import sample

    (tmp_path / "runs" / "quick").mkdir(parents=True)
    line = helpers.error_line(capsys, sample.main, ["--workdir", str(tmp_path / "runs" / "qiuck")])
    assert line == f"error: {tmp_path / 'runs' / 'qiuck'}: no such folder (did you mean {tmp_path / 'runs' / 'quick'}?)"


def test_a_misspelt_config_field_gets_the_closest_one():
    from fastgan_jax.train.validate import ConfigError, check_fields

    with pytest.raises(
        ConfigError, match=r"--config.batchsize: no such config field \(did you mean --config.optim.batch_size\?\)"
    ):
        check_fields(["batchsize"])


@pytest.mark.slow
def test_gray_masked_noisy_restorations_are_labelled_by_what_was_observed(
    tmp_path, capsys, monkeypatch, tiny_generator
):
    labels = []
    real_row = sr_files.visual.labelled_row
    monkeypatch.setattr(sr_files.visual, "labelled_row", lambda tiles, lab: labels.append(lab) or real_row(tiles, lab))
    _lr(tmp_path / "in" / "g.png", (90, 90, 90))
    out = str(tmp_path / "out")
    upscale_cli.main(
        ["--workdir", "unused", "--input", str(tmp_path / "in"), "--out", out, *QUICK, "--gray"]
        + ["--noise-sigma", "0.05"]
    )
    assert "g.png: x8, gray, noisy (8 -> 64px), best LR MSE " in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "g_png.json").read_text())["task"] == "x8, gray, noisy"
    assert labels[-1][0] == ["LR 8px", "x8, gray, noisy", "nearest"] and labels[-1][-1][1] == "degraded"
    Image.new("RGB", (64, 64), (200, 180, 20)).save(tmp_path / "in" / "g.png")  # the generator's size: no factor
    Image.new("L", (64, 64), 255).save(tmp_path / "known.png")
    upscale_cli.main(
        ["--workdir", "unused", "--input", str(tmp_path / "in"), "--out", out, *QUICK, "--mask"]
        + [str(tmp_path / "known.png")]
    )
    assert "g.png: masked (64 -> 64px), best MSE to the input " in capsys.readouterr().out
    assert labels[-1][:2] == [["input 64px", "masked"], ["input", "as given"]]
    assert "bicubic" not in str(labels[-1]) and "x1" not in str(labels[-1])


def test_every_upscale_command_of_the_pages_parses():
    """README's and docs/'s `fastgan-upscale` lines are the command's flags as it takes them (each is run on a
    tiny generator elsewhere; this checks that none has a flag or value the parser refuses)."""
    lines = []
    for page in helpers.PAGES:
        for block in helpers.code_blocks(page, "bash"):
            joined = block.replace("\\\n", " ")
            lines += [line for line in joined.splitlines() if line.startswith("fastgan-upscale ")]
    assert len(lines) >= 8
    for line in lines:
        upscale_cli.build_parser().parse_args(shlex.split(line, comments=True)[1:])
