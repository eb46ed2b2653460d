"""The methods of one fold, as steps the harness runs (and skips once stored).

Method names are those of the tables; each step trains on the fold's training patients only and
predicts its test patients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from ..seeds import derived_seed
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
from .immunodiff_runs import heads_predictions, stage2_only_start, synthesis_rows, train_stage2
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

    def save(self, name: str, started: float, probability=None, risk=None) -> None:
        self.store.save_predictions(name, self.fold["test"], probability, risk,
                                    time.perf_counter() - started)


@dataclass
class Step:
    name: str
    outputs: list[tuple[str, str]]
    run: object  # (FoldContext, Task) -> None


def _clinical(context: FoldContext, task) -> None:
    started = time.perf_counter()
    train_x, test_x = clinical_matrix(context.train).numpy(), clinical_matrix(
        context.test).numpy()
    logistic = fit_logistic(train_x, context.labels(context.train))
    cox = fit_cox(train_x, context.train["survival_months"].numpy(),
                  context.train["event"].numpy())
    context.save(CLINICAL, started, logistic.predict_proba(test_x)[:, 1], cox.predict(test_x))


def _oracle(context: FoldContext, task) -> None:
    started = time.perf_counter()
    spacing = context.tensors.spacing
    train_x = volume_change_score(context.train, spacing).reshape(-1, 1)
    test_x = volume_change_score(context.test, spacing).reshape(-1, 1)
    logistic = fit_logistic(train_x, context.labels(context.train))
    cox = fit_cox(train_x, context.train["survival_months"].numpy(),
                  context.train["event"].numpy())
    context.save(ORACLE, started, logistic.predict_proba(test_x)[:, 1], cox.predict(test_x))


def _image_baseline(name: str, with_clinical: bool):
    def run(context: FoldContext, task) -> None:
        started = time.perf_counter()
        clinical = (clinical_matrix(context.train), clinical_matrix(context.test)) \
            if with_clinical else (None, None)
        model = train_image_classifier(name, context.train["baseline"], clinical[0],
                                       context.train["response"].float(), context.config,
                                       context.seed, task)
        probability = predict_image_classifier(model, context.test["baseline"], clinical[1])
        context.save(image_method(name, with_clinical), started, probability.numpy())

    return run


def image_method(name: str, with_clinical: bool) -> str:
    return f"{name} + clinical" if with_clinical else name


def _diffusion_baselines(context: FoldContext, task) -> None:
    started = time.perf_counter()
    train_images, test_images = context.train["baseline"], context.test["baseline"]
    labels = context.labels(context.train)
    model = train_class_ddpm(train_images, torch.from_numpy(labels), context.config,
                             context.seed, task.sub(0.0, 0.5))
    task.report(0.5, "zero-shot classification")
    train_errors = class_errors(model, train_images, context.config, context.seed)
    test_errors = class_errors(model, test_images, context.config, context.seed)
    context.save(ZERO_SHOT, started, zero_shot_probability(test_errors, train_errors))
    started = time.perf_counter()
    task.report(0.75, "anomaly scores")
    calibration = fit_score_calibration(
        anomaly_scores(model, train_images, context.config, context.seed), labels)
    test_scores = anomaly_scores(model, test_images, context.config, context.seed)
    context.save(ANOMALY, started, calibration.predict_proba(test_scores.reshape(-1, 1))[:, 1])


def _variant(variant: str):
    def run(context: FoldContext, task) -> None:
        started = time.perf_counter()
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
        probability, risk = heads_predictions(model, variant, batch, context.train_rows,
                                              context.test_rows, config, context.seed)
        context.save(VARIANT_METHOD[variant], started, probability, risk)
        if variant == "ddpm":
            return
        started = time.perf_counter()
        rows, mmd = synthesis_rows(model, variant, batch, context.test_rows,
                                   context.tensors.ids, config, context.tensors.spacing,
                                   context.seed, task.sub(0.8, 1.0))
        context.store.save_synthesis(variant, rows, mmd, time.perf_counter() - started)

    return run


def fold_steps(config: EvaluationConfig) -> list[Step]:
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
        steps.append(Step(method, outputs, _variant(variant)))
    return steps
