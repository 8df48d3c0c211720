"""What keeps a run safe: rollbacks after non-finite steps, a checkpoint on SIGINT/SIGTERM, a full disk in one line.

The step itself never applies a non-finite update (`step._guard`); when
steps keep being skipped, `roll_back` restarts from the last checkpoint with
half the learning rate, at most `MAX_ROLLBACKS` times.
"""

import contextlib
import signal
import threading

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fastgan_jax.train import checkpoints, hosts
from fastgan_jax.train.state import TrainState
from fastgan_jax.train.workdir import initial_state


class DiskFullError(OSError):
    """The disk filled up while writing a checkpoint, samples or logs."""


@contextlib.contextmanager
def disk_full_is_one_line(path, mngr):
    """Turns a full disk under `path` into DiskFullError naming the path and the checkpoint that survives."""
    try:
        yield
    except Exception as e:
        if not checkpoints.no_space(e):
            raise
        last = mngr.latest_step()
        kept = f"checkpoint {last} is intact" if last is not None else "no checkpoint was written"
        advice = "free space and run the same command to continue"
        raise DiskFullError(f"{path}: no space left on device; {kept}; {advice}") from None


NONFINITE_PATIENCE = 10  # consecutive skipped (non-finite) steps, seen at a log step, before a rollback
MAX_ROLLBACKS = 3  # rollbacks in one run before it stops


class NonFiniteError(FloatingPointError):
    """A state to be checkpointed was not finite, or training kept producing non-finite losses after every rollback."""


def roll_back(exp, state: TrainState, rollbacks: int) -> TrainState:
    """The last checkpoint's state (the start state when there is none) with half the lr scale.

    Args:
      exp: the run's `trainer.Experiment`.
      state: the state whose steps kept being skipped.
      rollbacks: the rollbacks of this run so far.

    Raises:
      NonFiniteError: after MAX_ROLLBACKS rollbacks.
    """
    last = exp.mngr.latest_step()
    if rollbacks >= MAX_ROLLBACKS:
        if last is not None:
            kept = f"the last finite checkpoint is step {last} in {exp.workdir / 'checkpoints'}; resume it"
        else:
            kept = "no checkpoint was written; start again"
        lower = " or --config.model.precision=float32" if exp.cfg.model.precision != "float32" else ""
        raise NonFiniteError(
            f"losses stayed non-finite at step {int(state.step)} after {rollbacks} rollbacks, down to lr scale "
            f"{float(state.lr_scale):g}; {kept} with a lower --config.optim.lr (a resumed run accepts a new lr){lower}"
        )
    restored = initial_state(exp.cfg, exp.G, exp.D, exp.tx, exp.keys["init"], exp.mngr, last is not None)
    restored = restored.replace(lr_scale=state.lr_scale * 0.5, nonfinite=jnp.zeros((), jnp.int32))
    hosts.say(
        f"step {int(state.step)}: {int(state.nonfinite)} consecutive non-finite steps; rolled back to step "
        f"{int(restored.step)} with the learning rate scaled by {float(restored.lr_scale):g}",
        flush=True,
    )
    return jax.device_put(restored, NamedSharding(exp.mesh, P()))


class Interrupted(Exception):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM, after saving a checkpoint."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """Yields a list that receives the first SIGINT/SIGTERM; a second one interrupts at once."""
    received = []
    if threading.current_thread() is not threading.main_thread():  # handlers only work in the main thread
        yield received
        return

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        print(
            f"\n{signal.Signals(signum).name}: saving a checkpoint after this step (again to stop at once)", flush=True
        )

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
