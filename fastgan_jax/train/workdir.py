"""A run's folder: opening it, whether a resume may continue it, what the run resolved, and its start state.

A run's checkpoints hold its config (the recipe as given) and beside it the
run's metadata: what the run resolved at its start, `remat` (remat=auto's
choice, `train.memory`) and `data_fingerprint` (`data.fingerprint` of its
image folder, so that a resumed run whose folder moved is recognised by its
images). A resume compares the recipes only (`checkpoints.check_compatible`)
and keeps the metadata.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import functools
import os
import pathlib
import socket

import jax
import ml_collections

from fastgan_jax import data
from fastgan_jax.train import checkpoints, hosts, runs
from fastgan_jax.train.state import TrainState, create_train_state
from fastgan_jax.train.validate import ConfigError


@dataclasses.dataclass(frozen=True)
class Saved:
    """What the checkpoints of a run hold besides the state: its config and its metadata."""

    config: dict  # nested, as saved (JSON)
    meta: dict  # {"remat": the setting the step runs with, "data_fingerprint": str or None}


LOCK = "lock"


class WorkdirBusyError(RuntimeError):
    """Another training holds the run's folder."""


def make_folder(workdir: pathlib.Path) -> None:
    """Creates `workdir` (and its parents) if needed.

    Raises:
      NotADirectoryError: it is a file.
      ConfigError: it cannot be created.
    """
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file: give a folder")
    try:  # access checks (validate) can pass where creating fails: a special or read-only file system, root
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir {workdir}: cannot be created ({e.strerror})") from None


@contextlib.contextmanager
def locked(workdir: pathlib.Path):
    """Holds `WORKDIR/lock` while a training runs in `workdir`, creating the folder if needed (and removing it
    again if it is left with nothing but the lock). Process 0 takes the lock; every process learns whether it
    did. The lock is the kernel's (`flock`): it ends with its process, so a killed run never blocks the next.

    Raises:
      WorkdirBusyError: another process holds the lock (named with its host), before anything is written.
    """
    workdir = pathlib.Path(workdir)
    held, busy, created = None, "", False
    if hosts.is_primary():
        created = not workdir.exists()
        make_folder(workdir)
        held = open(workdir / LOCK, "a+")  # noqa: SIM115  (closing it releases the lock)
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held.seek(0)
            busy = held.read().strip() or "another process"
            held.close()
            held = None
        else:
            held.seek(0)
            held.truncate()
            since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            held.write(f"process {os.getpid()} on {socket.gethostname()}, since {since}\n")
            held.flush()
    if hosts.agree(bool(busy)):
        raise WorkdirBusyError(
            f"--workdir {workdir} is in use by another training ({busy or 'says process 0'}): wait for it to end or "
            "stop it, or give another --workdir; nothing was written"
        )
    try:
        yield
    finally:
        if held is not None:
            held.close()
            if created and os.listdir(workdir) == [LOCK]:  # a start that ended before writing anything
                with contextlib.suppress(OSError):
                    (workdir / LOCK).unlink()
                    workdir.rmdir()


def resolve_config(config) -> ml_collections.FrozenConfigDict:
    """The run's config, read-only, with a folder `data.source` made absolute (so a resumed run compares paths,
    not spellings)."""
    cfg = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else config)
    if not cfg.data.source.startswith("tfds:"):
        cfg.data.source = str(pathlib.Path(cfg.data.source).expanduser().resolve())
    return ml_collections.FrozenConfigDict(cfg)


def open_workdir(cfg, workdir: pathlib.Path):
    """The checkpoint manager and what the run saved (None for a new run); refuses a run of another config.

    Raises:
      checkpoints.ConfigMismatchError: `workdir` holds a run that `cfg` does not continue.
    """
    make_folder(workdir)
    mngr = checkpoints.manager(workdir, keep=cfg.log.keep_checkpoints, keep_best_fid=cfg.log.fid_every > 0)
    config = checkpoints.saved_config(mngr)
    if config is None:
        return mngr, None
    saved = Saved(config, checkpoints.saved_meta(mngr))
    source = saved.config["data"]["source"]
    if source != cfg.data.source and _same_images(saved, cfg):
        hosts.say(f"the run's images moved from {source} to {cfg.data.source} (the same files): resuming")
        saved.config["data"]["source"] = cfg.data.source
    checkpoints.check_compatible(saved.config, cfg, workdir)
    if saved.config["optim"]["lr"] != cfg.optim.lr:
        hosts.say(f"resuming with lr {cfg.optim.lr} (was {saved.config['optim']['lr']}); the optimizer state is kept")
    return mngr, saved


def data_fingerprint(cfg, saved: Saved | None) -> str | None:
    """The run's image folder's `data.fingerprint` (kept from the saved run when its folder is the same)."""
    if cfg.data.source.startswith("tfds:"):
        return None  # a TFDS name is the data's identity
    if saved is not None and saved.config["data"]["source"] == cfg.data.source and saved.meta["data_fingerprint"]:
        return saved.meta["data_fingerprint"]
    try:
        return data.fingerprint(cfg.data.source, contents=cfg.data.stream_from != "files")
    except data.DataError:
        return None  # loading the data says what is wrong, in its own words


def _same_images(saved: Saved, cfg) -> bool:
    """Whether `cfg`'s image folder holds the images that the saved run's (now elsewhere) held."""
    recorded = saved.meta["data_fingerprint"]
    if not recorded or cfg.data.source.startswith("tfds:") or not pathlib.Path(cfg.data.source).is_dir():
        return False
    return data_fingerprint(cfg, None) == recorded


def initial_state(cfg, G, D, tx, key, mngr, resume: bool) -> TrainState:
    """The latest checkpoint's state when resuming; else a fresh one, warm-started from `init_from` if set."""
    init = functools.partial(create_train_state, G, D, tx_g=tx, tx_d=tx)
    if resume:
        damaged = []
        state = checkpoints.restore_newest(mngr, jax.eval_shape(init, key), on_damaged=lambda *d: damaged.append(d))
        _set_aside(mngr, damaged, int(state.step))
        return state
    state = init(key)
    if cfg.train.init_from:
        state = runs.warm_start(state, cfg.train.init_from)
        hosts.say(f"starting from the G, D and EMA weights of {cfg.train.init_from} (fresh optimizer state)")
    return state


def _set_aside(mngr, damaged, step) -> None:
    """Moves the damaged checkpoints newer than the restored `step` out of the run (they would be overwritten)."""
    for bad, why in damaged:
        if hosts.is_primary():
            aside = checkpoints.set_aside(mngr, bad)
            hosts.say(f"checkpoint {bad} is damaged ({why}): moved to {aside}; resuming from checkpoint {step}")
    if damaged:
        hosts.sync("damaged checkpoints set aside")
        mngr.reload()
