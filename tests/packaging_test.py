"""The wheel: what it holds, and its commands run from a non-editable install in a folder outside the checkout.

    pip wheel SRC --no-deps -w DIST
    pip install --no-deps --target TARGET DIST/fastgan_jax-*.whl
    cd ELSEWHERE && PYTHONPATH=TARGET python TARGET/bin/fastgan-train --workdir W --config cpu_quick ...

The project's dependencies are already installed; building needs setuptools
from the package index, as any `pip install` of the project does.
"""

import ast
import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import jax
import pytest
from fastgan_jax.configs import default
from helpers import TINY_FLAGS, own_stderr

from fastgan_jax import configs, data
from fastgan_jax.commands import train as train_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What a wheel is built from (copied, so that the build leaves nothing in the checkout).
SOURCES = ("pyproject.toml", "README.md", "fastgan_jax", "configs", "train.py")
COMMANDS = ("fastgan-train", "fastgan-sample", "fastgan-upscale", "fastgan-evaluate", "fastgan-evaluate-sr")
TINY = [  # cpu_quick shrunk as tests/helpers.py does
    *TINY_FLAGS,
    "--config.log.log_every=1",
    "--config.log.sample_every=5",
    "--config.log.checkpoint_every=5",
]


def pip(*args: str) -> str:
    """Runs pip; returns what it printed (stdout and stderr)."""
    res = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("wheel")
    (tmp / "src").mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, tmp / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, tmp / "src" / name)
    log = pip("wheel", "-v", str(tmp / "src"), "--no-deps", "-w", str(tmp / "dist"))  # -v: setuptools' warnings
    (tmp / "build.log").write_text(log)
    (found,) = (tmp / "dist").glob("fastgan_jax-*.whl")
    return found


@pytest.fixture(scope="module")
def target(wheel) -> pathlib.Path:
    folder = wheel.parent.parent / "target"
    pip("install", "--no-deps", "--target", str(folder), str(wheel))
    return folder


def run(target: pathlib.Path, cwd: pathlib.Path, *args) -> subprocess.CompletedProcess:
    """`python ARGS` in `cwd`, where TARGET (not the checkout) provides fastgan_jax."""
    env = dict(
        os.environ,
        PYTHONPATH=str(target),
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)


def test_build_outputs_are_ignored_by_git():
    # `pip wheel .` in a checkout leaves build/ (and *.egg-info): never a file to commit by mistake.
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"build/", "*.egg-info/", ".venv/"} <= set(ignored)


def test_commands_print_warnings_as_one_line():
    command = (
        "import sys, types, warnings\n"
        "from fastgan_jax.commands import launch\n"
        "sys.modules['fastgan_jax.commands.fake'] = types.SimpleNamespace(\n"
        "    main=lambda: warnings.warn('3 image(s) smaller than 64px were upscaled'))\n"
        "launch.run('fake')\n"
    )
    res = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True)
    assert own_stderr(res.stderr) == "warning: 3 image(s) smaller than 64px were upscaled\n"


def test_commands_run_the_garbage_collector_less_often_and_the_library_leaves_it_alone():
    # launch.collect_less: a command's start-up allocates millions of long-lived objects (docs/speed.md).
    def threshold(code: str) -> tuple:
        res = subprocess.run([sys.executable, "-c", f"import gc\n{code}"], capture_output=True, text=True, check=True)
        return ast.literal_eval(res.stdout.strip().splitlines()[-1])

    default = threshold("print(gc.get_threshold())")  # CPython's, in a bare interpreter
    command = (
        "import sys, types\n"
        "from fastgan_jax.commands import launch\n"
        "sys.modules['fastgan_jax.commands.fake'] = types.SimpleNamespace(main=lambda: print(gc.get_threshold()))\n"
        "launch.run('fake')"
    )
    assert threshold(command) == (50_000, *default[1:])
    assert threshold("import fastgan_jax.train.trainer, fastgan_jax.sr.pulse; print(gc.get_threshold())") == default


def test_commands_start_jax_without_the_cuda_plugins_lines():
    # With the gpu-aot extra (JAX's CUDA plugin) on a machine without a CUDA driver, as in this suite, JAX logs
    # "Could not find cuda drivers" from C++ as it loads and, left to choose a platform, a CUDA traceback. A
    # command's stderr is its own lines only, also once a device is used.
    command = (
        "import sys, types, warnings\n"
        "from fastgan_jax.commands import launch\n"
        "def main():\n"
        "    import jax\n"
        "    warnings.warn(f'{jax.devices()[0].platform}')\n"
        "sys.modules['fastgan_jax.commands.fake'] = types.SimpleNamespace(main=main)\n"
        "launch.run('fake')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    res = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, check=True, env=env)
    assert res.stderr in ("warning: cpu\n", "warning: gpu\n"), res.stderr


@pytest.mark.slow
def test_wheel_holds_the_configs_and_the_smileys_and_no_top_level_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"fastgan_jax/configs/{n}.py" for n in ("__init__", "default", "cpu_quick", "few_shot_1024")} <= names
    smileys = "fastgan_jax/assets/noto-smileys-512"
    pngs = {f"{smileys}/{p.name}" for p in data.find_images(data.DEFAULT_DATA)}
    assert len(pngs) == 111 and pngs | {f"{smileys}/LICENSE", f"{smileys}/NOTICE.md"} <= names
    assert not [n for n in names if not n.startswith(("fastgan_jax/", "fastgan_jax-"))]  # no configs/, train.py
    meta = {n.split("/")[-1]: zipfile.ZipFile(wheel).read(n).decode() for n in names if ".dist-info/" in n}
    assert meta["top_level.txt"].split() == ["fastgan_jax"]
    assert all(f"{c} = " in meta["entry_points.txt"] for c in COMMANDS)


@pytest.mark.slow
def test_the_build_warns_of_nothing(wheel):
    # A warning at every `pip install` of the project is the first thing a user reads (setuptools warned of a data
    # folder, fastgan_jax/assets, that pyproject.toml did not list as a package).
    warned = [line for line in (wheel.parent.parent / "build.log").read_text().splitlines() if "Warning:" in line]
    assert not warned, warned


@pytest.mark.slow
def test_installed_commands_train_and_sample_outside_the_checkout(target, tmp_path):
    where = run(target, tmp_path, "-c", "import fastgan_jax.commands.train as m; print(m.__file__)")
    assert where.stdout.strip() == str(target / "fastgan_jax" / "commands" / "train.py"), where.stderr[-2000:]
    commands = target / "bin"  # the console scripts pip wrote

    train = ["--workdir", "W", "--config", "cpu_quick", "--config.train.num_steps=5", *TINY]
    res = run(target, tmp_path, commands / "fastgan-train", *train, f"--config.data.cache_dir={tmp_path / 'cache'}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"from {target / 'fastgan_jax' / 'assets' / 'noto-smileys-512'}" in res.stdout  # the bundled smileys
    assert "done: steps 0 -> 5" in res.stdout
    assert (tmp_path / "W" / "checkpoints" / "5").is_dir()
    assert (tmp_path / "W" / "samples" / "samples_0000005.png").exists()

    sample = ["--workdir", "W", "-n", "4", "--out", "grid.png", "--individual", "ind"]
    res = run(target, tmp_path, commands / "fastgan-sample", *sample)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "grid.png").exists() and len(list((tmp_path / "ind").glob("*.png"))) == 4

    for command in COMMANDS:
        res = run(target, tmp_path, commands / command, "--help")
        assert res.returncode == 0 and "--workdir" in res.stdout, (command, res.stderr[-2000:])


def test_help_lists_every_config_field_with_its_value_and_doc(capsys):
    docs = configs.field_docs()
    assert set(docs) == set(configs.flatten(default.get_config())), "every field of default.py needs a # doc comment"
    train_cli.main(["fastgan-train", "--config", "cpu_quick", "--help"])
    out = capsys.readouterr().out
    for field, value in configs.flatten(configs.load("cpu_quick")).items():
        assert f"--config.{field}={value if value != '' else repr('')}" in out and docs[field] in out, field


@pytest.mark.parametrize(
    "config, message",
    [
        ("nope", "error: --config nope: no such bundled config (bundled: cpu_quick, default, few_shot_1024)"),
        ("configs/nope.py", "error: --config configs/nope.py: no such file"),
    ],
)
def test_unknown_config_is_a_one_line_error(config, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(["fastgan-train", "--workdir", "W", f"--config={config}"])
    assert exit_info.value.code == 2 and capsys.readouterr().err == message + "\n"


def test_config_argument_forms():
    resolve = train_cli._resolve_config
    default_file, quick_file = str(configs.DIR / "default.py"), str(configs.DIR / "cpu_quick.py")
    assert resolve(["t", "--workdir", "W"]) == (["t", f"--config={default_file}", "--workdir", "W"], "default")
    assert resolve(["t", "--config", "cpu_quick", "--config.model.nz=8"]) == (
        ["t", f"--config={quick_file}", "--config.model.nz=8"],
        "cpu_quick",
    )
    # --config after its overrides, given twice: the last one counts, and it moves to the front.
    assert resolve(["t", "--config.model.nz=8", "--config=default", "-config", "cpu_quick"]) == (
        ["t", f"--config={quick_file}", "--config.model.nz=8"],
        "cpu_quick",
    )
    path = str(ROOT / "configs" / "cpu_quick.py")
    assert resolve(["t", f"--config={path}"]) == (["t", f"--config={path}"], path)


@pytest.mark.parametrize("module", ["sample", "upscale", "evaluate", "evaluate_sr"])
def test_every_option_of_every_command_shows_its_default(module, capsys):
    command = importlib.import_module(f"fastgan_jax.commands.{module}")
    with pytest.raises(SystemExit) as e:
        command.main(["--help"])
    assert e.value.code == 0
    options = capsys.readouterr().out.split("options:")[1]
    blocks = re.split(r"\n  (?=-)", options)[1:]  # one block per option, its help text wrapped below it
    assert len(blocks) >= 5, options
    for block in blocks:
        text = " ".join(block.split())
        if text.startswith(("-h,", "--help")) or "required" in text:
            continue
        assert "(default: " in text, text
