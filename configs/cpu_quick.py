"""A few minutes on two CPU cores: 64 px, narrow networks, the embedded smileys.

    python train.py --workdir runs/quick --config configs/cpu_quick.py

Writes sample grids to runs/quick/samples and a checkpoint to
runs/quick/checkpoints. After its 300 steps the samples are blurry round
yellow faces on white: the colours and layout of the set, not yet the details.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.im_size = 64
    c.ngf = 16
    c.ndf = 16
    c.nz = 64
    c.dec_width = 8
    c.batch_size = 8
    c.num_steps = 300
    c.log_every = 10
    c.sample_every = 100
    c.checkpoint_every = 100
    c.num_samples = 36
    c.recalib_samples = 256
    c.recalib_batch = 64
    return c
