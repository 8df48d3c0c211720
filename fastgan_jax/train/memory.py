"""How much device memory the compiled train step needs, and the rematerialisation that fits (`remat=auto`).

XLA knows a compiled program's memory before it runs: its buffer
assignment (`Compiled.memory_analysis()`) gives the bytes of the arguments
(the train state, the resident images, the LPIPS weights), the outputs, the
temporaries (activations kept for the backward pass, scratch, and on a GPU
the cuDNN workspace of the algorithms it picked), and the outputs that reuse
the donated state's buffers (aliased). `step_bytes` sums them, aliased bytes
counted once.

`choose_remat` compiles the step with remat `none`, then `blocks`, then
`full`, and takes the first whose figure fits the device's limit (JAX's
allocator limit, `memory_stats()["bytes_limit"]`: by default 75% of a GPU's
memory) less `MARGIN`. The margin is for what the figure leaves out: the
allocator's fragmentation, and the other programs of a run that live beside
the state (samples, FID's Inception, the EMA's recalibration). A device that
reports no limit (the CPU) takes `none`, without compiling anything.
"""

import dataclasses
import math
from collections.abc import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from fastgan_jax.nn.models import REMATS
from fastgan_jax.train import hosts
from fastgan_jax.train.validate import ConfigError

AUTO = "auto"  # the config value that asks for `choose_remat`
MARGIN = 0.10  # share of the device's limit kept free for what XLA's figure leaves out (module docstring)
GiB = 2**30


class StepDoesNotFitError(ConfigError):
    """Even `remat=full` needs more memory than the device allows; the message says which batch would fit."""


def step_bytes(compiled) -> dict[str, int]:
    """Bytes of a compiled program: argument, output, temp, alias, and total = argument + output + temp - alias.

    Raises ValueError when the backend gives no memory analysis.
    """
    m = compiled.memory_analysis()
    if m is None:
        raise ValueError("this backend gives no memory analysis of compiled programs")
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def device_limit(devices) -> int | None:
    """The bytes JAX's allocator may use on the smallest of `devices`, over all processes; None without a limit.

    A GPU reports `bytes_limit` (XLA_PYTHON_CLIENT_MEM_FRACTION of its memory, 75% unless set); the CPU
    reports none. Every process of a multi-process run gets the same answer (they must compile one program).
    """
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    limit = min(limits) if limits and None not in limits else -1
    if jax.process_count() > 1:
        gathered = np.asarray(multihost_utils.process_allgather(np.int64(limit)))
        limit = -1 if (gathered < 0).any() else int(gathered.min())
    return None if limit < 0 else int(limit)


@dataclasses.dataclass(frozen=True)
class RematChoice:
    """What `choose_remat` decided, and from which figures."""

    remat: str  # 'none', 'blocks' or 'full'
    limit: int | None  # the device's limit in bytes (None: no limit, as on the CPU)
    needs: dict[str, int]  # remat -> total bytes of the compiled step, for the settings compiled

    @property
    def budget(self) -> int | None:
        """The limit less `MARGIN`, in bytes."""
        return None if self.limit is None else int(self.limit * (1 - MARGIN))

    def describe(self) -> str:
        """One line for the log, e.g. 'remat=auto: blocks (none needs 4.64 GiB, blocks 2.62 GiB; ...)'."""
        if self.limit is None:
            return f"remat=auto: {self.remat} (this device reports no memory limit)"
        needs = ", ".join(f"{r} needs {b / GiB:.2f} GiB" for r, b in self.needs.items())
        return (
            f"remat=auto: {self.remat} ({needs}; the device allows {self.limit / GiB:.2f} GiB, "
            f"{self.budget / GiB:.2f} GiB with a {MARGIN:.0%} margin)"
        )


def choose_remat(
    step_memory: Callable[[str], dict], limit: int | None, *, batch_size: int, multiple: int = 1
) -> RematChoice:
    """The first of `none`, `blocks`, `full` whose compiled step fits `limit` less `MARGIN`.

    Args:
      step_memory: remat -> `step_bytes` of the step compiled with it (called
        only as far as needed).
      limit: the device's limit in bytes (`device_limit`); None: `none`, and
        nothing is compiled.
      batch_size: the run's global batch, for the suggestion when nothing fits.
      multiple: a suggested batch is a multiple of this (the device count).

    Raises:
      StepDoesNotFitError: even `full` does not fit; the message gives the
        largest batch that would, estimated from `full`'s figures (the
        temporaries grow with the batch, the rest does not).
    """
    if limit is None:
        return RematChoice("none", None, {})
    needs, figures = {}, {}
    for remat in REMATS:
        figures[remat] = step_memory(remat)
        needs[remat] = figures[remat]["total"]
        choice = RematChoice(remat, limit, dict(needs))
        if needs[remat] <= choice.budget:
            return choice
    raise StepDoesNotFitError(_does_not_fit(choice, figures["full"], batch_size, multiple))


def _does_not_fit(choice: RematChoice, full: dict, batch_size: int, multiple: int) -> str:
    fixed = full["argument"] + full["output"] - full["alias"]  # state, images, weights: not the batch's
    per_image = full["temp"] / batch_size
    fits = math.floor((choice.budget - fixed) / per_image / multiple) * multiple if per_image else 0
    if fits >= multiple:
        advice = f"--config.optim.batch_size={fits} would fit (estimated from remat=full's figures)"
    else:
        advice = "no batch would: a smaller --config.model.im_size, or --config.model.precision=float16"
    return (
        f"--config.model.remat=auto: the step needs {full['total'] / GiB:.2f} GiB even with remat=full, more than "
        f"the {choice.budget / GiB:.2f} GiB this device allows ({choice.limit / GiB:.2f} GiB less a "
        f"{MARGIN:.0%} margin); {advice}"
    )


def resolve(remat: str, saved: str | None, compile_step: Callable, *, batch_size: int) -> str:
    """The remat a run's step uses: `remat`, or for `auto` the resumed run's own choice (`saved`), else
    `choose_remat`'s on this run's devices, `compile_step(remat)` compiling a candidate. The choice is logged.

    Raises:
      StepDoesNotFitError: even `full` does not fit.
    """
    if remat != AUTO:
        return remat
    if saved is not None:
        hosts.say(f"remat=auto: {saved}, as the run was started")
        return saved
    choice = choose_remat(
        lambda remat: step_bytes(compile_step(remat)),
        device_limit(jax.local_devices()),
        batch_size=batch_size,
        multiple=jax.device_count(),
    )
    hosts.say(choice.describe())
    return choice.remat
