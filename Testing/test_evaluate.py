"""Evaluation building blocks: metrics equal the reference libraries, folds are stratified
and disjoint by patient, tables are well formed."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from ImmunoDiffLib.evaluate import (
    bootstrap,
    c_index,
    classification_metrics,
    load_folds,
    make_folds,
    mean_sd,
    save_folds,
    write_table,
)

LABELS = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0])
PROBS = np.array([0.9, 0.2, 0.6, 0.4, 0.1, 0.3, 0.8, 0.55, 0.2, 0.1, 0.7, 0.45])


def test_classification_metrics_equal_scikit_learn_by_hand():
    metrics = classification_metrics(LABELS, PROBS)
    predicted = (PROBS >= 0.5).astype(int)  # TP 3, FP 2, FN 1, TN 6
    assert metrics["precision"] == pytest.approx(3 / 5)
    assert metrics["recall"] == pytest.approx(3 / 4)
    assert metrics["f1"] == pytest.approx(f1_score(LABELS, predicted))
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 6 / 8) / 2)
    assert metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(LABELS,
                                                                                 predicted))
    assert metrics["auc"] == pytest.approx(roc_auc_score(LABELS, PROBS))
    assert np.isnan(classification_metrics([0, 0], [0.1, 0.7])["auc"])


def test_c_index_equals_scikit_survival_and_a_hand_count():
    from sksurv.metrics import concordance_index_censored

    time = np.array([2.0, 5.0, 3.0, 8.0])
    event = np.array([1, 1, 0, 1])
    risk = np.array([0.9, 0.3, 0.5, 0.1])
    # comparable pairs (earlier time is an event): (0,1) (0,2) (0,3) (1,3): all concordant
    assert c_index(time, event, risk) == 1.0
    assert c_index(time, event, -risk) == 0.0
    reference = concordance_index_censored(event.astype(bool), time, risk * 0 + [1, 2, 2, 0])
    assert c_index(time, event, [1, 2, 2, 0]) == pytest.approx(reference[0])


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible():
    def auc(labels, probabilities):
        return classification_metrics(labels, probabilities)["auc"]

    first = bootstrap(auc, LABELS, PROBS, repeats=300, seed=1)
    second = bootstrap(auc, LABELS, PROBS, repeats=300, seed=1)
    assert first == second
    assert first.low <= first.estimate <= first.high and first.high - first.low > 0.05
    assert str(first).startswith(f"{first.estimate:.2f} [")


def test_folds_are_stratified_disjoint_and_cover_every_patient(tmp_path):
    ids = [f"P{i:02d}" for i in range(40)]
    labels = np.array([1] * 10 + [0] * 30)
    folds = make_folds(ids, labels, 5, seed=0)
    tested = [pid for fold in folds for pid in fold["test"]]
    assert sorted(tested) == ids  # every patient tested exactly once
    for fold in folds:
        assert not set(fold["train"]) & set(fold["test"])
        assert sum(labels[ids.index(p)] for p in fold["test"]) == 2  # 10 responders / 5
    assert load_folds(save_folds(folds, tmp_path / "folds.json")) == folds
    assert make_folds(ids, labels, 5, seed=0) == folds
    with pytest.raises(ValueError, match="at least 5 patients of each class"):
        make_folds(ids[:8], [1, 1, 0, 0, 0, 0, 0, 0], 5)
    with pytest.raises(ValueError, match="unique"):
        make_folds(["A", "A"], [0, 1], 2)


def test_tables_are_well_formed_markdown_and_csv(tmp_path):
    rows = [{"method": "ImmunoDiff", "balanced accuracy": mean_sd([0.7, 0.8]), "AUC": 0.75},
            {"method": "ResNet-50", "balanced accuracy": mean_sd([0.5, 0.6]), "AUC": 0.05}]
    markdown, table = write_table(rows, ["method", "balanced accuracy", "AUC"],
                                  tmp_path / "table1", "Table 1")
    lines = markdown.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "| method | balanced accuracy | AUC |"
    assert lines[4] == "| ImmunoDiff | 0.75 ± 0.07 | 0.75 |"
    assert all(line.count("|") == 4 for line in lines[2:])
    assert table.read_text(encoding="utf-8").splitlines()[2] == "ResNet-50,0.55 ± 0.07,0.0500"
