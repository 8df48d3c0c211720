import json
import pathlib
import pickle
import zipfile

import helpers
import jax
import numpy as np
import pytest

import fastgan_jax as fj
from fastgan_jax.nn.models import init_generator

DATA = pathlib.Path(__file__).resolve().parents[1] / "data"
KEYS = json.loads((DATA / "official_state_dict_keys.json").read_text())


def assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def npz_state(prefix):
    with np.load(DATA / "tiny_official.npz") as z:
        return {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(prefix + "/")}


@pytest.mark.parametrize("name", sorted(KEYS))
def test_official_default_layouts_import_and_export_in_order(name):
    # Every official network at default widths (the keys an official checkpoint holds).
    rows = KEYS[name]
    rng = np.random.default_rng(0)
    state = {k: rng.standard_normal(shape).astype(np.float32) if shape else np.int64(3) for k, shape, _ in rows}
    load = fj.generator_from_official if name.startswith("G") else fj.discriminator_from_official
    module, variables = load(state)
    assert module.im_size == int(name[1:])
    if name.startswith("G"):
        assert (module.ngf, module.nz) == (64, 256)
    else:
        assert (module.ndf, module.dec_width) == (64, 32)
    back = fj.to_official(module, variables)
    assert list(back) == [k for k, _, _ in rows]  # the official order
    for key, value in back.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_npz_round_trip(tmp_path):
    G, gv = fj.generator_from_official(DATA / "tiny_official.npz")
    D, dv = fj.discriminator_from_official(DATA / "tiny_official.npz")
    out = tmp_path / "exported.npz"
    fj.save_official_npz(out, g=(G, gv), d=(D, dv))
    with np.load(out) as a, np.load(DATA / "tiny_official.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert_trees_equal(fj.generator_from_official(out)[1], gv)
    with pytest.raises(FileExistsError, match="exported.npz exists"):
        fj.save_official_npz(out, g=(G, gv))
    single = tmp_path / "g_only.npz"
    fj.save_official_npz(single, g=(G, gv))
    assert_trees_equal(fj.generator_from_official(single)[1], gv)


def test_pth_all_checkpoint_matches_npz():
    # tiny_all_3.pth was written by torch.save (tests/data/make_pth_fixture.py).
    pth = DATA / "tiny_all_3.pth"
    G, g_plain = fj.generator_from_official(pth, ema=False)
    _, g_npz = fj.generator_from_official(npz_state("g"))
    assert_trees_equal(g_plain, g_npz)
    _, g_ema = fj.generator_from_official(pth)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b + 0.01, atol=1e-6), g_ema["params"], g_npz["params"])
    assert_trees_equal(g_ema["batch_stats"], g_npz["batch_stats"])
    D, d_pth = fj.discriminator_from_official(pth)
    assert_trees_equal(d_pth, fj.discriminator_from_official(npz_state("d"))[1])
    assert (G.im_size, G.ngf, G.nz, D.ndf, D.dec_width) == (256, 2, 8, 4, 2)


def test_module_prefix_is_stripped():
    state = {"module." + k: v for k, v in npz_state("g").items()}
    assert_trees_equal(fj.generator_from_official(state)[1], fj.generator_from_official(npz_state("g"))[1])


def test_not_a_fastgan_file(tmp_path):
    np.savez(tmp_path / "other.npz", **{"encoder.weight": np.zeros(3)})
    with pytest.raises(fj.OfficialCheckpointError, match="not a FastGAN generator state dict"):
        fj.generator_from_official(tmp_path / "other.npz")
    (tmp_path / "old.pth").write_bytes(b"\x80\x02legacy torch file")
    with pytest.raises(fj.OfficialCheckpointError, match="old.pth: not a PyTorch zip checkpoint"):
        fj.discriminator_from_official(tmp_path / "old.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth: no such checkpoint file"):
        fj.generator_from_official(tmp_path / "missing.pth")


def test_missing_extra_and_misshapen_keys():
    state = npz_state("g")
    with pytest.raises(fj.OfficialCheckpointError, match="missing key 'feat_16.2.running_var'"):
        fj.generator_from_official({k: v for k, v in state.items() if k != "feat_16.2.running_var"})
    with pytest.raises(fj.OfficialCheckpointError, match="unexpected key 'feat_16.9.weight'"):
        fj.generator_from_official({**state, "feat_16.9.weight": np.zeros(3)})
    bad = dict(state, **{"feat_32.1.weight_orig": np.zeros((5, 7, 3, 3), np.float32)})
    with pytest.raises(fj.OfficialCheckpointError, match="'feat_32.1.weight_orig' has shape \\[5, 7, 3, 3\\]"):
        fj.generator_from_official(bad)
    d_state = npz_state("d")
    with pytest.raises(fj.OfficialCheckpointError, match="'rf_big.0.weight_orig' fits no width"):
        fj.discriminator_from_official(dict(d_state, **{"rf_big.0.weight_orig": np.zeros((8, 13, 1, 1))}))


def test_bad_g_ema():
    state = {"g": npz_state("g"), "g_ema": [np.zeros(3)]}
    with pytest.raises(fj.OfficialCheckpointError, match="g_ema has 1 tensors"):
        fj.generator_from_official(state)


def test_tampered_pickle_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"g": helpers.Evil(marker)}, protocol=2))
    with pytest.raises(fj.OfficialCheckpointError, match="refusing to load global .*system"):
        fj.generator_from_official(evil)
    assert not marker.exists()


def test_export_rejects_non_official_sizes():
    G = fj.Generator(im_size=64, ngf=8, nz=16)
    with pytest.raises(ValueError, match="only im_size"):
        fj.to_official(G, init_generator(G, jax.random.key(0)))
