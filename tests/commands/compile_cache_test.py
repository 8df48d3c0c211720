"""The commands' persistent compilation cache (fastgan_jax/commands/compile_cache.py)."""

import os
import subprocess
import sys

import jax
import pytest

from fastgan_jax.commands import compile_cache

# A command in a fresh process: launch.run turns the cache on, then the command compiles a program and prints
# the cache folder and JAX's cache events (jax.monitoring, a public API) for that compile.
COMMAND = """
import sys, types
import jax, jax.numpy as jnp
from fastgan_jax.commands import launch
events = []
jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
def main():
    jax.jit(lambda x: jnp.tanh(x @ x).sum())(jnp.ones((32, 32))).block_until_ready()
    print(jax.config.jax_compilation_cache_dir)
    print(sorted({e.rsplit('/', 1)[-1] for e in events if '/compilation_cache/' in e}))
sys.modules['fastgan_jax.commands.fake'] = types.SimpleNamespace(main=main)
launch.run('fake')
"""


def command(env_cache) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env |= {"JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env |= {"FASTGAN_JAX_COMPILE_CACHE": str(env_cache)}
    done = subprocess.run([sys.executable, "-c", COMMAND], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@pytest.mark.slow
def test_a_second_start_reads_what_the_first_compiled(tmp_path):
    folder, events = command(tmp_path / "cache")
    assert folder == str(tmp_path / "cache") and "cache_misses" in events and "cache_hits" not in events, events
    assert list((tmp_path / "cache").glob("*-cache"))  # the executable, written by the first start
    folder, events = command(tmp_path / "cache")
    assert "cache_hits" in events and "cache_misses" not in events, events


@pytest.mark.slow
def test_off_turns_the_cache_off(tmp_path):
    folder, events = command("off")
    assert folder == "None" and "cache_hits" not in events


@pytest.fixture
def no_cache_set(monkeypatch):
    """This process with no compilation cache chosen yet (the suite's conftest chooses one), restored after."""
    saved = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    yield monkeypatch
    jax.config.update("jax_compilation_cache_dir", saved)


def test_an_unwritable_cache_is_one_warning_and_no_cache(tmp_path, no_cache_set):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder cannot be made under a file (root ignores read-only permissions)
    no_cache_set.setenv(compile_cache.ENV, str(blocker / "cache"))
    with pytest.warns(UserWarning, match=r"^cannot write the compilation cache .*a_file/cache \(.*\); compiling"):
        assert compile_cache.enable() is None
    assert jax.config.jax_compilation_cache_dir is None


def test_the_default_folder_is_beside_the_decoded_images(tmp_path, no_cache_set):
    no_cache_set.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.enable() == tmp_path / "fastgan_jax" / "jax"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "fastgan_jax" / "jax")


def test_jax_own_setting_wins(tmp_path, no_cache_set):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    no_cache_set.setenv(compile_cache.ENV, str(tmp_path / "ours"))
    assert compile_cache.enable() == tmp_path / "mine"
