"""``immunodiff evaluate`` end to end on the 6-patient simulated cohort, every method with one
training step each: the tables, figures and folds it writes, and resuming a finished run."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from ImmunoDiffLib.calibration import expected_calibration_error
from ImmunoDiffLib.cohort import load_cohort
from ImmunoDiffLib.evaluate.config import DEMO
from ImmunoDiffLib.evaluate.store import pooled
from ImmunoDiffLib.evaluate.summary import table1_methods

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def evaluation(small_cohort, tmp_path_factory):
    from ImmunoDiffLib.evaluate.harness import run_evaluation

    config = replace(DEMO.scaled(0.005), n_folds=2, bootstrap_repeats=50, sampling_steps=2,
                     zero_shot_timesteps=2, anomaly_steps=2)
    output = tmp_path_factory.mktemp("evaluation")
    messages = []
    summary = run_evaluation(small_cohort, output, config,
                             progress=lambda f, m: messages.append((f, m)))
    return output, summary, config, messages


def _csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_folds_split_patients_disjointly_and_stratified(evaluation):
    output, summary, _, _ = evaluation
    folds = json.loads((output / "folds.json").read_text(encoding="utf-8"))
    tested = [pid for fold in folds for pid in fold["test"]]
    assert sorted(tested) == [f"SIM000{i}" for i in range(1, 7)]
    for fold in folds:
        assert not set(fold["train"]) & set(fold["test"])
    assert summary["patients"] == 6 and summary["responders"] == 2


def test_table1_has_every_method_with_metrics_in_range(evaluation, small_cohort):
    output, _, config, _ = evaluation
    rows = {row["method"]: row for row in _csv(output / "table1.csv")}
    assert list(rows) == table1_methods(config)
    assert len(rows) == 15  # ImmunoDiff, 4 networks x (with, without clinical), 6 references
    for row in rows.values():
        mean, sd = (float(v) for v in row["balanced accuracy"].split(" ± "))
        assert 0.0 <= mean <= 1.0 and sd >= 0.0
        assert row["AUC 95% CI"].count("[") == 1
    # the oracle reads the true follow-up: simulated responders' lesions shrank >= 35 % in
    # diameter, non-responders' at most 25 %, so its score ranks them perfectly (its
    # threshold, fitted on three training patients, need not be perfect)
    assert rows["Oracle (true follow-up)"]["AUC"] == "1.00 ± 0.00"
    # the ECE of the pooled out-of-fold probabilities, as the calibration module computes it
    truth = {c.patient_id: c.response for c in load_cohort(small_cohort)}
    folds = pooled(output, "ImmunoDiff")
    labels = [truth[p] for f in folds for p in f["patient_id"]]
    probability = [v for f in folds for v in f["probability"]]
    assert float(rows["ImmunoDiff"]["ECE"]) == pytest.approx(
        expected_calibration_error(labels, probability), abs=0.006)


def test_tables_2_and_3_and_figures(evaluation):
    output, summary, _, messages = evaluation
    survival = {row["method"]: row for row in _csv(output / "table2.csv")}
    assert list(survival)[0] == "Clinical only (Cox; reference)"  # the reference row first
    assert {"DDPM features", "ControlNet features", "ImmunoDiff"} <= set(survival)
    assert survival["ImmunoDiff"]["Δ c-index vs reference (paired 95% CI)"].count("[") == 1
    ablation = _csv(output / "table3.csv")
    assert [r["ablation"] for r in ablation] == ["Stage 1 only", "Stage 2 only",
                                                 "Stage 1 + 2 (ImmunoDiff)"]
    mmd = {}
    for row in ablation:
        ssim = float(row["SSIM"].split(" ± ")[0])
        # the unbiased MMD² estimate is finite but not bounded below by 0
        mmd[row["ablation"]] = float(row["MMD"].split(" ± ")[0])
        assert -1.0 <= ssim <= 1.0 and np.isfinite(mmd[row["ablation"]])
        assert row["same, true follow-up"] == "100 %"  # the shrink measure on the truth
    # the unconditional stage-1 synthesis is further from the true follow-ups than stage 2's
    assert mmd["Stage 1 only"] > mmd["Stage 1 + 2 (ImmunoDiff)"], mmd
    for name in ("roc.png", "kaplan_meier.png", "reliability.png"):
        with Image.open(output / name) as image:
            assert image.size[0] > 300 and image.size[1] > 300
    assert "Table 1" in (output / "table1.md").read_text(encoding="utf-8")
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert summary["table1"][0]["method"] == "ImmunoDiff"


def test_a_finished_run_resumes_without_retraining(evaluation, small_cohort):
    from ImmunoDiffLib.evaluate.harness import run_evaluation

    output, summary, config, _ = evaluation
    files = sorted((output / "predictions").rglob("fold_*.json"))
    assert len(files) == 2 * 15 + 2  # Table 1 methods and "Stage 2 only", two folds each
    before = {p: p.stat().st_mtime_ns for p in files}
    again = run_evaluation(small_cohort, output, config)
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert again["table1"] == summary["table1"]


def test_out_of_fold_predictions_are_probabilities(evaluation):
    output, _, _, _ = evaluation
    for path in (output / "predictions").rglob("fold_*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        probability = np.asarray(data["probability"])
        assert len(probability) == len(data["patient_id"]) == 3
        assert np.all((probability >= 0) & (probability <= 1)), path
