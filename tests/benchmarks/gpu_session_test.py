"""benchmarks/gpu_session.sh, run whole on the CPU with tiny knobs (its own file: the suite's longest test, so that
pytest-xdist's `--dist loadfile` can give it a worker of its own)."""

import json
import re
import subprocess
import sys
import tarfile

import helpers
import jax
import pytest

BENCH = helpers.ROOT / "benchmarks"
TINY = helpers.BENCH_TINY


MODEL = ["--config.model.im_size=64", "--config.model.ngf=8", "--config.model.ndf=8", "--config.model.nz=16"]
MODEL += ["--config.model.dec_width=4", "--config.model.precision=float32", "--config.model.remat=none"]
MODEL += ["--config.optim.batch_size=4", "--config.loss.recon=l1", "--config.train.num_steps=4"]
MODEL += ["--config.log.num_samples=4", "--config.log.recalib_samples=8", "--config.log.recalib_batch=4"]


@pytest.mark.slow
def test_gpu_session_runs_its_phases_in_order_on_the_cpu(tmp_path):
    """benchmarks/gpu_session.sh with tiny knobs: every phase runs, in order, and writes its figures."""
    data = tmp_path / "data"
    data.mkdir()
    for f in sorted((BENCH.parent / "fastgan_jax" / "assets" / "noto-smileys-512").glob("*.png"))[:20]:
        (data / f.name).symlink_to(f)
    tiny = " ".join(TINY)
    # The suite's compilation cache and XLA's usual flags, for every process (JAX_COMPILATION_CACHE_DIR): at these
    # knobs speed256 reads back the 64 px step that big compiled, and the search loops run at full speed.
    cache = jax.config.jax_compilation_cache_dir or tmp_path / "jax"
    env = helpers.subprocess_env(cache, fast_compile=False) | {"BUDGET": "100000", "OUT": str(tmp_path / "out")}
    env |= {"RESULTS": str(tmp_path / "results"), "RUNS": str(tmp_path / "runs")}
    env |= {"DATA": str(data), "QUALITY_SECONDS": "600", "FID_EVERY": "2", "FID_SAMPLES": "4", "RESTORE_N": "2"}
    env |= {"STEPS": "1", "PROFILE_STEPS": "1", "BIG": "64", "OFFICIAL": "0"}
    env |= {"QUALITY_ARGS": " ".join(MODEL), "SPEED_ARGS": tiny}
    env |= {"RESTORE_ARGS": "--restarts 2 --search-steps 2 --layer-steps 2"}
    env |= {"PULSE_ARGS": "--ngf 8 --nz 16 --restarts 2 --steps 2 --lr-size 8 --precision float32 --repeats 1"}
    env["FASTGAN_JAX_COMPILE_CACHE"] = str(cache)
    # As on the GPU machine: the first call brings LPIPS-VGG's weights only, a second one the FID Inception's and
    # LPIPS-AlexNet's (the held-out restoration's metric).
    weights, second = tmp_path / "weights", tmp_path / "second_weights"
    export = [sys.executable, "-m", "fastgan_jax.interop.weights", "--export", str(weights)]
    subprocess.run(export, env=env, check=True, capture_output=True)
    second.mkdir()
    for name in ("inception-fid.npz", "lpips-alex.npz"):
        (weights / name).rename(second / name)
    env |= {"FASTGAN_JAX_WEIGHTS": str(weights), "SECOND_WEIGHTS": str(tmp_path / "not_yet")}
    session = ["bash", str(BENCH / "gpu_session.sh")]
    done = subprocess.run(session, cwd=BENCH.parent, env=env, text=True, capture_output=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    phases = re.findall(r"^== (\w+) \(at", done.stdout, re.MULTILINE)
    assert phases == ["quality", "fid", "restore", "big", "profile", "speed256"], done.stdout[-3000:]
    assert "fid: needs the Inception's weights" in done.stdout and "restore: needs LPIPS-AlexNet's" in done.stdout
    out = tmp_path / "out"
    _returnable(out)
    # Every phase's log as it ran, each line stamped with the phase's seconds so far, and each phase's own in raw.
    log = (out / "log.txt").read_text().splitlines()
    assert [line.split(" (at")[0] for line in log if line.startswith("== ")] == [f"== {p}" for p in phases]
    assert all(re.match(r"(== \w+ \(at \d+ s\)$|\[ *\d+ s\] )", line) for line in log), log[:5]
    raw = _raw(out)
    quality_log = raw["log_quality.txt"].splitlines()
    assert any(re.match(r"\[ *\d+ s\] training 64px on 18 images", line) for line in quality_log), quality_log
    results = (out / "results.md").read_text()
    assert "kernels per step" in results and re.search(r"in a second process [\d.]+ s \(", results), results
    assert "| kernel | calls/step |" in raw["profile/profile.md"] and "quality_losses.png" in raw
    rows = [json.loads(line) for line in raw["train_speed.jsonl"].splitlines()]
    assert [r["im_size"] for r in rows] == [64, 64] and all(r["img_per_s"] > 0 for r in rows)  # big, then 256
    # The second call on the same machine: only what was not done, the checkpoints' FID and KID and the held-out
    # restoration.
    again = subprocess.run(
        session, cwd=BENCH.parent, env=env | {"SECOND_WEIGHTS": str(second)}, text=True, capture_output=True
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert re.findall(r"^== (\w+) \(at", again.stdout, re.MULTILINE) == ["fid", "restore"], again.stdout
    _returnable(out)
    results = (out / "results.md").read_text()
    assert "| x4 | ilo |" in results and "| x8 | pulse |" in results  # the held-out restoration
    table = _raw(out)["quality.md"]
    assert re.search(r"^\| 2 \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", table, re.MULTILINE), table  # FID, KID at step 2
    assert re.search(r"^\| 4 \| ", table, re.MULTILINE), table
    # A third: nothing is done twice.
    third = subprocess.run(
        session, cwd=BENCH.parent, env=env | {"SECOND_WEIGHTS": str(second)}, text=True, capture_output=True
    )
    assert third.returncode == 0 and not re.findall(r"^== \w+ \(at", third.stdout, re.MULTILINE), third.stdout


def _returnable(out):
    """What the script leaves in $OUT comes back from a device call whole: at most 8 files, each under 16 MiB,
    at most two folders down, named in letters, digits, '.', '_' and '-' (the device tool's limits)."""
    files = [f for f in out.rglob("*") if f.is_file()]
    assert 0 < len(files) <= 8, sorted(str(f.relative_to(out)) for f in files)
    for f in files:
        rel = f.relative_to(out)
        assert f.stat().st_size < 16 * 2**20 and len(rel.parts) <= 3, rel
        assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in rel.parts), rel


def _raw(out) -> dict:
    """raw.tar.gz's text files and the names of the rest: {path: text or None}."""
    with tarfile.open(out / "raw.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        names = {m.name.removeprefix("./"): m for m in members}
        return {
            n: tar.extractfile(m).read().decode() if n.endswith((".md", ".txt", ".jsonl")) else None
            for n, m in names.items()
        }
