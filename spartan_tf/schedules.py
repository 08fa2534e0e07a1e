"""Learning-rate schedules: a linear warm-up, then linear decay to 0 or a constant rate."""

import tensorflow as tf
import tf_keras

SCHEDULES = ("linear", "constant")


@tf_keras.utils.register_keras_serializable(package="spartan_tf")
class WarmupSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate at optimizer step t (0-based):

        t < warmup_steps:  peak * (t + 1) / warmup_steps
        then "linear":     peak * (total_steps - t) / (total_steps - warmup_steps), reaching 0 at the end
             "constant":   peak
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="linear"):
        if decay not in SCHEDULES:
            raise ValueError(f"decay must be one of {SCHEDULES}, got {decay!r}")
        if not 0 <= warmup_steps < max(total_steps, 1):
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")
        self.peak, self.total_steps, self.warmup_steps, self.decay = peak, total_steps, warmup_steps, decay

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup = tf.cast(self.warmup_steps, tf.float32)
        rate = tf.constant(self.peak, tf.float32)
        if self.decay == "linear":
            remaining = tf.cast(self.total_steps, tf.float32) - step
            rate = rate * tf.clip_by_value(remaining / tf.maximum(tf.cast(self.total_steps, tf.float32) - warmup, 1.0),
                                           0.0, 1.0)
        if self.warmup_steps:
            rate = rate * tf.minimum((step + 1.0) / warmup, 1.0)
        return rate

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "decay": self.decay}
