"""Training FastGAN: `train_and_evaluate`, what `fastgan-train` runs.

`setup` builds the run (its folder, resumed or new; the data; the networks,
optimizer and keys; the start state), `train_and_evaluate` jits the step of
`train.step` and loops over it with the periodic actions: logging
(`writer`), checkpoints and samples (`actions`), rollbacks after non-finite
steps, signals and a full disk (`safeguards`). The input pipeline is
`pipeline`, the run's folder and metadata `workdir`.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import pathlib
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastgan_jax import data
from fastgan_jax.metrics.inception import real_features
from fastgan_jax.nn.models import Discriminator, Generator
from fastgan_jax.train import hosts, memory, pipeline, writer
from fastgan_jax.train.actions import save_checkpoint, write_samples, write_start_grids
from fastgan_jax.train.safeguards import (
    NONFINITE_PATIENCE,
    Interrupted,
    disk_full_is_one_line,
    roll_back,
    stop_on_signals,
)
from fastgan_jax.train.state import TrainState, make_models, make_optimizer
from fastgan_jax.train.step import make_mesh, recon_params, train_step
from fastgan_jax.train.validate import validate
from fastgan_jax.train.workdir import data_fingerprint, initial_state, locked, open_workdir, resolve_config


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What the loop and its periodic actions need, built once by `setup`."""

    cfg: ml_collections.FrozenConfigDict  # the run's config: the recipe as given, `data.source` absolute
    meta: dict  # what the run resolved at its start (`workdir`): remat, data_fingerprint; saved beside `cfg`
    workdir: pathlib.Path
    source: Any  # random access to the uint8 [S, S, 3] images: pipeline.ArraySource or data.FileSource
    G: Generator  # for samples and the EMA's statistics (the step has its own, rematerialised as meta says)
    D: Discriminator
    mesh: Mesh
    tx: optax.GradientTransformation  # both networks' optimizer
    train_step: Callable  # `train_step` with the run's networks and settings bound; `jit_step` jits it
    recon_vars: Any  # LPIPS-VGG weights, or None
    keys: dict  # named keys derived from the seed: init, train, sample, recal
    mngr: Any  # the Orbax CheckpointManager
    real_feats: np.ndarray | None  # Inception features of the data, for FID during training
    resident: bool  # the data set lives on the device (else batches stream through `pipeline`)


def train_and_evaluate(config, workdir, *, d_extra_loss=None, g_extra_loss=None) -> TrainState:
    """Trains FastGAN as `config` says, writing everything into `workdir`.

    Resumes from the latest checkpoint in `workdir/checkpoints` (exactly: the
    step keys and data draws depend only on the seed and the step). A
    checkpoint from another config raises `checkpoints.ConfigMismatchError`
    before anything is written, and `workdir.WorkdirBusyError` when another
    training holds `workdir`. `d_extra_loss` and `g_extra_loss` are added
    to the losses as `train_step` says. A time limit, SIGINT or SIGTERM end
    the run like its last step: logged, checkpointed, sampled (the signals
    then raise `safeguards.Interrupted`).

    Returns:
      The final train state.
    """
    validate(config, num_devices=jax.device_count(), workdir=workdir)  # before the folder is created
    with locked(workdir):  # a second training on the same folder stops here
        exp, state = setup(config, workdir, d_extra_loss=d_extra_loss, g_extra_loss=g_extra_loss)
        try:
            return _loop(exp, state, workdir)
        except BaseException:  # a start that ends before its first checkpoint (Ctrl-C while compiling, ...)
            with contextlib.suppress(OSError):
                (exp.workdir / "checkpoints").rmdir()  # only when empty
            raise


def _loop(exp: Experiment, state: TrainState, workdir) -> TrainState:
    """The steps from `state` to the run's end, with the periodic actions."""
    cfg = exp.cfg
    start, total = int(state.step), cfg.train.num_steps
    hosts.say(
        f"training {cfg.model.im_size}px on {len(exp.source)} images from {cfg.data.source}, "
        f"batch {cfg.optim.batch_size}, {pipeline.describe(cfg, exp.resident)}, {exp.mesh.devices.size} device(s): "
        f"steps {start} -> {total}, workdir {workdir}",
        flush=True,
    )
    t0, done, rollbacks = time.perf_counter(), start, 0
    step_fn = _compiled_step(exp, state)  # the program remat=auto measured, if it did
    # Every process waits for the others: the step's first collective gives them 30 s (gloo), and one may have
    # compiled what another read from the compilation cache.
    hosts.sync("the step is compiled")
    batches = pipeline.device_batches(cfg, exp.source, exp.mesh, exp.resident, start)
    # From the compiled step on, a Ctrl-C or SIGTERM ends the run as during training (its step, a checkpoint), also
    # while the log opens and the start grids are written: interrupted there, a fresh run's folder would hold them
    # and nothing trained.
    with stop_on_signals() as signals, _closed_at_the_end(lambda: batches):
        logger = writer.Logger(exp.workdir, start, total)
        if start == 0:
            write_start_grids(exp, state)  # reals.png, fakes_init.png
        while done < total:
            state, metrics = step_fn(state, _next_batch(exp, batches, state, logger), exp.keys["train"], exp.recon_vars)
            logger.tick()
            done += 1
            timed_out = bool(cfg.train.time_limit_s and time.perf_counter() - t0 >= cfg.train.time_limit_s)
            last = done == total or hosts.agree(timed_out or bool(signals), at=done % cfg.log.log_every == 0)
            if done % cfg.log.log_every == 0 or last:
                with disk_full_is_one_line(logger.jsonl, exp.mngr):
                    logger.log_metrics(done, metrics, cfg.optim.batch_size, state)
                if int(state.nonfinite) >= NONFINITE_PATIENCE or (last and int(state.nonfinite)):
                    state, rollbacks = roll_back(exp, state, rollbacks), rollbacks + 1
                    done = int(state.step)
                    logger.truncate(done)
                    batches.close()
                    batches = pipeline.device_batches(cfg, exp.source, exp.mesh, exp.resident, done)
                    continue
            with_fid = cfg.log.fid_every > 0 and (done % cfg.log.fid_every == 0 or last)
            if done % cfg.log.checkpoint_every == 0 or last or with_fid:
                state = save_checkpoint(exp, state, logger, with_fid)
            if done % cfg.log.sample_every == 0 or last:
                write_samples(exp, state, logger, done)
            if last:
                break
    if start >= total and hosts.agree(not (exp.workdir / "samples" / f"samples_{start:07d}.png").exists()):
        write_samples(exp, state, logger, start)  # a run killed between its last checkpoint and samples
    logger.close()
    why = signal.Signals(signals[0]).name if signals else "time limit"
    writer.summary(exp.workdir, start, done, total, cfg.optim.batch_size, time.perf_counter() - t0, why)
    if signals:
        message = f"{why}: stopped at step {done} with a checkpoint; run the same command to continue"
        raise Interrupted(message, signals[0])
    return state


def _compiled_step(exp: Experiment, state: TrainState) -> Callable:
    """The jitted step, compiled before the loop's first call (which then reuses the program).

    The compile runs in a thread while the main thread waits where Python handles signals: a Ctrl-C during the
    first compile (minutes for a large model) ends the start at once, as Ctrl-C while loading does, instead of
    after the first step; nothing has been trained yet.
    """
    step_fn = jit_step(exp.train_step, exp.mesh, exp.resident)
    inputs = _step_shapes(state, exp.source, exp.cfg, exp.mesh, exp.resident, exp.keys["train"], exp.recon_vars)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
    try:
        pool.submit(lambda: step_fn.lower(*inputs).compile()).result()
    finally:
        pool.shutdown(wait=False)  # after a Ctrl-C the compile is abandoned (launch.run exits at once)
    return step_fn


@contextlib.contextmanager
def _closed_at_the_end(current: Callable):
    """Closes the iterator that `current()` gives at the end (a rollback replaces the batches): Grain's workers."""
    try:
        yield
    finally:
        current().close()


def _next_batch(exp: Experiment, batches, state: TrainState, logger):
    """The next step's data. A streamed image file that became unreadable since the start ends the run with
    `data.DataError` naming it, after a checkpoint of the steps done so far (nothing trained is lost)."""
    try:
        return next(batches)
    except data.DataError as e:
        step = int(state.step)
        if jax.process_count() > 1:  # the other processes are not stopping: no collective checkpoint to join
            raise
        if step and exp.mngr.latest_step() != step:
            save_checkpoint(exp, state, logger, with_fid=False)
        kept = f"checkpoint {step} saved" if step else "nothing trained yet"
        raise data.DataError(f"{e}; stopped at step {step}, {kept}") from None


def setup(config, workdir, *, d_extra_loss=None, g_extra_loss=None) -> tuple[Experiment, TrainState]:
    """Builds the run and its start state: resumed, warm-started or fresh.

    Raises `validate.ConfigError` for a bad config and
    `checkpoints.ConfigMismatchError` for a workdir of another run, before
    anything is loaded, compiled or written; on any error it leaves no new
    empty folder behind.
    """
    validate(config, num_devices=jax.device_count(), workdir=workdir)
    cfg, workdir = resolve_config(config), pathlib.Path(workdir)
    created = [p for p in (workdir, workdir / "checkpoints") if not p.exists()]
    mngr, saved = open_workdir(cfg, workdir)
    try:
        return _build(cfg, workdir, mngr, saved, d_extra_loss, g_extra_loss)
    except BaseException:  # bad data, weights, init_from, a step that fits nowhere, Ctrl-C: no empty run folder
        mngr.close()
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        raise


def _build(cfg, workdir, mngr, saved, d_extra_loss, g_extra_loss) -> tuple[Experiment, TrainState]:
    """`setup` once the workdir is open: the data, the networks, the start state and the bound step."""
    source = pipeline.load(cfg)
    if len(source) < cfg.optim.batch_size:
        warnings.warn(
            f"{len(source)} image(s), fewer than --config.optim.batch_size={cfg.optim.batch_size}: every batch repeats "
            "images (a smaller batch, or more images, gives a cleaner gradient)",
            stacklevel=3,
        )
    tx = make_optimizer(lr=cfg.optim.lr, b1=cfg.optim.beta1, b2=cfg.optim.beta2)
    root = jax.random.key(cfg.train.seed)
    keys = {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "train", "sample", "recal"))}
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    resident = pipeline.resident(source, cfg.data.on_device)
    recon_vars = jax.device_put(recon_params(cfg.loss.recon), replicated)
    G, D = _models(cfg, "none")  # the variables do not depend on remat; sampling keeps no activations

    def bound_step(remat):
        step_G, step_D = _models(cfg, remat)
        return functools.partial(
            train_step,
            G=step_G,
            D=step_D,
            tx_g=tx,
            tx_d=tx,
            policy=cfg.loss.policy,
            recon=cfg.loss.recon,
            ema_decay=cfg.optim.ema_decay,
            batch_size=cfg.optim.batch_size if resident else None,
            batch_sharding=NamedSharding(mesh, P("data")),
            d_extra_loss=d_extra_loss,
            g_extra_loss=g_extra_loss,
        )

    state = jax.device_put(initial_state(cfg, G, D, tx, keys["init"], mngr, saved is not None), replicated)
    candidates = {}  # remat -> bound step: what remat=auto compiled stays one function, not compiled again

    def compile_step(remat):
        candidates[remat] = bound_step(remat)
        inputs = _step_shapes(state, source, cfg, mesh, resident, keys["train"], recon_vars)
        return jit_step(candidates[remat], mesh, resident).lower(*inputs).compile()

    remat = memory.resolve(
        cfg.model.remat, saved.meta["remat"] if saved else None, compile_step, batch_size=cfg.optim.batch_size
    )
    real_feats = None
    if cfg.log.fid_every > 0:
        opts = {
            "aspect": cfg.data.aspect,
            "background": tuple(cfg.data.background),
            "cache_dir": cfg.data.cache_dir or None,
        }
        real_feats = real_features(cfg.data.source, cfg.model.im_size, **opts)
    exp = Experiment(
        cfg=cfg,
        meta={"remat": remat, "data_fingerprint": data_fingerprint(cfg, saved)},
        workdir=workdir,
        source=source,
        G=G,
        D=D,
        mesh=mesh,
        tx=tx,
        train_step=candidates.get(remat) or bound_step(remat),
        recon_vars=recon_vars,
        keys=keys,
        mngr=mngr,
        real_feats=real_feats,
        resident=resident,
    )
    return exp, state


def _models(cfg, remat) -> tuple[Generator, Discriminator]:
    return make_models(**{**cfg.model, "remat": remat})


def jit_step(step: Callable, mesh: Mesh, resident: bool) -> Callable:
    """`step` (`train_step` with its keywords bound) jitted: `step(state, data, key, recon_params)`, the state
    replicated and donated, the data as `pipeline.device_batches` places it.

    Place the state as the step returns it, `jax.device_put(state, NamedSharding(mesh, P()))` (as `setup`
    does): JAX lowers a state straight from `create_train_state` to a program of its own.
    """
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, pipeline.data_sharding(mesh, resident), replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


def _step_shapes(state, source, cfg, mesh, resident, key, recon_vars) -> tuple:
    """The shapes, dtypes and placements of what the loop gives the step: lowering with these compiles the
    program that the loop's calls then use."""
    images = source.images.shape if resident else (cfg.optim.batch_size, cfg.model.im_size, cfg.model.im_size, 3)
    return (
        _shapes(state, NamedSharding(mesh, P())),
        jax.ShapeDtypeStruct(images, np.uint8, sharding=pipeline.data_sharding(mesh, resident)),
        jax.ShapeDtypeStruct(key.shape, key.dtype),
        _shapes(recon_vars, NamedSharding(mesh, P())),
    )


def _shapes(tree, sharding):
    """The shapes and dtypes of `tree`'s arrays, placed by `sharding`: what a step is lowered with."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
