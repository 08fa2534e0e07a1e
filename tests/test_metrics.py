"""Metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from spartan_tf.metrics import compute_metrics
from spartan_tf.tasks import custom_task, get_task


def logits_for(classes, num_classes=2):
    """Logits whose argmax is ``classes``."""
    out = np.zeros((len(classes), num_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


# Binary confusion matrix used below (labels vs predictions, 10 examples):
#   TP = 4 (1->1), FN = 1 (1->0), FP = 2 (0->1), TN = 3 (0->0)
LABELS = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
PREDS = [1, 1, 1, 1, 0, 1, 1, 0, 0, 0]


def test_mrpc_f1_and_accuracy_by_hand():
    # precision 4/6, recall 4/5 -> F1 = 2*4 / (2*4 + 2 + 1) = 8/11; accuracy (4+3)/10
    result = compute_metrics(get_task("mrpc"), logits_for(PREDS), LABELS)
    assert list(result) == ["f1", "accuracy"]
    assert result["f1"] == pytest.approx(8 / 11)
    assert result["accuracy"] == pytest.approx(0.7)


def test_cola_matthews_by_hand():
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (12 - 2) / sqrt(6*5*5*4)
    result = compute_metrics(get_task("cola"), logits_for(PREDS), LABELS)
    assert result == {"matthews_corrcoef": pytest.approx(10 / math.sqrt(600))}


def test_mnli_accuracy_uses_argmax_of_logits():
    logits = np.array([[2.0, 1.0, 0.0], [0.1, 0.3, 0.2], [-1.0, -2.0, 5.0], [3.0, 0.0, 0.0]])
    result = compute_metrics(get_task("mnli"), logits, [0, 1, 2, 2])  # last one wrong
    assert result == {"accuracy": pytest.approx(0.75)}


def test_custom_macro_f1_by_hand():
    # class 0: P=1/1 R=1/2 F1=2/3; class 1: P=1/2 R=1/1 F1=2/3; class 2: P=1 R=1 F1=1 -> mean 7/9
    task = custom_task(["a", "b", "c"], "classification")
    result = compute_metrics(task, logits_for([0, 1, 1, 2], 3), [0, 0, 1, 2])
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["f1_macro"] == pytest.approx(7 / 9)


def test_stsb_pearson_and_spearman_by_hand():
    # labels 1,2,3,4 (mean 2.5, deviations -1.5 -0.5 0.5 1.5); scores 1,3,2,4 (same mean and spread)
    # pearson = sum(dx*dy) / sum(dx^2) = (2.25 - 0.25 - 0.25 + 2.25) / 5 = 0.8
    # spearman on ranks (identical to values here) = 1 - 6*sum(d^2) / (n(n^2-1)) = 1 - 6*2/60 = 0.8
    labels = [1.0, 2.0, 3.0, 4.0]
    for scores in ([1.0, 3.0, 2.0, 4.0], [[1.0], [3.0], [2.0], [4.0]]):
        result = compute_metrics(get_task("stsb"), np.array(scores), labels)
        assert list(result) == ["pearson", "spearmanr"]
        assert result["pearson"] == pytest.approx(0.8)
        assert result["spearmanr"] == pytest.approx(0.8)


def test_spearman_differs_from_pearson_for_monotone_nonlinear_scores():
    labels = [1.0, 2.0, 3.0, 4.0]
    result = compute_metrics(get_task("stsb"), np.array([1.0, 2.0, 3.0, 100.0]), labels)
    assert result["spearmanr"] == pytest.approx(1.0)
    assert result["pearson"] < 0.9


@pytest.mark.parametrize("task_name, predictions", [
    ("qnli", np.zeros((4, 3))),     # wrong number of classes
    ("qnli", np.zeros(4)),          # class ids instead of logits
    ("qnli", np.zeros((3, 2))),     # wrong number of rows
    ("stsb", np.zeros((4, 2))),
])
def test_shape_mismatch_is_rejected(task_name, predictions):
    with pytest.raises(ValueError, match="expected"):
        compute_metrics(get_task(task_name), predictions, [0, 1, 0, 1])
