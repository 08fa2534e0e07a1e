"""What a task is: its name, whether it predicts classes or a score, its class names, its metrics.

GLUE class names and their order are those of tensorflow-datasets' ``glue/<task>`` ClassLabel, so a
tfds integer label and a GLUE TSV label string ("entailment", or "0"/"1") give the same index.
How the files of a task are laid out is in :mod:`spartan_tf.data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from spartan_tf.errors import SpartanError

CLASSIFICATION = "classification"
REGRESSION = "regression"
PROBLEM_TYPES = (CLASSIFICATION, REGRESSION)


@dataclass(frozen=True)
class TaskSpec:
    """A task: ``label_names`` in label-index order (``()`` for regression); metric_names[0] is primary."""

    name: str
    problem_type: str
    label_names: tuple[str, ...]
    metric_names: tuple[str, ...]

    @property
    def num_outputs(self) -> int:
        """Width of the model output: one logit per class, or 1 score for regression."""
        return len(self.label_names) if self.problem_type == CLASSIFICATION else 1

    @property
    def is_regression(self) -> bool:
        return self.problem_type == REGRESSION


GLUE_TASK_NAMES = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")

_GLUE_TASKS = {
    task.name: task
    for task in (
        TaskSpec("cola", CLASSIFICATION, ("unacceptable", "acceptable"), ("matthews_corrcoef",)),
        TaskSpec("sst2", CLASSIFICATION, ("negative", "positive"), ("accuracy",)),
        TaskSpec("mrpc", CLASSIFICATION, ("not_equivalent", "equivalent"), ("f1", "accuracy")),
        TaskSpec("stsb", REGRESSION, (), ("pearson", "spearmanr")),
        TaskSpec("qqp", CLASSIFICATION, ("not_duplicate", "duplicate"), ("f1", "accuracy")),
        TaskSpec("mnli", CLASSIFICATION, ("entailment", "neutral", "contradiction"), ("accuracy",)),
        TaskSpec("qnli", CLASSIFICATION, ("entailment", "not_entailment"), ("accuracy",)),
        TaskSpec("rte", CLASSIFICATION, ("entailment", "not_entailment"), ("accuracy",)),
        TaskSpec("wnli", CLASSIFICATION, ("not_entailment", "entailment"), ("accuracy",)),
    )
}


def get_task(name: str) -> TaskSpec:
    """The GLUE task called ``name`` (case-insensitive, e.g. "qnli" or "SST2")."""
    task = _GLUE_TASKS.get(name.lower())
    if task is None:
        raise SpartanError(f"unknown task {name!r}; expected one of: {', '.join(GLUE_TASK_NAMES)}, or custom")
    return task


def custom_task(label_names: Sequence[str] | None, problem_type: str) -> TaskSpec:
    """A user-defined task. Classification needs >= 2 distinct label names; regression takes none.

    Metrics: accuracy then macro F1 for classification; pearson then spearmanr for regression.
    """
    if problem_type not in PROBLEM_TYPES:
        raise SpartanError(f"unknown problem type {problem_type!r}; expected one of: {', '.join(PROBLEM_TYPES)}")
    if problem_type == REGRESSION:
        if label_names:
            raise SpartanError(f"a regression task has no label names, got {list(label_names)}")
        return TaskSpec("custom", REGRESSION, (), ("pearson", "spearmanr"))
    names = tuple(label_names or ())
    if len(names) < 2 or len(set(names)) != len(names):
        raise SpartanError(f"a classification task needs at least 2 distinct label names, got {list(names)}")
    return TaskSpec("custom", CLASSIFICATION, names, ("accuracy", "f1_macro"))
