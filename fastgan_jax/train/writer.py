"""What a run writes as it goes: scalars to TensorBoard and `metrics.jsonl`, a progress bar, the summary line."""

import json
import os
import time

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from fastgan_jax.train import hosts

NOT_LOSSES = ("fid", "kid", "img_per_s", "lr_scale", "nonfinite")  # TensorBoard tags of their own


class Logger:
    """Scalars to TensorBoard and `metrics.jsonl`, and a progress bar (or a line per log without a terminal).

    On process 0 only: the other processes' loggers write nothing.
    """

    def __init__(self, workdir, start, total):
        self.jsonl = workdir / "metrics.jsonl"
        self.active = hosts.is_primary()
        self.truncate(start)
        # TensorBoard hides events past `purge_step` that a killed segment wrote after its last checkpoint.
        purge = start + 1 if start else None
        self.writer = SummaryWriter(str(workdir), purge_step=purge, flush_secs=30) if self.active else None
        disable = None if self.active else True  # None: a bar on a terminal, lines otherwise
        self.bar = tqdm.tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, disable=disable)
        self.total = total
        self.t_log, self.n_log = time.perf_counter(), 0
        self.t_start, self.start = self.t_log, start

    def truncate(self, step) -> None:
        """Drops `metrics.jsonl` lines after `step` (a resumed or rolled-back run logs those steps again)."""
        if not self.active or not self.jsonl.exists():
            return
        lines = self.jsonl.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]
        if kept != lines:
            _write_atomic(self.jsonl, "".join(kept))

    def write(self, step, values: dict) -> None:
        if not self.active:
            return
        for k, v in values.items():
            self.writer.add_scalar(k if k in NOT_LOSSES else f"loss/{k}", v, step)
        with open(self.jsonl, "a") as f:  # the same scalars, for scripts and plots
            f.write(json.dumps({"step": step, **values}) + "\n")

    def log_metrics(self, step, metrics, batch, state) -> None:
        """Logs the step's finite scalars, the state's lr scale and its count of consecutive skipped steps."""
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if values.get("skipped"):
            bad = sorted(k for k, v in values.items() if not np.isfinite(v))
            hosts.say(f"step {step}: non-finite {', '.join(bad)}: the step was skipped", flush=True)
        values = {k: v for k, v in values.items() if np.isfinite(v)}
        values |= {"lr_scale": float(state.lr_scale), "nonfinite": int(state.nonfinite)}
        now = time.perf_counter()
        img_s = self.n_log * batch / (now - self.t_log)
        self.t_log, self.n_log = now, 0
        self.write(step, {**values, "img_per_s": img_s})
        shown = {k: values[k] for k in ("d_real", "d_fake", "g", "rec") if k in values}
        self.bar.set_postfix({**{k: f"{v:.3f}" for k, v in shown.items()}, "img/s": f"{img_s:.1f}"})
        if self.bar.disable and self.active:  # not a terminal: one line per log instead of a bar
            losses = " ".join(f"{k} {v:.3f}" for k, v in shown.items())
            hosts.say(f"step {step}/{self.total} {losses} {self.timing(step, now, img_s)}", flush=True)

    def timing(self, step, now, img_s) -> str:
        """`sec/kimg 12.3, elapsed 1m02s, ETA 9m18s`: StyleGAN2-ADA's speed measure, and the time left at the
        pace since this segment's start (its first step's compile included)."""
        elapsed = now - self.t_start
        left = elapsed / max(step - self.start, 1) * (self.total - step)
        per_kimg = f"sec/kimg {1000 / img_s:.1f}, " if img_s > 0 else ""
        return f"| {per_kimg}elapsed {_duration(elapsed)}, ETA {_duration(left)}"

    def tick(self) -> None:
        self.n_log += 1
        self.bar.update(1)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _duration(seconds: float) -> str:
    """`45s`, `9m18s`, `3h05m`."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _write_atomic(path, text) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def summary(workdir, start: int, done: int, total: int, batch_size: int, elapsed: float, why: str) -> None:
    """The run's last line: the steps taken, the speed, and where the checkpoint and samples are."""
    if start >= total:
        hosts.say(f"nothing to do: {workdir} is already at step {start} of {total}")
        return
    rate = (done - start) * batch_size / elapsed
    stopped = f" ({why}; run again to continue to {total})" if done < total else ""
    hosts.say(
        f"done: steps {start} -> {done} in {elapsed:.0f}s ({rate:.1f} img/s incl. compile){stopped}; "
        f"checkpoint {workdir / 'checkpoints' / str(done)}, samples {workdir / 'samples'}"
    )
