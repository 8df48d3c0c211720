"""Orbax checkpoints of a run: the whole train state plus its config and metadata.

The only module that imports orbax. Layout: `WORKDIR/checkpoints/<step>/`
with the items `state` (StandardSave of the TrainState pytree), `config`
(JSON: the recipe as given) and `meta` (JSON: what the run resolved, see
`train.workdir`), and `manifest.json`: the size and SHA-256 of every file Orbax wrote,
so that a damaged checkpoint (a truncated, missing or altered file) is found
before TensorStore reads it. The last `keep` checkpoints are preserved.

`restore_newest` restores the newest checkpoint that reads back; a damaged
one is reported to the caller, which sets it aside (training: `set_aside`
moves it to `WORKDIR/damaged_checkpoints/<step>`, never deletes it) or skips
it (readers).
"""

import contextlib
import errno
import gc
import glob
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys
import warnings
from collections.abc import Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint.checkpoint_managers import preservation_policy

from fastgan_jax import configs

# Config fields that may change when a run is resumed (schedule, logging, the
# learning rate, and `init_from`, which only matters for a new run); every
# other field defines the run, and a mismatch is an error.
RESUMABLE_FIELDS = frozenset(
    {
        "optim.lr",
        "model.remat",  # memory against compute; the same results
        "data.workers",  # how many processes decode; the same batches
        "train.init_from",
        "train.num_steps",
        "log.log_every",
        "log.sample_every",
        "log.checkpoint_every",
        "log.keep_checkpoints",
        "log.num_samples",
        "data.cache_dir",
        "data.tfds_data_dir",
        "log.fid_every",
        "log.fid_samples",
        "train.time_limit_s",
    }
)


MANIFEST = "manifest.json"


class ConfigMismatchError(ValueError):
    """A workdir's checkpoints come from a different config."""


class DamagedCheckpointError(ValueError):
    """A checkpoint that cannot be restored, or a run none of whose checkpoints can."""


_GLOB_CHARS = frozenset("*?[")


def _glob_in_literal_folder(original):
    """Orbax finds its per-process folders and metadata with `epath.Path(folder).glob(pattern)`, which globs the
    folder's name too: in a workdir such as `runs/exp[1]` it matches nothing, the OCDBT merge is skipped ("Skipping
    merge of OCDBT checkpoints") and no checkpoint reads back. A local folder's name is matched literally here."""

    def literal(self, pattern):
        folder = os.fspath(self)
        if "://" in folder or not _GLOB_CHARS & set(folder):
            yield from original(self, pattern)
            return
        for match in sorted(glob.glob(os.path.join(glob.escape(folder), pattern))):
            yield type(self)(match)

    literal.literal_folder = True
    return literal


if not getattr(epath.gpath._GPath.glob, "literal_folder", False):
    epath.gpath._GPath.glob = _glob_in_literal_folder(epath.gpath._GPath.glob)


def manager(workdir, *, keep: int = 3, keep_best_fid: bool = False, create: bool = True) -> ocp.CheckpointManager:
    """The CheckpointManager of `WORKDIR/checkpoints`: the latest `keep`, and optionally the lowest-FID one."""
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    policy = preservation_policy.LatestN(keep)
    if keep_best_fid:
        best = preservation_policy.BestN(
            get_metric_fn=lambda m: m["fid"], reverse=True, n=1, keep_checkpoints_without_metrics=False
        )
        policy = preservation_policy.AnyPreservationPolicy([policy, best])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        create=create,
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "config", "meta"))


def normalize(config) -> dict:
    """A JSON round trip (of a ConfigDict or a dict), so that tuples and lists compare equal."""
    return json.loads(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config))


def check_compatible(saved: dict, current: dict, workdir) -> None:
    """Raises ConfigMismatchError when the run-defining fields (of two nested configs) differ."""
    saved, current = normalize(configs.flatten(saved)), normalize(configs.flatten(current))
    keys = sorted((set(saved) | set(current)) - RESUMABLE_FIELDS)
    diffs = [k for k in keys if saved.get(k) != current.get(k)]
    if diffs:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diffs)
        recipe = {k: v for k, v in saved.items() if k not in RESUMABLE_FIELDS}
        name, overrides = configs.closest(recipe)
        flags = " ".join(_flag(k, v) for k, v in sorted(overrides.items()))
        raise ConfigMismatchError(
            f"--workdir {workdir} holds a run with another config (the run's -> this command's: {shown}); "
            f"the run was made with --config {name}{' ' + flags if flags else ''}: resume with that, or use a new "
            "--workdir (nothing was overwritten)"
        )


def _flag(field: str, value) -> str:
    if field == "data.source":
        return f"--data {value}"
    text = value if isinstance(value, str) else json.dumps(value).replace("[", "(").replace("]", ")")
    return f"--config.{field}={text}"


def saved_config(mngr: ocp.CheckpointManager):
    """The run's config (nested): that of the newest checkpoint whose config reads back; None when there is none.
    A run saved before the config was nested (2026-12-02) has it flat: it is read as `configs.nest` says.

    Raises:
      DamagedCheckpointError: there are checkpoints, and no config reads back.
    """
    config = _saved_json(mngr, "config")
    return configs.nest(config) if config is not None and _flat(config) else config


def saved_meta(mngr: ocp.CheckpointManager):
    """The run's metadata (what it resolved at its start), as `saved_config` reads the config. A run saved
    before the metadata had an item of its own (2026-12-02) kept it in its flat config."""
    config = _saved_json(mngr, "config")
    if config is not None and _flat(config):
        return {"remat": config["remat"], "data_fingerprint": config.get("data_fingerprint")}
    return _saved_json(mngr, "meta")


def _flat(config: dict) -> bool:
    return "model" not in config


def _saved_json(mngr, item):
    steps = sorted(mngr.all_steps(), reverse=True)
    for step in steps:
        try:
            with _quiet_failures():
                return mngr.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]
        except Exception:  # a damaged item: the next older one is the same run's
            continue
    if steps:
        raise DamagedCheckpointError(f"{mngr.directory}: no checkpoint's {item} reads back (steps {steps})")
    return None


def save(mngr: ocp.CheckpointManager, step: int, state, config: dict, meta: dict, metrics: dict | None = None):
    """Saves the state, config and metadata at `step`; `metrics` (e.g. {'fid': ...}) rank best checkpoints."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(normalize(config)),
        meta=ocp.args.JsonSave(normalize(meta)),
    )
    with _full_disk_quiet():
        mngr.save(step, args=args, metrics=metrics, force=True)
        mngr.wait_until_finished()
    if jax.process_index() == 0:  # after Orbax's commit: every process's files are there
        write_manifest(mngr, step)


def _step_dir(mngr, step: int) -> pathlib.Path:
    return pathlib.Path(mngr.directory) / str(step)


def _file_digests(folder: pathlib.Path) -> dict[str, list]:
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        digests[str(path.relative_to(folder))] = [path.stat().st_size, h.hexdigest()]
    return digests


def write_manifest(mngr: ocp.CheckpointManager, step: int) -> None:
    """Records the size and SHA-256 of every file of checkpoint `step` (atomically: temp file, rename)."""
    folder = _step_dir(mngr, step)
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": _file_digests(folder)}))
    os.replace(tmp, folder / MANIFEST)


def damage(mngr: ocp.CheckpointManager, step: int) -> str | None:
    """Why checkpoint `step` differs from what was saved (a short reason), from its manifest; None when every
    file is as saved, or when it has no readable manifest (written before manifests, or killed before its
    manifest: then only a restore tells)."""
    folder = _step_dir(mngr, step)
    try:
        saved = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = _file_digests(folder)
    for name, (size, digest) in saved.items():
        if name not in now:
            return f"{name} is missing"
        if now[name][0] != size:
            return f"{name} has {now[name][0]} bytes, {size} were saved"
        if now[name][1] != digest:
            return f"{name} changed since it was saved"
    return None


@contextlib.contextmanager
def _quiet_failures():
    """A failed TensorStore read makes Orbax abandon the checkpoint's other reads: each then fails on a closed
    event loop in a TensorStore thread, printing a traceback (an unraisable exception, or asyncio's "exception
    was never retrieved" log), up to hundreds, possibly after the restore returned. After the first failure,
    those are dropped for the rest of the process; the caller reports the failure in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the abandoned reads' coroutines, never awaited
            yield
    except Exception:
        _drop_abandoned_reads()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gc.collect()  # the abandoned reads' futures report now
        raise


def no_space(error: BaseException | None) -> bool:
    """Whether `error`, or an exception that caused it, is a full disk (ENOSPC)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class _Held(logging.Filter):
    def __init__(self):
        super().__init__()
        self.records = []

    def filter(self, record) -> bool:
        self.records.append(record)
        return False


@contextlib.contextmanager
def _full_disk_quiet():
    """A write that fails on a full disk makes each of Orbax's writer threads and tasks log its traceback (absl's
    "_SignalingThread.run() raised an exception", asyncio's "Task exception was never retrieved", closed event
    loops), dozens of them, before the save raises. Their log records and unraisable exceptions are held during
    a save: dropped when it failed on a full disk (the caller says so in one line), reported otherwise."""
    held, loggers = _Held(), [logging.getLogger("absl"), logging.getLogger("asyncio")]
    unraisables, previous_hook, full = [], sys.unraisablehook, False
    for logger in loggers:
        logger.addFilter(held)
    sys.unraisablehook = unraisables.append
    try:
        yield
    except Exception as e:
        full = no_space(e)
        raise
    finally:
        sys.unraisablehook = previous_hook
        for logger in loggers:
            logger.removeFilter(held)
        if full:
            _drop_abandoned_reads()  # what the abandoned tasks report later, as a failed read's do
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                gc.collect()
        else:
            for record in held.records:
                logging.getLogger(record.name).handle(record)
            for unraisable in unraisables:
                sys.unraisablehook(unraisable)


class _AbandonedReads(logging.Filter):
    def filter(self, record) -> bool:
        return "exception was never retrieved" not in record.getMessage()


def _drop_abandoned_reads() -> None:
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_reads", False):
        return

    def hook(unraisable):
        message = str(unraisable.exc_value)
        abandoned = message == "Event loop is closed" or message.startswith("Encountered error while reading array")
        if not abandoned and not no_space(unraisable.exc_value):
            previous(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_AbandonedReads())
    # The abandoned tasks' coroutines, collected whenever the garbage collector gets to them (at exit, say).
    warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)


def _short_reason(e: BaseException) -> str:
    """A failed restore's exception in one short line."""
    line = (str(e).splitlines() or [""])[0]
    if line.startswith("Encountered error while reading array"):  # TensorStore's, followed by its whole spec
        return "its state's files cannot be read"
    line = f"{type(e).__name__}: {line}" if line else type(e).__name__
    return line if len(line) <= 120 else line[:117] + "..."


def restore_newest(
    mngr: ocp.CheckpointManager,
    abstract_state,
    *,
    on_damaged: Callable[[int, str], None],
):
    """The newest checkpoint that reads back: its state, restored as `restore` does.

    Each newer checkpoint that is damaged (its manifest does not match, or
    the restore fails) is passed to `on_damaged(step, reason)` first.

    Raises:
      FileNotFoundError: no checkpoint at all.
      DamagedCheckpointError: no checkpoint reads back (each step with its reason).
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(f"{mngr.directory}: no checkpoint")
    reasons = []
    for step in steps:
        state, why = try_restore(mngr, abstract_state, step)
        if why is None:
            return state
        on_damaged(step, why)
        reasons.append(f"{step}: {why}")
    raise DamagedCheckpointError(f"{mngr.directory}: no checkpoint reads back ({'; '.join(reasons)})")


def try_restore(mngr: ocp.CheckpointManager, abstract_state, step: int):
    """(state, None) when checkpoint `step` restores as `restore` does, else (None, why: one short line).

    Damage is looked for in the manifest first (`damage`), so that TensorStore never reads a file known to
    be truncated or missing; a restore that fails anyway counts as damage too.
    """
    why = damage(mngr, step)
    if why is None:
        try:
            return restore(mngr, abstract_state, step), None
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as e:  # TensorStore and Orbax fail in many ways on damaged files
            why = _short_reason(e)
    return None, why


def readable_steps(mngr: ocp.CheckpointManager, abstract_state, *, but=()) -> list[int]:
    """The steps, other than `but`, whose checkpoints restore (each is read: for error messages, not a loop)."""
    steps = sorted(set(mngr.all_steps()) - set(but))
    return [s for s in steps if try_restore(mngr, abstract_state, s)[1] is None]


def set_aside(mngr: ocp.CheckpointManager, step: int) -> pathlib.Path:
    """Moves checkpoint `step` to `WORKDIR/damaged_checkpoints/<step>` (kept for inspection, never deleted)."""
    aside = pathlib.Path(mngr.directory).parent / "damaged_checkpoints" / str(step)
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(f"{step}-{n}")
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(_step_dir(mngr, step)), str(aside))
    mngr.reload()
    return aside


def _restore(mngr, step, abstract):
    # The state is replicated; it restores onto this process's devices whatever devices saved it
    # (a run trained on four GPUs or two hosts samples on one).
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), P())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)
    return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None):
    """Restores the state at `step` (default: the latest) into `abstract_state`'s structure.

    Args:
      mngr: the run's manager.
      abstract_state: a train state dataclass of shapes (`jax.eval_shape`).
      step: the checkpoint's step (default: the latest).
    """
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{mngr.directory}: no checkpoint")
    with _quiet_failures():
        return _restore(mngr, step, abstract_state)
