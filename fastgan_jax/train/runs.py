"""Runs as objects: load a trained run, or the weights to start a new one from.

    run = fastgan_jax.load_run("runs/quick")
    images = fastgan_jax.generate(run.generator, run.g_variables, z, key)

`load_run` reads a run written by `train.py` (its Orbax checkpoints and
config); `warm_start` gives a fresh train state the G, D and EMA weights of
another run or of an official checkpoint (fine-tuning, `config.init_from`).
"""

import dataclasses
import difflib
import functools
import pathlib
import warnings

import jax
import numpy as np

from fastgan_jax.interop import convert
from fastgan_jax.nn.models import Discriminator, Generator
from fastgan_jax.train import checkpoints
from fastgan_jax.train.state import TrainState, create_train_state, make_models, make_optimizer


class RunNotFoundError(FileNotFoundError):
    """A folder without a checkpoint of train.py."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run at one checkpoint.

    Attributes:
      workdir: the run's folder.
      config: the run's config (a nested dict, as saved with the checkpoint: `config["model"]["nz"]`).
      step: the checkpoint's step.
      generator: the `Generator` module, with the run's precision.
      discriminator: the `Discriminator` module.
      g_variables: the generator's {'params', 'batch_stats'}: the EMA
        generator with its recalibrated statistics by default, the raw one
        with `load_run(..., ema=False)`.
      d_variables: the discriminator's {'params', 'batch_stats'}.
      state: the whole `TrainState` (optimizer states included).
    """

    workdir: pathlib.Path
    config: dict
    step: int
    generator: Generator
    discriminator: Discriminator
    g_variables: dict
    d_variables: dict
    state: TrainState


def _models(cfg):
    # remat: memory against compute in training; sampling keeps no activations
    return make_models(**{**cfg["model"], "remat": "none"})


def _did_you_mean(folder: pathlib.Path) -> str:
    """` (did you mean SIBLING?)` for a folder whose name is close to the missing one's; else a hint."""
    parent = folder.parent
    siblings = [p.name for p in parent.iterdir() if p.is_dir()] if parent.is_dir() else []
    close = difflib.get_close_matches(folder.name, siblings, n=1)
    if close:
        return f" (did you mean {parent / close[0]}?)"
    return " (give the --workdir of a training run)"


def _open(workdir):
    folder = pathlib.Path(workdir)
    if not folder.is_dir():
        raise RunNotFoundError(f"{workdir}: no such folder{_did_you_mean(folder)}")
    if not (folder / "checkpoints").is_dir():
        raise RunNotFoundError(f"{workdir}: no checkpoint here (train one with train.py or fastgan-train)")
    mngr = checkpoints.manager(folder, create=False)
    cfg = checkpoints.saved_config(mngr)
    if cfg is None:
        raise RunNotFoundError(f"{workdir}: no checkpoint here (train one with train.py or fastgan-train)")
    return mngr, cfg


def checkpoint_steps(workdir) -> list[int]:
    """The steps of the checkpoints kept in `workdir`, ascending.

    Raises:
      RunNotFoundError: no checkpoint in `workdir`.
    """
    mngr, _ = _open(workdir)
    return sorted(mngr.all_steps())


def load_run(workdir, step: int | None = None, *, ema: bool = True) -> Run:
    """Loads a run of train.py at a checkpoint.

    Args:
      workdir: the run's folder (with `checkpoints/`).
      step: the checkpoint's step (default: the latest).
      ema: `g_variables` of the EMA generator with its recalibrated
        statistics (default), or of the raw generator with its training
        statistics.

    Returns:
      A `Run`.

    A damaged latest checkpoint (see `checkpoints.damage`) is skipped with a
    warning for the newest one that reads back.

    Raises:
      RunNotFoundError: no checkpoint in `workdir`, or none at `step`.
      checkpoints.DamagedCheckpointError: the checkpoint at `step` is damaged
        (the message lists the readable steps), or no checkpoint reads back.
    """
    mngr, cfg = _open(workdir)
    if step is not None and step not in mngr.all_steps():
        raise RunNotFoundError(f"{workdir}: no checkpoint at step {step} (there are {sorted(mngr.all_steps())})")
    G, D = _models(cfg)
    tx = make_optimizer(lr=cfg["optim"]["lr"], b1=cfg["optim"]["beta1"], b2=cfg["optim"]["beta2"])
    abstract = jax.eval_shape(functools.partial(create_train_state, G, D, tx_g=tx, tx_d=tx), jax.random.key(0))
    state = _restore(mngr, abstract, step, workdir)
    g_vars = (state.ema_params, state.ema_stats) if ema else (state.g_params, state.g_stats)
    return Run(
        workdir=pathlib.Path(workdir),
        config=cfg,
        step=int(state.step),
        generator=G,
        discriminator=D,
        g_variables={"params": g_vars[0], "batch_stats": g_vars[1]},
        d_variables={"params": state.d_params, "batch_stats": state.d_stats},
        state=state,
    )


def _restore(mngr, abstract, step, workdir):
    """The state at `step`, or at the newest checkpoint that reads back (a damaged newer one is a warning)."""
    if step is None:

        def skip(bad, why):
            warnings.warn(f"{workdir}: checkpoint {bad} is damaged ({why}); using an older one", stacklevel=4)

        return checkpoints.restore_newest(mngr, abstract, on_damaged=skip)
    state, why = checkpoints.try_restore(mngr, abstract, step)
    if why is None:
        return state
    readable = checkpoints.readable_steps(mngr, abstract, but=[step])
    raise checkpoints.DamagedCheckpointError(
        f"{workdir}: checkpoint {step} is damaged ({why}); readable checkpoints: {readable or 'none'}"
    )


class WarmStartError(ValueError):
    """`init_from` names weights that do not fit the run's networks."""


def _pretrained(source):
    """{g_params, g_stats, d_params, d_stats, ema_params, ema_stats} of a run folder or an official file."""
    path = pathlib.Path(source)
    if path.is_dir():
        s = load_run(path).state
        names = ("g_params", "g_stats", "d_params", "d_stats", "ema_params", "ema_stats")
        return {n: getattr(s, n) for n in names}
    if not path.is_file():
        raise WarmStartError(f"--config.train.init_from {source}: no such run folder or checkpoint file")
    _, g = convert.generator_from_official(path, ema=False)
    _, ema = convert.generator_from_official(path, ema=True)
    _, d = convert.discriminator_from_official(path)
    return {
        "g_params": g["params"],
        "g_stats": g["batch_stats"],
        "d_params": d["params"],
        "d_stats": d["batch_stats"],
        "ema_params": ema["params"],
        "ema_stats": ema["batch_stats"],
    }


def _check_fits(name, pretrained, fresh, source):
    want = jax.tree_util.tree_flatten_with_path(fresh)[0]
    got = dict(jax.tree_util.tree_flatten_with_path(pretrained)[0])
    for path, leaf in want:
        other = got.get(path)
        if other is None or np.shape(other) != np.shape(leaf):
            where = jax.tree_util.keystr(path)
            found = "missing" if other is None else f"shape {list(np.shape(other))}"
            raise WarmStartError(
                f"--config.train.init_from {source}: its {name} does not fit this run's networks ({where}: "
                f"{found}, expected {list(np.shape(leaf))}); set im_size, ngf, ndf, nz and dec_width as it was trained"
            )
    if len(got) != len(want):
        raise WarmStartError(f"--config.train.init_from {source}: its {name} has other layers than this run's networks")


def warm_start(state: TrainState, source) -> TrainState:
    """`state` with the G, D and EMA weights (and statistics) of `source`; optimizer states and step stay fresh.

    Args:
      state: a fresh train state (`create_train_state`), which fixes the
        networks' shapes.
      source: a run folder (its latest checkpoint), or an official FastGAN
        checkpoint (`.pth` / `.npz` with `g`, `d` and optionally `g_ema`).

    Raises:
      WarmStartError: the source is missing or its networks do not match.
      convert.OfficialCheckpointError: an unreadable official file.
    """
    pretrained = _pretrained(source)
    new = {}
    for name, value in pretrained.items():
        fresh = getattr(state, name)
        _check_fits(name, value, fresh, source)
        leaves = dict(jax.tree_util.tree_flatten_with_path(value)[0])
        new[name] = jax.tree_util.tree_map_with_path(lambda p, old: np.array(leaves[p], old.dtype), fresh)  # noqa: B023
    return state.replace(**new)
