"""Bounded generator tuning after the search (pivotal tuning: PTI, Roich et al. 2021; RLS+).

The latent search (PULSE) and ILO look for an image the generator can make.
Where the generator cannot make the input's details, tuning its weights a
little, per image, around what the search found (the "pivot": its latents,
noise maps and, with ILO, features) closes the rest of the gap: Adam on a
weight change dW per image, minimising the same observation loss, with each
weight tensor's change kept in an L2 ball relative to the tensor,

    ||dW||_2 <= radius * ||W||_2     (per tensor, per image; projected after every step),

and the best step kept (the lowest observation MSE: stopped early in effect,
as every step is scored). A small radius keeps the prior's look (what makes
the result realistic); a large one lets the generator copy the input's
artifacts too. Every image is tuned on its own (its own dW, rendered with
`jax.vmap`): results do not depend on which images run together.

Memory: the tuned weights, their Adam moments and the best step's weights,
four copies of the generator's parameters per image.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from fastgan_jax.sr import ilo


@dataclasses.dataclass(frozen=True)
class Tuning:
    """Settings of the generator tuning.

    Attributes:
      steps: Adam steps on the weight change.
      lr: Adam's learning rate on the weights (PTI: 3e-4 for StyleGAN).
      radius: the largest change of each weight tensor, relative to its L2 norm (0.05: 5%).
    """

    steps: int = 50
    lr: float = 1e-3
    radius: float = 0.05

    def __post_init__(self):
        if self.steps < 1 or not self.lr > 0 or not self.radius > 0:
            raise ValueError(
                f"tuning: steps >= 1, lr > 0 and radius > 0, got {self.steps}, {self.lr} and {self.radius}"
            )


def project(delta, params, radius: float):
    """Each leaf of `delta` ([B, ...] per image) scaled into the ball ||d|| <= radius * ||w|| of its `params`
    leaf ([...], shared); leaves already inside are returned as they are."""

    def one(d, w):
        bound = radius * jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32))))
        norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=tuple(range(1, d.ndim))))  # [B]
        scale = jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-12))
        return d * scale.reshape((-1,) + (1,) * (d.ndim - 1))

    return jax.tree.map(one, delta, params)


def render(G, variables, delta, pivot) -> jax.Array:
    """[B, H, W, 3] float32 in [-1, 1]: each image's pivot rendered by the generator with its own weight change.

    Args:
      G, variables: the generator (eval mode) and its variables (`params`, `batch_stats`).
      delta: the weight change, `variables["params"]`'s tree with a leading [B] axis.
      pivot: per image, what the search found: {"noise": [[B, h_i, w_i, 1], ...], and "features":
        {r: [B, r, r, C]} (ILO) or "latents": [B, nz]}.
    """

    def one(d, p):
        v = dict(variables, params=jax.tree.map(lambda w, x: w + x.astype(w.dtype), variables["params"], d))
        noise = [m[None] for m in p["noise"]]
        if "features" in p:
            img, _ = G.apply(v, None, train=False, noise=noise, features={r: f[None] for r, f in p["features"].items()})
        else:
            img, _ = G.apply(v, p["latents"][None], train=False, noise=noise)
        return img[0].astype(jnp.float32)

    return jax.vmap(one)(delta, pivot)


def tune(G, variables, pivot, best_mse, objective, tuning: Tuning):
    """Tunes a weight change per image from zero (the pivot's own image).

    Args:
      G, variables: the generator (eval mode) and its variables.
      pivot: per image, the search's result (`render`'s pivot), B images.
      best_mse: [B] the pivot's score (what a tuned step must beat; the observation's MSE with PULSE's loss).
      objective: images [B, H, W, 3] -> (summed loss, ([B] loss, [B] score)), the search's loss.
      tuning: the settings.

    Returns:
      (delta: the best step's weight change per image (zero where no step beat the pivot), [B] its score,
      [B] bool whether it beat the pivot, [steps, B] loss history).
    """
    params = variables["params"]
    b = best_mse.shape[0]
    zero = jax.tree.map(lambda w: jnp.zeros((b, *w.shape), jnp.float32), params)
    tx = optax.adam(tuning.lr)

    def losses(delta):
        return objective(render(G, variables, delta, pivot))

    def step(carry, _):
        delta, opt, best, best_mse = carry
        (_, (loss, mse)), grads = jax.value_and_grad(losses, has_aux=True)(delta)
        better = mse < best_mse
        best, best_mse = ilo.select(better, delta, best), jnp.where(better, mse, best_mse)
        updates, opt = tx.update(grads, opt, delta)
        delta = project(optax.apply_updates(delta, updates), params, tuning.radius)
        return (delta, opt, best, best_mse), loss

    init = (zero, tx.init(zero), zero, best_mse)
    (_, _, best, tuned_mse), history = jax.lax.scan(step, init, None, length=tuning.steps)
    return best, tuned_mse, tuned_mse < best_mse, history
