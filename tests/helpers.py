"""Shared test helpers (on sys.path for every folder of tests/: `pythonpath` in pyproject.toml)."""

import functools
import os
import pathlib
import re

from fastgan_jax.configs import cpu_quick

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # the pages whose code blocks the tests run


def code_blocks(page: pathlib.Path, language: str) -> list[str]:
    """The text of each ```LANGUAGE block of a Markdown page."""
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.DOTALL)


# The benchmark scripts' flags (train_speed.py, profile_step.py) for `tiny_config`'s network at 64 px, batch 2.
BENCH_TINY = ["--im-size", "64", "--batch", "2", "--ngf", "8", "--ndf", "8", "--nz", "16", "--dec-width", "4"]
BENCH_TINY += ["--precision", "float32", "--recon", "l1"]

# `tiny_config`'s network and sample sizes as the commands' flags.
TINY_FLAGS = [
    "--config.model.ngf=8",
    "--config.model.ndf=8",
    "--config.model.nz=16",
    "--config.model.dec_width=4",
    "--config.optim.batch_size=4",
    "--config.log.num_samples=4",
    "--config.log.recalib_samples=8",
    "--config.log.recalib_batch=4",
]


def tiny_config(cache_dir, **overrides):
    """cpu_quick shrunk to a network that compiles and steps in seconds (l1 reconstruction); `overrides` by field
    name, in whichever group it is (`num_steps=4` sets train.num_steps)."""
    c = cpu_quick.get_config()
    c.model.update(ngf=8, ndf=8, nz=16, dec_width=4)
    c.optim.batch_size = 4
    c.loss.recon = "l1"
    c.train.num_steps = 2
    c.log.update(log_every=1, sample_every=2, checkpoint_every=2, num_samples=4, recalib_samples=8, recalib_batch=4)
    c.data.cache_dir = str(cache_dir)
    for field, value in overrides.items():
        c[group(field)][field] = value
    return c


def group(field: str) -> str:
    """The config group that holds `field` (field names are unique across groups)."""
    (name,) = [g for g, fields in cpu_quick.get_config().items() if field in fields]
    return name


def flag(field: str, value) -> str:
    """The command line's override of `field`: `--config.GROUP.FIELD=VALUE`."""
    return f"--config.{group(field)}.{field}={value}"


# Without LLVM's optimisations XLA's CPU compiles in about half the time, and runs loops of elementwise code
# many times slower: for subprocess tests that compile much and run a few steps (the in-process suite keeps
# XLA's defaults: PULSE's and the metrics' loops would take minutes, parity needs XLA's default code).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def subprocess_env(cache_dir, devices=None, *, fast_compile=True):
    """The environment of a JAX training subprocess: every program cached in `cache_dir` (so that a restart
    loads instead of compiling), the CPU, FAST_COMPILE unless told otherwise (the in-process suite's cache
    serves only processes with XLA's usual flags), and `devices` forced host devices if given."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    env["JAX_PLATFORMS"] = "cpu"
    if fast_compile:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FAST_COMPILE}"
    if devices is not None:
        env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
    return env


# What C++ code in JAX's CUDA plugin (the gpu-aot extra) logs to stderr at import on a machine with no GPU:
# absl's banner and lines such as "I0000 00:00:1796062694.153368    5633 cudart_stub.cc:31] Could not find ...".
ABSL_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] )"
)


def own_stderr(text: str) -> str:
    """A subprocess's stderr without the lines that the CUDA plugin's C++ code logs before our code runs."""
    return "".join(line for line in text.splitlines(keepends=True) if not ABSL_LINE.match(line))


def error_line(capsys, command, *args) -> str:
    """Runs `command(*args)`, which must end on the user's mistake: exit code 2 and an `error: ...` line last
    on stderr. Returns that line."""
    import pytest

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        command(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err and err[-1].startswith("error: "), (e.value.code, err[-3:])
    return err[-1]


def leaves(tree):
    """The leaves of a pytree as numpy arrays."""
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_close_but_for_adam_flips(xs, ys, *, tight, steps, lr=2e-4):
    """Sharding changes reduction orders: tiny differences, except where a gradient near 0 changes sign and
    Adam moves that parameter by about lr the other way. So: every value within a few Adam steps, and all
    but a handful within `tight`."""
    import numpy as np

    flat_x = np.concatenate([np.ravel(x) for x in xs])
    flat_y = np.concatenate([np.ravel(y) for y in ys])
    diff = np.abs(flat_x - flat_y)
    assert diff.max() <= 3 * lr * steps + 1e-5, diff.max()
    off = diff > tight * (1 + np.abs(flat_y))
    assert off.sum() <= 1e-3 * off.size, (off.sum(), off.size, diff.max())


class Evil:
    """Pickles to a call of os.system that would create `path`: what a restricted unpickler must refuse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def tiny_step(*, precision="float32", **step_kwargs):
    """(state, jitted step) of 64 px networks of width 8 (no augmentation, l1 unless given)."""
    import functools

    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from fastgan_jax.train.state import create_train_state, make_models, make_optimizer
    from fastgan_jax.train.step import make_mesh, train_step
    from fastgan_jax.train.trainer import jit_step

    G, D = make_models(im_size=64, ngf=8, ndf=8, nz=16, dec_width=4, precision=precision)
    tx, mesh = make_optimizer(), make_mesh()
    # Placed as the step's outputs are (as trainer.setup places it): a state straight from init would make
    # the first call a program of its own.
    state = create_train_state(G, D, jax.random.key(0), tx_g=tx, tx_d=tx)
    state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    kwargs = {"policy": "", "recon": "l1", "ema_decay": 0.999, **step_kwargs}
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    step = functools.partial(train_step, G=G, D=D, tx_g=tx, tx_d=tx, batch_sharding=sharded, **kwargs)
    return state, jit_step(step, mesh, resident=kwargs.get("batch_size") is not None)


def tiny_setup(workdir, **extra_losses):
    """`trainer.setup(tiny_config(...), workdir)`: (experiment, start state) of the suite's usual tiny run, whose
    step program most in-process tests share (compiled once per suite); with EXTRA_LOSSES, the program of
    docs/api.md's research block."""
    from fastgan_jax.train import trainer

    workdir = pathlib.Path(workdir)
    exp, state = trainer.setup(tiny_config(workdir.parent / "cache"), workdir, **extra_losses)
    exp.mngr.close()
    return exp, state


def first_step(exp, state):
    """The run's first step as `trainer.train_and_evaluate` takes it: (state, metrics)."""
    from fastgan_jax.train import pipeline
    from fastgan_jax.train.trainer import jit_step

    batches = pipeline.device_batches(exp.cfg, exp.source, exp.mesh, exp.resident, int(state.step))
    try:
        return jit_step(exp.train_step, exp.mesh, exp.resident)(state, next(batches), exp.keys["train"], exp.recon_vars)
    finally:
        batches.close()


# docs/api.md's research block's extra terms, verbatim: a run with them is one program, however many tests take it.
def weight_decay(d_params, inputs):  # D: inputs.real, inputs.fakes, inputs.d_stats, inputs.key
    import optax

    return 1e-4 * optax.tree.norm(d_params) ** 2


def brightness(fakes, inputs):  # G: fakes = (big, small) augmented outputs, differentiable
    return -0.1 * fakes[0].mean()


EXTRA_LOSSES = {"d_extra_loss": weight_decay, "g_extra_loss": brightness}


def prepare_tfds_images(data_dir, monkeypatch):
    """Builds TFDS data set `fastgan_test_images` offline in `data_dir` as array_record files: split `train` of
    six images of 20-25 x 30 px, every pixel of image i = 40 * i, and `test` of two."""
    import io

    import numpy as np
    import tensorflow_datasets as tfds
    from PIL import Image

    def png_bytes(self, image):  # TFDS encodes images with TensorFlow; PIL does the same job here
        buf = io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buf, "PNG")
        return buf.getvalue()

    with monkeypatch.context() as m:
        m.setattr(tfds.features.Image, "encode_example", png_bytes)
        _tfds_builder()(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


@functools.cache  # TFDS registers a builder class by its name, once per process
def _tfds_builder():
    import numpy as np
    import tensorflow_datasets as tfds

    class FastganTestImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict({"image": tfds.features.Image()})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"image": np.full((20 + i, 30, 3), 40 * i, np.uint8)}

    return FastganTestImages


@functools.cache
def tiny_generator():
    """A tiny 64 px generator in eval mode with recalibrated statistics and non-zero noise weights:
    (G, variables), for the restoration tests."""
    import jax

    from fastgan_jax.nn.models import init_generator
    from fastgan_jax.train.state import make_models
    from fastgan_jax.train.step import recalibrate

    G, _ = make_models(im_size=64, ngf=8, ndf=8, nz=16)
    v = init_generator(G, jax.random.key(0))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.05 if "noise" in jax.tree_util.keystr(p) else x, v["params"]
    )
    stats = recalibrate(G, params, v["batch_stats"], jax.random.key(1), num_samples=2048, batch=64)
    return G, {"params": params, "batch_stats": stats}
