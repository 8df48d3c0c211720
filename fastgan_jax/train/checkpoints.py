"""Orbax checkpoints of a run: the whole train state plus its config.

The only module that imports orbax. Layout: `WORKDIR/checkpoints/<step>/`
with the items `state` (StandardSave of the TrainState pytree) and `config`
(JSON). The last `keep` checkpoints are preserved.
"""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint.checkpoint_managers import preservation_policy

# Config fields that may change when a run is resumed (schedule, logging, the
# learning rate, and `init_from`, which only matters for a new run); every
# other field defines the run, and a mismatch is an error.
RESUMABLE_FIELDS = frozenset(
    {
        "lr",
        "remat",  # memory against compute; the same results
        "data_workers",  # how many processes decode; the same batches
        "init_from",
        "num_steps",
        "log_every",
        "sample_every",
        "checkpoint_every",
        "keep_checkpoints",
        "num_samples",
        "cache_dir",
        "tfds_data_dir",
        "fid_every",
        "fid_samples",
        "time_limit_s",
    }
)


class ConfigMismatchError(ValueError):
    """A workdir's checkpoints come from a different config."""


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
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "config"))


def normalize(config: dict) -> dict:
    """A JSON round trip, so that tuples and lists compare equal."""
    return json.loads(json.dumps(config))


def check_compatible(saved: dict, current: dict, workdir) -> None:
    """Raises ConfigMismatchError when the run-defining fields differ."""
    saved, current = normalize(saved), normalize(current)
    keys = sorted((set(saved) | set(current)) - RESUMABLE_FIELDS)
    diffs = [k for k in keys if saved.get(k) != current.get(k)]
    if diffs:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diffs[:3])
        raise ConfigMismatchError(
            f"--workdir {workdir} holds a run with another config ({shown}); "
            "use a new --workdir, or the same config to resume (nothing was overwritten)"
        )


def saved_config(mngr: ocp.CheckpointManager):
    """The config of the latest checkpoint, or None when there is none."""
    step = mngr.latest_step()
    if step is None:
        return None
    return mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def save(mngr: ocp.CheckpointManager, step: int, state, config: dict, metrics: dict | None = None) -> None:
    """Saves the state and config at `step`; `metrics` (e.g. {'fid': ...}) rank best checkpoints."""
    mngr.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(normalize(config))),
        metrics=metrics,
        force=True,
    )
    mngr.wait_until_finished()


def _restore(mngr, step, abstract):
    # The state is replicated; it restores onto this process's devices whatever devices saved it
    # (a run trained on four GPUs or two hosts samples on one).
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("data",)), P())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract)
    return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]


def restore(mngr: ocp.CheckpointManager, abstract_state, step: int | None = None, *, defaults: dict | None = None):
    """Restores the state at `step` (default: the latest) into `abstract_state`'s structure.

    Args:
      mngr: the run's manager.
      abstract_state: a train state dataclass of shapes (`jax.eval_shape`).
      step: the checkpoint's step (default: the latest).
      defaults: values of fields that older checkpoints do not have; such a
        checkpoint restores with these.
    """
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{mngr.directory}: no checkpoint")
    try:
        return _restore(mngr, step, abstract_state)
    except ValueError:
        if not defaults:
            raise
    fields = [f.name for f in dataclasses.fields(abstract_state) if f.name not in defaults]
    restored = _restore(mngr, step, {name: getattr(abstract_state, name) for name in fields})
    return abstract_state.replace(**restored, **defaults)
