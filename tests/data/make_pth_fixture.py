"""Writes tests/data/tiny_all_3.pth, a real `torch.save` file laid out as the
official train.py's `all_N.pth`, from tests/data/tiny_official.npz.

Run with torch installed (the tests themselves never need torch):
    python tests/data/make_pth_fixture.py
`tiny_official.npz` holds a tiny generator (256 px, ngf 2, nz 8) and
discriminator (256 px, ndf 4, decoder width 2) in the official layout, exported
by `fastgan_jax.save_official_npz` from freshly initialised networks.
"""

import collections
import pathlib

import numpy as np
import torch

HERE = pathlib.Path(__file__).parent
PARAM_SUFFIXES = ("weight_orig", ".weight", ".bias")  # parameters, not buffers


def main():
    with np.load(HERE / "tiny_official.npz") as z:
        arrays = {k: z[k] for k in z.files}
    nets = {p: collections.OrderedDict() for p in ("g", "d")}
    for key, value in arrays.items():
        prefix, name = key.split("/", 1)
        nets[prefix][name] = torch.from_numpy(value)
    params = {p: [v for k, v in sd.items() if k.endswith(PARAM_SUFFIXES)] for p, sd in nets.items()}
    g_ema = [p.clone() + 0.01 for p in params["g"]]  # an average that differs from g
    opts = {}
    for p in ("g", "d"):
        leaves = [torch.nn.Parameter(v.clone()) for v in params[p]]
        opt = torch.optim.Adam(leaves, lr=2e-4, betas=(0.5, 0.999))
        for leaf in leaves:
            leaf.grad = torch.ones_like(leaf)
        opt.step()
        opts[f"opt_{p}"] = opt.state_dict()
    torch.save({"g": nets["g"], "d": nets["d"], "g_ema": g_ema, **opts}, HERE / "tiny_all_3.pth")


if __name__ == "__main__":
    main()
