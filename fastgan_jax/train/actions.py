"""The training loop's periodic actions: checkpoints (with the EMA's statistics and FID) and sample grids.

Each takes the run's `trainer.Experiment`, the state, and the run's
`writer.Logger`; every process runs them (one program over all devices),
process 0 writes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fastgan_jax import images as images_lib
from fastgan_jax import visual
from fastgan_jax.metrics.inception import fid, generated_features, kid
from fastgan_jax.nn.layers import nearest_resize
from fastgan_jax.nn.models import generate_batches
from fastgan_jax.train import checkpoints, hosts
from fastgan_jax.train.loss_scale import all_finite
from fastgan_jax.train.safeguards import NonFiniteError, disk_full_is_one_line
from fastgan_jax.train.state import TrainState
from fastgan_jax.train.step import recalibrate

_all_finite_jit = jax.jit(all_finite)


def save_checkpoint(exp, state: TrainState, logger, with_fid: bool) -> TrainState:
    """Recalibrates the EMA generator's statistics, optionally scores FID, and saves the state.

    Raises:
      NonFiniteError: the state is not finite (nothing is written).
    """
    cfg, step = exp.cfg, int(state.step)
    key = jax.random.fold_in(exp.keys["recal"], step)
    stats = recalibrate(
        exp.G, state.ema_params, state.g_stats, key, num_samples=cfg.log.recalib_samples, batch=cfg.log.recalib_batch
    )
    state = state.replace(ema_stats=stats)
    if not bool(_all_finite_jit(state)):  # the step never applies a non-finite update; this is the last guard
        raise NonFiniteError(f"refusing to checkpoint a non-finite state at step {step} (nothing was written)")
    scores = None
    if with_fid:
        ema = {"params": state.ema_params, "batch_stats": state.ema_stats}
        feats = generated_features(exp.G, ema, cfg.log.fid_samples, jax.random.fold_in(exp.keys["sample"], step))
        # KID over 10 subsets (evaluate's 100 would take a minute of the host's time at every evaluation).
        scores = {"fid": fid(feats, exp.real_feats), "kid": kid(feats, exp.real_feats, num_subsets=10)}
        logger.write(step, scores)
        line = f"step {step}: FID {scores['fid']:.2f}, KID {scores['kid']:.4f} ({cfg.log.fid_samples} samples)"
        hosts.say(line, flush=True)
    with disk_full_is_one_line(exp.workdir / "checkpoints", exp.mngr):
        checkpoints.save(exp.mngr, step, state, cfg, exp.meta, scores)  # every process: Orbax writes collectively
        logger.flush()
    return state


def _samples_grid(exp, state: TrainState) -> np.ndarray:
    """The EMA generator's images of the run's fixed latents, as one grid."""
    ema = {"params": state.ema_params, "batch_stats": state.ema_stats}
    z = jax.random.normal(exp.keys["sample"], (exp.cfg.log.num_samples, exp.G.nz))
    return visual.grid(generate_batches(exp.G, ema, z, exp.keys["sample"], batch=64))


def write_start_grids(exp, state: TrainState) -> None:
    """A new run's first pictures (as StyleGAN2-ADA's reals.png and fakes_init.png): the training images as the
    networks see them, and the untrained EMA generator's grid of the fixed latents; written once."""
    folder = exp.workdir / "samples"
    if hosts.agree((folder / "fakes_init.png").exists()):
        return
    reals = visual.grid(np.stack([exp.source[i] for i in range(min(exp.cfg.log.num_samples, len(exp.source)))]))
    fakes = _samples_grid(exp, state)
    if hosts.is_primary():
        for name, picture in (("reals", reals), ("fakes_init", fakes)):
            with disk_full_is_one_line(folder / f"{name}.png", exp.mngr):
                visual.save_png(folder / f"{name}.png", picture)


def write_samples(exp, state: TrainState, logger, step: int) -> None:
    """The EMA generator's grid of fixed latents and D's reconstructions, as PNGs and in TensorBoard."""
    img = _samples_grid(exp, state)
    rec = reconstruction_grid(exp.D, state, np.stack([exp.source[i] for i in range(min(8, len(exp.source)))]))
    if not hosts.is_primary():
        return
    for name, picture in (("samples", img), ("reconstructions", rec)):
        path = exp.workdir / "samples" / f"{name}_{step:07d}.png"
        with disk_full_is_one_line(path, exp.mngr):
            visual.save_png(path, picture)
        logger.writer.add_image(name, picture, step, dataformats="HWC")


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(D, variables, images_u8, part):
    _, recs = D.apply(variables, images_lib.to_float(images_u8), part=part, train=False)
    return recs


def reconstruction_grid(D, state, images_u8, part=0):
    """Rows: real, rec_all, rec_small, rec_part (quadrant `part`), all at the real size."""
    recs = _reconstruct(D, {"params": state.d_params, "batch_stats": state.d_stats}, images_u8, part)
    size = images_u8.shape[1]
    rows = [images_lib.to_float(images_u8)] + [nearest_resize(r.astype(jnp.float32), size) for r in recs]
    return visual.labelled_rows(
        np.concatenate([np.asarray(r) for r in rows]), ["real", "rec_all", "rec_small", "rec_part"]
    )
