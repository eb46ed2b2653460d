"""The machinery of a fair Table 1, on a cohort held in memory with fake fast methods: the
decision threshold chosen on the training folds, bootstrap CIs, leaving one background out,
learning curves and budgets, resuming and cancelling, Table 2's reference row and the fair
protocol's combined tables."""

import csv
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from ImmunoDiffLib.errors import SettingError
from ImmunoDiffLib.evaluate.budgets import (
    choose_budget,
    current_budgets,
    method_budget,
    parse_budgets,
    parse_curves,
    read_budgets_file,
    with_budgets,
)
from ImmunoDiffLib.evaluate.compute import Stopwatch
from ImmunoDiffLib.evaluate.config import DEMO, CurveSettings
from ImmunoDiffLib.evaluate.data import CohortTensors
from ImmunoDiffLib.evaluate.fair_protocol import run_fair_on
from ImmunoDiffLib.evaluate.folds import background_folds, inner_split, make_folds
from ImmunoDiffLib.evaluate.harness import Stage1, run_folds
from ImmunoDiffLib.evaluate.learning_curve import (
    CurveContext,
    applicable_curves,
    image_runner,
    run_learning_curves,
)
from ImmunoDiffLib.evaluate.methods import CLINICAL, Step, fold_steps
from ImmunoDiffLib.evaluate.metrics import (
    auc,
    balanced_accuracy,
    bootstrap,
    c_index_or_nan,
    classification_metrics,
)
from ImmunoDiffLib.evaluate.records import method_records
from ImmunoDiffLib.evaluate.store import PREDICTIONS
from ImmunoDiffLib.evaluate.summary import write_summary
from ImmunoDiffLib.evaluate.thresholds import decision_threshold
from ImmunoDiffLib.progress import Cancelled, Task

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
SHIFTED = "Shifted but perfectly ranking"
BACKGROUNDS = ("lung2", "totalseg_chest", "lidc")


def fake_cohort(n=60, seed=0, image_size=None):
    """(CohortTensors of n patients, {id: background}): a responder in three patients of ten
    on every background, clinical values, survival shorter for non-responders."""
    rng = np.random.default_rng(seed)
    labels = np.array([1 if i % 10 in (0, 4, 7) else 0 for i in range(n)])
    months = np.where(labels == 1, 30.0, 10.0) + rng.uniform(0, 8, n)
    batch = {"response": torch.tensor(labels, dtype=torch.float32),
             "survival_months": torch.tensor(months, dtype=torch.float32),
             "event": torch.tensor(rng.random(n) < 0.8, dtype=torch.float32),
             "clinical": {"labs": torch.tensor(rng.normal(size=(n, 3)) + labels[:, None] * 0.5,
                                               dtype=torch.float32)},
             "clinical_mask": {"labs": torch.zeros(n, 3)}}
    if image_size is not None:
        images = rng.normal(size=(n, 1, *image_size)) + labels[:, None, None, None, None]
        batch["baseline"] = torch.tensor(images, dtype=torch.float32)
    ids = [f"P{i:03d}" for i in range(n)]
    backgrounds = {pid: BACKGROUNDS[i // 3 % 3] for i, pid in enumerate(ids)}
    return CohortTensors(batch, ids, (3.0, 3.0, 2.0)), backgrounds


def shifted(labels, rng):
    """P(responder) in [0.6, 0.9], every responder above every non-responder."""
    return np.where(labels == 1, rng.uniform(0.8, 0.9, len(labels)),
                    rng.uniform(0.6, 0.7, len(labels)))


def shifted_step(seen=None):
    def run(context, task):
        clock = Stopwatch.started()
        rng = np.random.default_rng(len(context.fold["test"]))
        test, train = context.labels(context.test), context.labels(context.train)
        if seen is not None:
            seen.append(context.fold)
        probability = shifted(test, rng)
        context.save(SHIFTED, clock, probability, -probability, shifted(train, rng), steps=1)

    return Step(SHIFTED, [(PREDICTIONS, SHIFTED)], run)


def small_config(**changes):
    return replace(DEMO, n_folds=3, bootstrap_repeats=200, **changes)


def test_the_threshold_learned_on_training_folds_rescues_shifted_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 10)
    probability = shifted(labels, rng)
    threshold = decision_threshold(labels, probability)
    assert 0.7 < threshold < 0.8  # halfway into the gap between the two groups
    assert classification_metrics(labels, probability, threshold)["balanced_accuracy"] == 1.0
    assert classification_metrics(labels, probability)["balanced_accuracy"] == 0.5
    assert decision_threshold([1, 1, 1], [0.2, 0.4, 0.9]) == 0.5  # one class: the fixed 0.5
    # through the harness and Table 1: every fold's threshold from its training patients
    tensors, _ = fake_cohort()
    config = small_config()
    folds = make_folds(tensors.ids, tensors.labels(tensors.ids), 3, 0)
    run_folds(tmp_path, folds, tensors, None, config, Task(), steps=[shifted_step()])
    summary = write_summary(tmp_path, tensors, folds, config, 0.0, extra_methods=[SHIFTED])
    row = {r["method"]: r for r in summary["table1"]}[SHIFTED]
    assert row["balanced accuracy"] == (1.0, 0.0)
    assert row["balanced accuracy at 0.5"] == (0.5, 0.0)
    assert row["AUC"] == (1.0, 0.0)
    assert row["balanced accuracy 95% CI"] == "1.00 [1.00, 1.00]"
    assert 0.7 < row["threshold"][0] < 0.8
    assert row["CPU-min per fold"] >= 0 and row["steps per fold"] == ""


def _intervals(n, seed=3):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    probability = np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.2, n), 0, 1)
    time = rng.exponential(10, n) * np.where(labels == 1, 2.0, 1.0)
    event = (rng.random(n) < 0.7).astype(int)
    return {
        "auc": bootstrap(auc, labels, probability, repeats=200, seed=1),
        "balanced accuracy": bootstrap(balanced_accuracy, labels, probability, np.full(n, 0.45),
                                       repeats=200, seed=1),
        "c-index": bootstrap(c_index_or_nan, time, event, -probability, repeats=200, seed=1)}


def test_bootstrap_intervals_contain_the_estimate_narrow_with_patients_and_repeat():
    small, large = _intervals(40), _intervals(400)
    for name in small:
        for interval in (small[name], large[name]):
            assert interval.low <= interval.estimate <= interval.high, name
        assert (large[name].high - large[name].low) < 0.6 * (small[name].high - small[name].low)
        assert _intervals(40)[name] == small[name]  # the same seed, the same interval


def test_leave_one_background_out_trains_on_the_other_backgrounds(tmp_path):
    tensors, backgrounds = fake_cohort()
    folds = background_folds(tensors.ids, backgrounds, tensors.labels(tensors.ids))
    assert [f["background"] for f in folds] == sorted(BACKGROUNDS)
    assert sorted(p for f in folds for p in f["test"]) == tensors.ids
    seen = []
    run_folds(tmp_path, folds, tensors, None, small_config(), Task(),
              Stage1(None, DEMO, tmp_path, per_fold=True), [shifted_step(seen)])
    for fold in seen:
        held = fold["background"]
        assert {backgrounds[p] for p in fold["test"]} == {held}
        assert held not in {backgrounds[p] for p in fold["train"]}
        assert len(fold["train"]) + len(fold["test"]) == len(tensors.ids)
    assert not (tmp_path / "runs").exists()  # stage 1 is trained only for a method needing it
    summary = write_summary(tmp_path, tensors, folds, small_config(), 0.0,
                            "leave one background out", [SHIFTED])
    assert summary["folds"] == 3
    assert "leave one background out" in (tmp_path / "table1.md").read_text(encoding="utf-8")
    with pytest.raises(SettingError, match="at least 2 backgrounds"):
        background_folds(tensors.ids, dict.fromkeys(tensors.ids, "lung2"))
    labels = np.array([1 if backgrounds[p] == "lidc" else 0 for p in tensors.ids])
    with pytest.raises(SettingError, match="all of one class"):
        background_folds(tensors.ids, backgrounds, labels)


def test_leaving_a_background_out_pretrains_stage1_without_it(tmp_path, monkeypatch):
    from ImmunoDiffLib.evaluate import harness

    tensors, backgrounds = fake_cohort()
    trained = {}

    def pretrain(dataset, config, folder, task):
        trained[folder.parent.name] = [tensors.ids[i] for i in dataset.indices]
        return f"stage 1 of {folder.parent.name}"

    monkeypatch.setattr(harness, "pretrain_stage1", pretrain)
    step = shifted_step()
    plain = step.run

    def run(context, task):
        assert context.stage1 == f"stage 1 of fold_{context.fold['fold']}"
        plain(context, task)

    folds = background_folds(tensors.ids, backgrounds, tensors.labels(tensors.ids))
    run_folds(tmp_path, folds, tensors, list(range(len(tensors))), small_config(), Task(),
              Stage1(list(range(len(tensors))), DEMO, tmp_path, per_fold=True),
              [Step(SHIFTED, step.outputs, run, needs_stage1=True)])
    for fold in folds:
        seen = trained[f"fold_{fold['fold']}"]
        assert sorted(seen) == sorted(fold["train"])
        assert fold["background"] not in {backgrounds[p] for p in seen}
        assert (tmp_path / "compute" / f"stage_1_fold_{fold['fold']}.json").is_file()


def test_table2_has_the_clinical_cox_model_as_its_reference_row(tmp_path):
    tensors, _ = fake_cohort()
    config = small_config(methods=(CLINICAL,))
    folds = make_folds(tensors.ids, tensors.labels(tensors.ids), 3, 0)
    steps = [*fold_steps(config), shifted_step()]
    run_folds(tmp_path, folds, tensors, None, config, Task(), steps=steps)
    summary = write_summary(tmp_path, tensors, folds, config, 0.0, extra_methods=[SHIFTED])
    assert summary["table2"][0]["method"] == "Clinical only (Cox; reference)"
    assert summary["table2"][0]["Δ c-index vs reference (paired 95% CI)"] == "reference"
    rows = list(csv.DictReader(open(tmp_path / "table2.csv", encoding="utf-8")))
    assert rows[0]["method"].endswith("(Cox; reference)")
    clinical = method_records(tmp_path, CLINICAL, tensors)
    assert all(f.cpu_seconds is not None and f.threshold != 0.5 for f in clinical.folds)


def curve_runner(calls):
    """A fake method whose held-out ranking improves with its budget up to 100 steps."""
    def run(key, budgets, context, task):
        calls.append(list(budgets))
        rng = np.random.default_rng(0)
        for budget in budgets:
            noise = {10: 3.0, 30: 0.6}.get(budget, 0.0)
            test = context.test["response"].numpy()
            train = context.train["response"].numpy()
            clock = Stopwatch.started()
            context.save_point(key, budget, train + rng.normal(0, noise, len(train)),
                               test + rng.normal(0, noise, len(test)), clock.pause())

    return run


def test_learning_curves_choose_the_budget_where_the_curve_flattens(tmp_path):
    tensors, _ = fake_cohort(80)
    fold = make_folds(tensors.ids, tensors.labels(tensors.ids), 5, 0)[0]
    split = inner_split(fold, tensors.labels(fold["train"]), 0.25, 0)
    assert not set(split["test"]) & set(split["train"]) and not set(split["test"]) & set(
        fold["test"])
    settings = CurveSettings(budgets={"fake": (300, 10, 100, 30)}, tolerance=0.02)
    calls = []
    result = run_learning_curves(tmp_path, split, tensors, None, DEMO, settings, Task(),
                                 runners={"fake": curve_runner(calls)})
    assert calls == [[10, 30, 100, 300]]
    assert result["budgets"] == {"fake": 100}
    aucs = {p["budget"]: p["auc"] for p in result["points"]}
    assert aucs[10] < aucs[30] < aucs[100] == aucs[300] == 1.0
    rows = list(csv.DictReader(open(tmp_path / "learning_curve.csv", encoding="utf-8")))
    assert [r["budget"] for r in rows if r["chosen"] == "True"] == ["100"]
    assert all(float(r["cpu_seconds"]) >= 0 for r in rows)
    with Image.open(tmp_path / "learning_curves.png") as image:
        assert image.size[0] > 800
    assert json.loads((tmp_path / "budgets.json").read_text())["chosen"]["fake"]["steps"] == 100
    run_learning_curves(tmp_path, split, tensors, None, DEMO, settings, Task(),
                        runners={"fake": curve_runner(calls)})
    assert len(calls) == 1  # every point stored: nothing is measured again
    assert choose_budget([{"budget": 5, "auc": float("nan")}], 0.02)["steps"] == 5


def test_an_image_curve_reads_out_the_model_a_shorter_run_returns(tmp_path):
    from ImmunoDiffLib.evaluate.image_baselines import (
        predict_image_classifier,
        train_image_classifier,
    )

    tensors, _ = fake_cohort(20, image_size=(16, 16, 8))
    split = {"fold": "inner", "train": tensors.ids[:14], "test": tensors.ids[14:]}
    config = replace(DEMO, image_baselines=("ViT-B/16",))
    context = CurveContext(tmp_path, split, tensors, None, config, None)
    image_runner("ViT-B/16", [1, 3], context, Task())
    point = json.loads(context.point_path("ViT-B/16", 1).read_text())
    assert point["cpu_seconds"] > 0 and context.done("ViT-B/16", 3)
    model = train_image_classifier("ViT-B/16", context.train["baseline"], None,
                                   context.train["response"], config, context.seed, steps=1)
    direct = predict_image_classifier(model, context.test["baseline"], None).numpy()
    labels = context.test["response"].numpy().astype(int)
    assert point["auc"] == pytest.approx(classification_metrics(labels, direct)["auc"])


def test_budget_keys_parse_set_and_refuse(tmp_path):
    config = with_budgets(DEMO, parse_budgets(["2=1500", "vit_b_16_clinical=200",
                                               "ResNet-50=90", "diffusion=400"], DEMO))
    budgets = current_budgets(config)
    assert budgets["2"] == 1500 and budgets["ViT-B/16 + clinical"] == 200
    assert budgets["ResNet-50"] == budgets["ResNet-50 + clinical"] == 90
    assert budgets["ViT-B/16"] == DEMO.baseline_steps and budgets["diffusion"] == 400
    assert method_budget("ImmunoDiff", config) == "2: 1500, heads: 300"
    assert parse_curves(["heads=300,100"], DEMO) == {"heads": (100, 300)}
    for bad, field in ((["bogus=5"], "bogus"), (["2=0"], "2"), (["2"], "KEY=VALUE")):
        with pytest.raises(SettingError, match=field):
            parse_budgets(bad, DEMO)
    with pytest.raises(SettingError, match="comma"):
        parse_curves(["2=a,b"], DEMO)
    (tmp_path / "budgets.json").write_text(json.dumps({"budgets": {"heads": 50}}))
    assert read_budgets_file(tmp_path / "budgets.json", DEMO) == {"heads": 50}
    with pytest.raises(SettingError, match="does not exist"):
        read_budgets_file(tmp_path / "none.json", DEMO)


def test_the_default_curves_are_those_of_the_methods_that_run():
    defaults = CurveSettings()
    assert set(applicable_curves(defaults, DEMO).budgets) == set(defaults.budgets)
    only_vit = replace(DEMO, image_baselines=("ViT-B/16",))
    assert set(applicable_curves(defaults, only_vit).budgets) == {"2", "heads",
                                                                  "ViT-B/16 + clinical"}
    baselines = replace(DEMO, methods=("DenseNet-121", "Zero-shot diffusion classifier"))
    assert set(applicable_curves(defaults, baselines).budgets) == {"DenseNet-121"}
    features = replace(DEMO, methods=("DDPM features",))
    assert set(applicable_curves(defaults, features).budgets) == {"heads"}


def test_a_cancelled_run_keeps_finished_folds_and_resumes_after_them(tmp_path):
    tensors, _ = fake_cohort()
    folds = make_folds(tensors.ids, tensors.labels(tensors.ids), 3, 0)
    seen = []
    with pytest.raises(Cancelled):
        run_folds(tmp_path, folds, tensors, None, small_config(), Task(cancel=lambda: len(seen)
                                                                        >= 1),
                  steps=[shifted_step(seen)])
    stored = sorted((tmp_path / "predictions").rglob("fold_*.json"))
    assert [p.name for p in stored] == ["fold_0.json"]
    before = stored[0].stat().st_mtime_ns
    messages = []
    run_folds(tmp_path, folds, tensors, None, small_config(),
              Task(lambda f, m: messages.append((f, m))), steps=[shifted_step(seen)])
    assert len(seen) == 3 and stored[0].stat().st_mtime_ns == before
    assert messages[0] == (pytest.approx(1 / 3), "fold 0: stored")
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_the_fair_protocol_writes_both_protocols_side_by_side_and_resumes(tmp_path):
    tensors, backgrounds = fake_cohort()
    config = small_config(methods=(CLINICAL,))
    steps = [*fold_steps(config), shifted_step()]
    calls = []
    curves = CurveSettings(budgets={"fake": (10, 30, 100)})
    messages = []
    summary = run_fair_on(tmp_path, tensors, None, backgrounds, config, curves, {"heads": 50},
                          Task(lambda f, m: messages.append(f)), steps,
                          {"fake": curve_runner(calls)})
    assert summary["budgets"]["heads"] == 50 and summary["budget_source"]["heads"] == "--budget"
    assert summary["curves"]["chosen"]["fake"]["steps"] == 100
    assert summary["backgrounds"] == dict(sorted(Counter(backgrounds.values()).items()))
    table1 = list(csv.DictReader(open(tmp_path / "table1.csv", encoding="utf-8")))
    row = {r["method"]: r for r in table1}[SHIFTED]
    assert row["3-fold balanced accuracy 95% CI"] == "1.00 [1.00, 1.00]"
    assert row["leave one background out: balanced accuracy 95% CI"] == "1.00 [1.00, 1.00]"
    # the paired AUC difference from the clinical-only model, on the same patients
    clinical = {r["method"]: r for r in table1}[CLINICAL]
    delta = "Δ AUC vs clinical only (paired 95% CI)"
    assert clinical[f"3-fold {delta}"] == "reference"
    clinical_auc = float(clinical["3-fold AUC 95% CI"].split()[0])
    estimate, interval = row[f"3-fold {delta}"].split(" ", 1)
    assert float(estimate) == pytest.approx(1.0 - clinical_auc, abs=0.011)
    low, high = (float(v) for v in interval.strip("[]").split(","))
    assert low <= float(estimate) <= high
    table2 = (tmp_path / "table2.md").read_text(encoding="utf-8")
    assert "Clinical only (Cox; reference)" in table2 and "leave one background out" in table2
    for part in ("cv/table1.md", "lobo/table1.md", "curves/learning_curves.png", "fair.json"):
        assert (tmp_path / part).is_file(), part
    assert messages == sorted(messages) and messages[-1] == 1.0
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cv").rglob("fold_*.json")}
    run_fair_on(tmp_path, tensors, None, backgrounds, config, curves, {"heads": 50}, Task(),
                steps, {"fake": curve_runner(calls)})
    assert len(calls) == 1
    assert {p: p.stat().st_mtime_ns for p in files} == files
    with pytest.raises(SettingError, match="other settings"):
        run_fair_on(tmp_path, tensors, None, backgrounds, config, curves, {"heads": 60},
                    Task(), steps, {"fake": curve_runner(calls)})
