"""Tables 1-3 and the figures from the stored out-of-fold results.

Per-fold metrics give mean ± SD over folds; the 95 % CIs are percentile bootstraps over the
patients of the pooled out-of-fold predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..calibration import expected_calibration_error
from ..reporting.evaluation import save_kaplan_meier, save_roc_curves
from ..reporting.reliability import save_reliability_diagram
from .config import EvaluationConfig
from .data import CohortTensors
from .methods import (
    ANOMALY,
    CLINICAL,
    CONTROLNET_FEATURES,
    DDPM_FEATURES,
    IMMUNODIFF,
    ORACLE,
    STAGE2_ONLY,
    ZERO_SHOT,
    image_method,
)
from .metrics import bootstrap, c_index, classification_metrics, mean_sd
from .store import SYNTHESIS, pooled, write_json
from .synthesis import shrinks
from .tables import write_table

ABLATIONS = (("Stage 1 only", "stage1", CONTROLNET_FEATURES), ("Stage 2 only", "stage2",
                                                                STAGE2_ONLY),
             ("Stage 1 + 2 (ImmunoDiff)", "immunodiff", IMMUNODIFF))
METRIC_COLUMNS = {"balanced accuracy": "balanced_accuracy", "F1": "f1",
                  "precision": "precision", "recall": "recall", "AUC": "auc"}


def _safe_c_index(time, event, risk) -> float:
    try:
        return c_index(time, event, risk)
    except ValueError:  # no comparable pair (e.g. no event in a small fold)
        return float("nan")


def _method_records(output: Path, name: str, tensors: CohortTensors):
    """Per fold: (labels, probability, risk, time, event); None when the method has no files."""
    folds = pooled(output, name)
    if not folds:
        return None
    records = []
    for fold in folds:
        labels = tensors.labels(fold["patient_id"])
        time, event = tensors.survival(fold["patient_id"])
        records.append((labels, np.asarray(fold["probability"], float),
                        None if fold["risk"] is None else np.asarray(fold["risk"], float),
                        time, event, fold.get("seconds", 0.0)))
    return records


def _pool(records, column: int) -> np.ndarray:
    return np.concatenate([r[column] for r in records])


def classification_row(name: str, records, repeats: int) -> dict:
    per_fold = [classification_metrics(r[0], r[1]) for r in records]
    row = {"method": name}
    for column, key in METRIC_COLUMNS.items():
        row[column] = mean_sd([m[key] for m in per_fold])
    labels, probability = _pool(records, 0), _pool(records, 1)
    row["balanced accuracy 95% CI"] = str(bootstrap(
        lambda y, p: classification_metrics(y, p)["balanced_accuracy"], labels, probability,
        repeats=repeats))
    row["AUC 95% CI"] = str(bootstrap(lambda y, p: classification_metrics(y, p)["auc"],
                                      labels, probability, repeats=repeats))
    row["ECE"] = expected_calibration_error(labels, probability)
    row["seconds per fold"] = float(np.mean([r[5] for r in records]))
    return row


def survival_row(name: str, records, repeats: int) -> dict:
    per_fold = [_safe_c_index(r[3], r[4], r[2]) for r in records]
    time, event, risk = _pool(records, 3), _pool(records, 4), _pool(records, 2)
    return {"method": name, "c-index": mean_sd(per_fold),
            "c-index 95% CI (pooled)": str(bootstrap(_safe_c_index, time, event, risk,
                                                     repeats=repeats))}


def synthesis_columns(output: Path, variant: str, tensors: CohortTensors) -> dict:
    folds = pooled(output, variant, SYNTHESIS)
    if not folds:
        return {}
    ssim = [np.mean([r["ssim"] for r in f["rows"]]) for f in folds]
    mmd = [f["mmd"] for f in folds]
    rows = [r for f in folds for r in f["rows"]]
    labels = tensors.labels([r["patient_id"] for r in rows])
    agree = [shrinks(r["volume_baseline_ml"], r["volume_synthesized_ml"]) == bool(y)
             for r, y in zip(rows, labels, strict=True)]
    truth = [shrinks(r["volume_baseline_ml"], r["volume_true_ml"]) == bool(y)
             for r, y in zip(rows, labels, strict=True)]
    return {"MMD": mean_sd(mmd), "SSIM": mean_sd(ssim),
            "lesion change agrees with response": f"{100 * np.mean(agree):.0f} %",
            "same, true follow-up": f"{100 * np.mean(truth):.0f} %"}


def table1_methods(config: EvaluationConfig) -> list[str]:
    images = [image_method(n, c) for n in config.image_baselines for c in (False, True)]
    return [IMMUNODIFF, *images, CLINICAL, ZERO_SHOT, ANOMALY, DDPM_FEATURES,
            CONTROLNET_FEATURES, ORACLE]


def write_summary(output: Path, tensors: CohortTensors, folds, config: EvaluationConfig,
                  seconds: float) -> dict:
    repeats = config.bootstrap_repeats
    records = {name: _method_records(output, name, tensors)
               for name in [*table1_methods(config), STAGE2_ONLY]}
    table1 = [classification_row(n, records[n], repeats) for n in table1_methods(config)
              if records[n]]
    columns1 = ["method", *METRIC_COLUMNS, "balanced accuracy 95% CI", "AUC 95% CI", "ECE",
                "seconds per fold"]
    write_table(table1, columns1, output / "table1", "Table 1: response (responder vs not)")
    survival_methods = [CLINICAL, DDPM_FEATURES, CONTROLNET_FEATURES, IMMUNODIFF, ORACLE]
    table2 = [survival_row(n, records[n], repeats) for n in survival_methods if records[n]]
    write_table(table2, ["method", "c-index", "c-index 95% CI (pooled)"], output / "table2",
                "Table 2: survival (Harrell's c-index)")
    table3 = []
    for label, variant, method in ABLATIONS:
        if not records[method]:
            continue
        row = {"ablation": label, **synthesis_columns(output, variant, tensors)}
        response = classification_row(method, records[method], repeats)
        row["balanced accuracy"], row["AUC"] = response["balanced accuracy"], response["AUC"]
        row["c-index"] = survival_row(method, records[method], repeats)["c-index"]
        table3.append(row)
    columns3 = ["ablation", "MMD", "SSIM", "balanced accuracy", "AUC", "c-index",
                "lesion change agrees with response", "same, true follow-up"]
    write_table(table3, columns3, output / "table3",
                "Table 3: ablation (synthesis vs true follow-up; response; survival)")
    labels = _pool(records[IMMUNODIFF], 0) if records[IMMUNODIFF] else None
    figures = {}
    if labels is not None:
        probabilities = {n: _pool(records[n], 1) for n in table1_methods(config) if records[n]}
        figures["roc"] = str(save_roc_curves(labels, probabilities, output / "roc.png",
                                             "ROC, pooled out-of-fold predictions"))
        shown = {n: probabilities[n] for n in (IMMUNODIFF, CLINICAL) if n in probabilities}
        figures["reliability"] = str(save_reliability_diagram(
            labels, shown, output / "reliability.png",
            "Reliability, pooled out-of-fold predictions (uncalibrated)"))
        risks = {n: _pool(records[n], 2) for n in (CLINICAL, DDPM_FEATURES, IMMUNODIFF)
                 if records[n]}
        time, event = _pool(records[IMMUNODIFF], 3), _pool(records[IMMUNODIFF], 4)
        figures["kaplan_meier"] = str(save_kaplan_meier(
            time, event, risks, output / "kaplan_meier.png",
            "Kaplan-Meier by predicted risk (split at the median)"))
    summary = {"patients": len(tensors), "responders": int(tensors.labels(tensors.ids).sum()),
               "folds": len(folds), "seconds": round(seconds, 1),
               "config": json.loads(json.dumps(config.as_dict(), default=str)),
               "table1": table1, "table2": table2, "table3": table3, "figures": figures}
    write_json(output / "evaluation.json", json.loads(json.dumps(summary, default=str)))
    return summary
