"""Parity with the official PyTorch FastGAN (its outputs in tests/data/parity.npz, made by the recipe there).

Each case is rebuilt from its recipe (README in tests/data), imported through
`generator_from_official` / `discriminator_from_official`, and every stored
output is matched at the precision it was stored in: float16 maps within one
float16 rounding (half a spacing) plus float32 noise, float32 values within
float32 noise.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fastgan_jax as fj

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
CASES = json.loads((DATA / "parity.json").read_text())


@pytest.fixture(scope="module")
def ref():
    with np.load(DATA / "parity.npz") as z:
        return {k: z[k] for k in z.files}


def rebuild(case, ref):
    """The official state dict and inputs of a case, from its recipe."""
    c = CASES[case]
    rs = np.random.RandomState(c["seed"])
    state = {}
    for key, shape, kind in c["state_dict"]:
        state[key] = rs.normal(0, 0.02, shape).astype(np.float32) if kind == "sn_weight" else ref[f"{case}/state/{key}"]
    rs2 = np.random.RandomState(c["seed"] + 1)
    inputs = {}
    for name, shape, _ in c["inputs"]:
        inputs[name] = (
            rs2.normal(0, 1, shape).astype(np.float32) if name == "z" else rs2.randint(0, 256, shape).astype(np.uint8)
        )
    return state, inputs


def to_nchw(x):
    return np.asarray(x, np.float32).transpose(0, 3, 1, 2)


def image(u8):  # NCHW uint8 -> NHWC in [-1, 1], as the official feeds images
    return jnp.asarray(u8.transpose(0, 2, 3, 1).astype(np.float32) / 127.5 - 1)


def assert_matches(out, want, name):
    out, want = np.asarray(out, np.float64), np.asarray(want)
    assert out.shape == want.shape, name
    err = np.abs(out - want.astype(np.float64))
    f32_noise = 1e-5 * (1 + np.abs(want.astype(np.float64)))
    if want.dtype == np.float16:
        tol = 0.5 * np.spacing(np.abs(want)).astype(np.float64) + f32_noise
    else:
        tol = f32_noise
    bad = err > tol
    assert not bad.any(), f"{name}: {bad.sum()} values off, worst {err.max():.3g}"


@pytest.mark.parametrize("case", ["g256", pytest.param("g1024", marks=pytest.mark.slow)])
def test_generator(case, ref):
    state, inputs = rebuild(case, ref)
    G, variables = fj.generator_from_official(state)
    assert (G.im_size, G.ngf, G.nz) == (CASES[case]["im_size"], CASES[case]["ngf"], CASES[case]["nz"])
    assert G.output_tanh == (G.im_size == 1024)
    z = jnp.asarray(inputs["z"])
    rngs = {"noise": jax.random.key(0)}  # noise weights are 0 in the fixtures
    outputs = {"eval": G.apply(variables, z, train=False, rngs=rngs)}
    outputs["train"], updates = G.apply(variables, z, train=True, rngs=rngs, mutable=["batch_stats"])
    for mode, (big, small) in outputs.items():
        big, small = to_nchw(big), to_nchw(small)
        if G.im_size == 1024:
            assert_matches(big[:, :, 448:576, 448:576], ref[f"{case}/{mode}/img_big/center_crop128"], f"{mode} crop")
            area = big.reshape(1, 3, 128, 8, 128, 8).mean(axis=(3, 5))
            assert_matches(area, ref[f"{case}/{mode}/img_big/area_down8"], f"{mode} area")
        else:
            assert_matches(big, ref[f"{case}/{mode}/img_big"], f"{mode} img_big")
        assert_matches(small, ref[f"{case}/{mode}/img_128"], f"{mode} img_128")

    # The train pass updated spectral-norm vectors and BatchNorm running stats.
    after = fj.to_official(G, {"params": variables["params"], "batch_stats": updates["batch_stats"]})
    checked = 0
    for key, value in after.items():
        want = ref.get(f"{case}/after_train_pass/{key}")
        if want is not None:
            if key.endswith("num_batches_tracked"):
                assert value == want, key
            else:
                assert_matches(value, want, key)
            checked += 1
    assert checked == sum(1 for k in ref if k.startswith(f"{case}/after_train_pass/"))


@pytest.mark.parametrize("case", ["d256", pytest.param("d1024", marks=pytest.mark.slow)])
def test_discriminator(case, ref):
    state, inputs = rebuild(case, ref)
    D, variables = fj.discriminator_from_official(state)
    assert (D.im_size, D.ndf) == (CASES[case]["im_size"], CASES[case]["ndf"])
    real = image(inputs["real_u8"])
    apply = jax.jit(D.apply, static_argnames="train")
    for part in range(4):
        logits, (rec_all, rec_small, rec_part) = apply(variables, real, part=part, train=False)
        assert_matches(logits, ref[f"{case}/eval/real_part{part}/logits"], f"part {part} logits")
        assert_matches(to_nchw(rec_part), ref[f"{case}/eval/real_part{part}/rec_part"], f"part {part} rec_part")
    assert_matches(to_nchw(rec_all), ref[f"{case}/eval/real/rec_all"], "rec_all")
    assert_matches(to_nchw(rec_small), ref[f"{case}/eval/real/rec_small"], "rec_small")

    fake = (image(inputs["fake_big_u8"]), image(inputs["fake_128_u8"]))
    assert_matches(D.apply(variables, fake, train=False), ref[f"{case}/eval/fake/logits"], "fake logits")

    (logits, (_, _, rec_part)), _ = D.apply(variables, real, part=2, train=True, mutable=["batch_stats"])
    assert_matches(logits, ref[f"{case}/train/real_part2/logits"], "train logits")
    assert_matches(to_nchw(rec_part), ref[f"{case}/train/real_part2/rec_part"], "train rec_part")
