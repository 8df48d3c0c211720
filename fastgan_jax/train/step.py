"""The compiled FastGAN train step: pure math, one jitted program per step.

One step (official `train.py`): sample z; G forward in train mode; DiffAugment
of the real batch and of both generator outputs (independently); D update on
the real batch (hinge + reconstruction, Eq. 4) and on the stopped-gradient
fakes (hinge); G update from -mean D logits on the same augmented fakes; EMA
of G's parameters (0.999). D runs in train mode three times per step, as in
the official code, so its BatchNorm statistics and spectral-norm vectors are
updated three times.

Here: `train_step` (the step), `d_update` and `g_update` (its two halves),
`StepInputs` (what an extra loss term sees) and `recalibrate` (the EMA
generator's BatchNorm statistics). `fastgan_jax.train.trainer` jits the step
and runs the experiment around it.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from fastgan_jax import images as images_lib
from fastgan_jax.metrics.lpips import lpips_distance, lpips_variables
from fastgan_jax.nn import losses
from fastgan_jax.nn.diffaug import diff_augment
from fastgan_jax.nn.models import Discriminator, Generator
from fastgan_jax.train import loss_scale
from fastgan_jax.train.loss_scale import all_finite
from fastgan_jax.train.state import TrainState


def recon_params(recon: str):
    """What the reconstruction distance needs besides the images: LPIPS-VGG's weights, or None."""
    if recon not in losses.RECONS:
        raise ValueError(f"recon must be one of {losses.RECONS}, got {recon!r}")
    return lpips_variables("vgg") if recon == "lpips" else None


def _distance(recon, params, remat=False):
    return lpips_distance("vgg", remat, variables=params) if recon == "lpips" else losses.DISTANCES[recon]


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


@jax.named_scope("optimizer")  # scopes name what each kernel is for (benchmarks/targets.py)
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


@jax.named_scope("guard")
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
      state: the train state (donated when jitted, `trainer.jit_step`).
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
    with jax.named_scope("ema"):
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
