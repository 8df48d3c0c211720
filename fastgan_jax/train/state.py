"""The train state and what builds it: models, optimizer, a fresh state.

Below `step.py`, `trainer.py` and `runs.py` (runs and checkpoints as
objects), which build on it.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from fastgan_jax.nn.models import REMATS, Discriminator, Generator, init_discriminator, init_generator
from fastgan_jax.train.loss_scale import PRECISIONS, DynamicScale, create_dynamic_scale


@flax.struct.dataclass
class TrainState:
    """Everything that training changes; a plain pytree (donated to the step)."""

    step: jax.Array  # int32 scalar
    g_params: Any
    g_stats: Any  # BatchNorm running stats and spectral-norm vectors
    d_params: Any
    d_stats: Any
    g_opt: Any
    d_opt: Any
    ema_params: Any  # EMA of g_params
    ema_stats: Any  # batch_stats for ema_params, recalibrated at checkpoints
    # Non-finite handling (see training.train_step): the learning rate's scale (halved at each rollback)
    # and the number of consecutive steps whose losses or gradients were not finite (and not applied).
    lr_scale: jax.Array = None  # float32 scalar
    nonfinite: jax.Array = None  # int32 scalar
    # float16 only (precision='float16'): the dynamic loss scales of D's and G's losses (see loss_scale.py).
    d_scale: DynamicScale = None
    g_scale: DynamicScale = None


def make_models(*, im_size, ngf, ndf, nz, dec_width=32, precision="float32", remat="none"):
    """(Generator, Discriminator) with tanh outputs, the given compute dtype and rematerialisation.

    `remat` ('none', 'blocks', 'full'; see `models`) changes memory and compute, never results or variables.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if remat not in REMATS:
        raise ValueError(f"remat must be one of {REMATS}, got {remat!r}")
    dtype = PRECISIONS[precision]
    G = Generator(im_size=im_size, ngf=ngf, nz=nz, output_tanh=True, dtype=dtype, remat=remat)
    D = Discriminator(im_size=im_size, ndf=ndf, dec_width=dec_width, dtype=dtype, remat=remat)
    return G, D


def make_optimizer(*, lr=2e-4, b1=0.5, b2=0.999):
    """Adam as the official (lr 2e-4, betas (0.5, 0.999), eps 1e-8)."""
    return optax.adam(lr, b1=b1, b2=b2, eps=1e-8)


def create_train_state(G, D, key, *, tx_g, tx_d) -> TrainState:
    """Fresh state: official init, EMA generator starting from G's init."""
    kg, kd = jax.random.split(key)
    return _fresh_state(init_generator(G, kg), init_discriminator(D, kd), tx_g=tx_g, tx_d=tx_d)


@functools.partial(jax.jit, static_argnames=("tx_g", "tx_d"))
def _fresh_state(g_vars, d_vars, *, tx_g, tx_d) -> TrainState:
    """The state around the networks' variables, as one program: built op by op, the optimizers' zeros and the
    EMA's copies were dozens of small programs, each compiled (or read from the compilation cache) at a start."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        g_stats=g_vars["batch_stats"],
        d_params=d_vars["params"],
        d_stats=d_vars["batch_stats"],
        g_opt=tx_g.init(g_vars["params"]),
        d_opt=tx_d.init(d_vars["params"]),
        # Own buffers: the state is donated, and one buffer cannot be donated twice.
        ema_params=jax.tree.map(jnp.copy, g_vars["params"]),
        ema_stats=jax.tree.map(jnp.copy, g_vars["batch_stats"]),
        lr_scale=jnp.ones((), jnp.float32),
        nonfinite=jnp.zeros((), jnp.int32),
        d_scale=create_dynamic_scale(),
        g_scale=create_dynamic_scale(),
    )
