"""PULSE super-resolution through a FastGAN generator (Menon et al., CVPR 2020), and other restorations.

Given low-resolution images, search the generator's latent space for
high-resolution images that downscale to them (`upscale`); more generally,
for images whose degradation A (`degrade`: blur, masks, grayscale, noise,
chains of them) matches the observation (`restore`, where DS below is A and
the errors count the observation's known pixels only). Every candidate (R restarts
per image) has a latent z on the sphere of radius sqrt(nz) and, with
`noise='trainable'`, its own noise maps, each on the sphere of radius
sqrt(size); Adam (lr 0.4, PULSE's `linear1cycledrop` schedule) minimises

    100 * MSE(DS(G(z)), LR) [+ l1 * L1(DS(G(z)), LR)]
                            [+ lpips * LPIPS-VGG(G(z), LR)]   (factor 1 only)

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

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fastgan_jax import images as images_lib
from fastgan_jax.metrics import lpips as lpips_lib
from fastgan_jax.nn.models import Generator, noise_shapes
from fastgan_jax.sr import candidates, degrade, ilo, inputs, tune

NOISE_MODES = ("trainable", "fixed", "zero")
LOSSES = ("mse", "robust")


@dataclasses.dataclass(frozen=True)
class Search:
    """The latent search's settings, one value passed whole (`restore`, `upscale`, both commands, benchmarks).

    Attributes:
      restarts: candidates per image, searched together (>= 1).
      steps: Adam steps (>= 1).
      lr: peak learning rate of PULSE's schedule (> 0).
      eps: success threshold on the observation's MSE over its known
        pixels, on PULSE's [0, 1] scale (> 0; 2e-3: an RMS error of about 11
        of 255 levels); with `degrade.Noise(sigma)` in the operator, sigma^2
        is added (no image fits noisy pixels better than the noise).
      noise: the noise maps: 'trainable' (optimised, projected per map),
        'fixed' (drawn once) or 'zero'.
      l1: weight of an extra L1 term on the [0, 1] scale (>= 0; 0: PULSE's loss).
      lpips: weight of an LPIPS-VGG term between the render and the
        observation on [-1, 1] (>= 0); only where they are the same kind of
        image (GAN inversion: the generator's size, 3 channels, every pixel
        known).
      loss: 'mse' (PULSE's: 100 MSE, every step scored by its MSE) or
        'robust' (for inputs of unknown origin: 10 x the mean of the L1
        errors at the observation's size and at 1/2 and 1/4 of it, where
        they are at least 2 px; every step scored by that loss). The coarse
        levels see the image's layout, not a JPEG's blocks or a sensor's
        noise, and L1 lets a few wrong pixels stay wrong (Poirier-Ginter and
        Lalonde, "Robust Unsupervised StyleGAN Image Restoration", CVPR 2023,
        without their LPIPS term: on 8 or 16 px observations it is costly
        and says little).
      floor: the observation's error floor, an MSE on the [0, 1] scale
        (>= 0): the error that even the true image has against an input
        made by another pipeline than the assumed operator. Once a
        candidate's step fits within it, that step is kept and later ones
        are not taken, however much closer they fit (Morozov's discrepancy
        principle: closer fits copy the pipeline's artifacts); `success`
        allows it on top of eps. 0: fit as closely as possible.

    Raises:
      ValueError: one line, for a setting out of range.
    """

    restarts: int = 8
    steps: int = 100
    lr: float = 0.4
    eps: float = 2e-3
    noise: str = "trainable"
    l1: float = 0.0
    lpips: float = 0.0
    loss: str = "mse"
    floor: float = 0.0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.floor < 0:
            raise ValueError(f"floor must be >= 0, got {self.floor}")
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {self.noise!r}")
        if self.restarts < 1 or self.steps < 1:
            raise ValueError(f"restarts and steps must be at least 1, got {self.restarts} and {self.steps}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.l1 < 0 or self.lpips < 0:
            raise ValueError(f"l1 and lpips must be >= 0, got {self.l1} and {self.lpips}")


ROBUST = Search(loss="robust", floor=1e-3)
"""The robust mode's search: one setting for every input of unknown origin (`fastgan-upscale`'s default,
`--mode robust`), with `ROBUST_LAYERS` and the operator made blind (`degrade.blind`). The floor 1e-3 lies
among the true images' own errors against real inputs (3e-4 after PIL's bicubic, 2.6e-3 after JPEG 75, 4.1e-3
after Real-ESRGAN's chain, x4; docs/restoration_real.md, which gives the measurements)."""

ROBUST_LAYERS = ilo.Layers(radii=(0.1,))
"""The robust mode's ILO: a third of the default radius, so the generator, not the input's artifacts, shapes
the details."""


ROBUST_FIDELITY = candidates.Fidelity(weight=1.0, k=4, input=0.33)
"""The robust mode's answer (`fastgan-upscale`'s default): the mean of the 4 best candidates with a third of the
input's bicubic upsampling. On the held-out benchmark's real inputs (JPEG 75, Real-ESRGAN's chain and PIL's
bicubic at x4, JPEG 75 at x8) its PSNR is within 0.5 dB of bicubic's or above and its LPIPS a half to a third
of bicubic's (docs/restoration_real.md: the curves); `candidates.Fidelity()` is the sharpest answer."""


def fidelity_for(search: Search, observed, op, fidelity: candidates.Fidelity | dict | None = None):
    """The knob (a `candidates.Fidelity`) that `restore` reads its answer at, decided by the operator.

    Args:
      search: the search (`Search`): the default depends on its loss.
      observed: [B, h, w, c] observations, as `restore` takes them.
      op: the operator that made them (`degrade`).
      fidelity: a `candidates.Fidelity` (returned as it is); a dict of some of its fields, which replace the
        default's; or None: the default, `ROBUST_FIDELITY` for the robust loss and the best candidate
        (`Fidelity()`) otherwise. The default takes a share of the input only where the observations are RGB
        images with every pixel known (`inputs.same_kind`: not gray, no `degrade.Mask`); a share asked for
        elsewhere is `restore`'s ValueError.
    """
    if isinstance(fidelity, candidates.Fidelity):
        return fidelity
    default = ROBUST_FIDELITY if search.loss == "robust" else candidates.Fidelity()
    if not inputs.same_kind(observed, np.shape(observed)[1], op):
        default = dataclasses.replace(default, input=0.0)
    return dataclasses.replace(default, **(fidelity or {}))


def pulse_schedule(steps: int, lr: float):
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


@functools.partial(jax.jit, static_argnames=("generator", "search", "layers", "tuning", "fidelity"))
def _search(
    generator, variables, observed, keys, lpips_variables, op, *, search: Search, layers=None, tuning=None, fidelity
):
    G, restarts = generator, search.restarts
    b = observed.shape[0]
    n = b * restarts
    target = jnp.repeat(observed, restarts, axis=0)  # [N, h, w, c] in [-1, 1]
    per_image_op, op = op, degrade.repeat(op, restarts)  # per-image masks: one per candidate
    shapes = [s[1:] for s in noise_shapes(G.im_size, 1)]

    def init_one(k):
        kz, kn = jax.random.split(k)
        z = _project(jax.random.normal(kz, (1, G.nz)))[0]
        maps = [_project(jax.random.normal(jax.random.fold_in(kn, i), (1, *s)))[0] for i, s in enumerate(shapes)]
        return z, maps

    z0, maps0 = jax.vmap(init_one)(keys)  # [N, nz], [N, h_i, w_i, 1] each
    if search.noise == "zero":
        maps0 = [jnp.zeros_like(m) for m in maps0]
    params = {"z": z0, "noise": maps0} if search.noise == "trainable" else {"z": z0}
    # The operator's unknowns (a blur's width), estimated per candidate with the image.
    unknowns = tuple(jnp.broadcast_to(jnp.asarray(u, jnp.float32), (n,)) for u in degrade.unknowns(op))
    if unknowns:
        params["op"] = unknowns

    def render(params):
        img, _ = G.apply(variables, params["z"], train=False, noise=params.get("noise", maps0))
        return img.astype(jnp.float32)  # [N, H, W, 3] in [-1, 1]

    def objective(img, op=op, target=target):
        mse, l1 = degrade.observed_errors(op, img, target)  # [N] each, on the [0, 1] scale
        if search.loss == "robust":
            loss = 10 * degrade.observed_multiscale_l1(op, img, target) + search.l1 * l1
        else:
            loss = 100 * mse + search.l1 * l1
        if search.lpips:  # GAN inversion: the render and the target have the same size
            loss = loss + search.lpips * lpips_lib.LPIPS("vgg").apply(lpips_variables, img, target)
        score = loss if search.loss == "robust" else mse  # what picks the best step
        if search.floor:  # within the floor every fit scores 0: the first one stays (discrepancy principle)
            score = jnp.where(mse <= search.floor, 0.0, score)
        return loss.sum(), (loss, score)  # the sum keeps candidates independent

    def losses(params):
        return objective(render(params), degrade.with_unknowns(op, params.get("op", ())))

    def project(params):  # latents and noise maps onto their spheres, the unknowns into their ranges
        out = {k: jax.tree.map(_project, v) for k, v in params.items() if k != "op"}
        return out | ({"op": degrade.clip_unknowns(op, params["op"])} if "op" in params else {})

    tx = optax.adam(pulse_schedule(search.steps, search.lr))

    def step(carry, _):
        params, opt, best, best_score = carry
        (_, (loss, score)), grads = jax.value_and_grad(losses, has_aux=True)(params)
        better = score < best_score
        best = ilo.select(better, params, best)
        best_score = jnp.where(better, score, best_score)
        updates, opt = tx.update(grads, opt, params)
        params = project(optax.apply_updates(params, updates))
        spheres = jax.tree.leaves({k: v for k, v in params.items() if k != "op"})
        off = [jnp.abs(jnp.mean(jnp.square(x), axis=tuple(range(1, x.ndim))) - 1) for x in spheres]
        return (params, opt, best, best_score), (loss, jnp.max(jnp.stack(off), axis=0))

    init = (params, tx.init(params), params, jnp.full((n,), jnp.inf))
    (_, _, best, best_score), (history, sphere) = jax.lax.scan(step, init, None, length=search.steps)
    best_noise = best.get("noise", maps0)
    estimates = best.get("op", ())
    op = degrade.with_unknowns(op, estimates)  # the later stages keep each candidate's estimate
    stage, feats = jnp.zeros((n,), jnp.int32), None
    if layers is not None:  # ILO: the intermediate features, stage by stage
        start = G.apply(variables, best["z"], train=False, noise=best_noise, stop_at=layers.resolutions[0])
        feats, best_score, stage, layer_history = ilo.layer_stages(
            G, variables, best_noise, start, best_score, functools.partial(objective, op=op), layers
        )
        history = jnp.concatenate([history, layer_history])
        img, _ = G.apply(variables, None, train=False, noise=best_noise, features=feats)
    else:
        img = render(best)
    images = candidates.per_candidate(img.astype(jnp.float32), b, restarts)
    plain = search.loss == "mse" and not search.floor  # the score is the MSE itself
    score = best_score.reshape(b, restarts)  # the best steps' scores (`objective`)
    lr_mse = score if plain else degrade.observed_mse(op, img.astype(jnp.float32), target).reshape(b, restarts)
    best_index = jnp.argmin(score, axis=1)
    tuned = None
    if tuning is not None:  # the generator's weights, per image, around its best candidate
        pick = functools.partial(candidates.pick, index=best_index, b=b, restarts=restarts)
        pivot = candidates.pivot(best_index, b, restarts, best_noise, feats, best["z"])
        image_op = degrade.with_unknowns(per_image_op, tuple(pick(e) for e in estimates))
        delta, tuned_score, improved, tune_history = tune.tune(
            G, variables, pivot, pick(best_score), functools.partial(objective, op=image_op, target=observed), tuning
        )
        tuned = {"delta": delta, "improved": improved}
        chosen = candidates.tuned_mask(best_index, improved, restarts)
        tuned_images = tune.render(G, variables, delta, pivot)
        images = jnp.where(chosen[..., None, None, None], tuned_images[:, None], images)
        tuned_mse = tuned_score if plain else degrade.observed_mse(image_op, tuned_images, observed)
        lr_mse = jnp.where(chosen, tuned_mse[:, None], lr_mse)
        score = jnp.where(chosen, tuned_score[:, None], score)
        stage = jnp.where(chosen.reshape(-1), (len(layers.resolutions) if layers else 0) + 1, stage)
        history = jnp.concatenate([history, jnp.repeat(tune_history, restarts, axis=1)])
    return candidates.UpscaleResult(
        images=images,
        lr_mse=lr_mse,
        success=lr_mse <= search.eps + search.floor + degrade.noise_variance(op),
        best=jnp.take_along_axis(images, best_index[:, None, None, None, None], axis=1)[:, 0],
        best_index=best_index,
        history=history.T.reshape(b, restarts, -1),
        latents=candidates.per_candidate(best["z"], b, restarts),
        noise=[candidates.per_candidate(m, b, restarts) for m in best_noise],
        sphere_error=sphere.max(axis=0).reshape(b, restarts),
        stage=stage.reshape(b, restarts),
        features=None if feats is None else {r: candidates.per_candidate(f, b, restarts) for r, f in feats.items()},
        estimates=tuple(candidates.per_candidate(e, b, restarts) for e in estimates),
        tuned=tuned,
        score=score,
        estimate=candidates.estimate(images, score, fidelity, observed),
        fidelity=fidelity,
    )


def restore(
    generator: Generator,
    variables,
    observed,
    op,
    *,
    key: jax.Array,
    search: Search | None = None,
    layers: ilo.Layers | None = None,
    tuning: tune.Tuning | None = None,
    fidelity: candidates.Fidelity | dict | None = None,
    lpips_variables=None,
    image_offset: int = 0,
) -> candidates.UpscaleResult:
    """PULSE's search for generator images x whose degradation `op(x)` matches `observed`.

    Args:
      generator: a `Generator` (eval mode is used).
      variables: its variables (EMA params with recalibrated `batch_stats`).
      observed: [B, h, w, c] float images in [-1, 1], or uint8 data in
        [0, 255], of the shape `op` gives the generator's [S, S, 3] images
        (e.g. S / factor for `degrade.Downsample(factor)`, one channel for
        `degrade.Grayscale()`).
      op: a degradation operator of `fastgan_jax.sr.degrade` (or a chain of
        them); only its known pixels count (`degrade.Mask`).
      key: PRNG key; candidate (b, r) draws from fold_in(fold_in(key, b + image_offset), r).
      search: the search's settings (None: `Search()`, its defaults).
      layers: `ilo.Layers`: after the latent search, intermediate layer
        optimisation (ILO), stage by stage, in the same compiled call; None:
        the latent search alone (PULSE).
      tuning: `tune.Tuning`: then each image's best candidate is rendered by
        the generator with its weights tuned for that image inside a small
        ball (pivotal tuning), in the same compiled call; None: the
        generator as it is.
      fidelity: the knob between realism and PSNR, the result's `estimate`:
        a `candidates.Fidelity`, a dict of some of its fields or None, the
        others the search's default for this operator (`fidelity_for`:
        `ROBUST_FIDELITY` for the robust loss, else the best candidate). A
        share of the input (`Fidelity.input`) needs RGB observations without
        a mask.
      lpips_variables: LPIPS-VGG weights, `fastgan_jax.metrics.lpips.lpips_variables('vgg')`
        (loaded when None and `search.lpips` > 0); passed to the compiled
        search as an argument.
      image_offset: index of `observed[0]` in a larger set, so that splitting
        a set into chunks gives the same results as one call.

    Returns:
      An `UpscaleResult` (images in [-1, 1]; `lr_mse`: the observation's MSE on [0, 1]).

    Raises:
      ValueError: one line: `observed` of the wrong dtype, range or shape for
        `op`, a stage of `layers` outside the generator, or an LPIPS term
        where the observation is not the generator's kind of image (settings
        out of range fail when the `Search` is made).
    """
    args, search = _prepare(generator, variables, observed, op, key, search, layers, lpips_variables, image_offset)
    fidelity = fidelity_for(search, observed, op, fidelity)
    if fidelity.input and not inputs.same_kind(observed, np.shape(observed)[1], op):
        raise ValueError("fidelity: a share of the input needs RGB observations with every pixel known (no mask)")
    return _search(generator, *args, search=search, layers=layers, tuning=tuning, fidelity=fidelity)


def upscale(
    generator: Generator, variables, lr_images, *, downsample: str = "area", **settings
) -> candidates.UpscaleResult:
    """PULSE super-resolution: `restore` with `degrade.Downsample(factor, downsample)`.

    Args:
      generator, variables: as `restore`.
      lr_images: [B, h, w, 3] float images in [-1, 1], or uint8 data in
        [0, 255]; square, with h = generator.im_size / factor for a whole
        factor (factor 1: GAN inversion, projecting a high-resolution image).
      downsample: 'area' (PIL's BOX) or 'bicubic' (PULSE's).
      **settings: `restore`'s keywords (key, search, layers, tuning, fidelity, lpips_variables, image_offset).

    Returns:
      An `UpscaleResult` (images in [-1, 1], `lr_mse` on [0, 1]).

    Raises:
      ValueError: one line: `lr_images` of the wrong dtype, range or shape
        (non-square, not 3 channels, a size that does not divide the
        generator's), or `restore`'s errors.
    """
    return restore(generator, variables, lr_images, inputs.downsampling(generator, lr_images, downsample), **settings)


def lower(
    generator: Generator,
    variables,
    lr_images,
    *,
    key: jax.Array,
    search: Search | None = None,
    downsample: str = "area",
    sharding=None,
):
    """`upscale`'s one compiled call, lowered and not run (`jax.stages.Lowered`): `.compile()` and its
    `memory_analysis()` size the search before it runs.

    Takes `upscale`'s arguments. With `sharding` (e.g. a `NamedSharding`
    over compile-only devices of a GPU that is not here), the inputs are
    shapes placed by it, so the program is compiled for those devices.
    Raises `upscale`'s errors.
    """
    op = inputs.downsampling(generator, lr_images, downsample)
    args, search = _prepare(generator, variables, lr_images, op, key, search, None, None, 0)
    if sharding is not None:
        args = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), args)
    return _search.lower(generator, *args, search=search, fidelity=candidates.Fidelity())


def _prepare(generator, variables, observed, op, key, search, layers, lpips_variables, image_offset):
    """(`_search`'s arrays, the `Search`) for `restore`'s arguments, checked (one-line ValueErrors)."""
    search = Search() if search is None else search
    if layers is not None:
        layers.check(generator.im_size)
    batch = inputs.check_observed(observed, generator.im_size, op)
    if search.lpips and not inputs.same_kind(observed, generator.im_size, op):
        raise ValueError(
            f"lpips: the LPIPS term is for GAN inversion (observed images at the generator's "
            f"{generator.im_size}px, 3 channels, every pixel known), got {'x'.join(map(str, np.shape(observed)[1:]))}"
        )
    if search.lpips and lpips_variables is None:
        lpips_variables = lpips_lib.lpips_variables("vgg")
    keys = _candidate_keys(key, batch, search.restarts, image_offset)
    observed = images_lib.to_float(jnp.asarray(observed))
    return (variables, observed, keys, lpips_variables if search.lpips else None, op), search
