"""Training on many processes (hosts): JAX's multi-controller runtime, and who writes what.

Every process runs the same program over the global mesh of all processes'
devices; each reads its slice of every batch (`pipeline`), Orbax writes the
checkpoints collectively, and only process 0 writes logs, samples,
TensorBoard events and FID scores, and prints.
"""

import itertools
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """`jax.distributed.initialize` from the flags, or from the cluster's environment (SLURM, ...).

    With no flag and no multi-process cluster job around, nothing happens (one process).
    Must run before anything touches a device.
    """
    explicit = coordinator_address is not None or num_processes is not None or process_id is not None
    if not explicit and not _in_cluster_job():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices need it across processes
    if explicit:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
        jax.distributed.initialize()  # JAX reads the job's coordinator, size and rank


def _in_cluster_job() -> bool:
    """A SLURM job step of several tasks, or Open MPI's launcher: JAX's auto-detection applies."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("SLURM_NTASKS", "1"))) > 1 or (
        int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    )


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def say(*args, **kwargs) -> None:
    """`print`, on process 0 only."""
    if is_primary():
        print(*args, **kwargs)


_passages = itertools.count()  # `sync`'s barriers passed by this process


def sync(name: str, timeout_s: int = 3600) -> None:
    """Waits until every process reaches the point `name`, for up to `timeout_s` (alone: returns at once).

    A barrier of JAX's coordination service (Orbax's), not a collective: gloo gives a collective's first call
    30 s to find every process, and processes reach the same point minutes apart when one compiles what
    another read from the compilation cache. Every process passes the same points in the same order; each
    passage is a barrier of its own (the service keeps a barrier's name for good).
    """
    if jax.process_count() > 1:
        key = f"{name} #{next(_passages)}"
        ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=timeout_s * 1000)


def agree(flag: bool, at: bool = True) -> bool:
    """Process 0's `flag` on every process (a time limit or a signal must stop all of them at the same step).

    Alone, a process's own flag, at once. Several processes ask process 0 only where `at` holds (the loop:
    at log steps), since the broadcast waits for every process and would stall the steps' asynchronous
    dispatch if it ran after each one; elsewhere the answer is False.
    """
    if jax.process_count() == 1:
        return flag
    return at and bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
