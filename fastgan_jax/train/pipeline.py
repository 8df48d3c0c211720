"""The input pipeline: the data as a source, where it lives, and what each step takes.

`load` reads the data as a random-access source; `device_batches` gives
each step its data: the whole set resident on the device (the step draws its
batch) when it fits, else batches from the host, through a Grain pipeline
(`batches`), copied to the devices while the previous step runs.

Three sources: `ArraySource`, the decoded set in host memory (what
`data.load` returns), and `data.FileSource` (from `data.file_source`) and
`data.TfdsSource` (from `data.tfds_source`), which decode each image from an
image file or a TFDS split's array_record files when a batch needs it, so
that a set larger than memory trains too (the same preprocessing as
`data.load`).

Batch `s` is a pure function of the run's seed and `s`: its indices are
`batch_indices(seed, s, ...)`, uniform with replacement as the on-device
path draws them. A resumed or rolled-back run starts the pipeline at its
checkpoint's step and sees exactly the batches of an uninterrupted run; the
step in the checkpoint is the pipeline's whole state. Each process reads
only its slice of every global batch (`process_index`), so the global batch
does not depend on the number of processes. With `workers > 0`, Grain
worker processes decode the batches ahead of the training loop; an error in
a worker ends the iteration with that error in the training process.
"""

import os

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastgan_jax import data


class ArraySource:
    """Random access to decoded uint8 images [N, H, W, 3] in host memory."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.images[i]


def batch_indices(seed: int, step: int, num_records: int, batch_size: int) -> np.ndarray:
    """The global batch of `step`: `batch_size` indices into the source, uniform with replacement."""
    return np.random.default_rng((seed, step)).integers(0, num_records, batch_size)


class _LoadBatch:
    """step -> this process's slice of the step's global batch, uint8 [local, H, W, 3] (picklable for workers)."""

    def __init__(self, source, seed, batch_size, lo, hi):
        self.source, self.seed, self.batch_size, self.lo, self.hi = source, seed, batch_size, lo, hi

    def __call__(self, step: int) -> np.ndarray:
        indices = batch_indices(self.seed, step, len(self.source), self.batch_size)[self.lo : self.hi]
        return np.stack([self.source[int(i)] for i in indices])


def batches(
    source,
    *,
    batch_size: int,
    seed: int,
    start_step: int,
    num_steps: int,
    process_index: int = 0,
    process_count: int = 1,
    workers: int = 0,
):
    """An iterator over this process's part of the batches of steps `start_step` .. `num_steps - 1`.

    Args:
      source: `ArraySource`, `data.FileSource`, `data.TfdsSource` or any random-access source of uint8 [H, W, 3] images.
      batch_size: the global batch (all processes); a multiple of `process_count`.
      seed: the run's seed.
      start_step: the first step's index (a resumed run's checkpoint step).
      num_steps: where the iteration ends.
      process_index, process_count: this process among the run's processes.
      workers: Grain worker processes decoding ahead; 0 reads in the calling process.
    """
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {process_count} processes")
    local = batch_size // process_count
    load = _LoadBatch(source, seed, batch_size, process_index * local, (process_index + 1) * local)
    dataset = grain.MapDataset.range(start_step, max(start_step, num_steps)).map(load).to_iter_dataset()
    if workers > 0:
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; from a script nobody parsed them
            flags.FLAGS.mark_as_parsed()
        # Batches come back pickled, not in shared memory: Grain's shared-memory arrays outlive a closed
        # iterator and are reported as leaked at exit; a batch is a few MB, copied once either way.
        no_shm = grain.experimental.DatasetOptions(min_shm_size=2**62)
        dataset = grain.experimental.WithOptionsIterDataset(dataset, no_shm)
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
    return iter(dataset)


def load(cfg: dict):
    """The data as a random-access source: decoded in host memory, or read from the files when streamed."""
    opts = {"aspect": cfg.data.aspect, "background": tuple(cfg.data.background)}
    tfds_data_dir = cfg.data.tfds_data_dir or None
    if cfg.data.stream_from == "files":
        return data.file_source(cfg.data.source, cfg.model.im_size, tfds_data_dir=tfds_data_dir, **opts)
    images = data.load(
        cfg.data.source, cfg.model.im_size, cache_dir=cfg.data.cache_dir or None, tfds_data_dir=tfds_data_dir, **opts
    )
    return ArraySource(images)


def resident(source, mode) -> bool:
    """Whether the data set lives on the device: `data_on_device` yes, or auto and it takes <= 1/4 of the memory."""
    if not isinstance(source, ArraySource) or mode in ("no", False):
        return False
    if mode in ("yes", True):
        return True
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    return limit is None or source.images.nbytes <= 0.25 * limit


def data_sharding(mesh: Mesh, resident: bool) -> NamedSharding:
    """Where the step's data lives: the whole set replicated, or each batch split over the mesh's `data` axis."""
    return NamedSharding(mesh, P() if resident else P("data"))


def device_batches(cfg: dict, source, mesh: Mesh, resident: bool, start: int):
    """What each step from `start` on takes: the whole set on the device, or the streamed batches of those steps.

    Close the iterator (`close`) to end Grain's worker processes.
    """
    if resident:
        device_data = jax.device_put(source.images, data_sharding(mesh, True))
        while True:
            yield device_data
    host = batches(
        source,
        batch_size=cfg.optim.batch_size,
        seed=cfg.train.seed,
        start_step=start,
        num_steps=cfg.train.num_steps,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        workers=workers(cfg),
    )
    try:  # the copy to the device overlaps the running step
        for batch in host:
            yield jax.make_array_from_process_local_data(data_sharding(mesh, False), batch)
    finally:  # `close()` ends Grain's worker processes and frees their shared memory
        if hasattr(host, "close"):
            host.close()


def workers(cfg: dict) -> int:
    """Grain processes decoding batches: none from memory, `data_workers` (-1: one per core up to 8) from files."""
    if cfg.data.stream_from != "files":
        return 0  # indexing an array in memory needs no helpers
    n = cfg.data.workers
    return min(8, os.cpu_count() or 1) if n < 0 else n


def describe(cfg: dict, resident: bool) -> str:
    """Where the steps' data comes from, for the start line."""
    if resident:
        return "data on device"
    if cfg.data.stream_from == "files":
        return f"decoding batches from the files ({workers(cfg)} Grain workers)"
    return "streaming from host memory"
