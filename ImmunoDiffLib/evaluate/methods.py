"""The methods of one fold, as steps the harness runs (and skips once stored).

Method names are those of the tables; each step trains on the fold's training patients only and
predicts its test patients, and its training patients too (in-sample), from which the summary
chooses the fold's decision threshold (``evaluate/thresholds.py``). Each stored result carries
its training budget and its wall-clock and CPU seconds (``evaluate/compute.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from ..errors import SettingError
from ..seeds import derived_seed
from .compute import Stopwatch
from .config import EvaluationConfig
from .data import CohortTensors, clinical_matrix
from .diffusion_baselines import (
    anomaly_scores,
    class_errors,
    fit_score_calibration,
    train_class_ddpm,
    zero_shot_probability,
)
from .image_baselines import predict_image_classifier, train_image_classifier
from .immunodiff_runs import (
    heads_predictions,
    stage2_only_start,
    synthesis_rows,
    train_stage2,
    variant_steps,
)
from .reference_models import fit_cox, fit_logistic, volume_change_score
from .store import PREDICTIONS, SYNTHESIS, FoldStore

CLINICAL = "Clinical only"
ORACLE = "Oracle (true follow-up)"
ZERO_SHOT = "Zero-shot diffusion classifier"
ANOMALY = "DDPM anomaly detection"
DDPM_FEATURES = "DDPM features"
CONTROLNET_FEATURES = "ControlNet features"
STAGE2_ONLY = "Stage 2 only"
IMMUNODIFF = "ImmunoDiff"
VARIANT_METHOD = {"ddpm": DDPM_FEATURES, "stage1": CONTROLNET_FEATURES,
                  "stage2": STAGE2_ONLY, "immunodiff": IMMUNODIFF}


@dataclass
class FoldContext:
    fold: dict
    tensors: CohortTensors
    dataset: object
    stage1: object
    config: EvaluationConfig
    store: FoldStore
    models: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return derived_seed(self.config.seed, "fold", self.fold["fold"])

    @cached_property
    def train(self) -> dict:
        return self.tensors.subset(self.fold["train"])

    @cached_property
    def test(self) -> dict:
        return self.tensors.subset(self.fold["test"])

    @property
    def train_rows(self) -> torch.Tensor:
        return self.tensors.rows(self.fold["train"])

    @property
    def test_rows(self) -> torch.Tensor:
        return self.tensors.rows(self.fold["test"])

    def labels(self, part: dict) -> np.ndarray:
        return part["response"].numpy().astype(int)

    def save(self, name: str, clock: Stopwatch, probability=None, risk=None,
             train_probability=None, steps: int | None = None) -> None:
        """Store the test patients' P(responder) and risk (N,) and the training patients'
        in-sample P(responder) (M,), with the time ``clock`` measured."""
        self.store.save_predictions(name, self.fold["test"], probability, risk,
                                    clock.seconds(), train_ids=self.fold["train"],
                                    train_probability=train_probability,
                                    cpu_seconds=clock.cpu_seconds(), steps=steps)


@dataclass
class Step:
    name: str
    outputs: list[tuple[str, str]]
    run: object  # (FoldContext, Task) -> None
    needs_stage1: bool = False  # the step reads the stage-1 model (context.stage1)


def _reference(name: str, train_x: np.ndarray, test_x: np.ndarray, context: FoldContext,
               clock: Stopwatch) -> None:
    """Logistic (response) and Cox (survival) fits on features (N, F) of the training fold."""
    logistic = fit_logistic(train_x, context.labels(context.train))
    cox = fit_cox(train_x, context.train["survival_months"].numpy(),
                  context.train["event"].numpy())
    context.save(name, clock, logistic.predict_proba(test_x)[:, 1], cox.predict(test_x),
                 logistic.predict_proba(train_x)[:, 1])


def _clinical(context: FoldContext, task) -> None:
    clock = Stopwatch.started()
    _reference(CLINICAL, clinical_matrix(context.train).numpy(),
               clinical_matrix(context.test).numpy(), context, clock)


def _oracle(context: FoldContext, task) -> None:
    clock = Stopwatch.started()
    spacing = context.tensors.spacing
    _reference(ORACLE, volume_change_score(context.train, spacing).reshape(-1, 1),
               volume_change_score(context.test, spacing).reshape(-1, 1), context, clock)


def _image_baseline(name: str, with_clinical: bool):
    def run(context: FoldContext, task) -> None:
        clock = Stopwatch.started()
        method = image_method(name, with_clinical)
        steps = context.config.image_method_steps(method, name)
        clinical = (clinical_matrix(context.train), clinical_matrix(context.test)) \
            if with_clinical else (None, None)
        model = train_image_classifier(name, context.train["baseline"], clinical[0],
                                       context.train["response"].float(), context.config,
                                       context.seed, task, steps=steps)
        probability = predict_image_classifier(model, context.test["baseline"], clinical[1])
        in_sample = predict_image_classifier(model, context.train["baseline"], clinical[0])
        context.save(method, clock, probability.numpy(), train_probability=in_sample.numpy(),
                     steps=steps)

    return run


def image_method(name: str, with_clinical: bool) -> str:
    return f"{name} + clinical" if with_clinical else name


def _diffusion_baselines(context: FoldContext, task) -> None:
    """Both diffusion baselines; each row's time includes the DDPM they share."""
    clock = Stopwatch.started()
    config, steps = context.config, context.config.diffusion_baseline_steps
    train_images, test_images = context.train["baseline"], context.test["baseline"]
    labels = context.labels(context.train)
    model = train_class_ddpm(train_images, torch.from_numpy(labels), config, context.seed,
                             task.sub(0.0, 0.5))
    shared = Stopwatch(clock.seconds(), clock.cpu_seconds())
    task.report(0.5, "zero-shot classification")
    train_errors = class_errors(model, train_images, config, context.seed)
    test_errors = class_errors(model, test_images, config, context.seed)
    context.save(ZERO_SHOT, clock, zero_shot_probability(test_errors, train_errors),
                 train_probability=zero_shot_probability(train_errors, train_errors),
                 steps=steps)
    clock = shared.resume()
    task.report(0.75, "anomaly scores")
    train_scores = anomaly_scores(model, train_images, config, context.seed).reshape(-1, 1)
    calibration = fit_score_calibration(train_scores.ravel(), labels)
    test_scores = anomaly_scores(model, test_images, config, context.seed).reshape(-1, 1)
    context.save(ANOMALY, clock, calibration.predict_proba(test_scores)[:, 1],
                 train_probability=calibration.predict_proba(train_scores)[:, 1], steps=steps)


def _variant(variant: str):
    def run(context: FoldContext, task) -> None:
        clock = Stopwatch.started()
        config, batch = context.config, context.tensors.batch
        if variant in ("ddpm", "stage1"):
            model = context.stage1
        else:
            start = context.stage1 if variant == "immunodiff" else stage2_only_start(
                context.stage1, config)
            folder = context.store.output / "runs" / f"fold_{context.fold['fold']}" / variant
            model = train_stage2(start, context.dataset, context.train_rows.tolist(), config,
                                 folder, context.seed, task.sub(0.0, 0.7))
        task.report(0.7, "heads")
        probability, risk, in_sample = heads_predictions(
            model, variant, batch, context.train_rows, context.test_rows, config, context.seed)
        context.save(VARIANT_METHOD[variant], clock, probability, risk, in_sample,
                     steps=variant_steps(variant, config))
        if variant == "ddpm":
            return
        clock = Stopwatch.started()
        rows, mmd = synthesis_rows(model, variant, batch, context.test_rows,
                                   context.tensors.ids, config, context.tensors.spacing,
                                   context.seed, task.sub(0.8, 1.0))
        context.store.save_synthesis(variant, rows, mmd, clock.seconds())

    return run


def all_steps(config: EvaluationConfig) -> list[Step]:
    steps = [Step(CLINICAL, [(PREDICTIONS, CLINICAL)], _clinical),
             Step(ORACLE, [(PREDICTIONS, ORACLE)], _oracle)]
    for name in config.image_baselines:
        for with_clinical in (False, True):
            method = image_method(name, with_clinical)
            steps.append(Step(method, [(PREDICTIONS, method)],
                              _image_baseline(name, with_clinical)))
    steps.append(Step("diffusion baselines", [(PREDICTIONS, ZERO_SHOT), (PREDICTIONS, ANOMALY)],
                      _diffusion_baselines))
    for variant, method in VARIANT_METHOD.items():
        outputs = [(PREDICTIONS, method)] + ([] if variant == "ddpm" else [(SYNTHESIS, variant)])
        steps.append(Step(method, outputs, _variant(variant), needs_stage1=True))
    return steps


def method_names(config: EvaluationConfig) -> list[str]:
    """Every method a fold can run under ``config`` (before ``config.methods`` selects)."""
    return [name for step in all_steps(config) for kind, name in step.outputs
            if kind == PREDICTIONS]


def check_methods(config: EvaluationConfig) -> None:
    known = method_names(config)
    unknown = [m for m in config.methods or () if m not in known]
    if unknown:
        raise SettingError(f"--methods: unknown method(s) {unknown}; expected names of "
                           f"{known}.")


def fold_steps(config: EvaluationConfig) -> list[Step]:
    """The steps of one fold: every method, or those ``config.methods`` names."""
    check_methods(config)
    steps = all_steps(config)
    if config.methods is None:
        return steps
    chosen = set(config.methods)
    return [s for s in steps if any(name in chosen for _, name in s.outputs)]
