"""Resumable training: a checkpoint of everything a killed run needs, and SIGINT that stops cleanly.

``models/<task>/resume/`` holds, while a run is unfinished:
    ckpt-*            task weights, optimizer state (moments, step count), epoch and step reached
    run.json          the settings of the run (a resume must use the same ones)
    history.json      dev metrics and timings of the epochs already finished
The data position is the (epoch, step) pair: each epoch's order is fixed by (seed, epoch), so a
resumed run skips the batches already seen and sees the rest in the same order. The directory is
removed once the finished model is written.

On a cluster (MultiWorkerMirroredStrategy) every worker must save, but only the chief writes there:
the others save to a private temporary directory, deleted when the run ends, and resume from the
chief's checkpoint like everyone else.
"""

import json
import shutil
import signal
import tempfile
from pathlib import Path

import tensorflow as tf
import tf_keras

from spartan_tf.artifacts import RESUME_DIR, atomic_write_json
from spartan_tf.errors import SpartanError


class TrainingState:
    """The resume checkpoint of one run in ``out_dir/resume``; ``chief`` is False on other cluster workers."""

    def __init__(self, out_dir, model, settings: dict, chief: bool = True):
        self.directory = Path(out_dir) / RESUME_DIR
        self.settings = settings
        self.chief = chief
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # epochs finished
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)  # steps finished in the current epoch
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=self.epoch, step=self.step)
        # A worker's private copy is deleted by remove(), or at exit if the run is interrupted.
        self._private = None if chief else tempfile.TemporaryDirectory(prefix="spartan-resume-worker-")
        write_directory = self.directory if chief else self._private.name
        self.manager = tf.train.CheckpointManager(checkpoint, str(write_directory), max_to_keep=1)
        self.history = []

    def restore(self) -> tuple[int, int]:
        """Load the last checkpoint; returns (epoch, step) to continue from."""
        saved = json.loads((self.directory / "run.json").read_text())
        changed = sorted(key for key in set(saved) | set(self.settings) if saved.get(key) != self.settings.get(key))
        if changed:
            shown = "; ".join(f"{key}: was {saved.get(key)!r}, now {self.settings.get(key)!r}" for key in changed)
            raise SpartanError(f"--resume: the run in {self.directory.parent} used other settings ({shown})")
        latest = tf.train.latest_checkpoint(str(self.directory))  # the chief's, on every worker
        self.manager.checkpoint.restore(latest).assert_existing_objects_matched()
        history_path = self.directory / "history.json"
        self.history = json.loads(history_path.read_text()) if history_path.is_file() else []
        return int(self.epoch.numpy()), int(self.step.numpy())

    def save(self, epoch: int, step: int):
        """Checkpoint after ``step`` steps of ``epoch`` (0-based); the files replace the previous ones."""
        if self.chief and not (self.directory / "run.json").is_file():
            atomic_write_json(self.directory / "run.json", self.settings)
        self.epoch.assign(epoch)
        self.step.assign(step)
        self.manager.save()

    def finish_epoch(self, epoch: int, record: dict):
        """Record a finished epoch's metrics, then checkpoint at the start of the next one."""
        self.history.append(record)
        if self.chief:
            atomic_write_json(self.directory / "history.json", self.history)
        self.save(epoch + 1, 0)

    def remove(self):
        """Delete what this process wrote: the resume point (chief) or its private copy (other workers)."""
        if self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        else:
            self._private.cleanup()


class StopRequest:
    """While active, SIGINT only sets ``requested``; training stops after the current step."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


class StepCheckpoint(tf_keras.callbacks.Callback):
    """Checkpoints every ``every`` steps; on a stop request, checkpoints and ends the epoch early.

    A request during an epoch's last step lets the epoch finish normally (it is then scored and
    checkpointed at its end), so a checkpoint never sits at the very end of an unscored epoch.
    """

    def __init__(self, state: TrainingState, stop: StopRequest, epoch: int, first_step: int, every: int,
                 steps_per_epoch: int):
        super().__init__()
        self.state, self.stop, self.epoch, self.every = state, stop, epoch, every
        self.first_step, self.steps_per_epoch = first_step, steps_per_epoch
        self.step = first_step

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.first_step + batch + 1
        if self.step >= self.steps_per_epoch:
            return
        if self.stop.requested or self.step % self.every == 0:
            self.state.save(self.epoch, self.step)
        if self.stop.requested:
            self.model.stop_training = True
