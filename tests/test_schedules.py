"""The learning-rate schedule against the rates its docstring promises, step by step."""

import numpy as np
import pytest
import tf_keras

from spartan_tf.schedules import WarmupSchedule


def rates(schedule, steps):
    return np.array([float(schedule(step)) for step in range(steps)])


def test_linear_decay_without_warmup_reaches_zero_at_the_end():
    np.testing.assert_allclose(rates(WarmupSchedule(1e-3, 4), 5), [1e-3, 0.75e-3, 0.5e-3, 0.25e-3, 0.0], atol=1e-9)


def test_warmup_then_linear_decay():
    # 2 warm-up steps (0.5, 1.0 of the peak), then (10 - t) / 8 of it
    expected = [0.5, 1.0] + [(10 - t) / 8 for t in range(2, 10)]
    np.testing.assert_allclose(rates(WarmupSchedule(2.0, 10, warmup_steps=2), 10), 2.0 * np.array(expected), rtol=1e-6)


def test_warmup_then_constant():
    np.testing.assert_allclose(rates(WarmupSchedule(1e-2, 10, warmup_steps=4, decay="constant"), 7),
                               [2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2, 1e-2], rtol=1e-6)


def test_config_round_trip_and_registered_name():
    schedule = WarmupSchedule(3e-3, 100, warmup_steps=10, decay="constant")
    clone = tf_keras.optimizers.schedules.deserialize(tf_keras.optimizers.schedules.serialize(schedule))
    assert isinstance(clone, WarmupSchedule) and clone.get_config() == schedule.get_config()
    np.testing.assert_allclose(rates(clone, 20), rates(schedule, 20))


@pytest.mark.parametrize("kwargs,message", [({"decay": "cosine"}, "decay"), ({"warmup_steps": 10}, "warmup_steps")])
def test_rejects_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WarmupSchedule(1e-3, 10, **kwargs)
