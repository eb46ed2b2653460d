"""Learning curves: a method's held-out AUC and balanced accuracy against its training budget,
with the CPU seconds each budget cost, and the budget chosen where the curve flattens
(``budgets.choose_budget``).

The curves are measured on one split: fold 0's training patients, a stratified share of them
held out (``folds.inner_split``), so no test fold of the tables chooses a budget. Keys
(``budgets``):

* an image method ("ViT-B/16 + clinical", ...): trained once to its largest budget, read out
  after each budget's step (the model after B steps is the one a B-step run returns);
* "2": ImmunoDiff's stage 2, continued from budget to budget in one training folder (its
  checkpoints), read out by fresh heads (the configured heads steps) at each budget;
* "heads": the heads' steps on the features of stage 2 at its chosen budget (or the
  configured one when "2" has no curve); their CPU seconds are the heads' own (the features'
  cost is the "2" curve's).

A point's CPU seconds: the training to that budget from nothing, plus its read-out (stage 1,
shared with the k-fold tables, is counted there). Output::

    split.json                     the inner split
    points/<key>/budget_B.json     one measured budget (a stopped run resumes after it)
    runs/stage2/                   stage 2 trained budget after budget
    features/stage2_B.pt           the heads' input features at stage-2 budget B
    learning_curve.md/.csv, learning_curves.png, budgets.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass, replace
from functools import cached_property
from pathlib import Path

import torch

from ..errors import SettingError
from ..progress import Task
from ..reporting.evaluation import save_learning_curves
from ..seeds import derived_seed
from .budgets import (
    METHOD_KEYS,
    choose_budget,
    image_methods,
    resolve_key,
    with_budgets,
    write_budgets,
)
from .compute import Stopwatch
from .config import CurveSettings, EvaluationConfig
from .data import CohortTensors, clinical_matrix
from .image_baselines import predict_image_classifier, train_image_classifier
from .immunodiff_runs import (
    fit_predict_heads,
    heads_input_of,
    outcomes,
    train_stage2,
    variant_features,
)
from .methods import IMMUNODIFF, STAGE2_ONLY
from .metrics import classification_metrics
from .store import method_slug, write_json
from .tables import write_table
from .thresholds import decision_threshold

CURVE_COLUMNS = ["key", "budget", "auc", "balanced_accuracy", "balanced_accuracy_at_0.5",
                 "threshold", "cpu_seconds", "seconds", "chosen"]


@dataclass
class CurveContext:
    """The split a curve is measured on and what the runners need."""

    output: Path
    split: dict
    tensors: CohortTensors
    dataset: object
    config: EvaluationConfig
    stage1: object  # harness.Stage1 (or None when no key needs it)

    @property
    def seed(self) -> int:
        return derived_seed(self.config.seed, "learning curve")

    @cached_property
    def train(self) -> dict:
        return self.tensors.subset(self.split["train"])

    @cached_property
    def test(self) -> dict:
        return self.tensors.subset(self.split["test"])

    def point_path(self, key: str, budget: int) -> Path:
        return self.output / "points" / method_slug(key) / f"budget_{budget}.json"

    def done(self, key: str, budget: int) -> bool:
        return self.point_path(key, budget).is_file()

    def save_point(self, key: str, budget: int, in_sample, probability, clock: Stopwatch,
                   **extra) -> dict:
        """Measure and store one budget: in-sample P(responder) of the split's training
        patients (M,) for the threshold, held-out P(responder) (N,)."""
        train_labels = self.train["response"].numpy().astype(int)
        test_labels = self.test["response"].numpy().astype(int)
        threshold = decision_threshold(train_labels, in_sample)
        learned = classification_metrics(test_labels, probability, threshold)
        point = {"key": key, "budget": int(budget), "auc": learned["auc"],
                 "balanced_accuracy": learned["balanced_accuracy"],
                 "balanced_accuracy_at_0.5": classification_metrics(
                     test_labels, probability)["balanced_accuracy"],
                 "threshold": threshold, "cpu_seconds": round(clock.cpu_seconds(), 2),
                 "seconds": round(clock.seconds(), 2), **extra}
        write_json(self.point_path(key, budget), point)
        return point


Runner = Callable[[str, list[int], CurveContext, Task], None]


def image_runner(key: str, budgets: list[int], context: CurveContext, task: Task) -> None:
    """Train the image method ``key`` once to its largest budget, read out at each budget."""
    network = image_methods(context.config)[key]
    train_clinical = clinical_matrix(context.train) if key != network else None
    test_clinical = clinical_matrix(context.test) if key != network else None
    clock, wanted = Stopwatch.started(), set(budgets)

    def snapshot(done: int, model) -> None:
        if done not in wanted:
            return
        readout = Stopwatch(clock.pause().seconds(), clock.cpu_seconds()).resume()
        probability = predict_image_classifier(model, context.test["baseline"], test_clinical)
        in_sample = predict_image_classifier(model, context.train["baseline"], train_clinical)
        context.save_point(key, done, in_sample.numpy(), probability.numpy(), readout.pause())
        clock.resume()

    train_image_classifier(network, context.train["baseline"], train_clinical,
                           context.train["response"].float(), context.config, context.seed,
                           task, steps=max(budgets), snapshot=snapshot)


def _features_path(context: CurveContext, budget: int) -> Path:
    return context.output / "features" / f"stage2_{budget}.pt"


def stage2_features(context: CurveContext, budget: int, task: Task) -> dict:
    """{"train", "test": features (M, F), (N, F), "train_cpu_seconds": stage 2's training to
    ``budget``, "readout_cpu_seconds", "seconds"}; trained on from the last budget's checkpoint
    and cached per budget."""
    path = _features_path(context, budget)
    if path.is_file():
        return torch.load(path, weights_only=True)
    cached = _cached_budgets(context)
    if any(b > budget for b in cached):
        raise SettingError(f"stage 2 of '{context.output}' was trained past {budget} steps "
                           "already; a new stage-2 budget below it needs a new output folder.")
    before = [b for b in cached if b < budget]
    spent = torch.load(_features_path(context, max(before)), weights_only=True)[
        "train_cpu_seconds"] if before else 0.0
    config = with_budgets(context.config, {"2": budget})
    rows = context.tensors.rows(context.split["train"]).tolist()
    stage1 = context.stage1.model(context.split, rows, task.sub(0.0, 0.3))  # its own cost
    clock = Stopwatch.started()
    model = train_stage2(stage1, context.dataset, rows, config,
                         context.output / "runs" / "stage2", context.seed, task.sub(0.3, 0.9))
    trained = clock.cpu_seconds()
    readout = Stopwatch.started()
    task.report(0.9, f"stage-2 features at {budget} steps")
    train, test = variant_features(model, "immunodiff", context.tensors.batch,
                                   context.tensors.rows(context.split["train"]),
                                   context.tensors.rows(context.split["test"]), context.seed)
    layout = heads_input_of(model)  # a name, or a dataclass of the heads' layout
    features = {"train": train, "test": test,
                "heads_input": asdict(layout) if is_dataclass(layout) else layout,
                "train_cpu_seconds": spent + trained,
                "readout_cpu_seconds": readout.cpu_seconds(), "seconds": clock.seconds()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(features, path)
    return features


def _cached_budgets(context: CurveContext) -> list[int]:
    folder = context.output / "features"
    return sorted(int(p.stem.split("_")[1]) for p in folder.glob("stage2_*.pt"))


def _heads_point(context: CurveContext, key: str, budget: int, features: dict, heads: int,
                 base_cpu: float) -> None:
    clock = Stopwatch.started()
    probability, _, in_sample = fit_predict_heads(
        features["train"], features["test"],
        outcomes(context.tensors.batch, context.tensors.rows(context.split["train"])), heads,
        context.seed, features.get("heads_input", "crop"))
    clock.pause()
    clock.cpu += base_cpu
    context.save_point(key, budget, in_sample, probability, clock)


def stage2_runner(key: str, budgets: list[int], context: CurveContext, task: Task) -> None:
    """ImmunoDiff's stage 2 at each budget (ascending), read out by the configured heads."""
    for index, budget in enumerate(budgets):
        part = task.sub(index / len(budgets), (index + 1) / len(budgets))
        features = stage2_features(context, budget, part)
        _heads_point(context, key, budget, features, context.config.stage_steps["heads"],
                     features["train_cpu_seconds"] + features["readout_cpu_seconds"])


def heads_runner(key: str, budgets: list[int], context: CurveContext, task: Task) -> None:
    """The heads' steps on the stage-2 features of the configured (or chosen) stage-2 budget."""
    features = stage2_features(context, context.config.stage_steps["2"], task.sub(0.0, 0.8))
    for budget in budgets:
        task.check()
        _heads_point(context, key, budget, features, budget, 0.0)


def runner_for(key: str, config: EvaluationConfig) -> Runner:
    if key == "2":
        return stage2_runner
    if key == "heads":
        return heads_runner
    if key in image_methods(config):
        return image_runner
    raise SettingError(f"no learning curve for budget key {key!r}; expected '2', 'heads' or an "
                       f"image method of {list(image_methods(config))}.")


def curve_keys(settings: CurveSettings, config: EvaluationConfig) -> list[str]:
    """The curve keys in the order they run ("2" before "heads": the heads read its choice)."""
    keys = [resolve_key(k, config) for k in settings.budgets]
    for key in keys:
        runner_for(key, config)  # refuses a key without a curve
    return sorted(keys, key=lambda k: {"2": 0, "heads": 1}.get(k, 2))


def applicable_curves(settings: CurveSettings, config: EvaluationConfig) -> CurveSettings:
    """``settings`` without the curves of methods ``config`` does not run (the default curves
    under ``--baselines`` or ``--methods``): an image method not configured or not chosen;
    "2" without ImmunoDiff or Stage 2 only; "heads" without a diffusion-feature method."""
    chosen = set(config.methods or ())

    def runs(*methods) -> bool:
        return not chosen or bool(chosen & set(methods))

    def kept(key: str) -> bool:
        if key == "2":
            return runs(IMMUNODIFF, STAGE2_ONLY)
        if key == "heads":
            return runs(*(m for m, keys in METHOD_KEYS.items() if "heads" in keys))
        return key in image_methods(config) and runs(key)

    return replace(settings, budgets={k: v for k, v in settings.budgets.items() if kept(k)})


def read_points(output: Path) -> list[dict]:
    points = [json.loads(p.read_text(encoding="utf-8"))
              for p in (output / "points").glob("*/budget_*.json")]
    return sorted(points, key=lambda p: (p["key"], p["budget"]))


def run_learning_curves(output: Path, split: dict, tensors: CohortTensors, dataset,
                        config: EvaluationConfig, settings: CurveSettings, task: Task,
                        stage1=None, runners: dict[str, Runner] | None = None) -> dict:
    """Measure every curve of ``settings`` on ``split`` (resumable), choose each key's budget
    and write the table, the picture and ``budgets.json``. ``runners``: {key: runner} beside
    the built-in ones (tests). Returns {"budgets": {key: steps}, "chosen": {key: choice},
    "points": [...]}."""
    output.mkdir(parents=True, exist_ok=True)
    runners = runners or {}
    keys = [k for k in settings.budgets if k in runners] + curve_keys(
        replace(settings, budgets={k: v for k, v in settings.budgets.items()
                                   if k not in runners}), config)
    context = CurveContext(output, split, tensors, dataset, config, stage1)
    chosen = {}
    for index, key in enumerate(keys):
        part = task.sub(index / len(keys), (index + 1) / len(keys))
        budgets = sorted({int(b) for b in settings.budgets[key]})
        if not all(context.done(key, b) for b in budgets):
            part.report(0.0, f"learning curve of {key}")
            (runners.get(key) or runner_for(key, config))(key, budgets, context, part)
        points = [p for p in read_points(output) if p["key"] == key and p["budget"] in budgets]
        chosen[key] = choose_budget(points, settings.tolerance)
        context.config = config = with_budgets(config, {key: chosen[key]["steps"]}) \
            if key not in runners else config
    points = [p for p in read_points(output) if p["key"] in chosen]
    for point in points:
        point["chosen"] = chosen[point["key"]]["steps"] == point["budget"]
    write_table(points, CURVE_COLUMNS, output / "learning_curve",
                f"Learning curves on fold 0 (held-out {len(split['test'])} of its "
                f"{len(split['train']) + len(split['test'])} training patients)")
    picture = save_learning_curves(points, chosen, output / "learning_curves.png",
                                   "Learning curves, fold 0, inner held-out patients")
    budgets = {key: c["steps"] for key, c in chosen.items()}
    write_budgets(output / "budgets.json", chosen, config)
    return {"budgets": budgets, "chosen": chosen, "points": points, "figure": str(picture)}
