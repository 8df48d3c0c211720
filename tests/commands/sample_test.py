"""fastgan-sample on a tiny trained run: grids, one PNG per sample, the raw generator, the user's latents,
the docs' commands, and bad input as one-line errors."""

import pathlib
import re
import shlex

import helpers
import numpy as np
import pytest
from PIL import Image

from fastgan_jax.commands import sample
from fastgan_jax.train import trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
NZ = 16  # helpers.tiny_config
N = 4  # every call generates one batch of N (one compiled program, shared with training's sample grids)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run with checkpoints at steps 1 and 2."""
    tmp = tmp_path_factory.mktemp("sample")
    trainer.train_and_evaluate(helpers.tiny_config(tmp / "cache", checkpoint_every=1), tmp / "run")
    return tmp / "run"


def read_folder(folder) -> np.ndarray:
    """The PNGs of a folder, in name order, as uint8 [N, H, W, 3]."""
    return np.stack([np.asarray(Image.open(f)) for f in sorted(pathlib.Path(folder).glob("*.png"))])


def test_individual_grid_seed_and_raw(run, tmp_path, capsys):
    sample.main(
        [
            "--workdir",
            str(run),
            "-n",
            str(N),
            "--out",
            str(tmp_path / "grid.png"),
            *["--individual", str(tmp_path / "a")],
        ]
    )
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"{i:06d}.png" for i in range(N)]
    assert "sampling: 100%" in capsys.readouterr().err  # a progress bar while it generates
    ema = read_folder(tmp_path / "a")
    assert ema.shape == (N, 64, 64, 3)
    with Image.open(tmp_path / "grid.png") as grid:  # 2 x 2 tiles of 64 px with 2 px padding
        assert grid.size == (2 * 66 + 2, 2 * 66 + 2)
        np.testing.assert_array_equal(np.asarray(grid)[68:132, 2:66], ema[2])
    sample.main(["--workdir", str(run), "-n", str(N), "--individual", str(tmp_path / "again")])
    np.testing.assert_array_equal(read_folder(tmp_path / "again"), ema)  # the same seed, the same images
    for name, extra in (("seed1", ["--seed", "1"]), ("raw", ["--raw"]), ("step1", ["--step", "1"])):
        sample.main(["--workdir", str(run), "-n", str(N), "--individual", str(tmp_path / name), *extra])
        assert not np.array_equal(read_folder(tmp_path / name), ema), name
    assert not (tmp_path / "samples.png").exists()  # --individual alone writes no grid


def test_latents_file_gives_each_image_its_latent(run, tmp_path):
    z = np.random.default_rng(0).normal(size=(N, NZ))  # float64 is accepted
    np.save(tmp_path / "a.npy", z)
    z[1] += 1.0
    np.save(tmp_path / "b.npy", z.astype(np.float32))
    for name in ("a", "b"):
        latents = ["--latents", str(tmp_path / f"{name}.npy")]
        sample.main(["--workdir", str(run), *latents, "--individual", str(tmp_path / name)])
    a, b = read_folder(tmp_path / "a"), read_folder(tmp_path / "b")
    assert a.shape == (N, 64, 64, 3)
    np.testing.assert_array_equal(a[[0, 2, 3]], b[[0, 2, 3]])  # an image depends only on its latent and noise
    assert not np.array_equal(a[1], b[1])


def test_interpolation_frames_as_files(run, tmp_path):
    sample.main(
        ["--workdir", str(run), "--interpolate", "2", "--frames", "2", "--out", str(tmp_path / "lerp.png")]
        + ["--gif", str(tmp_path / "lerp.gif"), "--individual", str(tmp_path / "frames")]
    )
    frames = read_folder(tmp_path / "frames")  # row-major: strip 0, then strip 1
    assert len(frames) == N and not np.array_equal(frames[0], frames[1])
    with Image.open(tmp_path / "lerp.png") as strip, Image.open(tmp_path / "lerp.gif") as gif:
        assert strip.size == (2 * 66 + 2, 2 * 66 + 2) and gif.n_frames == 2


def docs_sampling_commands() -> list[list[str]]:
    """The fastgan-sample commands of docs/training.md's "## Sampling" block, as argument lists."""
    section = (ROOT / "docs" / "training.md").read_text().split("## Sampling", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)[1]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("fastgan-sample ")]


def test_docs_sampling_commands_run(run, tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "quick").symlink_to(run)
    np.save(tmp_path / "z.npy", np.random.default_rng(1).normal(size=(N, NZ)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    commands = docs_sampling_commands()
    assert len(commands) >= 4
    for command in commands:  # as shown, with N images to keep it fast
        small = ["--interpolate", "2", "--frames", "2"] if "--interpolate" in command else ["-n", str(N)]
        sample.main(command[1:] + small * ("--latents" not in command))
        outputs = [command[i + 1] for i, a in enumerate(command) if a in ("--out", "--gif", "--individual")]
        assert outputs and all(pathlib.Path(p).exists() for p in outputs), command


@pytest.mark.parametrize(
    "args, message",
    [
        (["--latents", "{tmp}/missing.npy"], "--latents {tmp}/missing.npy: cannot read"),
        (["--latents", "{tmp}/wide.npy"], "--latents {tmp}/wide.npy: shape [2, 17], expected [N, 16]"),
        (["--latents", "{tmp}/ints.npy"], "--latents {tmp}/ints.npy: dtype int64, expected floats"),
        (["--latents", "{tmp}/pickled.npy"], "--latents {tmp}/pickled.npy: cannot read"),
        (["--latents", "{tmp}/nan.npy"], "--latents {tmp}/nan.npy: holds NaN"),
        (["--step", "7"], "no checkpoint at step 7"),
        (["-n", "0"], "-n 0: give at least 1"),
        (["--gif", "{tmp}/x.gif"], "--gif needs --interpolate"),
        (["--out", "{tmp}/grid.xyz"], "--out {tmp}/grid.xyz: not an image file name"),
        (["--latents", "{tmp}/ints.npy", "--interpolate", "2"], "--latents cannot be combined with --interpolate"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_input_is_a_one_line_error(run, tmp_path, capsys, args, message):
    np.save(tmp_path / "wide.npy", np.zeros((2, NZ + 1), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((2, NZ), np.int64))
    np.save(tmp_path / "pickled.npy", np.array([{"z": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full((2, NZ), np.nan, np.float32))
    args = [a.format(tmp=tmp_path) for a in args]
    line = helpers.error_line(capsys, sample.main, ["--workdir", str(run), *args])
    assert message.format(tmp=tmp_path) in line, line


def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert "no checkpoint here" in helpers.error_line(capsys, sample.main, ["--workdir", str(tmp_path / "nothing")])
