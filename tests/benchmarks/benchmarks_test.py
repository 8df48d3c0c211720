"""The benchmark scripts run (tiny sizes) and print their figures."""

import json
import pathlib
import re
import runpy
import subprocess
import sys

import helpers
import numpy as np
import pytest
from PIL import Image

BENCH = helpers.ROOT / "benchmarks"


TINY = helpers.BENCH_TINY


def run_script(script, args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(BENCH / script), run_name="__main__")
    return capsys.readouterr().out


@pytest.mark.slow
def test_train_speed_times_and_accounts_memory(tmp_path, monkeypatch, capsys):
    records = tmp_path / "runs.jsonl"
    timed = run_script(  # --warmup 0: the first timed step is the first step (once crashed on `metrics`)
        "train_speed.py", [*TINY, "--steps", "1", "--warmup", "0", "--json", str(records)], monkeypatch, capsys
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


@pytest.mark.slow
def test_upscale_speed_prints_figures(tmp_path, monkeypatch, capsys):
    args = ["--im-size", "64", "--ngf", "8", "--nz", "16", "--restarts", "2", "--steps", "3", "--lr-size", "8"]
    args += ["--json", str(tmp_path / "pulse.jsonl")]
    out = run_script("upscale_speed.py", [*args, "--precision", "float32", "--repeats", "1"], monkeypatch, capsys)
    assert "s / 100 steps" in out, out
    (row,) = (json.loads(line) for line in (tmp_path / "pulse.jsonl").read_text().splitlines())
    assert row["im_size"] == 64 and row["restarts"] == 2 and row["s_per_100_steps"] > 0


@pytest.mark.slow
def test_upscale_speed_sizes_the_search_for_a_gpu_that_is_not_here(tmp_path, monkeypatch, capsys):
    args = ["--im-size", "64", "--ngf", "8", "--nz", "16", "--restarts", "2", "--steps", "3", "--lr-size", "8"]
    args += ["--precision", "float32", "--target", "rtx3060", "--json", str(tmp_path / "pulse.jsonl")]
    out = run_script("upscale_speed.py", args, monkeypatch, capsys)
    (row,) = (json.loads(line) for line in (tmp_path / "pulse.jsonl").read_text().splitlines())
    assert "s_per_100_steps" not in row and "XLA:GPU NVIDIA GeForce RTX 3060 (rtx3060)" in out, out
    for m in (row["memory_bytes"], row["gpu"]["rtx3060"]["memory_bytes"]):  # the CPU's, and XLA:GPU's
        assert m["total"] == m["argument"] + m["output"] + m["temp"] - m["alias"] and m["temp"] > 0
    # The arguments are the same buffers for both compilers: the generator's variables, the LR image, the keys.
    assert row["memory_bytes"]["argument"] == row["gpu"]["rtx3060"]["memory_bytes"]["argument"]


def test_compare_puts_ours_beside_the_official(tmp_path, monkeypatch, capsys):
    # The official's H100 figures (256: 46.8 img/s, 4.16 GiB; PULSE 1.585 s) beside made-up figures of ours.
    official = pathlib.Path(__file__).resolve().parents[1] / "data" / "official-fastgan-torch_h100.jsonl"
    ours = tmp_path / "ours.jsonl"
    rows = [
        {"im_size": 256, "batch": 8, "precision": "float16", "remat": "blocks", "img_per_s": 468.0, "peak_gib": 2.5}
        | {"memory_bytes": {"total": 2**31}},
        {"im_size": 512, "precision": "float32", "remat": "none", "img_per_s": 100.0, "peak_gib": None},
        {"im_size": 1024, "precision": "float32", "remat": "none", "gflop_per_step": 1.0},  # --compile-only: no row
    ]
    ours.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pulse = tmp_path / "pulse.jsonl"
    pulse.write_text(json.dumps({"im_size": 256, "precision": "float32", "restarts": 8, "s_per_100_steps": 0.317}))
    deviceless = tmp_path / "deviceless.jsonl"  # train_speed.py --gpu-only --target h200, the same setting
    gpu = {"h200": {"device": "NVIDIA H200", "memory_bytes": {"total": 3 * 2**29}}}
    deviceless.write_text(json.dumps({**rows[0], "gpu": gpu, "peak_gib": None}) + "\n")
    args = ["--ours", str(ours), "--ours-pulse", str(pulse), "--official", str(official)]
    out = run_script("compare.py", [*args, "--deviceless", str(deviceless)], monkeypatch, capsys)
    assert "| 256 | float16 | blocks | 2.50 | 2.00 | 1.50 | h200 |" in out, out
    assert "| 256 | float16 | blocks | 468.0 | 46.8 | 10.0x | 2.50 | 4.16 |" in out, out
    assert "| 512 | float32 | none | 100.0 | n/a | n/a | n/a | n/a |" in out, out
    assert "| 1024 |" not in out.split("\n\n")[0], out
    assert "| 256 | float32 | 8 | 0.317 | 1.585 | 5.0x |" in out, out


@pytest.mark.slow
def test_data_speed_prints_decoding_rate_beside_consumption(tmp_path, monkeypatch, capsys):
    args = ["--im-size", "64", "--workers", "1", "--batch", "2", "--batches", "2", "--consumed", "64=1e9"]
    out = run_script("data_speed.py", [*args, "--json", str(tmp_path / "d.jsonl")], monkeypatch, capsys)
    assert "64px | 1 worker(s)" in out and "training eats 1000000000.0 img/s | bounds the run" in out, out
    (row,) = (json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines())
    assert row["img_per_s"] > 0 and row["workers"] == 1
    helpers.prepare_tfds_images(tmp_path, monkeypatch)
    tfds_args = ["--data", "tfds:fastgan_test_images", "--tfds-data-dir", str(tmp_path)]
    out = run_script("data_speed.py", [*args, *tfds_args], monkeypatch, capsys)
    assert "64px | 1 worker(s)" in out, out


def test_the_docs_memory_table_is_the_benchmarks_output(monkeypatch, capsys):
    out = run_script("compare.py", ["--memory", str(BENCH / "memory_cpu.jsonl")], monkeypatch, capsys)
    page = (BENCH.parent / "docs" / "memory.md").read_text()
    assert out.strip() in page
    rows = {tuple(r.split(" | ")[:3]) for r in out.splitlines()[2:]}
    assert len(rows) == 18  # 256 and 1024, three precisions, three remats


def test_every_bundled_gpu_target_parses():
    """Each card class in benchmarks/gpu_targets is a target that JAX's CUDA plugin builds (no GPU here)."""
    targets = runpy.run_path(str(BENCH / "targets.py"))
    kinds = {}
    for name in targets["names"]():
        devices, memory_size = targets["load"](name)
        kinds[name] = (devices[0].device_kind, memory_size // 2**30)
    assert kinds == {
        "a100_40gb": ("NVIDIA A100-SXM4-40GB", 40),
        "gtx1050ti": ("NVIDIA GeForce GTX 1050 Ti", 4),
        "h200": ("NVIDIA H200", 140),
        "rtx2070super": ("NVIDIA GeForce RTX 2070 SUPER", 8),
        "rtx3060": ("NVIDIA GeForce RTX 3060", 12),
        "rtx4090": ("NVIDIA GeForce RTX 4090", 24),
    }
    with pytest.raises(SystemExit, match=r"^error: --target rtx9999: no such file, nor a bundled target \(a100_40gb, "):
        targets["load"]("rtx9999")


@pytest.mark.slow
def test_train_speed_compiles_for_a_small_gpu_that_is_not_here(tmp_path, monkeypatch, capsys):
    # An RTX 3060 with 256 MiB: JAX would give XLA 192 MiB of it, 172.8 MiB once remat=auto keeps its margin.
    spec = (BENCH / "gpu_targets" / "rtx3060.txtpb").read_text()
    small = tmp_path / "rtx3060_256mib.txtpb"
    small.write_text(spec.replace("device_memory_size: 12884901888", f"device_memory_size: {256 * 2**20}"))
    records = tmp_path / "gpu.jsonl"
    args = [*TINY, "--remat", "auto", "--target", str(small), "--gpu-only", "--json", str(records)]
    out = run_script("train_speed.py", args, monkeypatch, capsys)
    (row,) = (json.loads(line) for line in records.read_text().splitlines())
    g = row["gpu"][str(small)]
    m = g["memory_bytes"]
    assert g["device"] == "NVIDIA GeForce RTX 3060" and "memory_bytes" not in row  # --gpu-only: no CPU compile
    assert m["total"] == m["argument"] + m["output"] + m["temp"] - m["alias"] and m["alias"] > 0
    # The tiny step needs a few MiB: `none` fits, and is the only setting compiled.
    assert g["remat"] == "none" and g["needs"] == {"none": m["total"]}, g
    assert "the device allows 0.19 GiB, 0.17 GiB with a 10% margin" in out, out
    assert f"XLA:GPU NVIDIA GeForce RTX 3060 ({small})" in out, out
    # What the GPU would launch per step: XLA's fusions and cuDNN's convolutions (G and D are convolutional).
    k = g["kernels"]
    assert k["fusions"] > 100 and k["library"] > 10
    assert k["total"] == sum(k[n] for n in ("fusions", "library", "copies", "other")) == sum(k["parts"].values())
    assert all(k["parts"][p] > 0 for p in ("D", "G", "optimizer", "guard")), k["parts"]  # the EMA: fused into the guard
    assert f"{k['total']} kernels/step ({k['fusions']} fusions, {k['library']} library" in out, out
    assert f"other; D {k['parts']['D']}, G {k['parts']['G']}, optimizer " in out, out


def test_kernels_counts_the_launches_of_the_entry_computation():
    hlo = """HloModule jit_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%fused_add (param_0: f32[8]) -> f32[8] {
  %param_0 = f32[8]{0} parameter(0)
  ROOT %add.1 = f32[8]{0} add(f32[8]{0} %param_0, f32[8]{0} %param_0)
}

ENTRY %main.9 (x: f32[8]) -> (f32[8], f32[8,8]) {
  %x = f32[8]{0} parameter(0)
  %fusion = f32[8]{0} fusion(f32[8]{0} %x), kind=kLoop, calls=%fused_add, metadata={op_name="jit(step)/ema/add"}
  %fusion.1 = f32[8]{0} fusion(f32[8]{0} %fusion), kind=kLoop, calls=%fused_add, metadata={op_name="jit(step)/a"}
  %conv = (f32[8,8]{1,0}, u8[0]{0}) custom-call(f32[8]{0} %x), custom_call_target="__cudnn$convForward"
  %gte = f32[8,8]{1,0} get-tuple-element((f32[8,8]{1,0}, u8[0]{0}) %conv), index=0
  %copy = f32[8,8]{0,1} copy(f32[8,8]{1,0} %gte), metadata={op_name="jit(step)/transpose(jvp(Discriminator))/c"}
  %b = f32[8,8]{1,0} bitcast(f32[8,8]{0,1} %copy)
  ROOT %t = (f32[8]{0}, f32[8,8]{1,0}) tuple(f32[8]{0} %fusion.1, f32[8,8]{1,0} %b)
}
"""
    targets = runpy.run_path(str(BENCH / "targets.py"))
    counts = targets["kernels"](hlo)
    parts = {"D": 1, "G": 0, "optimizer": 0, "ema": 1, "guard": 0, "other": 2}  # the backward's copy is D's
    assert counts == {"fusions": 2, "library": 1, "copies": 1, "other": 0, "total": 4, "parts": parts}, counts


def test_the_gpu_memory_tables_are_the_deviceless_compiles_output(monkeypatch, capsys):
    """docs/memory.md per card, and README's summary: compare.py's tables of benchmarks/memory_gpu.jsonl
    (benchmarks/memory_gpu.sh)."""
    out = run_script("compare.py", ["--memory-gpu", str(BENCH / "memory_gpu.jsonl")], monkeypatch, capsys)
    page = (BENCH.parent / "docs" / "memory.md").read_text()
    tables = out.strip().split("\n\n")
    assert len(tables) == 3 and all(table in page for table in tables)  # steps, recommendations, PULSE
    assert tables[1] in (BENCH.parent / "README.md").read_text()  # the recommendations
    rows = [json.loads(line) for line in (BENCH / "memory_gpu.jsonl").read_text().splitlines()]
    steps = {}
    for r in rows:
        for card in r.get("gpu", {}):
            if "batch" in r:
                steps.setdefault((card, r["im_size"], r["precision"]), set()).add(r["remat"])
    assert all(remats == {"none", "blocks", "full"} for remats in steps.values()), steps  # every remat
    cards = {card for card, size, _ in steps if (card, 1024, "float32") in steps and size == 256}
    assert len(cards) >= 4 and {"gtx1050ti", "rtx2070super"} <= cards, cards  # 256 and 1024 px, 4+ card classes


def test_the_kernel_counts_in_readme_and_docs_are_the_deviceless_compiles_output():
    """docs/speed.md's table and README's figures of kernels per step are benchmarks/kernels_gpu.jsonl's
    (`train_speed.py --gpu-only --target ...`)."""
    page = (BENCH.parent / "docs" / "speed.md").read_text()
    readme = " ".join((BENCH.parent / "README.md").read_text().split())
    rows = [json.loads(line) for line in (BENCH / "kernels_gpu.jsonl").read_text().splitlines()]
    totals = {}
    for r in rows:
        for card, g in r["gpu"].items():
            k = g["kernels"]
            assert f"| {r['im_size']} | {k['total']} | {k['fusions']} | {k['library']} | {k['copies']} |" in page
            totals[card, r["im_size"]] = k["total"]
    assert len(totals) == 6, totals  # three card classes at 256 and 1024 px
    h200, rtx3060, gtx1050ti = ((totals[c, 256], totals[c, 1024]) for c in ("h200", "rtx3060", "gtx1050ti"))
    said = f"launches {h200[0]:,} kernels at 256 px and {h200[1]:,} at 1024 px on an H200, {rtx3060[0]:,} and "
    said += f"{rtx3060[1]:,} on an RTX 3060, {gtx1050ti[0]:,} and {gtx1050ti[1]:,} on a GTX 1050 Ti"
    assert said in readme, said


TINY_CONFIG = """
from fastgan_jax.configs import cpu_quick


def get_config():
    c = cpu_quick.get_config()
    c.model.update(ngf=8, ndf=8, nz=16, dec_width=4)
    c.optim.batch_size = 2
    return c
"""


@pytest.mark.slow
def test_compile_cache_times_a_first_and_a_cached_start(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.py"
    config.write_text(TINY_CONFIG)
    args = ["--config", str(config), "--compile-only", "--json", str(tmp_path / "cache.jsonl")]
    out = run_script("compile_cache.py", args, monkeypatch, capsys)
    (row,) = (json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines())
    assert row["first_s"] > 0 and row["second_s"] > 0, row
    assert row["compiled"][0] >= 1 and row["compiled"][1] == 0, row  # the second start compiles nothing again
    assert re.search(r"first start [\d.]+ s, second start [\d.]+ s\): [\d.]+x faster; programs compiled: \d+ by", out)


def test_train_speed_says_whether_the_step_came_from_the_compilation_cache(tmp_path):
    """--compile-cache: a second process reads the step back (what gpu_session.sh's compile line reports)."""
    env = helpers.subprocess_env(tmp_path / "jax")
    record = tmp_path / "compile.jsonl"
    cmd = [sys.executable, str(BENCH / "train_speed.py"), *TINY, "--compile-only", "--compile-cache"]
    outs = [
        subprocess.run([*cmd, "--json", str(record)], env=env, text=True, capture_output=True, check=True).stdout
        for _ in range(2)
    ]
    first, second = (json.loads(line) for line in record.read_text().splitlines())
    assert first["cache_hits"] == 0 and second["cache_hits"] >= 1, (first, second)
    assert "(from the cache)" not in outs[0] and re.search(r"compile [\d.]+ s \(from the cache\)", outs[1]), outs


def test_compile_cache_times_a_start_to_its_first_step_log_line(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import compile_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    # A stand-in for train.py: a line, a pause, the step's log line, a pause, a program written to the cache.
    script = "import pathlib, sys, time; print('training ...'); time.sleep(0.3); print('step 2/2 d_real 0.8 g 0.1');"
    script += f"time.sleep(0.3); pathlib.Path({str(cache / 'jit_f-1-cache')!r}).write_bytes(b'')"
    timed = compile_cache.start([sys.executable, "-c", script], cache)
    assert 0.3 <= timed["first_step_s"] < timed["exit_s"] and timed["compiled"] == 1, timed
    with pytest.raises(SystemExit, match=r"(?s)^error: a start failed \(exit 3\):\n.*no such run"):
        compile_cache.start([sys.executable, "-c", "import sys; sys.stderr.write('no such run'); sys.exit(3)"], cache)


def test_plot_restoration_draws_the_knobs_curve_and_prints_the_tables(tmp_path, monkeypatch, capsys):
    def scores(psnr, lpips):
        return {"within_eps": 1.0, "obs_mse": 1e-3, "psnr": psnr, "ssim": 0.5, "lpips_alex": lpips}

    ours = {"baseline": scores(18.7, 0.56), "robust_ilo": scores(15.8, 0.22), "robust_ilo_f1": scores(17.1, 0.21)}
    ours["robust_ilo_f1_in0.33"] = scores(18.3, 0.25)
    report = {"tasks": {"jpeg75_x4": ours | {"truth_obs_mse": 2.5e-3, "seconds": 1}}}
    exact = {"baseline": scores(18.7, 0.56), "pulse": scores(16.0, 0.28), "ilo": scores(16.5, 0.28)}
    reference = {"tasks": {"jpeg75_x4": exact | {"ilo_f1": scores(17.8, 0.38)}}}
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    png = tmp_path / "curves.png"
    args = [str(tmp_path / "r.json"), "--reference", str(tmp_path / "ref.json"), "--png", str(png)]
    out = run_script("plot_restoration.py", args, monkeypatch, capsys)
    assert "| robust_ilo_f1_in0.33 | 18.30 | 0.500 | 0.250 | 1.0e-03 |" in out and "| exact ilo | 16.50 |" in out
    assert "exact baseline" not in out and "truth_obs_mse" not in out
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape == (300, 420, 3)
    ours_blue = np.all(img == (30, 90, 200), axis=-1).sum()
    exact_red = np.all(img == (200, 60, 40), axis=-1).sum()
    assert ours_blue > 100 and exact_red > 100  # the curves: ours, the reference's knob
    reference["tasks"]["jpeg75_x4"].pop("ilo_f1")
    (tmp_path / "ref.json").write_text(json.dumps(reference))
    run_script("plot_restoration.py", args, monkeypatch, capsys)
    assert 0 < np.all(np.asarray(Image.open(png).convert("RGB")) == (200, 60, 40), axis=-1).sum() < exact_red / 2
