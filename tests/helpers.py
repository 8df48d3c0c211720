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


def leaves(tree):
    """The leaves of a pytree as numpy arrays."""
    import jax
    import numpy as np

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def assert_close_but_for_adam_flips(xs, ys, *, tight, steps, lr=2e-4):
    """Sharding changes reduction orders: tiny differences, except where a gradient near 0 changes sign and
    Adam moves that parameter by about lr the other way. So: every value within a few Adam steps, and all
    but a handful within `tight`."""
    import numpy as np

    flat_x = np.concatenate([np.ravel(x) for x in xs])
    flat_y = np.concatenate([np.ravel(y) for y in ys])
    diff = np.abs(flat_x - flat_y)
    assert diff.max() <= 3 * lr * steps + 1e-5, diff.max()
    off = diff > tight * (1 + np.abs(flat_y))
    assert off.sum() <= 1e-3 * off.size, (off.sum(), off.size, diff.max())


class Evil:
    """Pickles to a call of os.system that would create `path`: what a restricted unpickler must refuse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def tiny_step(*, precision="float32", **step_kwargs):
    """(state, jitted step) of 64 px networks of width 8 (no augmentation, l1 unless given)."""
    import jax

    from fastgan_jax import training

    G, D = training.make_models(im_size=64, ngf=8, ndf=8, nz=16, dec_width=4, precision=precision)
    tx = training.make_optimizer()
    state = training.create_train_state(G, D, jax.random.key(0), tx_g=tx, tx_d=tx)
    kwargs = {"policy": "", "recon": "l1", "ema_decay": 0.999, **step_kwargs}
    return state, training.make_train_step(G, D, tx_g=tx, tx_d=tx, mesh=training.make_mesh(), **kwargs)
