"""Train state, the jitted FastGAN train step, and the training loop.

One step (official `train.py`): sample z; G forward in train mode; DiffAugment
of the real batch and of both generator outputs (independently); D update on
the real batch (hinge + reconstruction, Eq. 4) and on the stopped-gradient
fakes (hinge); G update from -mean D logits on the same augmented fakes; EMA
of G's parameters (0.999). D runs in train mode three times per step, as in
the official code, so its BatchNorm statistics and spectral-norm vectors are
updated three times.
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
from collections.abc import Callable, Iterator
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tensorboardX import SummaryWriter

from fastgan_jax import checkpoints, data, hosts, loss_scale, losses, pipeline, runs, visual
from fastgan_jax import images as images_lib
from fastgan_jax.configs import default as default_config
from fastgan_jax.diffaug import diff_augment, parse_policy
from fastgan_jax.inception import fid, generated_features, real_features
from fastgan_jax.layers import nearest_resize
from fastgan_jax.loss_scale import all_finite
from fastgan_jax.lpips import lpips_distance, lpips_variables
from fastgan_jax.models import Discriminator, Generator, generate_batches
from fastgan_jax.state import TrainState, create_train_state, legacy_defaults, make_models, make_optimizer
from fastgan_jax.validate import ConfigError, validate

DISTANCES = {"l1": losses.l1_distance, "mse": losses.mse_distance}
RECONS = ("lpips", *DISTANCES)  # the official reconstruction distance is LPIPS-VGG


def recon_params(recon: str):
    """What the reconstruction distance needs besides the images: LPIPS-VGG's weights, or None."""
    if recon not in RECONS:
        raise ValueError(f"recon must be one of {RECONS}, got {recon!r}")
    return lpips_variables("vgg") if recon == "lpips" else None


def _distance(recon, params, remat=False):
    return lpips_distance("vgg", remat, variables=params) if recon == "lpips" else DISTANCES[recon]


def random_flip(key, images):
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


@flax.struct.dataclass
class StepInputs:
    """What an extra loss term sees (see `train_step`'s `d_extra_loss` and `g_extra_loss`).

    Attributes:
      real: the augmented, flipped real batch [B, S, S, 3] in [-1, 1].
      fakes: the augmented generator outputs (big [B, S, S, 3], small [B, s, s, 3]).
      z: the latents [B, nz].
      d_stats: D's batch_stats before the step (for `D.apply(..., train=False)`).
      part: the quadrant D reconstructs this step.
      key: a key of the step's own, for the extra term's randomness.
      step: the step being taken (0 for the first), for schedules.
      lr_scale: the state's learning-rate scale (1 unless a rollback halved it).
    """

    real: jax.Array
    fakes: tuple
    z: jax.Array
    d_stats: Any
    part: jax.Array
    key: jax.Array
    step: jax.Array
    lr_scale: jax.Array


def _d_train(D, params, stats, images, part=None):
    """D in train mode: (output, updated batch_stats)."""
    out, upd = D.apply({"params": params, "batch_stats": stats}, images, part, train=True, mutable=["batch_stats"])
    return out, upd["batch_stats"]


def _optimizer_step(params, opt, grads, tx, lr_scale, ds, name):
    """Adam with the state's lr scale. With a loss scale `ds` (float16) the gradients come scaled: they are
    unscaled in float32, and on overflow this network's step is skipped and the scale halved.

    Returns:
      (params, opt, ds, metrics): `{name}_grad_norm`, and with `ds` `{name}_loss_scale`, `{name}_overflow`.
    """
    if ds is None:
        updates, new_opt = tx.update(grads, opt, params)
        return (
            optax.apply_updates(params, _scaled(updates, lr_scale)),
            new_opt,
            None,
            {f"{name}_grad_norm": optax.tree.norm(grads)},
        )
    grads = loss_scale.unscale(grads, ds)
    finite = loss_scale.all_finite(grads)
    updates, new_opt = tx.update(grads, opt, params)
    stepped = (optax.apply_updates(params, _scaled(updates, lr_scale)), new_opt)
    new_params, new_opt = loss_scale.select(finite, stepped, (params, opt))
    metrics = {
        f"{name}_grad_norm": jnp.where(finite, optax.tree.norm(grads), 0.0),
        f"{name}_loss_scale": ds.scale,
        f"{name}_overflow": 1.0 - finite.astype(jnp.float32),
    }
    return new_params, new_opt, loss_scale.adjust(ds, finite), metrics


def d_update(state, inputs: StepInputs, *, D, tx_d, distance, keys, extra_loss=None, ds=None):
    """D's step: hinge on the real batch + reconstruction (Eq. 4) + hinge on the stopped fakes [+ extra].

    With a dynamic loss scale `ds` (float16) the loss is scaled for the backward pass.

    Returns:
      (d_params, d_opt, d_stats, ds, metrics).
    """
    k_hr, k_hf = keys
    fakes = jax.lax.stop_gradient(inputs.fakes)

    def loss_fn(d_params):
        (logits, recs), stats = _d_train(D, d_params, state.d_stats, inputs.real, inputs.part)
        d_real = losses.d_real_hinge(key=k_hr, logits=logits)
        rec = losses.reconstruction(images=inputs.real, recs=recs, part=inputs.part, distance=distance)
        fake_logits, stats = _d_train(D, d_params, stats, fakes)
        d_fake = losses.d_fake_hinge(key=k_hf, logits=fake_logits)
        metrics = {"d_real": d_real, "d_fake": d_fake, "rec": rec}
        metrics |= {"logit_real": jnp.mean(logits), "logit_fake": jnp.mean(fake_logits)}
        loss = d_real + rec + d_fake
        if extra_loss is not None:
            metrics["d_extra"] = extra_loss(d_params, inputs.replace(fakes=fakes))
            loss = loss + metrics["d_extra"]
        return (loss if ds is None else loss_scale.scale(loss, ds)), (stats, metrics)

    (_, (d_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt, ds, opt_metrics = _optimizer_step(
        state.d_params, state.d_opt, grads, tx_d, state.lr_scale, ds, "d"
    )
    return d_params, d_opt, d_stats, ds, {**metrics, **opt_metrics}


def g_update(state, inputs: StepInputs, g_vjp, *, D, d_params, d_stats, tx_g, extra_loss=None, ds=None):
    """G's step from -mean D(fakes) [+ extra], D already updated; G's gradient through the VJP of its forward.

    With a dynamic loss scale `ds` (float16) the scaled loss's gradient flows back through G.

    Returns:
      (g_params, g_opt, d_stats, ds, metrics).
    """

    def loss_fn(fakes):
        logits, stats = _d_train(D, d_params, d_stats, fakes)
        metrics = {"g": losses.g_hinge(logits=logits)}
        loss = metrics["g"]
        if extra_loss is not None:
            metrics["g_extra"] = extra_loss(fakes, inputs)
            loss = loss + metrics["g_extra"]
        return (loss if ds is None else loss_scale.scale(loss, ds)), (stats, metrics)

    (_, (d_stats, metrics)), fake_grads = jax.value_and_grad(loss_fn, has_aux=True)(inputs.fakes)
    (grads,) = g_vjp(fake_grads)
    g_params, g_opt, ds, opt_metrics = _optimizer_step(
        state.g_params, state.g_opt, grads, tx_g, state.lr_scale, ds, "g"
    )
    return g_params, g_opt, d_stats, ds, {**metrics, **opt_metrics}


def _scaled(updates, scale):
    """Adam's updates times the state's lr scale (1 unless a rollback halved it; x * 1.0 is exact)."""
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)


def _guard(state: TrainState, new_state: TrainState, metrics: dict) -> tuple[TrainState, dict]:
    """Applies the step only when every loss and gradient norm is finite; the step counter always advances.

    A skipped step leaves G, D, the optimizers and the EMA as they were and
    counts in `nonfinite` (consecutive skipped steps; the loop rolls back to
    the last checkpoint when it grows).
    """
    ok = jnp.all(jnp.isfinite(jnp.stack([jnp.asarray(v, jnp.float32) for v in metrics.values()])))
    ok &= all_finite((new_state.g_params, new_state.d_params))  # an update can overflow from finite gradients
    kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, state)
    kept = kept.replace(
        step=state.step + 1,
        nonfinite=jnp.where(ok, 0, state.nonfinite + 1),
        d_scale=new_state.d_scale,  # a loss scale's backoff stands even when the step is not applied
        g_scale=new_state.g_scale,
    )
    return kept, {**metrics, "skipped": 1.0 - ok.astype(jnp.float32)}


def _draw_batch(images_u8, key, batch_size, batch_sharding):
    if batch_size is not None:
        images_u8 = images_u8[jax.random.randint(key, (batch_size,), 0, images_u8.shape[0])]
    if batch_sharding is not None:
        images_u8 = jax.lax.with_sharding_constraint(images_u8, batch_sharding)
    return images_u8


def train_step(
    state: TrainState,
    images_u8: jax.Array,
    key: jax.Array,
    recon_params=None,
    *,
    G: Generator,
    D: Discriminator,
    tx_g: optax.GradientTransformation,
    tx_d: optax.GradientTransformation,
    policy: str,
    recon: str,
    ema_decay: float,
    batch_size: int | None = None,
    batch_sharding: NamedSharding | None = None,
    d_extra_loss: Callable | None = None,
    g_extra_loss: Callable | None = None,
) -> tuple[TrainState, dict]:
    """One FastGAN step: D update, then G update, then the EMA.

    Args:
      state: the train state (donated by `make_train_step`).
      images_u8: a uint8 batch [B, H, W, 3], or with `batch_size` the whole
        data set [N, H, W, 3] resident on the device, from which the step
        draws its batch.
      key: the run's root key; the step folds in `state.step`.
      recon_params: `recon_params(recon)` (LPIPS weights), passed in rather
        than baked into the program.
      recon: reconstruction distance, 'lpips' (LPIPS-VGG, official), 'l1', 'mse'.
      batch_sharding: where the batch lives (data parallel over a mesh).
      d_extra_loss: optional `f(d_params, inputs: StepInputs) -> scalar` added
        to D's loss (e.g. a gradient penalty: `D.apply` on `inputs.real`).
      g_extra_loss: optional `f(fakes, inputs: StepInputs) -> scalar` added to
        G's loss; `fakes` = (big, small) augmented outputs, differentiable
        with respect to G's parameters.

    Returns:
      (new state, metrics): scalars `d_real`, `d_fake`, `rec`, `g`, the mean
      logits `logit_real` and `logit_fake` (D's, before its update), the
      gradient norms `d_grad_norm` and `g_grad_norm`, `d_extra` / `g_extra`
      when given, and `skipped` (1 when a loss or gradient was not finite:
      then nothing but the step counter and `state.nonfinite` changed).
    """
    images_lib.check_uint8(images_u8, "train_step images", size=G.im_size)
    key = jax.random.fold_in(key, state.step)
    k_idx, k_flip, k_z, k_noise, k_real, k_big, k_small, k_part, k_hr, k_hf = jax.random.split(key, 10)
    images_u8 = _draw_batch(images_u8, k_idx, batch_size, batch_sharding)
    real = diff_augment(k_real, random_flip(k_flip, images_lib.to_float(images_u8)), policy)
    z = jax.random.normal(k_z, (real.shape[0], G.nz), jnp.float32)

    def generate(g_params):
        (big, small), upd = G.apply(
            {"params": g_params, "batch_stats": state.g_stats},
            z,
            train=True,
            rngs={"noise": k_noise},
            mutable=["batch_stats"],
        )
        return (diff_augment(k_big, big, policy), diff_augment(k_small, small, policy)), upd["batch_stats"]

    # One G forward; its VJP carries the generator loss back after the D update.
    fakes, g_vjp, g_stats = jax.vjp(generate, state.g_params, has_aux=True)
    part = jax.random.randint(k_part, (), 0, 4)
    inputs = StepInputs(
        real=real,
        fakes=fakes,
        z=z,
        d_stats=state.d_stats,
        part=part,
        key=jax.random.fold_in(key, 1),
        step=state.step,
        lr_scale=state.lr_scale,
    )
    distance = _distance(recon, recon_params, remat=D.remat == "full")  # 'full': LPIPS's stages too
    scaled = G.dtype == jnp.float16  # float16 needs a dynamic loss scale; float32 and bfloat16 do not
    d_params, d_opt, d_stats, d_scale, d_metrics = d_update(
        state,
        inputs,
        D=D,
        tx_d=tx_d,
        distance=distance,
        keys=(k_hr, k_hf),
        extra_loss=d_extra_loss,
        ds=state.d_scale if scaled else None,
    )
    g_params, g_opt, d_stats, g_scale, g_metrics = g_update(
        state,
        inputs,
        g_vjp,
        D=D,
        d_params=d_params,
        d_stats=d_stats,
        tx_g=tx_g,
        extra_loss=g_extra_loss,
        ds=state.g_scale if scaled else None,
    )
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, g_params)
    new_state = state.replace(
        g_params=g_params,
        g_stats=g_stats,
        d_params=d_params,
        d_stats=d_stats,
        g_opt=g_opt,
        d_opt=d_opt,
        ema_params=ema_params,
        d_scale=d_scale if scaled else state.d_scale,
        g_scale=g_scale if scaled else state.g_scale,
    )
    return _guard(state, new_state, {**d_metrics, **g_metrics})


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with a `data` axis over the devices of every process (of this one, when it runs alone)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def make_train_step(G: Generator, D: Discriminator, *, mesh: Mesh, batch_size: int | None = None, **step_kwargs):
    """The jitted `step(state, data, key, recon_params)`: state replicated and donated, batch sharded over `data`.

    Args:
      G, D: the networks.
      mesh: the devices; the batch is split over its `data` axis.
      batch_size: when given, the step takes the whole (replicated) data set
        and draws its batch inside the compiled program.
      **step_kwargs: `train_step`'s keywords: tx_g, tx_d, policy, recon,
        ema_decay, and optionally d_extra_loss, g_extra_loss.

    Place the state as the step returns it, `jax.device_put(state,
    NamedSharding(mesh, P()))` (as `setup` does): JAX lowers a state straight
    from `create_train_state` to a program of its own, so the first and the
    later steps would compile twice.
    """
    parse_policy(step_kwargs["policy"])
    n = mesh.devices.size
    if batch_size is not None and batch_size % n:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {n} devices")
    args = (G, D, mesh, batch_size, tuple(sorted(step_kwargs.items())))
    try:
        hash(args)
    except TypeError:  # an unhashable argument: a step of its own
        return _jitted_step(*args)
    return _cached_step(*args)  # the same step for the same arguments: a second run in one process reuses it


def _jitted_step(G, D, mesh, batch_size, step_kwargs: tuple):
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step_kwargs = dict(step_kwargs)
    step = functools.partial(train_step, G=G, D=D, batch_size=batch_size, batch_sharding=sharded, **step_kwargs)
    return jax.jit(
        step,
        in_shardings=(replicated, replicated if batch_size is not None else sharded, replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


_cached_step = functools.lru_cache(maxsize=8)(_jitted_step)


@functools.partial(jax.jit, static_argnames=("G", "num_samples", "batch"))
def recalibrate(G: Generator, params, batch_stats, key, *, num_samples=2048, batch=64):
    """Batch statistics for `params` from `num_samples` latents.

    The official samples with train-mode BatchNorm, so an image depends on its
    batch. Here the running statistics of every BatchNorm are re-estimated
    for the given (EMA) parameters: train-mode passes over fresh z from
    zeroed statistics, bias-corrected (an unbiased average of the batch
    statistics); the same passes run the spectral-norm power iterations for
    these weights. Afterwards `G.apply(..., train=False)` gives images that do
    not depend on the rest of the batch.
    """
    steps = max(1, num_samples // batch)
    momentum = 0.1

    def zero(path, x):
        name = jax.tree_util.keystr(path)
        return jnp.zeros_like(x) if name.endswith("['mean']") or name.endswith("['var']") else x

    stats = jax.tree_util.tree_map_with_path(zero, batch_stats)

    def body(stats, k):
        kz, kn = jax.random.split(k)
        z = jax.random.normal(kz, (batch, G.nz))
        _, upd = G.apply(
            {"params": params, "batch_stats": stats}, z, train=True, rngs={"noise": kn}, mutable=["batch_stats"]
        )
        return upd["batch_stats"], None

    stats, _ = jax.lax.scan(body, stats, jax.random.split(key, steps))
    correction = 1 - (1 - momentum) ** steps

    def unbias(path, x):
        name = jax.tree_util.keystr(path)
        return x / correction if name.endswith("['mean']") or name.endswith("['var']") else x

    return jax.tree_util.tree_map_with_path(unbias, stats)


# ----------------------------------------------------------------------------- the loop


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
        checkpoints.check_compatible(resolve_config({**default_config.get_config().to_dict(), **saved}), cfg, workdir)
        if saved.get("lr") != cfg["lr"]:
            hosts.say(f"resuming with lr {cfg['lr']} (was {saved.get('lr')}); the optimizer state is kept")
    return mngr, saved


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
        return checkpoints.restore(mngr, jax.eval_shape(init, key), defaults=legacy_defaults())
    state = init(key)
    if cfg.get("init_from"):
        state = runs.warm_start(state, cfg["init_from"])
        hosts.say(f"starting from the G, D and EMA weights of {cfg['init_from']} (fresh optimizer state)")
    return state


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
    mngr, saved = _open_workdir(cfg, workdir)
    source = _load_data(cfg)
    G, D = make_models(
        im_size=cfg["im_size"],
        ngf=cfg["ngf"],
        ndf=cfg["ndf"],
        nz=cfg["nz"],
        dec_width=cfg["dec_width"],
        precision=cfg["precision"],
        remat=cfg["remat"],
    )
    tx = make_optimizer(lr=cfg["lr"], b1=cfg["beta1"], b2=cfg["beta2"])
    root = jax.random.key(cfg["seed"])
    keys = {name: jax.random.fold_in(root, i) for i, name in enumerate(("init", "train", "sample", "recal"))}
    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    state = jax.device_put(initial_state(cfg, G, D, tx, keys["init"], mngr, saved is not None), replicated)
    resident = isinstance(source, pipeline.ArraySource) and _fits_on_device(source.images.nbytes, cfg["data_on_device"])
    step_fn = make_train_step(
        G,
        D,
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
        recon_vars=jax.device_put(recon_params(cfg["recon"]), replicated),
        keys=keys,
        mngr=mngr,
        real_feats=real_feats,
        resident=resident,
    )
    return exp, state


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
        where = f"step {last} in {exp.workdir / 'checkpoints'}" if last is not None else "none was written"
        raise NonFiniteError(
            f"losses stayed non-finite at step {int(state.step)} after {rollbacks} rollbacks, down to lr scale "
            f"{float(state.lr_scale):g}; the last finite checkpoint is {where}. Resume with a lower "
            "--config.lr (a resumed run accepts a new lr) or precision=float32"
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
            state, metrics = exp.step_fn(state, next(exp.batches), exp.keys["train"], exp.recon_vars)
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
