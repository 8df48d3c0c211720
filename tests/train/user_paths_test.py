"""Names users give: a workdir with glob characters, image files whose names are not UTF-8, upscale inputs
whose output names would be too long for the file system."""

import os
import re
import subprocess
import sys

import helpers
import numpy as np
import pytest
from PIL import Image

from fastgan_jax import data
from fastgan_jax.commands import sample
from fastgan_jax.train import trainer


def _images(folder, names):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(os.fsencode(folder) + b"/" + name)
    return folder


@pytest.mark.slow
def test_glob_characters_in_the_workdir_and_latin1_file_names_train_resume_and_sample(tmp_path, capsys):
    # `[1]` is a glob pattern to Orbax's search for its per-process folders; `caf\xe9.png` (Latin-1) is no str
    # that encodes to UTF-8.
    images = _images(tmp_path / "data", [b"caf\xe9.png", b"a.png", b"b.png", b"c.png"])
    assert len(data.find_images(images)) == 4
    assert data.fingerprint(images) != data.fingerprint(images, contents=False)
    run = tmp_path / "exp[1]"
    trainer.train_and_evaluate(helpers.tiny_config(tmp_path / "cache", source=str(images)), run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    # A new run's first pictures, and (without a terminal) a progress line per log with its speed and ETA.
    assert (run / "samples" / "reals.png").is_file() and (run / "samples" / "fakes_init.png").is_file()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step 1/2 ")]
    assert len(lines) == 1 and re.search(r"\| sec/kimg [\d.]+, elapsed \d+s, ETA \d+s$", lines[0]), lines
    state = trainer.train_and_evaluate(helpers.tiny_config(tmp_path / "cache", source=str(images), num_steps=3), run)
    assert int(state.step) == 3  # resumed from step 2, not started again
    sample.main(["--workdir", str(run), "-n", "4", "--out", str(tmp_path / "grid.png")])
    assert (tmp_path / "grid.png").is_file()


def test_a_config_file_without_get_config_or_with_a_syntax_error_is_one_line(tmp_path):
    from fastgan_jax import configs

    must = "a config file is Python that defines get_config() returning an ml_collections.ConfigDict"
    (tmp_path / "none.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("import ml_collections\n\ndef get_config(:\n    pass\n")
    (tmp_path / "mine.py").write_text("from fastgan_jax.configs.cpu_quick import get_config\n")
    for name, why in [("none.py", "defines no get_config()"), ("broken.py", "line 3: invalid syntax")]:
        with pytest.raises(ValueError) as e:
            configs.resolve(str(tmp_path / name))
        assert str(e.value) == f"--config {tmp_path / name}: {why}; {must}"
    assert configs.resolve(str(tmp_path / "mine.py")) == tmp_path / "mine.py"


def test_the_commands_print_file_names_that_are_not_utf8():
    script = "from fastgan_jax.commands import launch\nlaunch.print_any_file_name()\nprint('caf\\udce9.png: done')"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, env=dict(os.environ, PYTHONIOENCODING=""))
    assert res.returncode == 0 and res.stdout == b"caf\xe9.png: done\n", res.stderr[-2000:]
