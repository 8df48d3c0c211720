"""Streamed batches (Grain): a pure function of (seed, step), split over processes, decoded by workers.

A resumed streamed run equals an uninterrupted one; a worker that fails
ends the iteration with its error, never a hang.
"""

import json
import shutil
import time

import helpers
import numpy as np
import pytest
from PIL import Image

from fastgan_jax import data
from fastgan_jax.train import checkpoints, pipeline, trainer


def _folder(tmp_path, n=6, size=24):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _take(iterator, n=None):
    out = list(iterator) if n is None else [next(iterator) for _ in range(n)]
    if hasattr(iterator, "close"):
        iterator.close()
    return out


def test_files_memory_and_processes_give_the_same_batches(tmp_path):
    folder = _folder(tmp_path)
    files = data.file_source(folder, 16)
    memory = pipeline.ArraySource(data.load_folder(folder, 16, cache_dir=False))
    kw = {"batch_size": 4, "seed": 3, "num_steps": 5}
    whole = _take(pipeline.batches(memory, start_step=0, **kw))
    assert len(whole) == 5 and whole[0].shape == (4, 16, 16, 3) and whole[0].dtype == np.uint8
    np.testing.assert_array_equal(whole, _take(pipeline.batches(files, start_step=0, workers=2, **kw)))
    np.testing.assert_array_equal(whole[2:], _take(pipeline.batches(memory, start_step=2, **kw)))  # a resume
    halves = [_take(pipeline.batches(memory, start_step=0, process_index=p, process_count=2, **kw)) for p in (0, 1)]
    np.testing.assert_array_equal(whole, np.concatenate(halves, axis=1))
    assert not np.array_equal(whole[0], whole[1])  # each step draws anew
    with pytest.raises(ValueError, match="batch_size 4 must be a multiple of the 3 processes"):
        pipeline.batches(memory, start_step=0, process_count=3, **kw)


def test_unreadable_files_are_skipped_with_reasons(tmp_path):
    folder = _folder(tmp_path, n=2)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image file\(s\)[\s\S]*empty.png: empty file"):
        source = data.file_source(folder, 16)
    assert len(source) == 2
    with pytest.raises(data.DataError, match="no readable image file among 1"):
        shutil.rmtree(folder)
        folder.mkdir()
        (folder / "empty.png").write_bytes(b"")
        data.file_source(folder, 16)


def test_a_failing_worker_ends_the_iteration_with_its_error(tmp_path):
    folder = _folder(tmp_path, n=2)
    source = data.file_source(folder, 16)
    for f in source.files:  # damaged after the run started: the headers still open, the pixels do not decode
        f.write_bytes(f.read_bytes()[:60])
    start = time.monotonic()
    iterator = pipeline.batches(source, batch_size=2, seed=0, start_step=0, num_steps=10, workers=1)
    with pytest.raises(data.DataError, match=r"imgs/[01]\.png: .*; remove or replace the file"):
        next(iterator)
    iterator.close()
    assert time.monotonic() - start < 120  # the error itself, within seconds; never a hang


def test_fewer_images_than_the_batch_is_a_warning(tmp_path):
    cfg = helpers.tiny_config(tmp_path / "cache", source=str(_folder(tmp_path, n=2, size=64)))
    with pytest.warns(UserWarning, match=r"2 image\(s\), fewer than --config.optim.batch_size=4: every batch repeats"):
        exp, _ = trainer.setup(cfg, tmp_path / "w")
    exp.mngr.close()


@pytest.mark.slow
def test_a_file_that_breaks_mid_run_stops_it_with_a_checkpoint_of_the_steps_done(tmp_path, monkeypatch):
    streamed = pipeline.device_batches

    def batches(*args):  # two good batches, then the worker meets a file damaged since the start
        good = streamed(*args)
        yield next(good)
        yield next(good)
        good.close()
        raise data.DataError("imgs/3.png: image file is truncated; remove or replace the file and run the same command")

    monkeypatch.setattr(pipeline, "device_batches", batches)
    cfg = helpers.tiny_config(tmp_path / "cache", on_device="no", num_steps=10)
    with pytest.raises(data.DataError, match=r"imgs/3.png: .*; stopped at step 2, checkpoint 2 saved"):
        trainer.train_and_evaluate(cfg, tmp_path / "w")
    mngr = checkpoints.manager(tmp_path / "w", create=False)
    assert mngr.all_steps() == [2]
    mngr.close()


@pytest.mark.slow
def test_streamed_from_files_resumed_run_equals_an_uninterrupted_one(tmp_path):
    folder = _folder(tmp_path, n=6, size=64)
    cfg = {"source": str(folder), "stream_from": "files", "workers": 1, "sample_every": 100}

    def run(workdir, steps):
        return trainer.train_and_evaluate(helpers.tiny_config(tmp_path, num_steps=steps, **cfg), workdir)

    run(tmp_path / "a", 2)
    a = run(tmp_path / "a", 4)
    b = run(tmp_path / "b", 4)
    for x, y in zip(helpers.leaves(a), helpers.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    logs = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in "ab"]
    a_log, b_log = ([(m["step"], m["d_real"], m["rec"]) for m in map(json.loads, log)] for log in logs)
    assert a_log == b_log and [s for s, _, _ in a_log] == [1, 2, 3, 4]


def test_a_tfds_split_streams_from_its_files_as_from_memory(tmp_path, monkeypatch):
    helpers.prepare_tfds_images(tmp_path, monkeypatch)
    spec, opts = "tfds:fastgan_test_images", {"data_dir": str(tmp_path)}
    files = data.tfds_source(spec, 16, **opts)
    memory = pipeline.ArraySource(data.load_tfds(spec, 16, **opts))
    kw = {"batch_size": 4, "seed": 1, "start_step": 0, "num_steps": 3}
    np.testing.assert_array_equal(
        _take(pipeline.batches(memory, **kw)), _take(pipeline.batches(files, workers=2, **kw))
    )
    with pytest.raises(data.DataError, match="tfds:fastgan_test_images:nope: cannot open the dataset"):
        data.tfds_source(spec + ":nope", 16, **opts)
