"""Train state, the jitted FastGAN train step, and the training loop.

One step (official `train.py`): sample z; G forward in train mode; DiffAugment
of the real batch and of both generator outputs (independently); D update on
the real batch (hinge + reconstruction, Eq. 4) and on the stopped-gradient
fakes (hinge); G update from -mean D logits on the same augmented fakes; EMA
of G's parameters (0.999). D runs in train mode three times per step, as in
the official code, so its BatchNorm statistics and spectral-norm vectors are
updated three times.
"""

import functools
import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fastgan_jax import losses
from fastgan_jax.diffaug import diff_augment, parse_policy
from fastgan_jax.inception import fid, generated_features, real_features
from fastgan_jax.lpips import lpips, lpips_variables
from fastgan_jax.models import Discriminator, Generator, init_discriminator, init_generator

PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DISTANCES = {"l1": losses.l1_distance, "mse": losses.mse_distance}
RECONS = ("lpips", *DISTANCES)  # the official reconstruction distance is LPIPS-VGG


def recon_params(recon: str):
    """What the reconstruction distance needs besides the images: LPIPS-VGG's weights, or None."""
    if recon not in RECONS:
        raise ValueError(f"recon must be one of {RECONS}, got {recon!r}")
    return lpips_variables("vgg") if recon == "lpips" else None


def _distance(recon, params):
    return functools.partial(lpips, params, net="vgg") if recon == "lpips" else DISTANCES[recon]


@flax.struct.dataclass
class TrainState:
    """Everything that training changes; a plain pytree (donated to the step)."""

    step: jax.Array  # int32 scalar
    g_params: Any
    g_stats: Any  # BatchNorm running stats and spectral-norm vectors
    d_params: Any
    d_stats: Any
    g_opt: Any
    d_opt: Any
    ema_params: Any  # EMA of g_params
    ema_stats: Any  # batch_stats for ema_params, recalibrated at checkpoints


def make_models(*, im_size, ngf, ndf, nz, dec_width=32, precision="float32"):
    """(Generator, Discriminator) with tanh outputs and the given compute dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    G = Generator(im_size=im_size, ngf=ngf, nz=nz, output_tanh=True, dtype=dtype)
    D = Discriminator(im_size=im_size, ndf=ndf, dec_width=dec_width, dtype=dtype)
    return G, D


def make_optimizer(*, lr=2e-4, b1=0.5, b2=0.999):
    """Adam as the official (lr 2e-4, betas (0.5, 0.999), eps 1e-8)."""
    return optax.adam(lr, b1=b1, b2=b2, eps=1e-8)


def create_train_state(G, D, key, *, tx_g, tx_d) -> TrainState:
    """Fresh state: official init, EMA generator starting from G's init."""
    kg, kd = jax.random.split(key)
    g_vars, d_vars = init_generator(G, kg), init_discriminator(D, kd)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        g_stats=g_vars["batch_stats"],
        d_params=d_vars["params"],
        d_stats=d_vars["batch_stats"],
        g_opt=tx_g.init(g_vars["params"]),
        d_opt=tx_d.init(d_vars["params"]),
        # Own buffers: the state is donated, and one buffer cannot be donated twice.
        ema_params=jax.tree.map(jnp.copy, g_vars["params"]),
        ema_stats=jax.tree.map(jnp.copy, g_vars["batch_stats"]),
    )


def to_float_images(images_u8):
    return images_u8.astype(jnp.float32) / 127.5 - 1.0


def random_flip(key, images):
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


def train_step(
    state: TrainState,
    images_u8,
    key,
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
):
    """One FastGAN step.

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

    Returns:
      (new state, metrics): scalar losses `d_real`, `d_fake`, `g`, `rec`.
    """
    key = jax.random.fold_in(key, state.step)
    k_idx, k_flip, k_z, k_noise, k_real, k_big, k_small, k_part, k_hr, k_hf = jax.random.split(key, 10)
    if batch_size is not None:
        images_u8 = images_u8[jax.random.randint(k_idx, (batch_size,), 0, images_u8.shape[0])]
    if batch_sharding is not None:
        images_u8 = jax.lax.with_sharding_constraint(images_u8, batch_sharding)
    real = diff_augment(k_real, random_flip(k_flip, to_float_images(images_u8)), policy)
    z = jax.random.normal(k_z, (real.shape[0], G.nz), jnp.float32)
    part = jax.random.randint(k_part, (), 0, 4)
    distance = _distance(recon, recon_params)

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

    def d_train(params, stats, images, part=None):  # D in train mode: (output, updated batch_stats)
        out, upd = D.apply({"params": params, "batch_stats": stats}, images, part, train=True, mutable=["batch_stats"])
        return out, upd["batch_stats"]

    def d_loss_fn(d_params):
        (logits, recs), stats = d_train(d_params, state.d_stats, real, part)
        d_real = losses.d_real_hinge(key=k_hr, logits=logits)
        rec = losses.reconstruction(images=real, recs=recs, part=part, distance=distance)
        logits, stats = d_train(d_params, stats, jax.lax.stop_gradient(fakes))
        d_fake = losses.d_fake_hinge(key=k_hf, logits=logits)
        return d_real + rec + d_fake, (stats, {"d_real": d_real, "d_fake": d_fake, "rec": rec})

    (_, (d_stats, metrics)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(state.d_params)
    d_updates, d_opt = tx_d.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(fakes):
        logits, stats = d_train(d_params, d_stats, fakes)
        return losses.g_hinge(logits=logits), stats

    (g_loss, d_stats), fake_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(fakes)
    (g_grads,) = g_vjp(fake_grads)
    g_updates, g_opt = tx_g.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, g_params)

    new_state = state.replace(
        step=state.step + 1,
        g_params=g_params,
        g_stats=g_stats,
        d_params=d_params,
        d_stats=d_stats,
        g_opt=g_opt,
        d_opt=d_opt,
        ema_params=ema_params,
    )
    return new_state, {**metrics, "g": g_loss}


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh with a `data` axis over the local devices."""
    return Mesh(np.asarray(devices if devices is not None else jax.local_devices()), ("data",))


def make_train_step(G, D, *, tx_g, tx_d, policy, recon, ema_decay, mesh: Mesh, batch_size=None):
    """The jitted `step(state, data, key, recon_params)`: state replicated and donated, batch sharded over `data`.

    With `batch_size` the step takes the whole (replicated) data set and
    draws its batch inside the compiled program.
    """
    parse_policy(policy)
    n = mesh.devices.size
    if batch_size is not None and batch_size % n:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {n} devices")
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = functools.partial(
        train_step,
        G=G,
        D=D,
        tx_g=tx_g,
        tx_d=tx_d,
        policy=policy,
        recon=recon,
        ema_decay=ema_decay,
        batch_size=batch_size,
        batch_sharding=sharded,
    )
    return jax.jit(
        step,
        in_shardings=(replicated, replicated if batch_size is not None else sharded, replicated, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


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


def _host_batches(images, batch, seed, start_step):
    """Batches drawn on the host (data too large for the device), reproducible per step."""
    step = start_step
    while True:
        rng = np.random.default_rng((seed, step))
        yield images[rng.integers(0, len(images), batch)]
        step += 1


def _prefetch(iterator, sharding, size=2):
    """Moves the next `size` batches to the device in a background thread."""
    import queue
    import threading

    q = queue.Queue(maxsize=size)

    def worker():
        for item in iterator:
            q.put(jax.device_put(item, sharding))

    threading.Thread(target=worker, daemon=True).start()
    while True:
        yield q.get()


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
    _, recs = D.apply(variables, to_float_images(images_u8), part=part, train=False)
    return recs


def reconstruction_grid(D, state, images_u8, part=0):
    """Rows: real, rec_all, rec_small, rec_part (quadrant `part`), all at the real size."""
    from fastgan_jax import visual
    from fastgan_jax.layers import nearest_resize

    recs = _reconstruct(D, {"params": state.d_params, "batch_stats": state.d_stats}, images_u8, part)
    size = images_u8.shape[1]
    rows = [to_float_images(images_u8)] + [nearest_resize(r.astype(jnp.float32), size) for r in recs]
    return visual.grid(np.concatenate([np.asarray(r) for r in rows]), ncols=images_u8.shape[0])


def train_and_evaluate(config, workdir) -> TrainState:
    """Trains FastGAN as `config` says, writing everything into `workdir`.

    Resumes from the latest checkpoint in `workdir/checkpoints` (exactly: the
    step keys and data draws depend only on the seed and the step). A
    checkpoint from another config raises `checkpoints.ConfigMismatchError`
    before anything is written.
    """
    import pathlib
    import time

    import tqdm
    from tensorboardX import SummaryWriter

    from fastgan_jax import checkpoints, data, sample, visual  # sample imports this module

    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    workdir = pathlib.Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"--workdir {workdir} is a file: give a folder")
    fid_every = cfg.get("fid_every", 0)
    mngr = checkpoints.manager(workdir, keep=cfg["keep_checkpoints"], keep_best_fid=fid_every > 0)
    saved = checkpoints.saved_config(mngr)
    if saved is not None:
        checkpoints.check_compatible(saved, cfg, workdir)

    images = data.load(
        cfg["data"],
        cfg["im_size"],
        aspect=cfg["aspect"],
        background=tuple(cfg["background"]),
        cache_dir=cfg.get("cache_dir") or None,
        tfds_data_dir=cfg.get("tfds_data_dir") or None,
    )
    G, D = make_models(
        im_size=cfg["im_size"],
        ngf=cfg["ngf"],
        ndf=cfg["ndf"],
        nz=cfg["nz"],
        dec_width=cfg["dec_width"],
        precision=cfg["precision"],
    )
    tx = make_optimizer(lr=cfg["lr"], b1=cfg["beta1"], b2=cfg["beta2"])
    root = jax.random.key(cfg["seed"])
    k_init, k_train, k_sample, k_recal = (jax.random.fold_in(root, i) for i in range(4))

    mesh = make_mesh()
    replicated = NamedSharding(mesh, P())
    recon_vars = jax.device_put(recon_params(cfg["recon"]), replicated)
    init = functools.partial(create_train_state, G, D, tx_g=tx, tx_d=tx)
    if saved is not None:
        state = checkpoints.restore(mngr, jax.eval_shape(init, k_init))
    else:
        state = init(k_init)
    state = jax.device_put(state, replicated)
    start = int(state.step)

    batch = cfg["batch_size"]
    resident = _fits_on_device(images.nbytes, cfg["data_on_device"])
    step_fn = make_train_step(
        G,
        D,
        tx_g=tx,
        tx_d=tx,
        policy=cfg["policy"],
        recon=cfg["recon"],
        ema_decay=cfg["ema_decay"],
        mesh=mesh,
        batch_size=batch if resident else None,
    )
    if resident:
        device_data = jax.device_put(images, replicated)
        batches = iter(lambda: device_data, None)
    else:
        batches = _prefetch(_host_batches(images, batch, cfg["seed"], start), NamedSharding(mesh, P("data")))

    z_fixed = jax.random.normal(k_sample, (cfg["num_samples"], G.nz))
    rec_batch = images[: min(8, len(images))]
    samples_dir = workdir / "samples"
    writer = SummaryWriter(str(workdir))
    total = cfg["num_steps"]

    real_feats = None
    if fid_every > 0:
        real_feats = real_features(
            cfg["data"],
            cfg["im_size"],
            aspect=cfg["aspect"],
            background=tuple(cfg["background"]),
            cache_dir=cfg.get("cache_dir") or None,
        )

    def checkpoint(state, with_fid):
        stats = recalibrate(
            G,
            state.ema_params,
            state.g_stats,
            jax.random.fold_in(k_recal, int(state.step)),
            num_samples=cfg["recalib_samples"],
            batch=cfg["recalib_batch"],
        )
        state = state.replace(ema_stats=stats)
        scores = None
        if with_fid:
            ema = {"params": state.ema_params, "batch_stats": state.ema_stats}
            feats = generated_features(G, ema, cfg["fid_samples"], jax.random.fold_in(k_sample, int(state.step)))
            scores = {"fid": fid(feats, real_feats)}
            writer.add_scalar("fid", scores["fid"], int(state.step))
            with open(workdir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": int(state.step), "fid": scores["fid"]}) + "\n")
            print(f"step {int(state.step)}: FID {scores['fid']:.2f} ({cfg['fid_samples']} samples)", flush=True)
        checkpoints.save(mngr, int(state.step), state, cfg, scores)
        return state

    def write_samples(state, step):
        ema = {"params": state.ema_params, "batch_stats": state.ema_stats}
        img = visual.grid(sample.generate(G, ema, z_fixed, k_sample, batch=64))
        visual.save_png(samples_dir / f"samples_{step:07d}.png", img)
        rec = reconstruction_grid(D, state, rec_batch)
        visual.save_png(samples_dir / f"reconstructions_{step:07d}.png", rec)
        writer.add_image("samples", img, step, dataformats="HWC")
        writer.add_image("reconstructions", rec, step, dataformats="HWC")

    print(
        f"training {cfg['im_size']}px on {len(images)} images from {cfg['data']}, batch {batch}, "
        f"{'data on device' if resident else 'streaming from host'}, {mesh.devices.size} device(s): "
        f"steps {start} -> {total}, workdir {workdir}"
    )
    bar = tqdm.tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, disable=None)
    t0, t_log, n_log = time.perf_counter(), time.perf_counter(), 0
    metrics = None
    time_limit = cfg.get("time_limit_s", 0)
    done = start
    for step in range(start, total):
        state, metrics = step_fn(state, next(batches), k_train, recon_vars)
        n_log += 1
        bar.update(1)
        done = step + 1
        # A time limit ends the run like its last step: logged, checkpointed, sampled.
        last = done == total or bool(time_limit and time.perf_counter() - t0 >= time_limit)
        if done % cfg["log_every"] == 0 or last:
            values = {k: float(v) for k, v in jax.device_get(metrics).items()}
            bad = [k for k, v in values.items() if not np.isfinite(v)]
            if bad:
                raise FloatingPointError(
                    f"non-finite loss {bad} at step {done}: {values}; the last good checkpoint stays in "
                    f"{workdir / 'checkpoints'} (lower config.lr or use precision=float32)"
                )
            now = time.perf_counter()
            img_s = n_log * batch / (now - t_log)
            t_log, n_log = now, 0
            for k, v in values.items():
                writer.add_scalar(f"loss/{k}", v, done)
            writer.add_scalar("img_per_s", img_s, done)
            with open(workdir / "metrics.jsonl", "a") as f:  # the same scalars, for scripts and plots
                f.write(json.dumps({"step": done, **values, "img_per_s": img_s}) + "\n")
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in values.items()}, "img/s": f"{img_s:.1f}"})
            if bar.disable:  # not a terminal: one line per log instead of a bar
                print(f"step {done}/{total} " + " ".join(f"{k} {v:.3f}" for k, v in values.items()), flush=True)
        with_fid = fid_every > 0 and (done % fid_every == 0 or last)
        if done % cfg["checkpoint_every"] == 0 or last or with_fid:
            state = checkpoint(state, with_fid)
        if done % cfg["sample_every"] == 0 or last:
            write_samples(state, done)
        if last:
            break
    bar.close()
    writer.close()
    elapsed = time.perf_counter() - t0
    if start < total:
        rate = (done - start) * batch / elapsed
        stopped = f" (time limit; run again to continue to {total})" if done < total else ""
        print(
            f"done: steps {start} -> {done} in {elapsed:.0f}s ({rate:.1f} img/s incl. compile){stopped}; "
            f"checkpoint {workdir / 'checkpoints' / str(done)}, samples {samples_dir}"
        )
    else:
        print(f"nothing to do: {workdir} is already at step {start} of {total}")
    return state


def load_generator(workdir, step: int | None = None, *, ema: bool = True):
    """The (EMA) generator of a run: `(Generator, variables)` for `G.apply(..., train=False)`.

    Args:
      workdir: the run's folder (with `checkpoints/`).
      step: checkpoint step (default: the latest).
      ema: the EMA generator with its recalibrated statistics (default), or
        the raw generator with its training statistics.
    """
    import pathlib

    from fastgan_jax import checkpoints

    mngr = checkpoints.manager(workdir, create=False) if pathlib.Path(workdir, "checkpoints").is_dir() else None
    cfg = checkpoints.saved_config(mngr) if mngr is not None else None
    if cfg is None:
        raise FileNotFoundError(f"--workdir {workdir}: no checkpoint here (train one with train.py)")
    G, D = make_models(im_size=cfg["im_size"], ngf=cfg["ngf"], ndf=cfg["ndf"], nz=cfg["nz"], dec_width=cfg["dec_width"])
    tx = make_optimizer(lr=cfg["lr"], b1=cfg["beta1"], b2=cfg["beta2"])
    abstract = jax.eval_shape(functools.partial(create_train_state, G, D, tx_g=tx, tx_d=tx), jax.random.key(0))
    state = checkpoints.restore(mngr, abstract, step)
    if ema:
        return G, {"params": state.ema_params, "batch_stats": state.ema_stats}
    return G, {"params": state.g_params, "batch_stats": state.g_stats}
