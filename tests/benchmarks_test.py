"""The benchmark scripts run (tiny sizes) and print their figures."""

import json
import pathlib
import runpy
import sys

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


TINY = ["--im-size", "64", "--batch", "2", "--ngf", "8", "--ndf", "8", "--nz", "16", "--dec-width", "4"]
TINY += ["--precision", "float32", "--recon", "l1"]


def run_script(script, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(BENCH / script), run_name="__main__")
    return capsys.readouterr().out


def test_train_speed_times_and_accounts_memory(tmp_path, monkeypatch, capsys):
    records = tmp_path / "runs.jsonl"
    timed = run_script(
        "train_speed.py", [*TINY, "--steps", "1", "--warmup", "1", "--json", str(records)], monkeypatch, capsys
    )
    assert all(e in timed for e in ["remat=none", "ms/step", "img/s", "GFLOP/step", "aliased", "GiB"]), timed
    # One compile more: timing 'blocks' too would double the test's time.
    compiled = run_script(
        "train_speed.py", [*TINY, "--remat", "blocks", "--compile-only", "--json", str(records)], monkeypatch, capsys
    )
    assert "remat=blocks" in compiled and "GFLOP/step" in compiled and "ms/step" not in compiled, compiled
    none, blocks = (json.loads(line) for line in records.read_text().splitlines())
    for r in (none, blocks):
        m = r["memory_bytes"]
        assert m["total"] == m["argument"] + m["output"] + m["temp"] - m["alias"]
        assert m["alias"] > 0  # the donated state's buffers hold the new state
    assert none["memory_bytes"]["argument"] == blocks["memory_bytes"]["argument"]
    # Checkpointed blocks: fewer activations kept for the backward pass, recomputed at a FLOP cost.
    assert blocks["memory_bytes"]["temp"] < none["memory_bytes"]["temp"]
    assert blocks["gflop_per_step"] > none["gflop_per_step"]


def test_upscale_speed_prints_figures(monkeypatch, capsys):
    args = ["--im-size", "64", "--ngf", "8", "--nz", "16", "--restarts", "2", "--steps", "3", "--lr-size", "8"]
    out = run_script("upscale_speed.py", [*args, "--precision", "float32", "--repeats", "1"], monkeypatch, capsys)
    assert "s / 100 steps" in out, out
