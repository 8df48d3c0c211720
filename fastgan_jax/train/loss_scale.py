"""Dynamic loss scaling for float16 mixed precision (float32 parameters, float16 compute).

Why float16 needs it: GPUs such as Volta and Turing (V100, T4, RTX 20xx) run
float16 fast on their tensor cores but have no bfloat16 arithmetic (that
begins with Ampere). float16 keeps float32's precision of a few digits only
with a far smaller range: its largest value is 65504, its smallest normal
2**-14 ~ 6.1e-5 and its smallest subnormal 2**-24 ~ 6.0e-8. The forward
activations fit, but in the backward pass the gradients of the float16
activations are often smaller than that and round to 0 (a mean over a batch
of pixels alone divides by ~1e5), so their parameters get no gradient.
bfloat16 has float32's range and needs none of this.

The remedy (Micikevicius et al., "Mixed Precision Training", ICLR 2018):
multiply the loss by a scale S before the backward pass, so that every
gradient in it is S times larger and stays representable; divide the
parameters' gradients by S afterwards, in float32. Too large an S makes
gradients overflow to inf; then the step is skipped and S halved. This
module is that rule as pure functions of a two-scalar state, with
`jmp.DynamicLossScale` / `torch.cuda.amp.GradScaler` semantics:

    finite step:      good_steps += 1; at growth_interval: S *= growth_factor, good_steps = 0
    non-finite step:  S = max(S * backoff_factor, min_scale), good_steps = 0

The defaults: S starts at 2**15 (most gradients survive from the first step;
a start that is too large costs one skipped step per halving);
growth_interval=2000 finite steps before trying a scale twice as large (the
needed scale drifts during training; the probe costs a skipped step when it
is too large); growth_factor=2 and backoff_factor=0.5 keep S a power of two,
so scaling and unscaling change exponents only and are exact; min_scale=1
because gradients that overflow without any scale are a fault of the model or
the learning rate, not of the scale (the train step's guard handles those).

Use (one `DynamicScale` per network, kept in the train state; `train.step` is the one user):

    grads = unscale(jax.grad(lambda p: scale(loss_fn(p), ds))(params), ds)
    finite = all_finite(grads)
    new = select(finite, optimizer_step(params, grads), params)  # skip the step on overflow
    ds = adjust(ds, finite)

Why not `flax.training.dynamic_scale.DynamicScale`: its `value_and_grad`
unscales the gradients at the differentiated function's arguments. G's loss
is differentiated with respect to the generated images and reaches G's
parameters through the VJP of the one G forward that D's update also used,
so the scaled gradient must stay scaled through that float16 backward; and
its per-leaf chain of `&`s is what `all_finite` avoids (see there).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp

# The project's precision names -> the modules' compute dtype; parameters, optimizer and EMA stay float32.
PRECISIONS = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@flax.struct.dataclass
class DynamicScale:
    """A dynamic loss scale: two scalars that change, and a static rule (see the module docstring).

    Build it with `create_dynamic_scale`. The rule's fields are static (part of
    the tree structure, so not saved in checkpoints and compiled in).

    Attributes:
      scale: float32 scalar, the factor the loss is multiplied by.
      good_steps: int32 scalar, consecutive steps with finite gradients since the last change of `scale`.
      growth_interval: finite steps after which `scale` grows.
      growth_factor: what `scale` is multiplied by when it grows.
      backoff_factor: what `scale` is multiplied by after a non-finite step.
      min_scale: the smallest scale a backoff reaches.
    """

    scale: jax.Array
    good_steps: jax.Array
    growth_interval: int = flax.struct.field(pytree_node=False, default=2000)
    growth_factor: float = flax.struct.field(pytree_node=False, default=2.0)
    backoff_factor: float = flax.struct.field(pytree_node=False, default=0.5)
    min_scale: float = flax.struct.field(pytree_node=False, default=1.0)


def create_dynamic_scale(
    initial_scale: float = 2.0**15,
    *,
    growth_interval: int = 2000,
    growth_factor: float = 2.0,
    backoff_factor: float = 0.5,
    min_scale: float = 1.0,
) -> DynamicScale:
    """A fresh `DynamicScale` at `initial_scale` with no finite steps counted.

    Args:
      initial_scale: the first scale (>= min_scale).
      growth_interval: finite steps before the scale grows (>= 1).
      growth_factor: growth multiplier (>= 1).
      backoff_factor: multiplier after a non-finite step (in (0, 1)).
      min_scale: the floor of the scale (> 0).

    Returns:
      The state, its scalars as float32 and int32 arrays.
    """
    if not (growth_interval >= 1 and growth_factor >= 1 and 0 < backoff_factor < 1 and 0 < min_scale):
        raise ValueError(
            "need growth_interval >= 1, growth_factor >= 1, 0 < backoff_factor < 1 and min_scale > 0, got "
            f"{growth_interval}, {growth_factor}, {backoff_factor}, {min_scale}"
        )
    if initial_scale < min_scale:
        raise ValueError(f"initial_scale {initial_scale} is below min_scale {min_scale}")
    return DynamicScale(
        scale=jnp.asarray(initial_scale, jnp.float32),
        good_steps=jnp.zeros((), jnp.int32),
        growth_interval=growth_interval,
        growth_factor=growth_factor,
        backoff_factor=backoff_factor,
        min_scale=min_scale,
    )


def scale(loss: jax.Array, ds: DynamicScale) -> jax.Array:
    """The loss times the scale, in float32 (a float16 loss of 2 times 2**15 would already overflow).

    Args:
      loss: a scalar loss of any float dtype.
      ds: the loss scale.

    Returns:
      float32 scalar `loss * ds.scale`: differentiate this one.
    """
    return jnp.asarray(loss, jnp.float32) * ds.scale


def unscale(grads: Any, ds: DynamicScale) -> Any:
    """Gradients of a scaled loss divided by the scale, in float32.

    Args:
      grads: a pytree of gradients of `scale(loss, ds)`.
      ds: the loss scale they were computed with.

    Returns:
      The gradients of the loss itself: floating leaves as float32 (the
      parameters' dtype in mixed precision; a float16 gradient divided in
      float16 would underflow again), other leaves unchanged.
    """

    def one(g):
        return g.astype(jnp.float32) / ds.scale if jnp.issubdtype(g.dtype, jnp.floating) else g

    return jax.tree.map(one, grads)


def all_finite(tree: Any) -> jax.Array:
    """True when every floating-point leaf of `tree` is finite (a boolean scalar; True for no such leaf)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    if not leaves:
        return jnp.asarray(True)
    # x * 0 is 0 for a finite x and NaN for inf and NaN: one sum per leaf says whether the leaf is finite. The
    # sums go through one `isfinite` and one reduction of a vector; a chain of per-leaf scalar `and`s would be
    # fused by XLA into every consumer, e.g. each of a train step's hundreds of `select`s (half its compile).
    zeros = jnp.stack([jnp.sum(x * 0, dtype=jnp.float32) for x in leaves])
    return jnp.all(jnp.isfinite(zeros))


def adjust(ds: DynamicScale, finite: jax.Array) -> DynamicScale:
    """The scale after a step: backed off when the gradients were not finite, grown after enough finite steps.

    Args:
      ds: the scale the step's gradients were computed with.
      finite: boolean scalar, `all_finite` of the step's (unscaled) gradients.

    Returns:
      The next step's `DynamicScale` (same static rule).
    """
    good = ds.good_steps + 1
    grow = finite & (good >= ds.growth_interval)
    grown = jnp.where(grow, ds.scale * ds.growth_factor, ds.scale)
    backed_off = jnp.maximum(ds.scale * ds.backoff_factor, ds.min_scale)
    return ds.replace(
        scale=jnp.where(finite, grown, backed_off).astype(jnp.float32),
        good_steps=jnp.where(finite & ~grow, good, 0).astype(jnp.int32),
    )


def select(finite: jax.Array, new_tree: Any, old_tree: Any) -> Any:
    """`new_tree` where `finite`, else `old_tree`, leaf by leaf (both the same structure): a skipped update."""
    return jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_tree, old_tree)
