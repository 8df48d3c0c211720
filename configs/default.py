"""Official FastGAN hyperparameters at 256 px (official train.py defaults).

    python train.py --data DIR --workdir runs/my_run

On one consumer GPU this is the paper's setting: batch 8, Adam 2e-4
(0.5, 0.999), 50k steps, DiffAugment color+translation, EMA 0.999. Few-shot
sets of ~100 images reach recognisable samples after a few thousand steps and
the paper's quality around 20-50k.
"""

import ml_collections

from fastgan_jax.data import DEFAULT_DATA


def get_config():
    c = ml_collections.ConfigDict()
    # Data.
    c.data = str(DEFAULT_DATA)  # a folder, or tfds:NAME[:SPLIT]
    c.im_size = 256
    c.aspect = "center_crop"  # or "stretch" (what the official does)
    c.background = (255, 255, 255)  # behind transparent pixels
    c.data_on_device = "auto"  # "auto", "yes", "no" (stream batches from host memory)
    c.cache_dir = ""  # decoded-image cache; "" = ~/.cache/fastgan_jax
    c.tfds_data_dir = ""  # for --data tfds:NAME; "" = TFDS's default (~/tensorflow_datasets)
    # Networks.
    c.ngf = 64
    c.ndf = 64
    c.nz = 256
    c.dec_width = 32
    c.precision = "float32"  # or "bfloat16" (float32 params and optimizer)
    # Optimisation.
    c.batch_size = 8
    c.lr = 2e-4
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.ema_decay = 0.999
    c.policy = "color,translation"
    c.recon = "lpips"  # reconstruction distance: "lpips" (LPIPS-VGG, official), "l1" or "mse"
    c.num_steps = 50_000
    c.seed = 0
    c.time_limit_s = 0.0  # > 0: stop (checkpointed) after this many seconds; running again continues
    # Logging and checkpoints.
    c.log_every = 100
    c.sample_every = 1000
    c.checkpoint_every = 5000
    c.keep_checkpoints = 3
    c.num_samples = 64
    c.recalib_samples = 2048  # z used to re-estimate the EMA generator's BatchNorm statistics
    c.recalib_batch = 64
    c.fid_every = 0  # > 0: FID (TF-FID Inception) every N steps, logged, and the best-FID checkpoint kept
    c.fid_samples = 5000
    return c
