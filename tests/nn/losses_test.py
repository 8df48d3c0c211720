import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastgan_jax.nn import losses
from fastgan_jax.nn.layers import nearest_resize

KEY = jax.random.key(0)


def test_hinge_losses_by_hand():
    # Logits far enough from the margin make the hinge exact; in between it is
    # the margin U(0.8, 1) minus the logit.
    assert losses.d_real_hinge(key=KEY, logits=jnp.full((50,), 1.5)) == 0
    assert losses.d_fake_hinge(key=KEY, logits=jnp.full((50,), -1.5)) == 0
    real = losses.d_real_hinge(key=KEY, logits=jnp.full((5000,), -1.0))
    assert 1.89 < real < 1.91  # mean of 1 + U(0.8, 1)
    fake = losses.d_fake_hinge(key=KEY, logits=jnp.full((5000,), 0.5))
    assert 1.39 < fake < 1.41
    mixed = losses.d_real_hinge(key=KEY, logits=jnp.array([2.0, -1.0]))
    assert 0.9 <= mixed <= 1.0  # (0 + (1 + m)) / 2 with m in [0.8, 1]
    assert losses.g_hinge(logits=jnp.array([1.0, -3.0, 0.5])) == pytest.approx(0.5)


def test_distances_by_hand():
    x, y = jnp.zeros((2, 4, 4, 3)), jnp.full((2, 4, 4, 3), 0.5).at[1].set(-1.0)
    np.testing.assert_allclose(losses.l1_distance(x, y), [0.5, 1.0])
    np.testing.assert_allclose(losses.mse_distance(x, y), [0.25, 1.0])


@pytest.mark.parametrize("part", [0, 1, 2, 3])
def test_reconstruction_targets_the_right_quadrant(part):
    # A 16x16 image whose quadrant q holds the value q / 4; decoders at 8x8.
    q = np.zeros((16, 16), np.float32)
    q[:8, 8:], q[8:, :8], q[8:, 8:] = 1, 2, 3
    img = jnp.asarray(np.broadcast_to((q / 4)[None, :, :, None], (2, 16, 16, 3)))
    small = jax.image.resize(img, (2, 8, 8, 3), "nearest")
    rec_part = jnp.full((2, 8, 8, 3), part / 4)
    loss = losses.reconstruction(images=img, recs=(small, small, rec_part), part=part, distance=losses.l1_distance)
    assert loss == pytest.approx(0.0, abs=1e-6)
    wrong = losses.reconstruction(images=img, recs=(small, small, rec_part), part=(part + 1) % 4)
    assert wrong > 0.2


def test_reconstruction_sums_over_the_batch():
    img = jnp.zeros((3, 16, 16, 3))
    rec = jnp.full((3, 8, 8, 3), 0.1)
    loss = losses.reconstruction(images=img, recs=(rec, rec, rec), part=0, distance=losses.mse_distance)
    assert loss == pytest.approx(3 * 3 * 0.01, rel=1e-5)


@pytest.mark.slow
def test_lpips_reconstruction_computes_the_real_features_once_and_without_backward():
    from fastgan_jax.metrics.lpips import lpips, lpips_variables

    variables = lpips_variables("vgg")
    img = jax.random.uniform(KEY, (2, 32, 32, 3), minval=-1, maxval=1)
    recs = tuple(jax.random.uniform(jax.random.key(i), (2, 16, 16, 3), minval=-1, maxval=1) for i in (1, 2, 3))
    whole, quarter = nearest_resize(img, 16), nearest_resize(losses.crop_part(img, 1), 16)

    def ours(recs):
        def distance(x, y, y_index):
            return lpips(variables, x, y, "vgg", y_index=y_index)

        return losses.reconstruction(images=img, recs=recs, part=1, distance=distance)

    def every_target(recs, targets):  # the official's cost: 3 targets (2 equal) in the backward pass too
        return jnp.sum(lpips(variables, jnp.concatenate(recs), targets))

    targets = jnp.concatenate([whole, whole, quarter])
    np.testing.assert_allclose(ours(recs), every_target(recs, targets), rtol=1e-5)
    ours_flops = jax.jit(jax.grad(ours)).lower(recs).compile().cost_analysis()["flops"]
    grad_both = jax.jit(jax.grad(every_target, argnums=(0, 1)))
    every_flops = grad_both.lower(recs, targets).compile().cost_analysis()["flops"]
    # Backbone work in image passes: ours 3 forward + 3 backward (about 2 forwards each) + 2 forward = 11,
    # against 6 forward + 6 backward = 18.
    assert ours_flops < 0.7 * every_flops, (ours_flops, every_flops)
