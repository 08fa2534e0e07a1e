"""The training optimizer (spartan_tf.training.make_optimizer): Adam, gradient clipping, weight decay,
against Adam's update written out in NumPy."""

import numpy as np
import tensorflow as tf

from spartan_tf.training import make_optimizer

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # tf_keras Adam's defaults


def numpy_adam(start, gradients, learning_rate):
    """The variable after Adam steps on ``gradients`` (one array per step), as tf_keras computes them."""
    value, m, v = start.astype(np.float64), np.zeros_like(start), np.zeros_like(start)
    for step, gradient in enumerate(gradients, start=1):
        m = BETA_1 * m + (1 - BETA_1) * gradient
        v = BETA_2 * v + (1 - BETA_2) * gradient ** 2
        rate = learning_rate * np.sqrt(1 - BETA_2 ** step) / (1 - BETA_1 ** step)
        value = value - rate * m / (np.sqrt(v) + EPSILON)
    return value


def run_steps(optimizer, start, gradients):
    variable = tf.Variable(start, dtype=tf.float32)
    for gradient in gradients:
        optimizer.apply_gradients([(tf.constant(gradient, tf.float32), variable)])
    return variable.numpy()


def test_clip_norm_scales_each_gradient_down_to_the_global_norm():
    start = np.array([1.0, -2.0, 0.5])
    direction = np.array([0.6, 0.0, -0.8])  # unit norm
    gradients = [10.0 * direction, 0.5 * direction]  # norms 10 and 0.5: only the first is clipped, to 1
    clipped = run_steps(make_optimizer(0.1, clip_norm=1.0), start, gradients)
    np.testing.assert_allclose(clipped, numpy_adam(start, [direction, 0.5 * direction], 0.1), rtol=1e-5)
    unclipped = run_steps(make_optimizer(0.1), start, gradients)
    np.testing.assert_allclose(unclipped, numpy_adam(start, gradients, 0.1), rtol=1e-5)
    assert not np.allclose(clipped, unclipped, rtol=1e-3)


def test_weight_decay_shrinks_every_variable_but_the_excluded_by_rate_times_decay():
    decayed, kept = tf.Variable([2.0, -4.0]), tf.Variable([3.0])
    optimizer = make_optimizer(0.01, weight_decay=5.0, not_decayed=[kept])
    zero = [(tf.zeros([2]), decayed), (tf.zeros([1]), kept)]  # Adam's own step is 0 on a zero gradient
    optimizer.apply_gradients(zero)
    np.testing.assert_allclose(decayed.numpy(), [2.0 * 0.95, -4.0 * 0.95], rtol=1e-6)
    np.testing.assert_array_equal(kept.numpy(), [3.0])
