"""The benchmark scripts run (tiny sizes) and print their figures."""

import pathlib
import runpy
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize(
    "script,args,expect",
    [
        (
            "train_speed.py",
            [
                "--im-size",
                "64",
                "--batch",
                "2",
                "--ngf",
                "8",
                "--ndf",
                "8",
                "--nz",
                "16",
                "--dec-width",
                "4",
                "--steps",
                "1",
                "--warmup",
                "1",
                "--precision",
                "float32",
                "--recon",
                "l1",
            ],
            ["ms/step", "img/s", "GFLOP/step"],
        ),
        (
            "upscale_speed.py",
            [
                "--im-size",
                "64",
                "--ngf",
                "8",
                "--nz",
                "16",
                "--restarts",
                "2",
                "--steps",
                "3",
                "--lr-size",
                "8",
                "--precision",
                "float32",
                "--repeats",
                "1",
            ],
            ["s / 100 steps"],
        ),
    ],
)
def test_benchmark_prints_figures(script, args, expect, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(BENCH / script), run_name="__main__")
    out = capsys.readouterr().out
    assert all(e in out for e in expect), out
