"""The candidates a search returns (`UpscaleResult`), the answer read from them at the fidelity knob, and the
candidates rendered again from a result (`render`).

`pulse.restore` searches R candidates per image; each fits the observation
and differs where the observation cannot tell. `estimate` reads one answer
from them: the best candidate (a sharp sample), the mean of the best ones
(an estimate of the posterior mean: what is uncertain averages out, PSNR up,
realism down), a blend of the two, and that blended with the input's own
bicubic upsampling (`Fidelity`).
"""

import dataclasses
import functools

import flax
import jax
import jax.numpy as jnp

from fastgan_jax.nn.models import Generator
from fastgan_jax.sr import tune


@dataclasses.dataclass(frozen=True)
class Fidelity:
    """The fidelity/realism knob: the answer is

        (1 - input) x [(1 - weight) x the best candidate + weight x the mean of the k best] + input x U(y)

    with candidates ranked by their score and U(y) the observation's bicubic upsampling to the generator's size.

    The best candidate is one sample of the images that fit the observation: sharp, realistic, and off the
    truth where the observation cannot tell. The mean of several such samples estimates the posterior mean,
    which trades some realism for PSNR (what is uncertain averages out). U(y) is the classical answer, all
    fidelity to the input and no detail: a share of it moves PSNR towards and past bicubic's, at a cost in
    realism that stays far below bicubic's (docs/restoration_real.md gives the curves).

    Attributes:
      weight: in [0, 1]; 0: the best candidate (the search's answer), 1: the mean.
      k: how many of the best candidates the mean takes (>= 1; 0: all of them).
      input: in [0, 1]; the share of U(y) (0: none). Only for observations that are RGB images with every
        pixel known (downsampling, blur, noise; not masks or grayscale).
    """

    weight: float = 0.0
    k: int = 0
    input: float = 0.0

    def __post_init__(self):
        if not 0 <= self.weight <= 1:
            raise ValueError(f"fidelity: the weight must be in [0, 1], got {self.weight}")
        if self.k < 0:
            raise ValueError(f"fidelity: k must be >= 0 (0: all candidates), got {self.k}")
        if not 0 <= self.input <= 1:
            raise ValueError(f"fidelity: the input's share must be in [0, 1], got {self.input}")


def upsampled(observed: jax.Array, size: int) -> jax.Array:
    """[B, size, size, 3]: the observations [B, h, w, 3] in [-1, 1] upsampled bicubically (Keys, a = -0.5, as
    PIL's BICUBIC; `jax.image.resize`), clipped to [-1, 1]."""
    b, _, _, c = observed.shape
    return jnp.clip(jax.image.resize(observed.astype(jnp.float32), (b, size, size, c), "cubic"), -1, 1)


def estimate(images: jax.Array, score: jax.Array, fidelity: Fidelity, observed: jax.Array | None = None) -> jax.Array:
    """[B, H, W, 3]: the `Fidelity` blend of candidates `images` [B, R, H, W, 3] ranked by `score` [B, R]
    (lowest first, ties by restart index) and, with `fidelity.input`, of `observed` [B, h, w, 3] in [-1, 1]
    (required then: ValueError without). The default knob gives the best candidate exactly."""
    k = images.shape[1] if not fidelity.k else min(fidelity.k, images.shape[1])
    order = jnp.argsort(score, axis=1, stable=True)[:, :k]
    chosen = jnp.take_along_axis(images, order[:, :, None, None, None], axis=1)  # [B, k, H, W, 3]
    answer = chosen[:, 0]
    if fidelity.weight:
        answer = (1 - fidelity.weight) * answer + fidelity.weight * chosen.mean(axis=1)
    if fidelity.input:
        if observed is None:
            raise ValueError("fidelity: a share of the input needs the observation (observed=)")
        answer = (1 - fidelity.input) * answer + fidelity.input * upsampled(observed, images.shape[2])
    return answer


@flax.struct.dataclass
class UpscaleResult:
    """Results of `upscale`: images in [-1, 1], errors on PULSE's [0, 1] scale.

    Attributes:
      images: [B, R, H, W, 3] float32, every candidate's image at its best
        step: the generator's output as it is (in [-1, 1]; a generator without
        tanh can step slightly outside).
      lr_mse: [B, R] MSE between the downscaled candidate and the LR image,
        both on the [0, 1] scale (PULSE's; what `eps` is compared with).
      success: [B, R] lr_mse <= the search's eps (plus sigma^2 with `degrade.Noise`).
      best: [B, H, W, 3] the candidate with the lowest score per image, in [-1, 1].
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
      stage: [B, R] int32, where each candidate's result comes from: 0 the
        latent search, k the k-th intermediate-layer stage (`Layers`).
      features: with `Layers`, the last stage's features {r: [B, R, r, r, C_r]}
        for r = 4 .. the last stage's resolution, which render `images` again
        with `noise` (`render`); None without.
      estimates: the operator's unknowns as each candidate's best step
        estimated them (`degrade.unknowns`: an `UnknownBlur`'s width in
        pixels), a tuple of [B, R]; () when the operator has none.
      tuned: with `tune.Tuning`, the generator's weight change of each image's
        best candidate ({"delta": the params tree with a leading [B] axis,
        "improved": [B] bool}; stage S + 1 where it improved), which renders
        `images` again (`render`); None without.
      score: [B, R] what chose each candidate's best step and ranks the
        candidates: lr_mse with `Search(loss='mse')`, the robust loss with
        'robust'; 0 where the step fitted within the search's floor.
      estimate: [B, H, W, 3] the answer at the `fidelity` knob
        (`estimate(images, score, fidelity)`; `best` at weight 0).
      fidelity: the `Fidelity` that made `estimate`.
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
    stage: jax.Array
    features: dict | None = None
    estimates: tuple = ()
    tuned: dict | None = None
    score: jax.Array | None = None
    estimate: jax.Array | None = None
    fidelity: Fidelity = flax.struct.field(pytree_node=False, default=Fidelity())


def per_candidate(x: jax.Array, b: int, restarts: int) -> jax.Array:
    """[B, R, ...] from the search's flat [B * R, ...] (image-major)."""
    return x.reshape(b, restarts, *x.shape[1:])


def pick(x: jax.Array, *, index: jax.Array, b: int, restarts: int) -> jax.Array:
    """[B, ...]: candidate `index[b]` of each image from [B * R, ...]."""
    return jnp.take_along_axis(per_candidate(x, b, restarts), index.reshape((b, 1) + (1,) * (x.ndim - 1)), 1)[:, 0]


def pivot(index: jax.Array, b: int, restarts: int, noise, features=None, latents=None) -> dict:
    """What generator tuning starts from (`tune.render`'s pivot): candidate `index[b]` of each image.

    Args:
      index: [B] int, the candidate per image (the best: `UpscaleResult.best_index`).
      b, restarts: B images of R candidates.
      noise: the noise maps, [[B * R, h_i, w_i, 1], ...] (image-major).
      features: ILO's features {resolution: [B * R, ...]}, or None: then `latents` [B * R, nz].

    Returns:
      {"noise": [[B, h_i, w_i, 1], ...], and "features": {...} or "latents": [B, nz]}.
    """
    chosen_one = functools.partial(pick, index=index, b=b, restarts=restarts)
    out = {"noise": [chosen_one(m) for m in noise]}
    if features is not None:
        return out | {"features": {k: chosen_one(f) for k, f in features.items()}}
    return out | {"latents": chosen_one(latents)}


def tuned_mask(index: jax.Array, improved: jax.Array, restarts: int) -> jax.Array:
    """[B, R] bool: the candidates replaced by their tuned image (the chosen one, where tuning beat it)."""
    return jax.nn.one_hot(index, restarts, dtype=bool) & improved[:, None]


def render(generator: Generator, variables, result: UpscaleResult) -> jax.Array:
    """Renders a result's candidates again from its latents and noise maps (with ILO, its features).

    Args:
      generator, variables: those the search ran with.
      result: an `UpscaleResult`.

    Returns:
      [B, R, H, W, 3] float32 in [-1, 1]: `result.images`, up to float rounding
      (`candidates.estimate(them, result.score, result.fidelity, observed)` is `result.estimate` again).
    """
    b, r = result.latents.shape[:2]
    noise = [m.reshape(b * r, *m.shape[2:]) for m in result.noise]
    latents = result.latents.reshape(b * r, -1)
    feats = None
    if result.features is not None:  # ILO: from the optimised features
        feats = {k: f.reshape(b * r, *f.shape[2:]) for k, f in result.features.items()}
        img, _ = generator.apply(variables, None, train=False, noise=noise, features=feats)
    else:
        img, _ = generator.apply(variables, latents, train=False, noise=noise)
    images = per_candidate(img.astype(jnp.float32), b, r)
    if result.tuned is None:
        return images
    start = pivot(result.best_index, b, r, noise, feats, latents)
    tuned = tune.render(generator, variables, result.tuned["delta"], start)
    chosen = tuned_mask(result.best_index, result.tuned["improved"], r)
    return jnp.where(chosen[..., None, None, None], tuned[:, None], images)
