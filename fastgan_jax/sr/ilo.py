"""Intermediate layer optimisation (ILO; Daras et al., ICML 2021) for FastGAN's generator.

After the latent search, the generator's intermediate features are
optimised stage by stage, coarse to fine: at stage k, every feature map up to
resolution r_k ({4, 8, ..., r_k}: the skip-layer excitations above r_k read
the small ones) starts from what the previous stage's best produces, and
after every Adam step each map is projected back into an L1 ball around that
start (Duchi et al., ICML 2008). The balls keep the result near the
generator's range (what the latent search could reach), while the larger
space reaches images the latent alone cannot: the fit to the observation
improves, the prior still shapes the image. Later layers of the generator
(and its noise maps above r_k, kept from the latent search) run as they are.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Layers:
    """The intermediate-layer stages: resolutions coarse to fine, each with its L1 radius.

    Attributes:
      resolutions: feature resolutions to optimise, increasing, e.g. (8, 16, 32).
      radii: per stage, the largest mean absolute change of a feature value
        from the stage's start (the L1 ball's radius over a map, divided by its
        number of values); one value or one per stage.
      steps: Adam steps per stage.
      lr: Adam's learning rate on the features.

    The default radius 0.3 is measured (`benchmarks/restore_heldout.py`,
    docs/restoration.md): on 16 pokemon-256 images held out of a
    64 px prior's training, x4 and x8, radius 0.03 / 0.1 / 0.3 reach eps for
    81% / 100% / 100% at x4, and 0.3 has the best LPIPS and SSIM at both
    factors (x4 LPIPS 0.185 / 0.151 / 0.139; x8 0.238 at 0.1, 0.236 at 0.3).
    """

    resolutions: tuple = (8, 16, 32)
    radii: tuple = (0.3,)
    steps: int = 50
    lr: float = 0.03

    def __post_init__(self):
        res = tuple(self.resolutions)
        if not res or list(res) != sorted(set(res)) or any(r < 8 or r & (r - 1) for r in res):
            raise ValueError(f"layers: resolutions must be increasing powers of two from 8, got {res}")
        radii = tuple(self.radii) * len(res) if len(tuple(self.radii)) == 1 else tuple(self.radii)
        if len(radii) != len(res) or any(not r > 0 for r in radii):
            raise ValueError(f"layers: give one radius > 0, or one per stage ({len(res)}), got {self.radii}")
        if self.steps < 1 or not self.lr > 0:
            raise ValueError(f"layers: steps >= 1 and lr > 0, got {self.steps} and {self.lr}")
        object.__setattr__(self, "resolutions", res)
        object.__setattr__(self, "radii", radii)

    def check(self, im_size: int) -> None:
        """Raises ValueError when a stage is not inside a generator of `im_size` (the last layer is the image)."""
        if self.resolutions[-1] >= im_size:
            raise ValueError(f"layers: resolutions must be below the generator's {im_size}px, got {self.resolutions}")


def project_l1_ball(v: jax.Array, radius) -> jax.Array:
    """The Euclidean projection of each row of `v` [N, D] onto {x : sum |x| <= radius} (Duchi et al. 2008).

    Rows already inside are returned as they are. `radius` > 0: a scalar or [N].
    """
    radius = jnp.broadcast_to(jnp.asarray(radius, v.dtype), v.shape[:1])
    a = jnp.abs(v)
    mu = -jnp.sort(-a, axis=-1)  # descending
    cs = jnp.cumsum(mu, axis=-1)
    k = jnp.arange(1, v.shape[-1] + 1, dtype=v.dtype)
    rho = jnp.sum(mu * k > cs - radius[:, None], axis=-1)  # how many entries stay non-zero
    theta = (jnp.take_along_axis(cs, (rho - 1)[:, None], axis=-1)[:, 0] - radius) / rho
    w = jnp.sign(v) * jnp.maximum(a - theta[:, None], 0)
    return jnp.where((a.sum(-1) <= radius)[:, None], v, w)


def _project(x, center, radius):
    """`x` moved into the L1 ball of mean radius `radius` around `center`, per candidate ([N, ...])."""
    n = x.shape[0]
    d = (x - center).reshape(n, -1)
    return center + project_l1_ball(d, radius * d.shape[1]).reshape(x.shape)


def select(better, new, old):
    """Per candidate (leading axis), `new` where `better` [N] holds, else `old` (pytrees of [N, ...])."""
    return jax.tree.map(lambda p, q: jnp.where(better.reshape((-1,) + (1,) * (p.ndim - 1)), p, q), new, old)


def layer_stages(G, variables, noise, feats, best_mse, objective, layers: Layers):
    """Runs the stages from `feats` (the latent search's best, up to the first resolution).

    Args:
      G, variables: the generator (eval mode) and its variables.
      noise: the noise maps of every candidate (the latent search's best).
      feats: {r: [N, r, r, C]} up to `layers.resolutions[0]`.
      best_mse: [N] the latent search's best score (what a stage must beat): the MSE, or with the robust
        loss that loss (`pulse.Search`).
      objective: image [N, H, W, 3] -> (summed loss, ([N] loss, [N] score)).
      layers: the stages.

    Returns:
      (features up to the last resolution, [N] best score, [N] stage of the
      best (0: the latent search), [S * steps, N] loss history).
    """
    n = best_mse.shape[0]
    stage, histories = jnp.zeros((n,), jnp.int32), []
    feats = jax.tree.map(lambda x: x.astype(jnp.float32), feats)
    tx = optax.adam(layers.lr)

    def losses(f):
        img, _ = G.apply(variables, None, train=False, noise=noise, features=f)
        return objective(img.astype(jnp.float32))

    for k, (res, radius) in enumerate(zip(layers.resolutions, layers.radii, strict=True), start=1):
        if k > 1:  # the previous stage's best, carried forward to this resolution
            more = G.apply(variables, None, train=False, noise=noise, features=feats, stop_at=res)
            feats = jax.tree.map(lambda x: x.astype(jnp.float32), more)
        center = feats

        def step(carry, _, k=k, radius=radius, center=center):
            f, opt, best, best_mse, stage = carry
            (_, (loss, mse)), grads = jax.value_and_grad(losses, has_aux=True)(f)
            better = mse < best_mse
            best, stage = select(better, f, best), jnp.where(better, k, stage)
            best_mse = jnp.where(better, mse, best_mse)
            updates, opt = tx.update(grads, opt, f)
            f = jax.tree.map(lambda x, c: _project(x, c, radius), optax.apply_updates(f, updates), center)
            return (f, opt, best, best_mse, stage), loss

        init = (center, tx.init(center), center, best_mse, stage)
        (_, _, feats, best_mse, stage), history = jax.lax.scan(step, init, None, length=layers.steps)
        histories.append(history)
    return feats, best_mse, stage, jnp.concatenate(histories)
