"""The training experiment around the compiled step: setup, the loop, logging, checkpoints, rollbacks, signals.

`train_and_evaluate` (what `fastgan-train` runs) = `setup` (data, models, the
start state: resumed, warm-started or fresh) + `train_loop` (the jitted step
of `fastgan_jax.train.step`, with the periodic actions `Logger.log_metrics`,
`save_checkpoint` and `write_samples`, and `roll_back` after non-finite
steps). The step's math is in `step.py`; its public names are re-exported
here, where `fastgan_jax.training` held both before the package was grouped.
"""

import contextlib
import dataclasses
import errno
import functools
import json
import os
import pathlib
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tensorboardX import SummaryWriter

from fastgan_jax import data, visual
from fastgan_jax import images as images_lib
from fastgan_jax.configs import default as default_config
from fastgan_jax.metrics.inception import fid, generated_features, real_features
from fastgan_jax.nn.layers import nearest_resize
from fastgan_jax.nn.models import Discriminator, Generator, generate_batches
from fastgan_jax.train import checkpoints, hosts, memory, pipeline, runs
from fastgan_jax.train.loss_scale import all_finite
from fastgan_jax.train.state import TrainState, create_train_state, legacy_defaults, make_models, make_optimizer
from fastgan_jax.train.step import (
    StepInputs,
    d_update,
    g_update,
    make_mesh,
    make_train_step,
    recalibrate,
    recon_params,
    train_step,
)
from fastgan_jax.train.validate import ConfigError, validate

__all__ = [  # with the step's public names, which `fastgan_jax.training` (this module's old name) also held
    "MAX_ROLLBACKS",
    "NONFINITE_PATIENCE",
    "DiskFullError",
    "Experiment",
    "Interrupted",
    "Logger",
    "NonFiniteError",
    "StepInputs",
    "d_update",
    "g_update",
    "initial_state",
    "make_mesh",
    "make_train_step",
    "recalibrate",
    "recon_params",
    "reconstruction_grid",
    "resolve_config",
    "roll_back",
    "save_checkpoint",
    "setup",
    "train_and_evaluate",
    "train_loop",
    "train_step",
    "write_samples",
]


def _fits_on_device(nbytes, mode):
    if mode in ("yes", True):
        return True
    if mode in ("no", False):
        return False
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return limit is None or nbytes <= 0.25 * limit


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(D, variables, images_u8, part):
    _, recs = D.apply(variables, images_lib.to_float(images_u8), part=part, train=False)
    return recs


def reconstruction_grid(D, state, images_u8, part=0):
    """Rows: real, rec_all, rec_small, rec_part (quadrant `part`), all at the real size."""
    recs = _reconstruct(D, {"params": state.d_params, "batch_stats": state.d_stats}, images_u8, part)
    size = images_u8.shape[1]
    rows = [images_lib.to_float(images_u8)] + [nearest_resize(r.astype(jnp.float32), size) for r in recs]
    return visual.grid(np.concatenate([np.asarray(r) for r in rows]), ncols=images_u8.shape[0])


@dataclasses.dataclass
class Experiment:
    """What the loop needs, built once by `setup`; nothing in it changes while training."""

    cfg: dict
    workdir: pathlib.Path
    source: Any  # random access to the uint8 [S, S, 3] images: pipeline.ArraySource or data.FileSource
    G: Generator
    D: Discriminator
    mesh: Mesh
    tx: optax.GradientTransformation  # both networks' optimizer
    step_fn: Callable  # the jitted train step
    batches: Iterator  # what the step takes as data, one item per step
    recon_vars: Any  # LPIPS-VGG weights, or None
    keys: dict  # named keys derived from the seed: init, train, sample, recal
    mngr: Any  # the Orbax CheckpointManager
    real_feats: np.ndarray | None  # Inception features of the data, for FID during training
    resident: bool  # the data set lives on the device (else batches stream through `pipeline`)


def resolve_config(config) -> dict:
    """The config as a dict, with a folder `data` made absolute (so a resumed run compares paths, not spellings)."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if cfg.get("data") and not str(cfg["data"]).startswith("tfds:"):
        cfg["data"] = str(pathlib.Path(cfg["data"]).expanduser().resolve())
    return cfg


def _open_workdir(cfg, workdir):
    """The checkpoint manager and the saved config (None for a new run); refuses a foreign run."""
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file: give a folder")
    try:  # access checks (validate) can pass where creating fails: a special or read-only file system, root
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--workdir {workdir}: cannot be created ({e.strerror})") from None
    mngr = checkpoints.manager(workdir, keep=cfg["keep_checkpoints"], keep_best_fid=cfg.get("fid_every", 0) > 0)
    saved = checkpoints.saved_config(mngr)
    if saved is not None:
        # A field added after the run was saved has its default value in that run.
        saved = resolve_config({**default_config.get_config().to_dict(), **saved})
        if saved["data"] != cfg["data"] and _same_images(saved, cfg):
            hosts.say(f"the run's images moved from {saved['data']} to {cfg['data']} (the same files): resuming")
            saved["data"] = cfg["data"]
        checkpoints.check_compatible(saved, cfg, workdir)
        if saved.get("lr") != cfg["lr"]:
            hosts.say(f"resuming with lr {cfg['lr']} (was {saved.get('lr')}); the optimizer state is kept")
    return mngr, saved


def _data_fingerprint(cfg, saved) -> str | None:
    """The run's image folder's `data.fingerprint` (kept from the saved run when its folder is the same)."""
    if str(cfg["data"]).startswith("tfds:"):
        return None  # a TFDS name is the data's identity
    if saved is not None and saved["data"] == cfg["data"] and saved.get(checkpoints.DATA_FINGERPRINT):
        return saved[checkpoints.DATA_FINGERPRINT]
    try:
        return data.fingerprint(cfg["data"], contents=cfg["stream_from"] != "files")
    except data.DataError:
        return None  # loading the data says what is wrong, in its own words


def _same_images(saved, cfg) -> bool:
    """Whether `cfg`'s image folder holds the images that the saved run's (now elsewhere) held."""
    recorded = saved.get(checkpoints.DATA_FINGERPRINT)
    if not recorded or str(cfg["data"]).startswith("tfds:") or not pathlib.Path(cfg["data"]).is_dir():
        return False
    return _data_fingerprint(cfg, None) == recorded


def _load_data(cfg):
    """The data as a random-access source: decoded in host memory, or read from the files when streamed."""
    if cfg["stream_from"] == "files":
        opts = {"aspect": cfg["aspect"], "background": tuple(cfg["background"])}
        return data.file_source(cfg["data"], cfg["im_size"], tfds_data_dir=cfg.get("tfds_data_dir") or None, **opts)
    return pipeline.ArraySource(_decode_all(cfg))


def _decode_all(cfg):
    return data.load(
        cfg["data"],
        cfg["im_size"],
        aspect=cfg["aspect"],
        background=tuple(cfg["background"]),
        cache_dir=cfg.get("cache_dir") or None,
        tfds_data_dir=cfg.get("tfds_data_dir") or None,
    )


def initial_state(cfg, G, D, tx, key, mngr, resume: bool) -> TrainState:
    """The latest checkpoint's state when resuming; else a fresh one, warm-started from `init_from` if set."""
    init = functools.partial(create_train_state, G, D, tx_g=tx, tx_d=tx)
    if resume:
        damaged = []
        state = checkpoints.restore_newest(
            mngr, jax.eval_shape(init, key), defaults=legacy_defaults(), on_damaged=lambda *d: damaged.append(d)
        )
        _set_aside(mngr, damaged, int(state.step))
        return state
    state = init(key)
    if cfg.get("init_from"):
        state = runs.warm_start(state, cfg["init_from"])
        hosts.say(f"starting from the G, D and EMA weights of {cfg['init_from']} (fresh optimizer state)")
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


def _batches(cfg, source, mesh, resident, start) -> Iterator:
    """What each step takes: the whole set on the device (the step draws its batch), or streamed batches."""
    if resident:
        device_data = jax.device_put(source.images, NamedSharding(mesh, P()))
        return iter(lambda: device_data, None)
    host = pipeline.batches(
        source,
        batch_size=cfg["batch_size"],
        seed=cfg["seed"],
        start_step=start,
        num_steps=cfg["num_steps"],
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        workers=_workers(cfg),
    )
    return _on_device(host, NamedSharding(mesh, P("data")))


def _on_device(host, sharding):
    """Global batches from each process's slices; the copy to the device overlaps the running step."""
    try:
        for batch in host:
            yield jax.make_array_from_process_local_data(sharding, batch)
    finally:  # `close()` ends Grain's worker processes and frees their shared memory
        if hasattr(host, "close"):
            host.close()


def _close(batches) -> None:
    if hasattr(batches, "close"):
        batches.close()


def _workers(cfg) -> int:
    if cfg["stream_from"] != "files":
        return 0  # indexing an array in memory needs no helpers
    n = cfg["data_workers"]
    return min(8, os.cpu_count() or 1) if n < 0 else n


def setup(config, workdir, *, d_extra_loss=None, g_extra_loss=None) -> tuple[Experiment, TrainState]:
    """Builds the experiment and its start state: resumed, warm-started or fresh.

    Raises `validate.ConfigError` for a bad config and
    `checkpoints.ConfigMismatchError` for a workdir of another run, before
    anything is loaded, compiled or written.
    """
    cfg, workdir = resolve_config(config), pathlib.Path(workdir)
    validate(cfg, num_devices=jax.device_count(), workdir=workdir)
    created = [p for p in (workdir, workdir / "checkpoints") if not p.exists()]
    mngr, saved = _open_workdir(cfg, workdir)
    cfg[checkpoints.DATA_FINGERPRINT] = _data_fingerprint(cfg, saved)  # saved with the run's config
    try:
        return _build(cfg, workdir, mngr, saved, d_extra_loss, g_extra_loss)
    except Exception:  # bad data, weights or init_from: leave no empty run folder behind
        mngr.close()
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def _build(cfg, workdir, mngr, saved, d_extra_loss, g_extra_loss) -> tuple[Experiment, TrainState]:
    """`setup` once the workdir is open: the data, the networks, the start state and the jitted step."""
    source = _load_data(cfg)
    if len(source) < cfg["batch_size"]:
        warnings.warn(
            f"{len(source)} image(s), fewer than --config.batch_size={cfg['batch_size']}: every batch repeats "
            "images (a smaller batch, or more images, gives a cleaner gradient)",
            stacklevel=3,
        )
    tx = make_optimizer(lr=cfg["lr"], b1=cfg["beta1"], b2=cfg["beta2"])
    root = jax.random.key(cfg["seed"])
    keys = {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "train", "sample", "recal"))}
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    resident = isinstance(source, pipeline.ArraySource) and _fits_on_device(source.images.nbytes, cfg["data_on_device"])
    recon_vars = jax.device_put(recon_params(cfg["recon"]), replicated)

    step_for = functools.partial(
        _train_step, cfg, tx=tx, mesh=mesh, resident=resident, d_extra_loss=d_extra_loss, g_extra_loss=g_extra_loss
    )
    inputs = functools.partial(_step_inputs, cfg, source, tx, mesh, resident, keys, recon_vars)  # only for auto
    cfg["remat"] = _resolve_remat(cfg, saved, lambda remat: step_for(remat).lower(*inputs()).compile())
    G, D = _models(cfg, cfg["remat"])
    state = jax.device_put(initial_state(cfg, G, D, tx, keys["init"], mngr, saved is not None), replicated)
    step_fn = step_for(cfg["remat"])  # the same jitted step that `_resolve_remat` compiled: not compiled again
    real_feats = None
    if cfg.get("fid_every", 0) > 0:
        opts = {"aspect": cfg["aspect"], "background": tuple(cfg["background"]), "cache_dir": cfg.get("cache_dir")}
        real_feats = real_features(cfg["data"], cfg["im_size"], **{**opts, "cache_dir": opts["cache_dir"] or None})
    exp = Experiment(
        cfg=cfg,
        workdir=workdir,
        source=source,
        G=G,
        D=D,
        mesh=mesh,
        tx=tx,
        step_fn=step_fn,
        batches=_batches(cfg, source, mesh, resident, int(state.step)),
        recon_vars=recon_vars,
        keys=keys,
        mngr=mngr,
        real_feats=real_feats,
        resident=resident,
    )
    return exp, state


def _models(cfg, remat) -> tuple[Generator, Discriminator]:
    return make_models(**{k: cfg[k] for k in ("im_size", "ngf", "ndf", "nz", "dec_width", "precision")}, remat=remat)


def _train_step(cfg, remat, *, tx, mesh, resident, d_extra_loss, g_extra_loss) -> Callable:
    """The run's jitted step with the networks rematerialised by `remat` (the same object for the same remat)."""
    return make_train_step(
        *_models(cfg, remat),
        tx_g=tx,
        tx_d=tx,
        policy=cfg["policy"],
        recon=cfg["recon"],
        ema_decay=cfg["ema_decay"],
        mesh=mesh,
        batch_size=cfg["batch_size"] if resident else None,
        d_extra_loss=d_extra_loss,
        g_extra_loss=g_extra_loss,
    )


def _step_inputs(cfg, source, tx, mesh, resident, keys, recon_vars) -> tuple:
    """The shapes, dtypes and placements of what the loop gives the step: lowering with these compiles the
    program that the loop's calls then use."""
    replicated = NamedSharding(mesh, P())
    init = functools.partial(create_train_state, *_models(cfg, "none"), tx_g=tx, tx_d=tx)  # remat: same state
    images = source.images.shape if resident else (cfg["batch_size"], cfg["im_size"], cfg["im_size"], 3)
    return (
        _shapes(jax.eval_shape(init, keys["init"]), replicated),
        jax.ShapeDtypeStruct(images, np.uint8, sharding=replicated if resident else NamedSharding(mesh, P("data"))),
        jax.ShapeDtypeStruct(keys["train"].shape, keys["train"].dtype),
        _shapes(recon_vars, replicated),
    )


def _shapes(tree, sharding):
    """The shapes and dtypes of `tree`'s arrays, placed by `sharding`: what a step is lowered with."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _resolve_remat(cfg, saved, compile_step) -> str:
    """`cfg`'s remat, with `auto` resolved: a resumed run's own setting, else the first that fits the device.

    `compile_step(remat)` compiles the step (`memory.choose_remat`); the choice and its figures are logged.
    Raises `memory.StepDoesNotFitError` (a ConfigError) when even `full` does not fit.
    """
    if cfg["remat"] != memory.AUTO:
        return cfg["remat"]
    if saved is not None and saved["remat"] != memory.AUTO:
        hosts.say(f"remat=auto: {saved['remat']}, as the run was started")
        return saved["remat"]
    choice = memory.choose_remat(
        lambda remat: memory.step_bytes(compile_step(remat)),
        memory.device_limit(jax.local_devices()),
        batch_size=cfg["batch_size"],
        multiple=jax.device_count(),
    )
    hosts.say(choice.describe())
    return choice.remat


# ----------------------------------------------------------------------------- periodic actions


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
            self.writer.add_scalar(k if k in ("fid", "img_per_s", "lr_scale", "nonfinite") else f"loss/{k}", v, step)
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
            hosts.say(f"step {step}/{self.total} " + " ".join(f"{k} {v:.3f}" for k, v in shown.items()), flush=True)

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


def _write_atomic(path, text) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class DiskFullError(OSError):
    """The disk filled up while writing a checkpoint, samples or logs."""


def _no_space(error: BaseException) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


@contextlib.contextmanager
def _disk_full_is_one_line(path, exp):
    """Turns a full disk under `path` into DiskFullError naming the path and the checkpoint that survives."""
    try:
        yield
    except Exception as e:
        if not _no_space(e):
            raise
        last = exp.mngr.latest_step()
        kept = f"checkpoint {last} is intact" if last is not None else "no checkpoint was written"
        advice = "free space and run the same command to continue"
        raise DiskFullError(f"{path}: no space left on device; {kept}; {advice}") from None


_all_finite_jit = jax.jit(all_finite)
NONFINITE_PATIENCE = 10  # consecutive skipped (non-finite) steps, seen at a log step, before a rollback
MAX_ROLLBACKS = 3  # rollbacks in one run before it stops


class NonFiniteError(FloatingPointError):
    """A state to be checkpointed was not finite, or training kept producing non-finite losses after every rollback."""


def save_checkpoint(exp: Experiment, state: TrainState, logger: Logger, with_fid: bool) -> TrainState:
    """Recalibrates the EMA generator's statistics, optionally scores FID, and saves the state."""
    cfg, step = exp.cfg, int(state.step)
    key = jax.random.fold_in(exp.keys["recal"], step)
    stats = recalibrate(
        exp.G, state.ema_params, state.g_stats, key, num_samples=cfg["recalib_samples"], batch=cfg["recalib_batch"]
    )
    state = state.replace(ema_stats=stats)
    if not bool(_all_finite_jit(state)):  # the step never applies a non-finite update; this is the last guard
        raise NonFiniteError(f"refusing to checkpoint a non-finite state at step {step} (nothing was written)")
    scores = None
    if with_fid:
        ema = {"params": state.ema_params, "batch_stats": state.ema_stats}
        feats = generated_features(exp.G, ema, cfg["fid_samples"], jax.random.fold_in(exp.keys["sample"], step))
        scores = {"fid": fid(feats, exp.real_feats)}
        logger.write(step, scores)
        hosts.say(f"step {step}: FID {scores['fid']:.2f} ({cfg['fid_samples']} samples)", flush=True)
    with _disk_full_is_one_line(exp.workdir / "checkpoints", exp):
        checkpoints.save(exp.mngr, step, state, cfg, scores)  # every process: Orbax writes collectively
        logger.flush()
    return state


def write_samples(exp: Experiment, state: TrainState, logger: Logger, step: int) -> None:
    """The EMA generator's grid of fixed latents and D's reconstructions, as PNGs and in TensorBoard."""
    ema = {"params": state.ema_params, "batch_stats": state.ema_stats}
    z = jax.random.normal(exp.keys["sample"], (exp.cfg["num_samples"], exp.G.nz))
    img = visual.grid(generate_batches(exp.G, ema, z, exp.keys["sample"], batch=64))
    rec = reconstruction_grid(exp.D, state, np.stack([exp.source[i] for i in range(min(8, len(exp.source)))]))
    if not hosts.is_primary():  # every process computes (one program over all devices); process 0 writes
        return
    for name, picture in (("samples", img), ("reconstructions", rec)):
        path = exp.workdir / "samples" / f"{name}_{step:07d}.png"
        with _disk_full_is_one_line(path, exp):
            visual.save_png(path, picture)
        logger.writer.add_image(name, picture, step, dataformats="HWC")


# ----------------------------------------------------------------------------- the loop


def roll_back(exp: Experiment, state: TrainState, rollbacks: int) -> TrainState:
    """The last checkpoint's state (the start state when there is none) with half the lr scale.

    Raises:
      NonFiniteError: after MAX_ROLLBACKS rollbacks.
    """
    last = exp.mngr.latest_step()
    if rollbacks >= MAX_ROLLBACKS:
        if last is not None:
            kept = f"the last finite checkpoint is step {last} in {exp.workdir / 'checkpoints'}; resume it"
        else:
            kept = "no checkpoint was written; start again"
        lower = " or --config.precision=float32" if exp.cfg["precision"] != "float32" else ""
        raise NonFiniteError(
            f"losses stayed non-finite at step {int(state.step)} after {rollbacks} rollbacks, down to lr scale "
            f"{float(state.lr_scale):g}; {kept} with a lower --config.lr (a resumed run accepts a new lr){lower}"
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
def _stop_on_signals():
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


def _next_batch(exp: Experiment, state: TrainState, logger: Logger):
    """The next step's data. A streamed image file that became unreadable since the start ends the run with
    `data.DataError` naming it, after a checkpoint of the steps done so far (nothing trained is lost)."""
    try:
        return next(exp.batches)
    except data.DataError as e:
        step = int(state.step)
        if jax.process_count() > 1:  # the other processes are not stopping: no collective checkpoint to join
            raise
        if step and exp.mngr.latest_step() != step:
            save_checkpoint(exp, state, logger, with_fid=False)
        kept = f"checkpoint {step} saved" if step else "nothing trained yet"
        raise data.DataError(f"{e}; stopped at step {step}, {kept}") from None


def train_loop(exp: Experiment, state: TrainState) -> TrainState:
    """Steps from `state.step` to `num_steps` with the periodic actions and rollbacks.

    A time limit, SIGINT or SIGTERM end the run like its last step: logged,
    checkpointed, sampled (the signals then raise `Interrupted`).
    """
    cfg = exp.cfg
    start, total, batch = int(state.step), cfg["num_steps"], cfg["batch_size"]
    fid_every, time_limit = cfg.get("fid_every", 0), cfg.get("time_limit_s", 0)
    logger = Logger(exp.workdir, start, total)
    t0, done, rollbacks = time.perf_counter(), start, 0
    with _stop_on_signals() as signals:
        while done < total:
            state, metrics = exp.step_fn(state, _next_batch(exp, state, logger), exp.keys["train"], exp.recon_vars)
            logger.tick()
            done += 1
            timed_out = bool(time_limit and time.perf_counter() - t0 >= time_limit)
            last = done == total or hosts.agree(timed_out or bool(signals), at=done % cfg["log_every"] == 0)
            if done % cfg["log_every"] == 0 or last:
                with _disk_full_is_one_line(logger.jsonl, exp):
                    logger.log_metrics(done, metrics, batch, state)
                if int(state.nonfinite) >= NONFINITE_PATIENCE or (last and int(state.nonfinite)):
                    state, rollbacks = roll_back(exp, state, rollbacks), rollbacks + 1
                    done = int(state.step)
                    logger.truncate(done)
                    _close(exp.batches)
                    exp.batches = _batches(cfg, exp.source, exp.mesh, exp.resident, done)
                    continue
            with_fid = fid_every > 0 and (done % fid_every == 0 or last)
            if done % cfg["checkpoint_every"] == 0 or last or with_fid:
                state = save_checkpoint(exp, state, logger, with_fid)
            if done % cfg["sample_every"] == 0 or last:
                write_samples(exp, state, logger, done)
            if last:
                break
    if start >= total and hosts.agree(not (exp.workdir / "samples" / f"samples_{start:07d}.png").exists()):
        write_samples(exp, state, logger, start)  # a run killed between its last checkpoint and samples
    logger.close()
    why = signal.Signals(signals[0]).name if signals else "time limit"
    _summary(exp, start, done, time.perf_counter() - t0, why)
    if signals:
        message = f"{why}: stopped at step {done} with a checkpoint; run the same command to continue"
        raise Interrupted(message, signals[0])
    return state


def _summary(exp, start, done, elapsed, why):
    total, workdir = exp.cfg["num_steps"], exp.workdir
    if start >= total:
        hosts.say(f"nothing to do: {workdir} is already at step {start} of {total}")
        return
    rate = (done - start) * exp.cfg["batch_size"] / elapsed
    stopped = f" ({why}; run again to continue to {total})" if done < total else ""
    hosts.say(
        f"done: steps {start} -> {done} in {elapsed:.0f}s ({rate:.1f} img/s incl. compile){stopped}; "
        f"checkpoint {workdir / 'checkpoints' / str(done)}, samples {workdir / 'samples'}"
    )


def _streaming(cfg) -> str:
    if cfg["stream_from"] == "files":
        return f"decoding batches from the files ({_workers(cfg)} Grain workers)"
    return "streaming from host memory"


def train_and_evaluate(config, workdir, *, d_extra_loss=None, g_extra_loss=None) -> TrainState:
    """Trains FastGAN as `config` says, writing everything into `workdir`.

    Resumes from the latest checkpoint in `workdir/checkpoints` (exactly: the
    step keys and data draws depend only on the seed and the step). A
    checkpoint from another config raises `checkpoints.ConfigMismatchError`
    before anything is written. `d_extra_loss` and `g_extra_loss` are added
    to the losses as `train_step` says.

    Returns:
      The final train state.
    """
    exp, state = setup(config, workdir, d_extra_loss=d_extra_loss, g_extra_loss=g_extra_loss)
    hosts.say(
        f"training {exp.cfg['im_size']}px on {len(exp.source)} images from {exp.cfg['data']}, "
        f"batch {exp.cfg['batch_size']}, {'data on device' if exp.resident else _streaming(exp.cfg)}, "
        f"{exp.mesh.devices.size} device(s): steps {int(state.step)} -> {exp.cfg['num_steps']}, workdir {workdir}"
    )
    try:
        return train_loop(exp, state)
    finally:
        _close(exp.batches)  # Grain's workers, when batches stream from the files
