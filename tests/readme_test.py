"""Executes each Python block of README.md and of every docs/*.md page alone, in a namespace of its own, as a
reader would paste it; checks that the pages link only files of the project and name nothing outside it.

The files a reader brings are supplied: `runs/quick` is a tiny trained run,
`all_50000.pth` a tiny official checkpoint written by torch (tests/data).
Blocks at the paper's sizes run at small ones (SMALL: each replaced text must
be in the pages once, so an edit there cannot silently skip the replacement).
"""

import pathlib
import re
import shutil

import helpers
import pytest

from fastgan_jax.train import trainer

ROOT, PAGES = helpers.ROOT, helpers.PAGES
SMALL = {
    "fj.Generator(im_size=256, ngf=64, nz=256)": "fj.Generator(im_size=64, ngf=8, nz=16)",
    "fj.Discriminator(im_size=256, ndf=64)": "fj.Discriminator(im_size=64, ndf=8, dec_width=4)",
    "config = cpu_quick.get_config()": "config = helpers.tiny_config('cache')",
    "D = Discriminator256()  # the official widths at 256 px": "D = fj.Discriminator(im_size=64, ndf=8, dec_width=4)",
    "(2, 256, 256, 3)": "(2, 64, 64, 3)",
}


def name(page: pathlib.Path) -> str:
    return str(page.relative_to(ROOT))


def python_blocks(page: pathlib.Path) -> list[str]:
    return helpers.code_blocks(page, "python")


def small(blocks):
    """The blocks with SMALL's replacements."""
    out = []
    for block in blocks:
        for old, new in SMALL.items():
            block = block.replace(old, new)
        out.append(block)
    return out


def test_pages_have_python_blocks_and_small_finds_each_text_once():
    text = "\n".join(block for page in PAGES for block in python_blocks(page))
    assert len(python_blocks(ROOT / "README.md")) >= 1
    assert sum(len(python_blocks(page)) for page in PAGES) >= 8
    for old in SMALL:
        assert text.count(old) == 1, f"the pages no longer have {old!r} once: update SMALL in {__file__}"


@pytest.fixture(scope="module")
def reader_files(tmp_path_factory):
    """A folder with what a reader brings: runs/quick (trained) and all_50000.pth."""
    where = tmp_path_factory.mktemp("reader")
    trainer.train_and_evaluate(helpers.tiny_config(where / "cache"), where / "runs" / "quick")
    shutil.copy(pathlib.Path(__file__).parent / "data" / "tiny_all_3.pth", where / "all_50000.pth")
    return where


@pytest.mark.parametrize("page", PAGES, ids=name)
@pytest.mark.slow
def test_python_blocks_run_each_alone(page, reader_files, tmp_path, monkeypatch):
    # A namespace per block catches a block that needs another's names (a NameError pasted alone); one
    # interpreter for all keeps the suite's compiled programs (an interpreter per block cost 25 s more).
    for entry in reader_files.iterdir():
        (tmp_path / entry.name).symlink_to(entry)
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(small(python_blocks(page))):
        namespace = {"__name__": f"page_block_{i + 1}", "helpers": helpers}
        try:
            exec(compile(block, f"{name(page)} python block {i + 1}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"{name(page)} python block {i + 1} failed alone: {e!r}\n{block}") from e


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_links_and_images_are_files_of_the_project(page):
    targets = re.findall(r"\]\(([^)#\s]+)\)", page.read_text())
    local = [t for t in targets if "://" not in t]
    missing = [t for t in local if not (page.parent / t).resolve().is_file()]
    assert not missing, f"{name(page)} links files that are not in the project: {missing}"


def test_readme_links_the_docs_and_the_figures():
    readme = set(re.findall(r"\]\(([^)#\s]+)\)", (ROOT / "README.md").read_text()))
    assert {name(page) for page in PAGES[1:]} <= readme, "every docs/ page is linked from README.md"
    restoration = (ROOT / "docs" / "restoration.md").read_text()
    assert "](../benchmarks/figures/restore_x4.png)" in restoration


def test_no_page_names_the_shared_folder():
    # A public clone has no ../shared: commands name the reader's own folders (path/to/images).
    naming = {page.name for page in PAGES if "../shared" in page.read_text()}
    assert not naming, naming
