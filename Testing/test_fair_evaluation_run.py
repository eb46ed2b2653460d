"""``immunodiff evaluate --protocol fair`` end to end, at smoke-test size: the 6-patient
simulated cohort (its manifest with a ``background`` column putting one responder in each of
two groups), ImmunoDiff, one image baseline and the clinical references, one or two training
steps a budget. What the long run (benchmarks/fair_table1.py) writes, it writes here too."""

import csv
import json
from dataclasses import replace

import pytest
import torch
from PIL import Image

from ImmunoDiffLib import cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
GROUPS = {"SIM0001": "A", "SIM0002": "A", "SIM0005": "A",
          "SIM0003": "B", "SIM0004": "B", "SIM0006": "B"}


@pytest.fixture(scope="module")
def grouped_cohort(small_cohort, tmp_path_factory):
    """The small cohort's manifest with absolute paths and a ``background`` column."""
    with open(small_cohort, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in ("baseline_ct", "followup_ct", "tumour_mask", "followup_tumour_mask",
                       "lobes_mask", "vessels_mask"):
            row[column] = str(small_cohort.parent / row[column])
        row["background"] = GROUPS[row["patient_id"]]
    path = tmp_path_factory.mktemp("grouped") / "cohort.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_fair_command_runs_curves_budgets_and_both_tables(grouped_cohort, tmp_path, capsys):
    argv = ["evaluate", "--cohort", str(grouped_cohort), "-o", str(tmp_path / "fair"),
            "--protocol", "fair", "--folds", "2", "--bootstrap", "20", "--baselines", "ViT-B/16",
            "--methods", "ViT-B/16 + clinical", "Clinical only", "Oracle (true follow-up)",
            "--curve", "ViT-B/16 + clinical=1,2,3", "--budget", "heads=7"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    output = tmp_path / "fair"
    assert printed["backgrounds"] == {"A": 3, "B": 3}
    assert printed["budget_source"]["heads"] == "--budget" and printed["budgets"]["heads"] == 7
    assert printed["budget_source"]["ViT-B/16 + clinical"] == "learning curve"
    assert printed["budgets"]["ViT-B/16 + clinical"] in (1, 2, 3)
    curve = list(csv.DictReader(open(output / "curves" / "learning_curve.csv",
                                     encoding="utf-8")))
    assert [r["budget"] for r in curve] == ["1", "2", "3"]
    cpu = [float(r["cpu_seconds"]) for r in curve]
    assert 0 < cpu[0] < cpu[2]  # the training to a larger budget cost more
    with Image.open(output / "curves" / "learning_curves.png") as image:
        assert image.size[0] > 800
    table1 = {r["method"]: r for r in csv.DictReader(open(output / "table1.csv",
                                                         encoding="utf-8"))}
    assert list(table1) == ["ViT-B/16 + clinical", "Clinical only", "Oracle (true follow-up)"]
    vit = table1["ViT-B/16 + clinical"]
    assert vit["steps per fold"] == str(printed["budgets"]["ViT-B/16 + clinical"])
    assert vit["2-fold AUC 95% CI"].count("[") == 1
    assert vit["leave one background out: AUC 95% CI"].count("[") == 1
    assert float(vit["CPU-min per fold (2-fold)"]) > 0
    table2 = list(csv.DictReader(open(output / "table2.csv", encoding="utf-8")))
    assert table2[0]["method"] == "Clinical only (Cox; reference)"
    assert table2[1]["method"] == "Oracle (true follow-up)"
    lobo = json.loads((output / "lobo" / "folds.json").read_text(encoding="utf-8"))
    assert [f["background"] for f in lobo] == ["A", "B"]
    for fold in lobo:
        assert {GROUPS[p] for p in fold["train"]} == {"A", "B"} - {fold["background"]}
    files = {p: p.stat().st_mtime_ns for p in output.rglob("*.json")
             if "predictions" in p.parts or "points" in p.parts}
    assert cli.main(argv) == 0  # resumed: every fold and point stored
    capsys.readouterr()
    assert {p: p.stat().st_mtime_ns for p in files} == files
    argv[argv.index("heads=7")] = "heads=8"
    assert cli.main(argv) == 2  # other settings into the same folder: refused
    assert "other settings" in capsys.readouterr().err


def test_immunodiff_curves_continue_stage_2_and_read_out_the_heads(small_cohort, tmp_path):
    from ImmunoDiffLib.evaluate.config import DEMO, CurveSettings
    from ImmunoDiffLib.evaluate.harness import Stage1, load_cohort_tensors
    from ImmunoDiffLib.evaluate.learning_curve import run_learning_curves
    from ImmunoDiffLib.progress import Task

    config = replace(DEMO.scaled(0.005), n_folds=2)
    dataset, tensors = load_cohort_tensors(small_cohort, config, Task())
    # a responder (SIM0001, SIM0003) on either side
    split = {"fold": "inner", "train": ["SIM0001", "SIM0002", "SIM0004", "SIM0005"],
             "test": ["SIM0003", "SIM0006"]}
    settings = CurveSettings(budgets={"heads": (3, 6), "2": (1, 2)})
    result = run_learning_curves(tmp_path, split, tensors, dataset, config, settings, Task(),
                                 Stage1(dataset, config, tmp_path / "stage1"))
    points = {(p["key"], p["budget"]): p for p in result["points"]}
    assert set(points) == {("2", 1), ("2", 2), ("heads", 3), ("heads", 6)}
    features = {b: torch.load(tmp_path / "features" / f"stage2_{b}.pt", weights_only=True)
                for b in (1, 2)}
    # stage 2 went on from budget 1 to budget 2 in one folder: budget 2 cost more
    assert features[2]["train_cpu_seconds"] > features[1]["train_cpu_seconds"] > 0
    losses = json.loads((tmp_path / "runs" / "stage2" / "training.json").read_text())
    assert losses["steps"] == 2
    # the heads' curve read the features of the stage-2 budget the "2" curve chose
    assert result["budgets"]["2"] in (1, 2)
    assert features[result["budgets"]["2"]]["train"].shape[0] == 4
    assert all(0 <= points[k]["balanced_accuracy"] <= 1 for k in points)
