"""A few minutes on two CPU cores: 64 px, narrow networks, the embedded smileys.

    fastgan-train --workdir runs/quick --config cpu_quick
    python train.py --workdir runs/quick --config configs/cpu_quick.py

Writes sample grids to runs/quick/samples and checkpoints to
runs/quick/checkpoints. Its 500 steps take about 2 minutes on two CPU cores
(40 img/s including compilation); by then the EMA samples are round yellow
faces on white with dark eyes and mouths, blurry and without the finer details.
"""

from fastgan_jax.configs import default


def get_config():
    c = default.get_config()
    c.im_size = 64
    c.ngf = 16
    c.ndf = 16
    c.nz = 64
    c.dec_width = 8
    c.batch_size = 8
    c.num_steps = 500
    c.ema_decay = 0.99  # 0.999 would still be 60% the random init after 500 steps
    c.recon = "l1"  # LPIPS-VGG (the official, and default.py's) makes a CPU step several times slower
    c.remat = "none"  # memory is no concern here; recomputation would only cost time
    c.log_every = 10
    c.sample_every = 100
    c.checkpoint_every = 100
    c.num_samples = 36
    c.recalib_samples = 256
    c.recalib_batch = 64
    return c
