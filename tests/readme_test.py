"""Executes each of README.md's Python blocks alone, in a namespace of its own, as a reader would paste it.

The files a reader brings are supplied: `runs/quick` is a tiny trained run,
`all_50000.pth` a tiny official checkpoint written by torch (tests/data).
Blocks at the paper's sizes run at small ones (SMALL: each replaced text must
be in the README, so an edit there cannot silently skip the replacement).
"""

import pathlib
import re
import shutil

import helpers

from fastgan_jax.train import trainer

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
SMALL = {
    "fj.Generator(im_size=256, ngf=64, nz=256)": "fj.Generator(im_size=64, ngf=8, nz=16)",
    "fj.Discriminator(im_size=256, ndf=64)": "fj.Discriminator(im_size=64, ndf=8, dec_width=4)",
    "config = cpu_quick.get_config()": "config = helpers.tiny_config('cache')",
    "D = Discriminator256()  # the official widths at 256 px": "D = fj.Discriminator(im_size=64, ndf=8, dec_width=4)",
    "(2, 256, 256, 3)": "(2, 64, 64, 3)",
}


def python_blocks():
    return BLOCK.findall((ROOT / "README.md").read_text())


def small(blocks):
    """The blocks with SMALL's replacements; each replaced text must occur exactly once in the README."""
    text = "\n".join(blocks)
    for old in SMALL:
        assert text.count(old) == 1, f"README.md no longer has {old!r} once: update SMALL in {__file__}"
    out = []
    for block in blocks:
        for old, new in SMALL.items():
            block = block.replace(old, new)
        out.append(block)
    return out


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 4


def test_readme_python_blocks_run_each_alone(tmp_path, monkeypatch):
    # A namespace per block catches a block that needs another's names (a NameError pasted alone); one
    # interpreter for all keeps the suite's compiled programs (an interpreter per block cost 25 s more).
    trainer.train_and_evaluate(helpers.tiny_config(tmp_path / "cache"), tmp_path / "runs" / "quick")
    shutil.copy(pathlib.Path(__file__).parent / "data" / "tiny_all_3.pth", tmp_path / "all_50000.pth")
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(small(python_blocks())):
        namespace = {"__name__": f"readme_block_{i + 1}", "helpers": helpers}
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"README.md python block {i + 1} failed alone: {e!r}\n{block}") from e


def test_readme_links_and_images_are_files_of_the_project():
    targets = re.findall(r"\]\(([^)#\s]+)\)", (ROOT / "README.md").read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "README.md links no file: the restoration figures are embedded from benchmarks/figures"
    missing = [t for t in local if not (ROOT / t).is_file()]
    assert not missing, f"README.md links files that are not in the project: {missing}"
