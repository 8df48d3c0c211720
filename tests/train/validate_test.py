"""Config and workdir validation: one-line errors before anything is loaded, compiled or written."""

import pathlib
import signal
import subprocess
import sys
import time

import helpers
import pytest
from fastgan_jax.configs import cpu_quick, default, few_shot_1024

from fastgan_jax import configs
from fastgan_jax.commands import evaluate
from fastgan_jax.commands import train as train_cli
from fastgan_jax.train import state
from fastgan_jax.train.validate import RULES, ConfigError, validate

MISSING = object()  # an override that deletes the field

# (overrides of cpu_quick, num_devices, the start of the error). Each passed unnoticed before
# validation (or failed only after compiling, as a traceback).
BAD = [
    ({"model.im_size": 300}, 1, "--config.model.im_size=300: choose from 64, 128, 256, 512, 1024"),
    ({"model.im_size": "64"}, 1, "--config.model.im_size='64': choose from 64, 128, 256, 512, 1024, not a str"),
    ({"model.precision": "fp8"}, 1, "--config.model.precision=fp8: choose from bfloat16, float16, float32"),
    ({"loss.policy": "foo"}, 1, "--config.loss.policy=foo: comma-separated ops from color, cutout, translation"),
    ({"loss.policy": None}, 1, "--config.loss.policy=None: must be a comma-separated string, not None"),
    ({"loss.recon": "bogus"}, 1, "--config.loss.recon=bogus: choose from lpips, l1, mse"),
    ({"foo": 1}, 1, "--config.foo: no such config field; see fastgan-train --help"),
    ({"model.remat": True}, 1, "--config.model.remat=True: choose from none, blocks, full, auto"),
    ({"data.stream_from": "disk"}, 1, "--config.data.stream_from=disk: choose from memory, files"),
    (
        {"data.stream_from": "files", "data.on_device": "yes"},
        1,
        "--config.data.stream_from=files: streams batches from",
    ),
    ({"data.workers": -2}, 1, "--config.data.workers=-2: must be an int >= -1"),
    ({"model.nz": MISSING}, 1, "--config.model.nz: missing"),
    (
        {"optim.batch_size": -3},
        1,
        "--config.optim.batch_size=-3: must be an int >= 1 and a multiple of the 1 device(s)",
    ),
    ({"optim.batch_size": 0}, 1, "--config.optim.batch_size=0: must be an int >= 1"),
    ({"optim.batch_size": 3}, 2, "--config.optim.batch_size=3: must be an int >= 1 and a multiple of the 2 device(s)"),
    (
        {"optim.batch_size": 8.0},
        1,
        "--config.optim.batch_size=8.0: must be an int >= 1 and a multiple of the 1 device(s), not a float",
    ),
    (
        {"optim.batch_size": "8"},
        1,
        "--config.optim.batch_size='8': must be an int >= 1 and a multiple of the 1 device(s), not a str",
    ),
    (
        {"optim.batch_size": True},
        1,
        "--config.optim.batch_size=True: must be an int >= 1 and a multiple of the 1 device(s), not a bool",
    ),
    ({"log.checkpoint_every": 0}, 1, "--config.log.checkpoint_every=0: must be an int >= 1"),
    ({"log.log_every": 0}, 1, "--config.log.log_every=0: must be an int >= 1"),
    ({"log.sample_every": -1}, 1, "--config.log.sample_every=-1: must be an int >= 1"),
    ({"log.keep_checkpoints": 0}, 1, "--config.log.keep_checkpoints=0: must be an int >= 1"),
    ({"log.num_samples": 0}, 1, "--config.log.num_samples=0: must be an int >= 1"),
    ({"log.recalib_samples": 0}, 1, "--config.log.recalib_samples=0: must be an int >= 1"),
    ({"log.recalib_batch": 0}, 1, "--config.log.recalib_batch=0: must be an int >= 1"),
    ({"log.fid_every": -1}, 1, "--config.log.fid_every=-1: must be an int >= 0"),
    ({"log.fid_samples": 1}, 1, "--config.log.fid_samples=1: must be an int >= 2"),
    ({"train.num_steps": -5}, 1, "--config.train.num_steps=-5: must be an int >= 1"),
    ({"train.num_steps": 1e3}, 1, "--config.train.num_steps=1000.0: must be an int >= 1, not a float"),
    ({"optim.lr": -1}, 1, "--config.optim.lr=-1: must be a number >= 0 and finite"),
    ({"optim.lr": float("nan")}, 1, "--config.optim.lr=nan: must be a number >= 0 and finite"),
    ({"optim.lr": float("inf")}, 1, "--config.optim.lr=inf: must be a number >= 0 and finite"),
    ({"optim.lr": "2e-4"}, 1, "--config.optim.lr='2e-4': must be a number >= 0 and finite, not a str"),
    ({"optim.beta1": 1.0}, 1, "--config.optim.beta1=1.0: must be a number in [0, 1)"),
    ({"optim.beta2": -0.1}, 1, "--config.optim.beta2=-0.1: must be a number in [0, 1)"),
    ({"optim.ema_decay": 1}, 1, "--config.optim.ema_decay=1: must be a number in [0, 1)"),
    ({"train.time_limit_s": -1.0}, 1, "--config.train.time_limit_s=-1.0: must be a number >= 0"),
    ({"train.seed": -1}, 1, "--config.train.seed=-1: must be an int in [0, 4294967296)"),
    ({"train.seed": 2**32}, 1, "--config.train.seed=4294967296: must be an int in [0, 4294967296)"),
    ({"train.seed": 1.5}, 1, "--config.train.seed=1.5: must be an int in [0, 4294967296), not a float"),
    ({"model.ngf": 0}, 1, "--config.model.ngf=0: must be an int >= 1"),
    ({"model.ngf": 3, "model.im_size": 256}, 1, "--config.model.ngf=3: at im_size 256 must be a multiple of 2"),
    ({"model.ngf": 4, "model.im_size": 1024}, 1, "--config.model.ngf=4: at im_size 1024 must be a multiple of 8"),
    ({"model.ndf": 2, "model.im_size": 256}, 1, "--config.model.ndf=2: at im_size 256 must be a multiple of 4"),
    ({"model.ndf": 4, "model.im_size": 1024}, 1, "--config.model.ndf=4: at im_size 1024 must be a multiple of 8"),
    ({"model.nz": 0}, 1, "--config.model.nz=0: must be an int >= 1"),
    ({"model.dec_width": -8}, 1, "--config.model.dec_width=-8: must be an int >= 1"),
    ({"data.background": (1, 2)}, 1, "--config.data.background=(1, 2): must be 3 ints 0-255"),
    ({"data.background": (0, 0, 256)}, 1, "--config.data.background=(0, 0, 256): must be 3 ints 0-255"),
    ({"data.background": "white"}, 1, "--config.data.background='white': must be 3 ints 0-255"),
    ({"data.on_device": "maybe"}, 1, "--config.data.on_device=maybe: choose from auto, yes, no"),
    ({"data.aspect": "squash"}, 1, "--config.data.aspect=squash: choose from center_crop, stretch"),
    ({"data.source": ""}, 1, "--config.data.source='': must be an image folder or tfds:NAME[:SPLIT]"),
    ({"data.source": "tfds:"}, 1, "--config.data.source=tfds:: expected tfds:NAME or tfds:NAME:SPLIT"),
    ({"data.cache_dir": None}, 1, "--config.data.cache_dir=None: must be a string, not None"),
    ({"data.tfds_data_dir": 3}, 1, "--config.data.tfds_data_dir=3: must be a string, not an int"),
    ({"train.init_from": "/nonexistent/run"}, 1, "--config.train.init_from=/nonexistent/run: no such file or folder"),
]


def _config(overrides):
    cfg = cpu_quick.get_config().to_dict()
    for name, value in overrides.items():
        group, field = name.split(".") if "." in name else (name, None)
        if field is None:
            cfg[group] = value  # a top-level name that is no group
        elif value is MISSING:
            del cfg[group][field]
        else:
            cfg[group][field] = value
    return cfg


@pytest.mark.parametrize(("overrides", "num_devices", "error"), BAD, ids=[e.split(":")[0] for *_, e in BAD])
def test_bad_fields_are_one_line_errors(overrides, num_devices, error):
    with pytest.raises(ConfigError) as info:
        validate(_config(overrides), num_devices=num_devices)
    message = str(info.value)
    assert message.startswith(error) and "\n" not in message, message


def test_bundled_configs_validate():
    for module in (default, cpu_quick, few_shot_1024):
        validate(module.get_config(), num_devices=1)
    validate(default.get_config(), num_devices=8)


def test_accepted_spellings(tmp_path):
    (tmp_path / "old_run").mkdir()
    for overrides in (
        {
            "optim.lr": 1,
            "optim.beta1": 0,
            "train.time_limit_s": 5,
            "optim.ema_decay": 0.0,
        },  # ints where floats are expected
        {"optim.lr": 0.0, "train.time_limit_s": float("inf")},  # lr 0 freezes the weights; no time limit
        {"loss.policy": "", "data.background": [0, 0, 0], "data.on_device": "no"},
        {"loss.policy": " cutout , color", "train.init_from": str(tmp_path / "old_run"), "log.fid_every": 0},
        {"data.source": "tfds:cats:train", "model.im_size": 1024, "model.ngf": 8, "model.ndf": 8},
        {"model.im_size": 128, "model.ngf": 3, "model.ndf": 2, "model.dec_width": 1, "train.seed": 2**32 - 1},
    ):
        validate(_config(overrides), num_devices=1)


def test_precisions_are_read_from_state(monkeypatch):
    monkeypatch.setitem(state.PRECISIONS, "float8", None)
    validate(_config({"model.precision": "float8"}), num_devices=1)
    with pytest.raises(ConfigError, match="choose from bfloat16, float16, float32, float8$"):
        validate(_config({"model.precision": "fp8"}), num_devices=1)


def test_every_default_field_has_a_rule():
    fields = set(configs.flatten(default.get_config()))
    assert fields - set(RULES) == set(), "give each new field of default.py a rule in fastgan_jax/train/validate.py"
    assert set(RULES) - fields == set(), "a rule for a field that default.py no longer has"


def test_workdir(tmp_path):
    cfg = cpu_quick.get_config()
    (tmp_path / "file").write_text("x")
    (tmp_path / "run").mkdir()
    validate(cfg, num_devices=1, workdir=tmp_path / "run")  # an existing folder: resume
    validate(cfg, num_devices=1, workdir=tmp_path / "new" / "deeper")  # created with its parents
    with pytest.raises(ConfigError, match=r"^--workdir .*/file: is a file, not a folder$"):
        validate(cfg, num_devices=1, workdir=tmp_path / "file")
    # Under a regular file nothing can be created, not even by root.
    with pytest.raises(ConfigError, match=r"^--workdir .*/file/run: cannot be created, .*/file is a file$"):
        validate(cfg, num_devices=1, workdir=tmp_path / "file" / "run")
    with pytest.raises(ConfigError, match=r"^--workdir .*/file/a/b: cannot be created, .*/file is a file$"):
        validate(cfg, num_devices=1, workdir=str(tmp_path / "file" / "a" / "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]  # nothing written


def test_cli_missing_workdir_is_one_line(capsys):
    line = helpers.error_line(capsys, train_cli.main, ["fastgan-train", "--config", "cpu_quick"])
    assert line == f"error: {train_cli.MISSING_WORKDIR}" and "(e.g. --workdir runs/mine)" in line


def test_cli_unknown_field_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        train_cli.main(["fastgan-train", "--workdir", "W", "--config", "cpu_quick", "--config.foo=1"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: --config.foo: no such config field; see fastgan-train --help\n"


ROOT = pathlib.Path(__file__).resolve().parents[2]


def _train_py(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args], stderr=subprocess.PIPE, text=True, cwd=ROOT, **kwargs
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--config.optim.batch_size=1.5"], "error: flag --config.optim.batch_size=1.5: invalid literal for int()"),
        (["--config.optim.batch_size"], "error: Missing value for flag --config.optim.batch_size"),
        (["--bogus=1"], "error: Unknown command line flag 'bogus'"),
        (["--config", "nope"], "error: --config nope: no such bundled config"),
    ],
)
@pytest.mark.slow
def test_absl_parse_errors_are_one_line_with_exit_2(tmp_path, args, error):
    # --config after its overrides is fine too (ml_collections alone wants it first).
    proc = _train_py("--config.model.nz=8", "--workdir", str(tmp_path / "run"), "--config", "cpu_quick", *args)
    _, err = proc.communicate(timeout=120)
    err = helpers.own_stderr(err)
    assert proc.returncode == 2 and err.startswith(error) and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def _importing_jax(pid) -> bool:
    return "jaxlib" in pathlib.Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("delay", [0.0, 0.5])
@pytest.mark.slow
def test_ctrl_c_while_loading_is_one_line(tmp_path, delay):
    proc = _train_py("--workdir", str(tmp_path / "run"), "--config", "cpu_quick")
    while proc.poll() is None and not _importing_jax(proc.pid):  # inside the guard: JAX is loading
        time.sleep(0.01)
    time.sleep(delay)  # also a moment later: still loading, or already checking the config
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    stopped = "SIGINT: stopped at step 0 with a checkpoint; run the same command to continue"
    assert err.splitlines()[-1] in ("interrupted", stopped), err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--n", "1"], "--n 1: FID and KID need at least 2"),
        (["--step", "-1"], "--step -1: give a checkpoint step >= 0"),
        (["--step", "\u00b2"], "--step \u00b2: give a checkpoint step >= 0"),  # a digit to str.isdigit, not to int
    ],
)
def test_evaluate_arguments(tmp_path, capsys, args, error):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--workdir", str(tmp_path), *args])
    assert info.value.code == 2
    assert f"fastgan-evaluate: error: {error}" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_bad_flag_exits_2_before_writing(tmp_path):
    work = tmp_path / "W"
    cmd = [sys.executable, "-m", "fastgan_jax.commands.train", "--workdir", str(work), "--config", "cpu_quick"]
    res = subprocess.run([*cmd, "--config.optim.batch_size=-3"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: --config.optim.batch_size=-3: must be an int >= 1")
    assert "Traceback" not in res.stderr
    assert not work.exists()
