"""Task definitions: GLUE label order matches tensorflow-datasets, metrics, custom tasks."""

import pytest

from spartan_tf.errors import SpartanError
from spartan_tf.tasks import GLUE_TASK_NAMES, custom_task, get_task


def test_glue_label_names_and_order():
    assert get_task("cola").label_names == ("unacceptable", "acceptable")
    assert get_task("sst2").label_names == ("negative", "positive")
    assert get_task("mrpc").label_names == ("not_equivalent", "equivalent")
    assert get_task("qqp").label_names == ("not_duplicate", "duplicate")
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("qnli").label_names == ("entailment", "not_entailment")
    assert get_task("rte").label_names == ("entailment", "not_entailment")
    assert get_task("wnli").label_names == ("not_entailment", "entailment")
    stsb = get_task("stsb")
    assert (stsb.problem_type, stsb.label_names, stsb.num_outputs) == ("regression", (), 1)


def test_label_names_equal_tensorflow_datasets_class_labels(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    for name in GLUE_TASK_NAMES:
        label = tfds.builder(f"glue/{name}", data_dir=str(tmp_path)).info.features["label"]
        task = get_task(name)
        if task.problem_type == "regression":
            assert not hasattr(label, "names")
        else:
            assert tuple(label.names) == task.label_names, name


def test_metrics_primary_first():
    assert get_task("cola").metric_names == ("matthews_corrcoef",)
    assert get_task("mrpc").metric_names == ("f1", "accuracy")
    assert get_task("qqp").metric_names == ("f1", "accuracy")
    assert get_task("stsb").metric_names == ("pearson", "spearmanr")
    for name in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert get_task(name).metric_names == ("accuracy",)


def test_num_outputs_and_case_insensitive_lookup():
    assert get_task("MNLI").num_outputs == 3
    assert get_task("QNLI") == get_task("qnli")


def test_unknown_task_lists_valid_names():
    with pytest.raises(SpartanError, match="unknown task 'squad'.*cola.*wnli"):
        get_task("squad")


def test_custom_classification_and_regression():
    task = custom_task(["sport", "tech", "politics"], "classification")
    assert (task.name, task.label_names, task.num_outputs) == ("custom", ("sport", "tech", "politics"), 3)
    assert task.metric_names[0] == "accuracy"
    reg = custom_task(None, "regression")
    assert (reg.label_names, reg.num_outputs, reg.metric_names[0]) == ((), 1, "pearson")


@pytest.mark.parametrize("labels, problem_type, message", [
    (["only"], "classification", "at least 2 distinct"),
    (["a", "a"], "classification", "at least 2 distinct"),
    (None, "classification", "at least 2 distinct"),
    (["a", "b"], "regression", "no label names"),
    (["a", "b"], "ranking", "unknown problem type 'ranking'"),
])
def test_custom_task_rejects_bad_definitions(labels, problem_type, message):
    with pytest.raises(SpartanError, match=message):
        custom_task(labels, problem_type)
