"""The paper's 1024 px few-shot setting.

    fastgan-train --data DIR --workdir runs/my_1024 --config few_shot_1024
    python train.py --data DIR --workdir runs/my_1024 --config configs/few_shot_1024.py

Official hyperparameters at 1024 px, batch 8, 50k steps. Set for an 8 GB
card of the Turing class (e.g. an RTX 2070 SUPER: fast float16, no
bfloat16): float16 with dynamic loss scaling, and remat=auto, which there
takes `none` (4.11 GiB by XLA:GPU's analysis, of the 5.40 GiB it allows
itself; docs/memory.md); on Ampere and newer, `--config.model.precision=bfloat16`
needs no loss scale. A 4 GB card does not fit it at batch 8 (remat=auto says
which batch would). The paper's 1024 px sets (100-1000 images) give good
samples after roughly 20-50k steps.
"""

from fastgan_jax.configs import default


def get_config():
    c = default.get_config()
    c.model.im_size = 1024
    c.model.precision = "float16"
    c.log.recalib_batch = 16
    return c
