"""FastGAN's losses (official `train.py`), as keyword-only pure functions.

Discriminator: hinge with a random margin U(0.8, 1) on real and fake logits,
plus the self-supervised reconstruction of the real image (Eq. 4 of the
paper): whole image from the 8x8 map and from the small path, one quadrant
from the 16x16 map, each against the real image resized (nearest) to the
decoder's size. The official sums the per-sample reconstruction distance over
the batch; so do we. Generator: -mean(logits).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fastgan_jax.nn.layers import nearest_resize

# (x [B, H, W, C], y [M, H, W, C], y_index [B] or None) -> [B]: the distance of x[i] to y[y_index[i]]
# (to y[i] without an index).
Distance = Callable[..., jax.Array]


def _pick(y, y_index):
    return y if y_index is None else y[y_index]


def l1_distance(x, y, y_index=None):
    """Per-sample mean absolute difference, [B]."""
    return jnp.mean(jnp.abs(x - _pick(y, y_index)), axis=(1, 2, 3))


def mse_distance(x, y, y_index=None):
    """Per-sample mean squared difference, [B]."""
    return jnp.mean(jnp.square(x - _pick(y, y_index)), axis=(1, 2, 3))


# The reconstruction distances by their config name (`recon`). The official one is LPIPS-VGG, whose weights
# come from `fastgan_jax.metrics.lpips` (the train step builds it); the others need nothing.
DISTANCES = {"l1": l1_distance, "mse": mse_distance}
RECONS = ("lpips", *DISTANCES)


def _margin(key, logits):
    return jax.random.uniform(key, logits.shape, jnp.float32, 0.8, 1.0)


def d_real_hinge(*, key, logits):
    """mean(relu(U(0.8, 1) - logits))."""
    return jnp.mean(jax.nn.relu(_margin(key, logits) - logits))


def d_fake_hinge(*, key, logits):
    """mean(relu(U(0.8, 1) + logits))."""
    return jnp.mean(jax.nn.relu(_margin(key, logits) + logits))


def g_hinge(*, logits):
    """-mean(logits)."""
    return -jnp.mean(logits)


def crop_part(images, part):
    """Quadrant `part` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    b, h, w, c = images.shape
    part = jnp.asarray(part, jnp.int32)
    return jax.lax.dynamic_slice(images, (0, (part // 2) * (h // 2), (part % 2) * (w // 2), 0), (b, h // 2, w // 2, c))


def reconstruction(*, images, recs, part, distance: Distance = l1_distance):
    """Sum over the batch of the three reconstruction distances.

    Args:
      images: the (augmented) real batch, [B, H, W, C].
      recs: (rec_all, rec_small, rec_part) from the discriminator.
      part: the quadrant that rec_part reconstructs.
      distance: per-sample distance, e.g. `l1_distance` or LPIPS.
    """
    rec_all, rec_small, rec_part = recs
    if not rec_all.shape == rec_small.shape == rec_part.shape:
        raise ValueError(f"the decoders' outputs must share one shape, got {[r.shape for r in recs]}")
    whole = nearest_resize(images, rec_all.shape[1])  # the target of rec_all and of rec_small
    quarter = nearest_resize(crop_part(images, part), rec_part.shape[1])
    # One distance call for the three decoders (one LPIPS pass over their outputs), with the shared
    # target passed once: [rec_all, rec_small, rec_part] against [whole, whole, quarter].
    b = images.shape[0]
    index = jnp.concatenate([jnp.arange(b), jnp.arange(b), jnp.arange(b, 2 * b)])
    return distance(jnp.concatenate(recs), jnp.concatenate([whole, quarter]), index).sum()
