"""Where a task's examples come from: GLUE TSVs in a local folder, tensorflow-datasets, or user files.

A source is recorded in the task config, so evaluation and conversion find the same dev data.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from spartan_tf import data
from spartan_tf.errors import SpartanError


@dataclass(frozen=True)
class DataSource:
    """kind: "glue_dir" (data_dir), "tfds", or "files" (train_file, eval_file; custom tasks)."""

    kind: str
    data_dir: str | None = None
    train_file: str | None = None
    eval_file: str | None = None

    def to_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, config: dict) -> "DataSource":
        return cls(**config)


def source_from_args(task_name: str, data_dir, train_file, eval_file) -> DataSource:
    """The source the training flags describe, with paths made absolute."""
    absolute = lambda path: str(Path(path).expanduser().resolve()) if path else None  # noqa: E731
    if task_name == "custom":
        if not train_file:
            raise SpartanError("--task custom needs --train-file (TSV, CSV or JSONL with text[, text_pair], label)")
        if not eval_file:
            raise SpartanError("--task custom needs --eval-file (same layout as --train-file)")
        return DataSource("files", train_file=absolute(train_file), eval_file=absolute(eval_file))
    if train_file:
        raise SpartanError("--train-file is for --task custom; GLUE tasks read --data-dir or tensorflow-datasets")
    if data_dir:
        return DataSource("glue_dir", data_dir=absolute(data_dir), eval_file=absolute(eval_file))
    return DataSource("tfds", eval_file=absolute(eval_file))


def read_split(task, source: DataSource, split: str):
    """Examples of ``split`` ("train" or "dev"); an eval_file, when set, replaces the dev split."""
    if split == "dev" and source.eval_file:
        if source.kind == "files":
            examples, _ = data.read_custom_file(source.eval_file, task.label_names or None, task.problem_type)
            return examples
        return data.read_task_file(task, source.eval_file)
    if source.kind == "files":
        examples, _ = data.read_custom_file(source.train_file, task.label_names or None, task.problem_type)
        return examples
    if source.kind == "glue_dir":
        return data.read_glue_split(task, source.data_dir, split)
    if source.kind == "tfds":
        return data.load_tfds_split(task, split)
    raise SpartanError(f"unknown data source kind {source.kind!r}")
