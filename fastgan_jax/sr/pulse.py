"""PULSE super-resolution through a FastGAN generator (Menon et al., CVPR 2020).

Given low-resolution images, search the generator's latent space for
high-resolution images that downscale to them. Every candidate (R restarts
per image) has a latent z on the sphere of radius sqrt(nz) and, with
`noise='trainable'`, its own noise maps, each on the sphere of radius
sqrt(size); Adam (lr 0.4, PULSE's `linear1cycledrop` schedule) minimises

    100 * MSE(DS(G(z)), LR) [+ l1_weight * L1(DS(G(z)), LR)]
                            [+ lpips_weight * LPIPS-VGG(G(z), LR)]   (factor 1 only)

and projects back to the spheres after every step. The MSE and L1 terms, and
so `eps` and `lr_mse`, are on the [0, 1] scale as PULSE defines them (the
inputs and results are [-1, 1] images, converted inside); LPIPS takes its
[-1, 1] inputs. The whole search over all candidates is one compiled call
(`lax.scan` over the steps). PULSE's GEOCROSS term keeps the 18 per-layer
latents of StyleGAN together; FastGAN has a single latent, so it does not
apply.

The generator must run in eval mode (`train=False`): an EMA generator with
recalibrated BatchNorm statistics (what `train.py` checkpoints) or an
imported official one. Then candidates do not interact, and a candidate's
result depends only on its image, its restart index and the key.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastgan_jax import images as images_lib
from fastgan_jax.metrics import lpips as lpips_lib
from fastgan_jax.nn.models import Generator, noise_shapes
from fastgan_jax.sr.downsample import DOWNSAMPLERS

NOISE_MODES = ("trainable", "fixed", "zero")


@flax.struct.dataclass
class UpscaleResult:
    """Results of `upscale`: images in [-1, 1], errors on PULSE's [0, 1] scale.

    Attributes:
      images: [B, R, H, W, 3] float32, every candidate's image at its best
        step: the generator's output as it is (in [-1, 1]; a generator without
        tanh can step slightly outside).
      lr_mse: [B, R] MSE between the downscaled candidate and the LR image,
        both on the [0, 1] scale (PULSE's; what `eps` is compared with).
      success: [B, R] lr_mse <= eps.
      best: [B, H, W, 3] the candidate with the lowest lr_mse per image, in [-1, 1].
      best_index: [B] its restart index.
      history: [B, R, steps] the loss at every step (the MSE and L1 terms on
        the [0, 1] scale, plus the LPIPS term if any).
      latents: [B, R, nz] the best step's latents.
      noise: the best step's noise maps, a list of [B, R, h_i, w_i, 1], coarse
        to fine as `noise_shapes`: the optimised maps with noise='trainable',
        the fixed or zero ones otherwise. With `latents` they render `images`
        again (`render`).
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
    noise: list[jax.Array]
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


def _per_candidate(x, b, restarts):
    return x.reshape(b, restarts, *x.shape[1:])


@functools.partial(
    jax.jit,
    static_argnames=(
        "generator",
        "restarts",
        "steps",
        "noise",
        "downsample",
        "lr",
        "l1_weight",
        "lpips_weight",
        "eps",
    ),
)
def _search(
    generator,
    variables,
    lr_images,
    keys,
    lpips_variables,
    *,
    restarts,
    steps,
    noise,
    downsample,
    lr,
    l1_weight,
    lpips_weight,
    eps,
):
    G = generator
    b, h, w, _ = lr_images.shape
    n = b * restarts
    target = jnp.repeat(lr_images, restarts, axis=0)  # [N, h, w, 3] on [0, 1]
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
        img, _ = G.apply(variables, params["z"], train=False, noise=params.get("noise", maps0))
        return img.astype(jnp.float32)  # [N, H, W, 3] in [-1, 1]

    def losses(params):
        img = render(params)
        diff = down(images_lib.to_unit(img), (h, w)) - target
        mse = jnp.mean(jnp.square(diff), axis=(1, 2, 3))
        loss = 100 * mse + l1_weight * jnp.mean(jnp.abs(diff), axis=(1, 2, 3))
        if lpips_weight:  # factor 1: the render and the target have the same size
            loss = loss + lpips_weight * lpips_lib.LPIPS("vgg").apply(
                lpips_variables, img, images_lib.from_unit(target)
            )
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
    images = _per_candidate(render(best), b, restarts)
    lr_mse = best_mse.reshape(b, restarts)
    best_index = jnp.argmin(lr_mse, axis=1)
    return UpscaleResult(
        images=images,
        lr_mse=lr_mse,
        success=lr_mse <= eps,
        best=jnp.take_along_axis(images, best_index[:, None, None, None, None], axis=1)[:, 0],
        best_index=best_index,
        history=history.T.reshape(b, restarts, steps),
        latents=_per_candidate(best["z"], b, restarts),
        noise=[_per_candidate(m, b, restarts) for m in best.get("noise", maps0)],
        sphere_error=sphere.max(axis=0).reshape(b, restarts),
    )


def _check_lr_images(lr_images, im_size: int) -> tuple[int, int]:
    """Checks the LR batch against the generator; returns (batch, LR size)."""
    images_lib.check_any(lr_images, "lr_images")
    b, h, w = np.shape(lr_images)[:3]
    if not b:
        raise ValueError("lr_images: the batch is empty")
    if h != w:
        raise ValueError(f"lr_images: LR images must be square, got {h}x{w}")
    if im_size % h:
        raise ValueError(f"lr_images: the generator's {im_size}px is not a whole multiple of the {h}px LR size")
    return b, h


def _to_unit(lr_images) -> jax.Array:
    """uint8 data or [-1, 1] floats -> float32 on PULSE's [0, 1] scale."""
    x = jnp.asarray(lr_images)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) / 255.0
    return images_lib.to_unit(x.astype(jnp.float32))


def _check_settings(*, noise, downsample, restarts, steps, eps, l1_weight, lpips_weight):
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {noise!r}")
    if downsample not in DOWNSAMPLERS:
        raise ValueError(f"downsample must be one of {sorted(DOWNSAMPLERS)}, got {downsample!r}")
    if restarts < 1 or steps < 1:
        raise ValueError(f"restarts and steps must be at least 1, got {restarts} and {steps}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if l1_weight < 0 or lpips_weight < 0:
        raise ValueError(f"l1_weight and lpips_weight must be >= 0, got {l1_weight} and {lpips_weight}")


def upscale(
    generator: Generator,
    variables,
    lr_images,
    *,
    key: jax.Array,
    restarts: int = 8,
    steps: int = 100,
    eps: float = 2e-3,
    noise: str = "trainable",
    downsample: str = "area",
    lr: float = 0.4,
    l1_weight: float = 0.0,
    lpips_weight: float = 0.0,
    lpips_variables=None,
    image_offset: int = 0,
) -> UpscaleResult:
    """PULSE search for high-resolution images that downscale to `lr_images`.

    Args:
      generator: a `Generator` (eval mode is used).
      variables: its variables (EMA params with recalibrated `batch_stats`).
      lr_images: [B, h, w, 3] float images in [-1, 1], or uint8 data in
        [0, 255]; square, with h = generator.im_size / factor for a whole
        factor (factor 1: GAN inversion, projecting a high-resolution image).
      key: PRNG key; candidate (b, r) draws from fold_in(fold_in(key, b + image_offset), r).
      restarts: candidates per image, searched together.
      steps: Adam steps.
      eps: success threshold on the LR MSE, on PULSE's [0, 1] scale (2e-3:
        an RMS error of about 11 of 255 levels).
      noise: 'trainable' (optimised, projected per map), 'fixed' (drawn once) or 'zero'.
      downsample: 'area' (PIL's BOX) or 'bicubic' (PULSE's).
      lr: peak learning rate of the schedule.
      l1_weight: weight of an extra L1 term on the [0, 1] scale (0: PULSE's loss).
      lpips_weight: weight of an LPIPS-VGG term between the render and the
        target (on [-1, 1]); GAN inversion only (factor 1), an error at other
        factors, where VGG would see an 8-32 px downscaled image.
      lpips_variables: LPIPS-VGG weights, `fastgan_jax.metrics.lpips.lpips_variables('vgg')`
        (loaded when None and lpips_weight > 0); passed to the compiled
        search as an argument.
      image_offset: index of `lr_images[0]` in a larger set, so that splitting
        a set into chunks gives the same results as one call.

    Returns:
      An `UpscaleResult` (images in [-1, 1], `lr_mse` on [0, 1]).

    Raises:
      ValueError: one line: `lr_images` of the wrong dtype, range or shape
        (non-square, not 3 channels, a size that does not divide the
        generator's), or a setting out of range.
    """
    args, kwargs = _prepare(
        generator,
        variables,
        lr_images,
        key=key,
        restarts=restarts,
        steps=steps,
        eps=eps,
        noise=noise,
        downsample=downsample,
        lr=lr,
        l1_weight=l1_weight,
        lpips_weight=lpips_weight,
        lpips_variables=lpips_variables,
        image_offset=image_offset,
    )
    return _search(generator, *args, **kwargs)


def lower(generator: Generator, variables, lr_images, *, key: jax.Array, sharding=None, **settings):
    """`upscale`'s one compiled call, lowered and not run (`jax.stages.Lowered`): `.compile()` and its
    `memory_analysis()` size the search before it runs.

    Takes `upscale`'s arguments (`settings`: its keywords). With `sharding`
    (e.g. a `NamedSharding` over compile-only devices of a GPU that is not
    here), the inputs are shapes placed by it, so the program is compiled
    for those devices. Raises `upscale`'s errors.
    """
    args, kwargs = _prepare(generator, variables, lr_images, key=key, **settings)
    if sharding is not None:
        args = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), args)
    return _search.lower(generator, *args, **kwargs)


def _prepare(
    generator,
    variables,
    lr_images,
    *,
    key,
    restarts=8,
    steps=100,
    eps=2e-3,
    noise="trainable",
    downsample="area",
    lr=0.4,
    l1_weight=0.0,
    lpips_weight=0.0,
    lpips_variables=None,
    image_offset=0,
):
    """`_search`'s (arrays, static settings) for `upscale`'s arguments, checked (one-line ValueErrors)."""
    _check_settings(
        noise=noise,
        downsample=downsample,
        restarts=restarts,
        steps=steps,
        eps=eps,
        l1_weight=l1_weight,
        lpips_weight=lpips_weight,
    )
    batch, size = _check_lr_images(lr_images, generator.im_size)
    if lpips_weight and size != generator.im_size:
        raise ValueError(
            f"lpips_weight: the LPIPS term is for GAN inversion (lr_images at the generator's "
            f"{generator.im_size}px), got {size}px LR images"
        )
    if lpips_weight and lpips_variables is None:
        lpips_variables = lpips_lib.lpips_variables("vgg")
    keys = _candidate_keys(key, batch, restarts, image_offset)
    args = (variables, _to_unit(lr_images), keys, lpips_variables if lpips_weight else None)
    static = {"restarts": restarts, "steps": steps, "noise": noise, "downsample": downsample, "lr": lr}
    return args, static | {"l1_weight": l1_weight, "lpips_weight": lpips_weight, "eps": eps}


def render(generator: Generator, variables, result: UpscaleResult) -> jax.Array:
    """Renders a result's candidates again from its latents and noise maps.

    Args:
      generator, variables: those the search ran with.
      result: an `UpscaleResult`.

    Returns:
      [B, R, H, W, 3] float32 in [-1, 1]: `result.images`, up to float rounding.
    """
    b, r = result.latents.shape[:2]
    noise = [m.reshape(b * r, *m.shape[2:]) for m in result.noise]
    img, _ = generator.apply(variables, result.latents.reshape(b * r, -1), train=False, noise=noise)
    return _per_candidate(img.astype(jnp.float32), b, r)
