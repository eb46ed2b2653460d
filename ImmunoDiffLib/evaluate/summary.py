"""Tables 1-3 and the figures from the stored out-of-fold results (rows: ``table_rows``).

Per-fold metrics give mean ± SD over folds; the 95 % CIs are percentile bootstraps over the
patients of the pooled out-of-fold predictions. Balanced accuracy, F1, precision and recall
use each fold's decision threshold, chosen on its training patients. Table 2's first row is
the reference, the clinical-only Cox model; every other row has its paired difference from it.
Table 3 (the ablations) comes from the same folds as Table 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..reporting.evaluation import save_kaplan_meier, save_roc_curves
from ..reporting.reliability import save_reliability_diagram
from .budgets import method_budget
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
    VARIANT_METHOD,
    ZERO_SHOT,
    image_method,
)
from .metrics import mean_sd
from .records import method_records, stage1_cpu_per_fold
from .store import SYNTHESIS, pooled, write_json
from .synthesis import shrinks
from .table_rows import DELTA_AUC, METRIC_COLUMNS, classification_row, survival_row
from .tables import write_table

ABLATIONS = (("Stage 1 only", "stage1", CONTROLNET_FEATURES), ("Stage 2 only", "stage2",
                                                                STAGE2_ONLY),
             ("Stage 1 + 2 (ImmunoDiff)", "immunodiff", IMMUNODIFF))
TABLE1_COLUMNS = ["method", *METRIC_COLUMNS, "balanced accuracy 95% CI", "AUC 95% CI",
                  "balanced accuracy at 0.5", "threshold", "ECE", DELTA_AUC, "steps per fold",
                  "seconds per fold", "CPU-min per fold"]
TABLE2_COLUMNS = ["method", "c-index", "c-index 95% CI (pooled)",
                  "Δ c-index vs reference (paired 95% CI)"]
SURVIVAL_REFERENCE = CLINICAL  # its Cox model: Table 2's reference row
STAGE1_METHODS = set(VARIANT_METHOD.values())


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


def all_records(output: Path, tensors: CohortTensors, config: EvaluationConfig,
                extra=()) -> dict:
    """{method: MethodRecords or None} of Table 1's methods, "Stage 2 only" and ``extra``."""
    names = dict.fromkeys([*table1_methods(config), STAGE2_ONLY, *extra])
    return {name: method_records(output, name, tensors) for name in names}


def response_rows(output: Path, records: dict, folds, config: EvaluationConfig,
                  names) -> list[dict]:
    stage1 = stage1_cpu_per_fold(output, folds)
    return [classification_row(records[n], config.bootstrap_repeats, config.seed,
                               stage1 if n in STAGE1_METHODS else None,
                               method_budget(n, config), records.get(CLINICAL))
            for n in names if records.get(n)]


def survival_rows(records: dict, config: EvaluationConfig, extra=()) -> list[dict]:
    """Table 2: the clinical-only Cox model first (the reference), then the others."""
    reference = records.get(SURVIVAL_REFERENCE)
    names = [SURVIVAL_REFERENCE, DDPM_FEATURES, CONTROLNET_FEATURES, STAGE2_ONLY, IMMUNODIFF,
             ORACLE, *extra]
    rows = [survival_row(records[n], config.bootstrap_repeats, config.seed, reference)
            for n in names if records.get(n) and records[n].has_risk]
    if rows and reference is not None:
        rows[0]["method"] = f"{SURVIVAL_REFERENCE} (Cox; reference)"
    return rows


def ablation_rows(output: Path, records: dict, tensors: CohortTensors,
                  config: EvaluationConfig) -> list[dict]:
    table3 = []
    for label, variant, method in ABLATIONS:
        if not records.get(method):
            continue
        row = {"ablation": label, **synthesis_columns(output, variant, tensors)}
        response = classification_row(records[method], config.bootstrap_repeats, config.seed)
        for column in ("balanced accuracy", "AUC", "AUC 95% CI"):
            row[column] = response[column]
        row["c-index"] = survival_row(records[method], config.bootstrap_repeats,
                                      config.seed)["c-index"]
        table3.append(row)
    return table3


def write_figures(output: Path, records: dict, config: EvaluationConfig) -> dict:
    """ROC, reliability and Kaplan-Meier pictures of the pooled out-of-fold predictions."""
    present = [n for n in table1_methods(config) if records.get(n)]
    if not present:
        return {}
    anchor = records[IMMUNODIFF] or records[present[0]]
    labels, ids = anchor.pooled("labels"), anchor.ids()

    def aligned(name, attribute):
        values = dict(zip(records[name].ids(), records[name].pooled(attribute), strict=True))
        return np.array([values[p] for p in ids]) if set(values) >= set(ids) else None

    figures = {}
    probabilities = {n: aligned(n, "probability") for n in present}
    probabilities = {n: v for n, v in probabilities.items() if v is not None}
    figures["roc"] = str(save_roc_curves(labels, probabilities, output / "roc.png",
                                         "ROC, pooled out-of-fold predictions"))
    shown = {n: probabilities[n] for n in (IMMUNODIFF, CLINICAL) if n in probabilities}
    if shown:
        figures["reliability"] = str(save_reliability_diagram(
            labels, shown, output / "reliability.png",
            "Reliability, pooled out-of-fold predictions (uncalibrated)"))
    risks = {n: aligned(n, "risk") for n in (CLINICAL, DDPM_FEATURES, IMMUNODIFF)
             if records.get(n) and records[n].has_risk}
    risks = {n: v for n, v in risks.items() if v is not None}
    if risks:
        figures["kaplan_meier"] = str(save_kaplan_meier(
            anchor.pooled("time"), anchor.pooled("event"), risks, output / "kaplan_meier.png",
            "Kaplan-Meier by predicted risk (split at the median)"))
    return figures


def write_summary(output: Path, tensors: CohortTensors, folds, config: EvaluationConfig,
                  seconds: float, title: str = "", extra_methods=()) -> dict:
    """Tables 1-3 (Markdown and CSV), the figures and ``evaluation.json`` into ``output``;
    ``title`` names the protocol in the tables' titles; ``extra_methods``: methods outside the
    paper's list (e.g. a test's) shown in Table 1 too."""
    suffix = f" ({title})" if title else ""
    records = all_records(output, tensors, config, extra_methods)
    table1 = response_rows(output, records, folds, config,
                           [*table1_methods(config), *extra_methods])
    write_table(table1, TABLE1_COLUMNS, output / "table1",
                f"Table 1: response (responder vs not){suffix}")
    table2 = survival_rows(records, config, extra_methods)
    write_table(table2, TABLE2_COLUMNS, output / "table2",
                f"Table 2: survival (Harrell's c-index){suffix}")
    table3 = ablation_rows(output, records, tensors, config)
    columns3 = ["ablation", "MMD", "SSIM", "balanced accuracy", "AUC", "AUC 95% CI", "c-index",
                "lesion change agrees with response", "same, true follow-up"]
    write_table(table3, columns3, output / "table3",
                f"Table 3: ablation (synthesis vs true follow-up; response; survival){suffix}")
    figures = write_figures(output, records, config)
    summary = {"patients": len(tensors), "responders": int(tensors.labels(tensors.ids).sum()),
               "folds": len(folds), "seconds": round(seconds, 1),
               "config": json.loads(json.dumps(config.as_dict(), default=str)),
               "table1": table1, "table2": table2, "table3": table3, "figures": figures}
    write_json(output / "evaluation.json", json.loads(json.dumps(summary, default=str)))
    return summary
