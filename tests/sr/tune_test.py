"""Bounded generator tuning (fastgan_jax/sr/tune.py) on a tiny generator."""

import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastgan_jax.nn.models import noise_shapes
from fastgan_jax.sr import candidates, degrade, pulse, tune

OP = degrade.Downsample(8)


generator = helpers.tiny_generator


def pivots(seed, n=2):
    """n latent pivots with their noise maps."""
    G, _ = generator()
    z = pulse._project(jax.random.normal(jax.random.key(seed), (n, G.nz)))
    noise = [
        jax.random.normal(jax.random.fold_in(jax.random.key(seed), i), s) for i, s in enumerate(noise_shapes(64, n))
    ]
    return {"latents": z, "noise": noise}


@functools.cache
def target():
    """[2, 8, 8, 3]: LR images of other generated images than the pivots' (something left to fit)."""
    G, v = generator()
    p = pivots(7)
    hr, _ = G.apply(v, p["latents"], train=False, noise=p["noise"])
    return OP(hr.astype(jnp.float32))


def objective(y):
    def f(img):
        mse, _ = degrade.observed_errors(OP, img, y)
        return jnp.sum(100 * mse), (100 * mse, mse)

    return f


@functools.partial(jax.jit, static_argnums=2)
def run(pivot, y, tuning):
    G, v = generator()
    start = degrade.observed_mse(OP, tune.render(G, v, _zero(v, len(y)), pivot), y)
    return (start, *tune.tune(G, v, pivot, start, objective(y), tuning))


def _zero(v, b):
    return jax.tree.map(lambda w: jnp.zeros((b, *w.shape)), v["params"])


TUNING = tune.Tuning(steps=20, lr=3e-3, radius=0.05)


@pytest.mark.slow
def test_tuning_lowers_the_error_inside_the_ball_and_renders_again_exactly():
    G, v = generator()
    pivot = pivots(1)
    start, delta, mse, improved, history = run(pivot, target(), TUNING)
    assert history.shape == (20, 2) and bool(improved.all()), (start, mse)
    assert float(jnp.max(mse / start)) < 0.9, (start, mse)  # the weights close part of the gap
    for d, w in zip(jax.tree.leaves(delta), jax.tree.leaves(v["params"]), strict=True):
        norms = jnp.sqrt(jnp.sum(jnp.square(d), axis=tuple(range(1, d.ndim))))
        assert float(jnp.max(norms)) <= 0.05 * float(jnp.sqrt(jnp.sum(jnp.square(w)))) * (1 + 1e-5) + 1e-12
    again = degrade.observed_mse(OP, tune.render(G, v, delta, pivot), target())
    np.testing.assert_allclose(again, mse, rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_an_image_tunes_alike_alone_or_with_others():
    pivot = pivots(1)
    _, delta, mse, _, _ = run(pivot, target(), TUNING)
    alone = jax.tree.map(lambda x: x[1:], pivot)
    _, delta1, mse1, _, _ = run(alone, target()[1:], TUNING)
    # Float rounding differs with the batch (XLA's convolutions); interacting images would differ at ~1e-2.
    np.testing.assert_allclose(mse1, mse[1:], rtol=1e-3, atol=1e-9)
    for a, b in zip(jax.tree.leaves(delta1), jax.tree.leaves(delta), strict=True):
        np.testing.assert_allclose(a, b[1:], rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_a_smaller_ball_fits_less():
    pivot = pivots(1)
    _, _, wide, _, _ = run(pivot, target(), TUNING)
    _, _, narrow, _, _ = run(pivot, target(), tune.Tuning(steps=20, lr=3e-3, radius=0.002))
    assert bool((narrow > wide).all()), (narrow, wide)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"lr": 0.0}, {"radius": -1.0}])
def test_settings_out_of_range_are_one_line(bad):
    with pytest.raises(ValueError, match=r"^tuning: steps >= 1, lr > 0 and radius > 0, got"):
        tune.Tuning(**bad)


@pytest.mark.slow
def test_the_search_tunes_each_best_candidate_in_the_same_call_and_renders_it_again():
    G, v = generator()
    y = target()
    search = pulse.Search(restarts=2, steps=20)
    plain = pulse.restore(G, v, y, OP, key=jax.random.key(0), search=search)
    tuned = pulse.restore(G, v, y, OP, key=jax.random.key(0), search=search, tuning=TUNING)
    rows = jnp.arange(2)
    assert bool(tuned.tuned["improved"].all()) and (tuned.stage[rows, tuned.best_index] == 1).all()
    assert bool((tuned.lr_mse.min(axis=1) < 0.9 * plain.lr_mse.min(axis=1)).all()), (tuned.lr_mse, plain.lr_mse)
    np.testing.assert_array_equal(tuned.lr_mse[rows, 1 - tuned.best_index], plain.lr_mse[rows, 1 - tuned.best_index])
    np.testing.assert_allclose(candidates.render(G, v, tuned), tuned.images, atol=2e-5)
    np.testing.assert_allclose(degrade.observed_mse(OP, tuned.best, y), tuned.lr_mse.min(axis=1), rtol=1e-4)


@pytest.mark.slow
def test_a_known_blur_width_is_recovered_by_the_joint_search():
    G, v = generator()
    p = pivots(7)
    hr, _ = G.apply(v, p["latents"], train=False, noise=p["noise"])
    down = degrade.Downsample(2)
    y = down(degrade.GaussianBlur(1.5, radius=9)(hr.astype(jnp.float32)))
    op = degrade.chain(degrade.UnknownBlur(jnp.float32(0.8)), down)
    res = pulse.restore(G, v, y, op, key=jax.random.key(0), search=pulse.Search(restarts=4, steps=100))
    (width,) = res.estimates  # [B, R]
    best = width[jnp.arange(2), res.best_index]
    assert bool((jnp.abs(best - 1.5) < 0.3).all()), (best, res.lr_mse)
