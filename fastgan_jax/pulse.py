"""PULSE super-resolution through a FastGAN generator (Menon et al., CVPR 2020).

Given low-resolution images, search the generator's latent space for
high-resolution images that downscale to them. Every candidate (R restarts
per image) has a latent z on the sphere of radius sqrt(nz) and, with
`noise='trainable'`, its own noise maps, each on the sphere of radius
sqrt(size); Adam (lr 0.4, PULSE's `linear1cycledrop` schedule) minimises

    100 * MSE(DS(G(z)), LR) [+ l1_weight * L1(DS(G(z)), LR)]

on the [0, 1] scale, and projects back to the spheres after every step. The
whole search over all candidates is one compiled call (`lax.scan` over the
steps). PULSE's GEOCROSS term keeps the 18 per-layer latents of StyleGAN
together; FastGAN has a single latent, so it does not apply.

The generator must run in eval mode (`train=False`): an EMA generator with
recalibrated BatchNorm statistics (what `train.py` checkpoints) or an
imported official one. Then candidates do not interact, and a candidate's
result depends only on its image, its restart index and the key.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import optax

from fastgan_jax.downsample import DOWNSAMPLERS
from fastgan_jax.models import noise_shapes

NOISE_MODES = ("trainable", "fixed", "zero")


@flax.struct.dataclass
class UpscaleResult:
    """Results of `upscale`, images on the [0, 1] scale.

    Attributes:
      images: [B, R, H, W, 3] every candidate's image at its best step.
      lr_mse: [B, R] MSE between the downscaled candidate and the LR image.
      success: [B, R] lr_mse <= eps.
      best: [B, H, W, 3] the candidate with the lowest lr_mse per image.
      best_index: [B] its restart index.
      history: [B, R, steps] the loss at every step.
      latents: [B, R, nz] the best step's latents.
      sphere_error: [B, R] the largest |mean(x^2) - 1| of z and the optimised
        noise maps after any step (the sphere constraint; ~1e-7).
    """

    images: jax.Array
    lr_mse: jax.Array
    success: jax.Array
    best: jax.Array
    best_index: jax.Array
    history: jax.Array
    latents: jax.Array
    sphere_error: jax.Array


def pulse_schedule(steps: int, lr: float = 0.4):
    """PULSE's `linear1cycledrop`: 0.1x -> 1x -> 0.1x over 90% of the steps, then down to 0.001x."""

    def schedule(count):
        x = count.astype(jnp.float32)
        cycle = 0.9 * steps
        up_down = (9 * (1 - jnp.abs(x / cycle - 0.5) * 2) + 1) / 10
        drop = 0.1 + (x - cycle) / (0.1 * steps) * (0.001 - 0.1)
        return lr * jnp.where(x < cycle, up_down, drop)

    return schedule


def _project(x):
    """Onto the sphere of radius sqrt(size) per candidate (PULSE's SphericalOptimizer)."""
    axes = tuple(range(1, x.ndim))
    return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + 1e-9)


def _candidate_keys(key, batch, restarts, offset=0):
    def one(b, r):
        return jax.random.fold_in(jax.random.fold_in(key, b + offset), r)

    bs, rs = jnp.meshgrid(jnp.arange(batch), jnp.arange(restarts), indexing="ij")
    return jax.vmap(one)(bs.reshape(-1), rs.reshape(-1))  # [B * R] keys


@functools.partial(
    jax.jit, static_argnames=("generator", "restarts", "steps", "noise", "downsample", "lr", "l1_weight", "eps")
)
def _search(generator, variables, lr_images, keys, *, restarts, steps, noise, downsample, lr, l1_weight, eps):
    G = generator
    b, h, w, _ = lr_images.shape
    n = b * restarts
    target = jnp.repeat(lr_images.astype(jnp.float32), restarts, axis=0)  # [N, h, w, 3]
    down = DOWNSAMPLERS[downsample]
    shapes = [s[1:] for s in noise_shapes(G.im_size, 1)]

    def init_one(k):
        kz, kn = jax.random.split(k)
        z = _project(jax.random.normal(kz, (1, G.nz)))[0]
        maps = [_project(jax.random.normal(jax.random.fold_in(kn, i), (1, *s)))[0] for i, s in enumerate(shapes)]
        return z, maps

    z0, maps0 = jax.vmap(init_one)(keys)  # [N, nz], [N, h_i, w_i, 1] each
    if noise == "zero":
        maps0 = [jnp.zeros_like(m) for m in maps0]
    params = {"z": z0, "noise": maps0} if noise == "trainable" else {"z": z0}

    def render(params):
        maps = params.get("noise", maps0)
        img, _ = G.apply(variables, params["z"], train=False, noise=maps)
        return (img.astype(jnp.float32) + 1) / 2  # [N, H, W, 3] on [0, 1]

    def losses(params):
        diff = down(render(params), (h, w)) - target
        mse = jnp.mean(jnp.square(diff), axis=(1, 2, 3))
        loss = 100 * mse + l1_weight * jnp.mean(jnp.abs(diff), axis=(1, 2, 3))
        return loss.sum(), (loss, mse)  # the sum keeps candidates independent

    tx = optax.adam(pulse_schedule(steps, lr))

    def step(carry, _):
        params, opt, best, best_mse = carry
        (_, (loss, mse)), grads = jax.value_and_grad(losses, has_aux=True)(params)
        better = mse < best_mse
        best = jax.tree.map(lambda p, q: jnp.where(better.reshape((-1,) + (1,) * (p.ndim - 1)), p, q), params, best)
        best_mse = jnp.where(better, mse, best_mse)
        updates, opt = tx.update(grads, opt, params)
        params = jax.tree.map(_project, optax.apply_updates(params, updates))
        off = [jnp.abs(jnp.mean(jnp.square(x), axis=tuple(range(1, x.ndim))) - 1) for x in jax.tree.leaves(params)]
        return (params, opt, best, best_mse), (loss, jnp.max(jnp.stack(off), axis=0))

    init = (params, tx.init(params), params, jnp.full((n,), jnp.inf))
    (_, _, best, best_mse), (history, sphere) = jax.lax.scan(step, init, None, length=steps)
    images = render(best)
    images = images.reshape(b, restarts, *images.shape[1:])
    lr_mse = best_mse.reshape(b, restarts)
    best_index = jnp.argmin(lr_mse, axis=1)
    return UpscaleResult(
        images=images,
        lr_mse=lr_mse,
        success=lr_mse <= eps,
        best=jnp.take_along_axis(images, best_index[:, None, None, None, None], axis=1)[:, 0],
        best_index=best_index,
        history=history.T.reshape(b, restarts, steps),
        latents=best["z"].reshape(b, restarts, -1),
        sphere_error=sphere.max(axis=0).reshape(b, restarts),
    )


def upscale(
    generator,
    variables,
    lr_images,
    *,
    key,
    restarts: int = 8,
    steps: int = 100,
    eps: float = 2e-3,
    noise: str = "trainable",
    downsample: str = "area",
    lr: float = 0.4,
    l1_weight: float = 0.0,
    image_offset: int = 0,
) -> UpscaleResult:
    """PULSE search for high-resolution images that downscale to `lr_images`.

    Args:
      generator: a `Generator` (eval mode is used).
      variables: its variables (EMA params with recalibrated `batch_stats`).
      lr_images: [B, h, w, 3] on [0, 1]; h = w = generator.im_size / factor
        (factor 1: GAN inversion, projecting a high-resolution image).
      key: PRNG key; candidate (b, r) draws from fold_in(fold_in(key, b + image_offset), r).
      restarts: candidates per image, searched together.
      steps: Adam steps.
      eps: success threshold on the LR MSE.
      noise: 'trainable' (optimised, projected per map), 'fixed' (drawn once) or 'zero'.
      downsample: 'area' (PIL's BOX) or 'bicubic' (PULSE's).
      lr: peak learning rate of the schedule.
      l1_weight: weight of an extra L1 term (0: PULSE's loss).
      image_offset: index of `lr_images[0]` in a larger set, so that splitting
        a set into chunks gives the same results as one call.

    Returns:
      An `UpscaleResult`.
    """
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if downsample not in DOWNSAMPLERS:
        raise ValueError(f"downsample must be one of {sorted(DOWNSAMPLERS)}, got {downsample!r}")
    lr_images = jnp.asarray(lr_images)
    if lr_images.ndim != 4 or lr_images.shape[-1] != 3:
        raise ValueError(f"lr_images must be [B, h, w, 3], got shape {lr_images.shape}")
    size = generator.im_size
    h, w = lr_images.shape[1:3]
    if h != w:
        raise ValueError(f"LR images must be square, got {h}x{w}")
    if size % h:
        raise ValueError(f"the generator's {size}px is not a whole multiple of the {h}px LR size")
    keys = _candidate_keys(key, lr_images.shape[0], restarts, image_offset)
    return _search(
        generator,
        variables,
        lr_images,
        keys,
        restarts=restarts,
        steps=steps,
        noise=noise,
        downsample=downsample,
        lr=lr,
        l1_weight=l1_weight,
        eps=eps,
    )
