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
    c.model.update(im_size=64, ngf=16, ndf=16, nz=64, dec_width=8)
    c.model.remat = "none"  # memory is no concern here; recomputation would only cost time
    c.optim.batch_size = 8
    c.optim.ema_decay = 0.99  # 0.999 would still be 60% the random init after 500 steps
    c.loss.recon = "l1"  # LPIPS-VGG (the official, and default.py's) makes a CPU step several times slower
    c.train.num_steps = 500
    c.log.update(log_every=10, sample_every=100, checkpoint_every=100)
    c.log.update(num_samples=36, recalib_samples=256, recalib_batch=64)
    return c
