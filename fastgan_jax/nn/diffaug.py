"""DiffAugment (Zhao et al., NeurIPS 2020) as pure functions of (key, images).

A port of the official `DiffAugment_pytorch.py` that FastGAN uses, on NHWC
images in [-1, 1]: every sample draws its own parameters, everything is
differentiable in the images and jit-friendly (static shapes, no host
randomness). FastGAN's policy is `color,translation`.
"""

import jax
import jax.numpy as jnp

DEFAULT_POLICY = "color,translation"


def _uniform(key, images, low, high):
    return jax.random.uniform(key, (images.shape[0], 1, 1, 1), images.dtype, low, high)


def rand_brightness(key, x):
    return x + _uniform(key, x, -0.5, 0.5)


def rand_saturation(key, x):
    mean = x.mean(axis=3, keepdims=True)
    return (x - mean) * _uniform(key, x, 0.0, 2.0) + mean


def rand_contrast(key, x):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * _uniform(key, x, 0.5, 1.5) + mean


def color(key, x):
    kb, ks, kc = jax.random.split(key, 3)
    return rand_contrast(kc, rand_saturation(ks, rand_brightness(kb, x)))


def translation(key, x, ratio=0.125):
    """Shifts each image by up to `ratio` of its size, filling with zeros."""
    b, h, w, _ = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    kh, kw = jax.random.split(key)
    th = jax.random.randint(kh, (b,), -sh, sh + 1)
    tw = jax.random.randint(kw, (b,), -sw, sw + 1)
    padded = jnp.pad(x, ((0, 0), (sh, sh), (sw, sw), (0, 0)))

    def shift(img, dh, dw):  # out[i, j] = img[i + dh, j + dw], zero outside
        return jax.lax.dynamic_slice(img, (sh + dh, sw + dw, 0), (h, w, img.shape[-1]))

    return jax.vmap(shift)(padded, th, tw)


def cutout(key, x, ratio=0.5):
    """Zeroes a square of `ratio` of the size at a random centre per image."""
    b, h, w, _ = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    kh, kw = jax.random.split(key)
    oh = jax.random.randint(kh, (b, 1), 0, h + (1 - ch % 2)) - ch // 2
    ow = jax.random.randint(kw, (b, 1), 0, w + (1 - cw % 2)) - cw // 2
    rows, cols = jnp.arange(h)[None], jnp.arange(w)[None]
    in_h = (rows >= oh) & (rows < oh + ch)  # [B, H]
    in_w = (cols >= ow) & (cols < ow + cw)  # [B, W]
    mask = ~(in_h[:, :, None] & in_w[:, None, :])  # [B, H, W]
    return x * mask[..., None].astype(x.dtype)


AUGMENTS = {"color": color, "translation": translation, "cutout": cutout}


def parse_policy(policy: str) -> tuple[str, ...]:
    """Splits and checks a policy string such as 'color,translation'."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    for name in names:
        if name not in AUGMENTS:
            raise ValueError(f"unknown DiffAugment op {name!r} in policy {policy!r}: choose from {sorted(AUGMENTS)}")
    return names


def diff_augment(key, images, policy: str = DEFAULT_POLICY):
    """Applies the ops of `policy` in order, with independent randomness per sample.

    Args:
      key: a JAX PRNG key.
      images: [B, H, W, C] images in [-1, 1].
      policy: comma-separated ops from 'color', 'translation', 'cutout';
        '' is the identity.

    Returns:
      Augmented images, same shape and dtype.
    """
    names = parse_policy(policy)
    if not names:
        return images
    for name, k in zip(names, jax.random.split(key, len(names)), strict=True):
        images = AUGMENTS[name](k, images)
    return images
