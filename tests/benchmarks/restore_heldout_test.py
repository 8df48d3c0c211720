"""The held-out restoration benchmark's real inputs: the pipelines that make them, and the tasks end to end."""

import pathlib
import runpy

import jax
import numpy as np
import pytest
from PIL import Image

from fastgan_jax import images
from fastgan_jax.metrics.lpips import lpips_distance
from fastgan_jax.nn.models import init_generator
from fastgan_jax.sr import ilo, pulse, realistic
from fastgan_jax.train.state import make_models

ROOT = pathlib.Path(__file__).resolve().parents[2]


def hr_images(n=3):
    """uint8 [n, 64, 64, 3]: smooth colour ramps with texture, so that resampling filters disagree."""
    ramp = np.linspace(0, 255, 64)
    base = (ramp[None, :, None, None] + ramp[None, None, :, None]) / 2 * np.ones((n, 1, 1, 3))
    texture = np.random.default_rng(0).normal(0, 40, (n, 64, 64, 3))
    return np.clip(base + texture, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(realistic.PIPELINES))
@pytest.mark.parametrize("size", [16, 8])
def test_each_pipeline_is_deterministic_sized_and_not_area_downsampling(name, size):
    hr = hr_images()
    lr = realistic.make(name, hr, size)
    assert lr.dtype == np.uint8 and lr.shape == (3, size, size, 3)
    np.testing.assert_array_equal(lr, realistic.make(name, hr, size))  # the same draws every time
    np.testing.assert_array_equal(lr[2:], realistic.make(name, hr[2:], size, offset=2))  # each image alone
    area = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BOX)) for im in hr])
    assert np.abs(lr.astype(np.float64) - area).mean() > 1.0  # more than a level of 255 from area's result


def test_pipelines_draw_per_image_and_per_seed():
    hr = np.repeat(hr_images(1), 2, axis=0)  # the same image twice
    a = realistic.make("sensor_noise", hr, 16)
    assert not np.array_equal(a[0], a[1])  # its own noise per image index
    assert not np.array_equal(a, realistic.make("sensor_noise", hr, 16, seed=1))


def test_bad_pipeline_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^pipeline must be one of \[.*'jpeg75'.*\], got 'webp'$"):
        realistic.make("webp", hr_images(), 16)
    with pytest.raises(ValueError, match=r"^images: uint8 \[N, H, W, 3\] expected, got float64 \[3, 64, 64, 3\]$"):
        realistic.make("jpeg75", hr_images().astype(np.float64), 16)


@pytest.mark.slow
def test_real_and_synthetic_tasks_run_end_to_end_through_the_benchmark():
    heldout = runpy.run_path(str(ROOT / "benchmarks" / "restore_heldout.py"))
    G, _ = make_models(im_size=64, ngf=8, ndf=8, nz=16)
    variables = init_generator(G, jax.random.key(0))
    hr_u8 = hr_images(2)
    hr = images.to_float(hr_u8)
    names = ["x4", "jpeg75_x4", "second_order_x8"]
    assert set(names[1:]) <= set(heldout["REAL"]) and len(heldout["REAL"]) == 2 * len(realistic.PIPELINES)
    settings = pulse.Search(restarts=2, steps=3)
    ilos = {"ilo": ilo.Layers(resolutions=(8,), steps=2)}
    lpips = lpips_distance("alex")
    for name, (op, y, classical, floor) in heldout["tasks"](hr_u8, names).items():
        side = 64 // op.factor
        assert y.shape == (2, side, side, 3) and classical.shape == (2, 64, 64, 3) and floor.shape == (2,)
        if name == "x4":
            assert float(floor.max()) == 0  # made by the operator the search assumes: the truth fits exactly
        else:
            assert float(floor.min()) > 1e-5  # no image degrades exactly to a real input, the truth included
        knobs = heldout["parse_knobs"]("1,1:0.5", 2)  # the mean of the 2 best; half of it the input's bicubic
        methods = {"baseline": classical, **heldout["search"](G, variables, op, y, ilos, settings, fidelity=knobs)}
        s = {m: heldout["scores"](op, x, y, hr, lpips, settings.eps, floor) for m, x in methods.items()}
        assert set(s) == {"baseline", "pulse", "ilo", "ilo_f1", "ilo_f1_in0.5"}
        assert all(0 <= r["within_eps"] <= 1 and np.isfinite(r["psnr"]) for r in s.values())
        assert s["ilo"]["obs_mse"] <= s["pulse"]["obs_mse"]  # ILO continues PULSE's search, keeping what fits better
        row = heldout["table_row"](name, "ilo", s["ilo"], float(floor.mean()))
        assert row.startswith(f"| {name} | ilo | ") and row.count("|") == 8
