import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastgan_jax.train import loss_scale

adjust = jax.jit(loss_scale.adjust)
TRUE, FALSE = jnp.asarray(True), jnp.asarray(False)
X16 = jnp.linspace(0.5, 1.5, 8, dtype=jnp.float16)


def tiny_loss(w):
    """1e-8 * sum(tanh(w * x)) with float16 activations: float16 cannot hold the backward's 1e-8 (it rounds to 0)."""
    h = jnp.tanh(w.astype(jnp.float16) * X16)  # [8] float16
    return jnp.sum(h.astype(jnp.float32)) * 1e-8


def square_loss(w):
    """sum((w * x)^2) with float16 activations: d/dh = 2h, which a scale of 2**15 pushes past 65504."""
    h = w.astype(jnp.float16) * X16
    return jnp.sum(jnp.square(h).astype(jnp.float32))


def scaled_grads(loss_fn, w, ds):
    """As the train step takes a network's gradients: of the scaled loss, unscaled, and whether they are finite."""
    grads = loss_scale.unscale(jax.grad(lambda w: loss_scale.scale(loss_fn(w), ds))(w), ds)
    return grads, loss_scale.all_finite(grads)


def test_adjust_backs_off_on_a_nonfinite_step_and_resets_the_count():
    ds = loss_scale.create_dynamic_scale(2.0**10, growth_interval=5)
    for _ in range(3):
        ds = adjust(ds, TRUE)
    assert (float(ds.scale), int(ds.good_steps)) == (2.0**10, 3)
    ds = adjust(ds, FALSE)
    assert (float(ds.scale), int(ds.good_steps)) == (2.0**9, 0)
    assert ds.scale.dtype == jnp.float32 and ds.good_steps.dtype == jnp.int32
    assert ds.growth_interval == 5  # the static rule survives jit


def test_adjust_grows_after_growth_interval_finite_steps():
    ds = loss_scale.create_dynamic_scale(4.0, growth_interval=3)
    seen = []
    for finite in [TRUE] * 3 + [TRUE, TRUE, FALSE] + [TRUE] * 3:
        ds = adjust(ds, finite)
        seen.append((float(ds.scale), int(ds.good_steps)))
    assert seen == [(4, 1), (4, 2), (8, 0), (8, 1), (8, 2), (4, 0), (4, 1), (4, 2), (8, 0)]


def test_adjust_never_goes_below_min_scale():
    ds = loss_scale.create_dynamic_scale(8.0, min_scale=2.0, backoff_factor=0.25)
    ds = adjust(ds, FALSE)
    assert float(ds.scale) == 2.0
    ds = adjust(ds, FALSE)
    assert float(ds.scale) == 2.0 and int(ds.good_steps) == 0
    with pytest.raises(ValueError, match="below min_scale"):
        loss_scale.create_dynamic_scale(0.5)
    with pytest.raises(ValueError, match="backoff_factor"):
        loss_scale.create_dynamic_scale(backoff_factor=1.0)


def test_scaled_float16_gradients_match_float32_where_unscaled_ones_underflow():
    w = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32)
    h32 = jnp.tanh(w * X16.astype(jnp.float32))
    want = 1e-8 * (1 - h32**2) * X16.astype(jnp.float32)  # d tiny_loss / dw in float32
    unscaled = jax.jit(jax.grad(tiny_loss))(w)
    assert not np.any(unscaled)  # the float16 backward alone loses every gradient
    grads, finite = jax.jit(scaled_grads, static_argnums=0)(tiny_loss, w, loss_scale.create_dynamic_scale())
    assert bool(finite) and grads.dtype == jnp.float32
    np.testing.assert_allclose(grads, want, rtol=5e-3)


def test_overflow_when_scaled_is_not_finite_and_halves_the_scale():
    w = jnp.full((8,), 100.0, jnp.float32)  # h up to 150: 2h * 2**15 > 65504

    @jax.jit
    def step(w, ds):
        grads, finite = scaled_grads(square_loss, w, ds)
        new_w = loss_scale.select(finite, w - 1e-6 * grads, w)
        return new_w, loss_scale.adjust(ds, finite), finite

    ds = loss_scale.create_dynamic_scale()
    new_w, ds, finite = step(w, ds)
    assert not bool(finite) and float(ds.scale) == 2.0**14 and int(ds.good_steps) == 0
    np.testing.assert_array_equal(new_w, w)  # the update was skipped
    # Without the scale the same backward is finite: the overflow is the scale's, and backing off ends it.
    grads, finite = jax.jit(scaled_grads, static_argnums=0)(square_loss, w, loss_scale.create_dynamic_scale(1.0))
    assert bool(finite)
    for _ in range(20):
        w2, ds, finite = step(w, ds)
        if bool(finite):
            break
    assert bool(finite) and float(ds.scale) * 300 <= 65504
    np.testing.assert_allclose(w2, w - 1e-6 * grads, rtol=1e-6)


def test_unscale_keeps_non_float_leaves_and_all_finite_sees_every_float_leaf():
    ds = loss_scale.create_dynamic_scale(4.0)
    out = jax.jit(loss_scale.unscale)({"a": jnp.full(2, 8.0, jnp.float16), "n": jnp.arange(2)}, ds)
    assert out["a"].dtype == jnp.float32 and out["n"].dtype == jnp.arange(2).dtype
    np.testing.assert_array_equal(out["a"], [2.0, 2.0])
    finite = jax.jit(loss_scale.all_finite)
    assert bool(finite({"a": jnp.ones(2), "n": jnp.arange(2)}))
    assert not bool(finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}))
    assert not bool(finite([jnp.array([jnp.inf], jnp.float16)]))
