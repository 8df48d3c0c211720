"""The robust mode for inputs of unknown origin (`pulse.ROBUST`, `degrade.blind`) and the fidelity knob
(`candidates.Fidelity`), on the tiny generator."""

import dataclasses
import functools

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastgan_jax.nn.models import noise_shapes
from fastgan_jax.sr import candidates, degrade, ilo, pulse

KEY = jax.random.key(3)


@functools.cache
def observed():
    """Two 16 px observations (x4) of generator images, each JPEG-like: blocks of +-6/255 added."""
    G, v = helpers.tiny_generator()
    z = pulse._project(jax.random.normal(jax.random.key(5), (2, G.nz)))
    noise = [jax.random.normal(jax.random.key(9), s) for s in noise_shapes(64, 2)]
    hr, _ = G.apply(v, z, noise=noise)
    blocks = jnp.repeat(
        jnp.repeat(jax.random.choice(jax.random.key(2), jnp.array([-1.0, 1.0]), (2, 4, 4, 1)), 4, 1), 4, 2
    )
    return jnp.clip(degrade.Downsample(4)(hr) + 2 * 6 / 255 * blocks, -1, 1)


def robust(restarts=3, steps=6, **kw):
    G, v = helpers.tiny_generator()
    search = pulse.Search(**{**vars(pulse.ROBUST), "restarts": restarts, "steps": steps})
    layers = ilo.Layers(resolutions=(8, 16), radii=pulse.ROBUST_LAYERS.radii[:1], steps=3, lr=0.05)
    op = degrade.blind(degrade.Downsample(4))
    return jax.device_get(pulse.restore(G, v, observed(), op, key=KEY, search=search, layers=layers, **kw))


def test_multiscale_l1_is_l1_at_each_halving_of_the_observation():
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    y = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-1, maxval=1)
    op = degrade.Downsample(4)
    pred = op(x)
    want = [
        jnp.mean(jnp.abs(degrade.Downsample(f)(pred) - degrade.Downsample(f)(y)) / 2, axis=(1, 2, 3)) for f in (1, 2, 4)
    ]
    np.testing.assert_allclose(degrade.observed_multiscale_l1(op, x, y), jnp.mean(jnp.stack(want), 0), rtol=1e-5)
    # Only the known pixels count, at every level (here the lower half of the rows).
    known = jnp.ones((2, 8, 8)).at[:, :4].set(0)
    masked = degrade.chain(op, degrade.Mask(known))
    levels = [jnp.mean(jnp.abs(degrade.Downsample(f)(pred - y))[:, 4 // f :] / 2, axis=(1, 2, 3)) for f in (1, 2, 4)]
    np.testing.assert_allclose(degrade.observed_multiscale_l1(masked, x, y), sum(levels) / 3, rtol=1e-5)
    # A 4 px observation has two levels (4 and 2 px).
    small = degrade.observed_multiscale_l1(degrade.Downsample(8), x, y[:, :4, :4])
    two = [
        jnp.mean(jnp.abs(degrade.Downsample(f)(degrade.Downsample(8)(x) - y[:, :4, :4])) / 2, axis=(1, 2, 3))
        for f in (1, 2)
    ]
    np.testing.assert_allclose(small, sum(two) / 2, rtol=1e-5)


def test_blind_puts_a_blur_of_unknown_width_before_the_downsampling():
    op = degrade.blind(degrade.chain(degrade.Downsample(8), degrade.Grayscale()))
    assert isinstance(op.ops[0], degrade.UnknownBlur) and isinstance(op.ops[1], degrade.Downsample)
    (sigma,) = degrade.unknowns(op)
    assert float(sigma) == 2.0 and op.ops[0].hi == 6.0
    assert degrade.blind(degrade.Grayscale()) == degrade.Grayscale()  # nothing to blur before
    blurred = degrade.chain(degrade.GaussianBlur(1.0), degrade.Downsample(4))
    assert degrade.blind(blurred) is blurred  # the user's blur is kept as given


@pytest.mark.slow
def test_robust_mode_is_one_compiled_call_that_estimates_the_blur_and_stops_at_the_floor():
    res = robust()
    assert res.images.shape == (2, 3, 64, 64, 3) and res.score.shape == (2, 3)
    (sigma,) = res.estimates
    assert sigma.shape == (2, 3) and np.all((sigma >= 0.3) & (sigma <= 3.0))
    np.testing.assert_array_equal(res.best_index, np.argmin(res.score, axis=1))
    # lr_mse is the MSE of the returned images under the candidates' own blur estimates.
    op = degrade.with_unknowns(degrade.blind(degrade.Downsample(4)), (jnp.asarray(sigma[:, 0]),))
    np.testing.assert_allclose(res.lr_mse[:, 0], degrade.observed_mse(op, res.images[:, 0], observed()), rtol=1e-4)
    assert np.all(res.success == (res.lr_mse <= pulse.ROBUST.eps + pulse.ROBUST.floor))
    # A floor above every fit: the first step is kept, each candidate's score is 0.
    G, v = helpers.tiny_generator()
    high = pulse.Search(restarts=2, steps=4, loss="robust", floor=1.0)
    first = pulse.restore(G, v, observed(), degrade.Downsample(4), key=KEY, search=high)
    np.testing.assert_array_equal(first.score, 0)
    one_step = pulse.restore(G, v, observed(), degrade.Downsample(4), key=KEY, search=pulse.Search(restarts=2, steps=1))
    np.testing.assert_allclose(first.images, one_step.images, atol=1e-6)


@pytest.mark.slow
def test_robust_search_fits_better_than_its_start_and_renders_again():
    res = robust(steps=10)
    start = robust(steps=1)
    assert np.all(res.score.min(axis=1) <= start.score.min(axis=1) + 1e-7), (res.score, start.score)
    np.testing.assert_allclose(candidates.render(*helpers.tiny_generator(), res), res.images, atol=1e-5)


def test_fidelity_blends_the_best_candidate_with_the_mean_of_the_k_best():
    images = jax.random.uniform(jax.random.key(0), (2, 4, 8, 8, 3), minval=-1, maxval=1)
    score = jnp.array([[0.3, 0.1, 0.2, 0.4], [0.0, 0.0, 0.5, 0.1]])
    best = images[jnp.arange(2), jnp.array([1, 0])]
    np.testing.assert_array_equal(candidates.estimate(images, score, candidates.Fidelity()), best)  # weight 0: the best
    two = candidates.estimate(images, score, candidates.Fidelity(weight=1.0, k=2))
    np.testing.assert_allclose(two[0], (images[0, 1] + images[0, 2]) / 2, atol=1e-6)
    np.testing.assert_allclose(two[1], (images[1, 0] + images[1, 1]) / 2, atol=1e-6)  # ties: restart order
    half = candidates.estimate(images, score, candidates.Fidelity(weight=0.5))
    np.testing.assert_allclose(half, 0.5 * best + 0.5 * images.mean(axis=1), atol=1e-6)
    same = jnp.repeat(images[:, :1], 4, axis=1)  # the mean of identical candidates is each of them
    np.testing.assert_allclose(
        candidates.estimate(same, score, candidates.Fidelity(weight=1.0)), images[:, 0], atol=1e-6
    )
    observed = jax.random.uniform(jax.random.key(1), (2, 2, 2, 3), minval=-1, maxval=1)
    up = candidates.upsampled(observed, 8)
    assert up.shape == (2, 8, 8, 3) and float(jnp.abs(up).max()) <= 1
    np.testing.assert_allclose(up[:, ::4, ::4][:, :1, :1], observed[:, :1, :1], atol=0.3)  # near its pixels
    quarter = candidates.estimate(images, score, candidates.Fidelity(weight=0.5, input=0.25), observed)
    np.testing.assert_allclose(quarter, 0.75 * half + 0.25 * up, atol=1e-6)
    np.testing.assert_allclose(candidates.estimate(images, score, candidates.Fidelity(input=1), observed), up)
    with pytest.raises(ValueError, match="needs the observation"):
        candidates.estimate(images, score, candidates.Fidelity(input=0.5))
    bads = [({"weight": 1.5}, "weight must be in"), ({"k": -1}, "k must be >= 0"), ({"input": -0.1}, "share")]
    for bad, match in bads:
        with pytest.raises(ValueError, match=match):
            candidates.Fidelity(**bad)


@pytest.mark.slow
def test_the_result_records_its_fidelity_and_renders_its_estimate_exactly():
    knob = candidates.Fidelity(weight=0.7, k=2)
    res = robust(fidelity=knob)
    assert res.fidelity == knob
    again = candidates.estimate(candidates.render(*helpers.tiny_generator(), res), res.score, res.fidelity)
    np.testing.assert_allclose(again, res.estimate, atol=1e-5)
    assert robust().fidelity == pulse.ROBUST_FIDELITY  # the robust search's default knob


def test_the_default_knob_is_decided_by_the_operator():
    rgb, gray = jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 64, 64, 1))
    x4 = degrade.blind(degrade.Downsample(4))
    masked = degrade.blind(degrade.chain(degrade.Downsample(4), degrade.Mask(jnp.ones((1, 16, 16), bool))))
    without_input = dataclasses.replace(pulse.ROBUST_FIDELITY, input=0.0)
    assert pulse.fidelity_for(pulse.ROBUST, rgb, x4) == pulse.ROBUST_FIDELITY
    assert pulse.fidelity_for(pulse.ROBUST, rgb, masked) == without_input  # whatever flag made the mask
    assert pulse.fidelity_for(pulse.ROBUST, gray, degrade.Grayscale()) == without_input
    assert pulse.fidelity_for(pulse.ROBUST, gray, degrade.Grayscale(), {"k": 8}) == dataclasses.replace(
        without_input, k=8
    )
    assert pulse.fidelity_for(pulse.ROBUST, rgb, x4, {"weight": 0.5}).weight == 0.5
    assert pulse.fidelity_for(pulse.Search(), rgb, degrade.Downsample(4)) == candidates.Fidelity()  # the best
    knob = candidates.Fidelity(input=0.5)
    assert pulse.fidelity_for(pulse.ROBUST, gray, degrade.Grayscale(), knob) is knob  # asked for: restore refuses


@pytest.mark.slow
def test_a_share_of_the_input_blends_its_upsampling_and_needs_an_rgb_input_without_a_mask():
    G, variables = helpers.tiny_generator()
    y = jax.random.uniform(jax.random.key(2), (1, 16, 16, 3), minval=-1, maxval=1)
    search = pulse.Search(restarts=2, steps=2)
    key = jax.random.key(0)
    plain = pulse.upscale(G, variables, y, key=key, search=search)
    knob = candidates.Fidelity(input=0.5)
    half = pulse.upscale(G, variables, y, key=key, search=search, fidelity=knob)
    np.testing.assert_allclose(half.estimate, 0.5 * plain.best + 0.5 * candidates.upsampled(y, 64), atol=1e-5)
    known = jnp.ones((1, 64, 64), bool)
    with pytest.raises(ValueError, match="every pixel known"):
        pulse.restore(
            G, variables, jnp.zeros((1, 64, 64, 3)), degrade.Mask(known), key=key, search=search, fidelity=knob
        )
    with pytest.raises(ValueError, match="RGB"):
        pulse.restore(
            G, variables, jnp.zeros((1, 64, 64, 1)), degrade.Grayscale(), key=key, search=search, fidelity=knob
        )


def test_bad_robust_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="loss must be one of"):
        pulse.Search(loss="huber")
    with pytest.raises(ValueError, match="floor must be >= 0"):
        pulse.Search(floor=-1.0)
