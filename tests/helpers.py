"""Shared test helpers (pytest puts this folder on sys.path)."""

import os

from fastgan_jax.configs import cpu_quick


def tiny_config(cache_dir, **overrides):
    """cpu_quick shrunk to a network that compiles and steps in seconds (l1 reconstruction)."""
    c = cpu_quick.get_config()
    c.update(
        ngf=8,
        ndf=8,
        nz=16,
        dec_width=4,
        batch_size=4,
        num_steps=2,
        log_every=1,
        sample_every=2,
        checkpoint_every=2,
        num_samples=4,
        recalib_samples=8,
        recalib_batch=4,
        cache_dir=str(cache_dir),
        recon="l1",
    )
    c.update(overrides)
    return c


class Evil:
    """Pickles to a call of os.system that would create `path`: what a restricted unpickler must refuse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))
