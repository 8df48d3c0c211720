"""The paper's 1024 px few-shot setting.

    fastgan-train --data DIR --workdir runs/my_1024 --config few_shot_1024
    python train.py --data DIR --workdir runs/my_1024 --config configs/few_shot_1024.py

Official hyperparameters at 1024 px, batch 8, 50k steps; fits an 8 GB card in
bfloat16. The paper's 1024 px sets (100-1000 images) give good samples after
roughly 20-50k steps.
"""

from fastgan_jax.configs import default


def get_config():
    c = default.get_config()
    c.im_size = 1024
    c.precision = "bfloat16"
    c.recalib_batch = 16
    return c
