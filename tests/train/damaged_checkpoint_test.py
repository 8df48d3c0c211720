"""A damaged latest checkpoint: resume, load_run, fastgan-sample and upscale fall back to the newest readable one
with one line naming it; training moves it aside (never deletes it); asking for it is one line."""

import pathlib
import re
import shutil

import helpers
import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax.commands import sample
from fastgan_jax.commands import upscale as upscale_cli
from fastgan_jax.train import checkpoints, trainer


def truncate_largest(step_dir):
    largest = max((p for p in (step_dir / "state" / "ocdbt.process_0" / "d").iterdir()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:1000])


def delete_data(step_dir):
    shutil.rmtree(step_dir / "state" / "ocdbt.process_0" / "d")


def truncate_without_manifest(step_dir):  # a checkpoint written before manifests: only the restore tells
    (step_dir / checkpoints.MANIFEST).unlink()
    truncate_largest(step_dir)


DAMAGES = [truncate_largest, delete_data, truncate_without_manifest]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The suite's tiny run to step 4, checkpoints at 2 and 4."""
    tmp = tmp_path_factory.mktemp("damaged")
    state = trainer.train_and_evaluate(helpers.tiny_config(tmp / "cache", num_steps=4), tmp / "run")
    return tmp / "run", helpers.leaves(state)


@pytest.mark.parametrize("damage", DAMAGES)
def test_load_run_falls_back_to_the_newest_readable_checkpoint(run, damage, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run[0], work)
    damage(work / "checkpoints" / "4")
    with pytest.warns(UserWarning, match=r"checkpoint 4 is damaged \(.+\); using an older one"):
        assert fj.load_run(work).step == 2
    damaged = r"checkpoint 4 is damaged .*; readable checkpoints: \[2\]"
    with pytest.raises(checkpoints.DamagedCheckpointError, match=damaged):
        fj.load_run(work, 4)


def test_sample_and_upscale_use_the_newest_readable_checkpoint(run, tmp_path, capsys):
    work = tmp_path / "run"
    shutil.copytree(run[0], work)
    truncate_largest(work / "checkpoints" / "4")
    with pytest.warns(UserWarning, match="checkpoint 4 is damaged"):
        sample.main(["--workdir", str(work), "-n", "2", "--out", str(tmp_path / "grid.png")])
    assert (tmp_path / "grid.png").exists()
    args = ["--workdir", str(work), "--step", "4", "-n", "2", "--out", str(tmp_path / "g4.png")]
    line = helpers.error_line(capsys, sample.main, args)
    assert re.fullmatch(r"error: .*checkpoint 4 is damaged .*readable checkpoints: \[2\]", line), line
    args = upscale_cli.build_parser().parse_args(["--workdir", str(work), "--input", "x", "--out", str(tmp_path)])
    with pytest.warns(UserWarning, match="checkpoint 4 is damaged"):
        G, _ = upscale_cli.load_generator(args)
    assert G.im_size == 64
    assert "Traceback" not in capsys.readouterr().err


def test_resume_sets_the_damaged_checkpoint_aside_and_continues_exactly(run, tmp_path, capsys):
    work = tmp_path / "run"
    shutil.copytree(run[0], work)
    truncate_largest(work / "checkpoints" / "4")
    state = trainer.train_and_evaluate(helpers.tiny_config(tmp_path / "cache", num_steps=4), work)
    out = capsys.readouterr().out
    assert "checkpoint 4 is damaged (" in out and f"moved to {work / 'damaged_checkpoints' / '4'}" in out, out
    assert (work / "damaged_checkpoints" / "4" / "state").is_dir()  # kept for inspection
    assert sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    for x, y in zip(helpers.leaves(state), run[1], strict=True):  # steps 3 and 4 again, as the first time
        np.testing.assert_array_equal(x, y)
    assert checkpoints.damage(checkpoints.manager(work, create=False), 4) is None  # the new one has a manifest


def test_manifest_names_what_changed(run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run[0], work)
    mngr = checkpoints.manager(work, create=False)
    assert checkpoints.damage(mngr, 4) is None and checkpoints.damage(mngr, 2) is None
    truncate_largest(work / "checkpoints" / "4")
    assert "bytes," in checkpoints.damage(mngr, 4) and "were saved" in checkpoints.damage(mngr, 4)
    delete_data(work / "checkpoints" / "2")
    assert checkpoints.damage(mngr, 2).endswith("is missing")


def test_no_readable_checkpoint_is_one_error_and_nothing_is_moved(run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run[0], work)
    for step in (2, 4):
        delete_data(work / "checkpoints" / str(step))
    with pytest.raises(checkpoints.DamagedCheckpointError, match=r"no checkpoint reads back \(4: .*; 2: .*\)"):
        trainer.train_and_evaluate(helpers.tiny_config(tmp_path / "cache", num_steps=6), work)
    assert not (work / "damaged_checkpoints").exists()
    assert pathlib.Path(work / "checkpoints" / "4").is_dir()
