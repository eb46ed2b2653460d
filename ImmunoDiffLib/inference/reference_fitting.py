"""Fitting a bundle's held-out parts: the out-of-distribution reference and the probability
calibration, from cohorts the pipeline reads exactly as it reads a new case.

Per patient (:func:`case_rows`): the response head's logits and the up-block features with
the clinical variables left out, computed by ``ImmunoDiffPipeline`` itself (same noise draws
and seed), the lesion's longest axial diameter on the crop, the crop's padding, the clinical
record and the known response. Then:

* :func:`fit_reference`: the training patients' ranges and feature reference, its threshold
  set on held-out patients so that at most 5 % of them are flagged for any reason (those the
  ranges flag, and the share the rule on the heads' logit range flags among new patients,
  use part of that share), and, where each patient's CT is known (:func:`with_backgrounds`),
  so that patients on a CT the reference never saw are flagged no more often;
* :func:`fit_held_out_calibration`: Platt scaling of the held-out patients' logits, with the
  ECE before and after (the latter cross-fitted, so it is honest) and the range of their
  logits (beyond it the flag says the heads extrapolate).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from ..calibration import (
    Calibration,
    cross_fitted,
    expected_calibration_error,
    fit_calibration,
    sigmoid,
)
from ..clinical import BY_NAME, Standardisation
from ..cohort import CohortCase
from ..datasets import CohortDataset, PreprocessConfig
from ..ood_reference import (
    HELD_OUT_FLAG_RATE,
    OODReference,
    TrainingRanges,
    beyond_range_rate,
    fit_feature_reference,
)
from ..progress import ProgressCallback, Task
from .change_region import lesion_diameter_mm
from .out_of_distribution import assess


def case_rows(pipeline, cases: list[CohortCase], preprocess: PreprocessConfig | None = None,
              progress: ProgressCallback | None = None) -> list[dict]:
    """Per case: ``logits`` (draws,), ``image_features`` (F,), ``diameter_mm``,
    ``padded_fraction``, ``record`` (ClinicalRecord) and ``response`` (0/1 or None). Only
    the baselines are read (the crops come through the preprocessing cache)."""
    info = pipeline.info
    baselines = [replace(case, followup_ct=None, followup_tumour_mask=None) for case in cases]
    preprocess = replace(preprocess or PreprocessConfig(), crop=info.crop, window=info.window)
    dataset = CohortDataset(baselines, preprocess, standardisation=info.standardisation)
    task = Task(progress)
    rows = []
    for index, case in enumerate(cases):
        task.report(index / max(len(cases), 1), f"features of {case.patient_id}")
        item = dataset[index]
        batch = default_collate([{k: v for k, v in item.items() if k != "patient_id"}])
        batch = {k: ({g: t.to(pipeline.device) for g, t in v.items()} if isinstance(v, dict)
                     else v.to(pipeline.device).float() if torch.is_tensor(v) else v)
                 for k, v in batch.items()}
        logits, image_features = pipeline.head_outputs(batch)
        rows.append({"patient_id": case.patient_id, "logits": logits,
                     "image_features": image_features.mean(0),
                     "diameter_mm": lesion_diameter_mm(item["tumour"][0].numpy() > 0,
                                                       info.crop.spacing),
                     "padded_fraction": float(dataset.arrays(index)["padded_fraction"]),
                     "record": case.clinical, "response": case.response})
    task.report(1.0, "features done")
    return rows


def training_ranges(rows: list[dict]) -> TrainingRanges:
    """The training rows' lesion diameters, largest padding, clinical ranges and categories."""
    diameters = [r["diameter_mm"] for r in rows if r["diameter_mm"] > 0]
    numeric, categories = {}, {}
    for name, variable in BY_NAME.items():
        values = [r["record"].values.get(name) for r in rows]
        values = [v for v in values if v is not None]
        if not values:
            continue
        if variable.is_categorical:
            categories[name] = sorted(set(values))
        else:
            numeric[name] = (round(float(min(values)), 4), round(float(max(values)), 4))
    return TrainingRanges((round(min(diameters), 1), round(max(diameters), 1)),
                          round(max(r["padded_fraction"] for r in rows), 4), numeric, categories)


def range_flagged(rows: list[dict], ranges: TrainingRanges,
                  standardisation: Standardisation) -> np.ndarray:
    """(N,) bool: the rows the flag's rules alone flag (lesion size, crop padding, clinical
    values beyond ``ranges``), as :func:`assess` judges a new case."""
    rules = OODReference(ranges, None, {})
    return np.array([assess(rules, lesion_diameter_mm=r["diameter_mm"],
                            lesion_found=r["diameter_mm"] > 0,
                            padded_fraction=r["padded_fraction"], record=r["record"],
                            standardisation=standardisation).flagged for r in rows], bool)


def fit_reference(train: list[dict], held_out: list[dict], source: dict,
                  standardisation: Standardisation) -> OODReference:
    """The out-of-distribution reference: ranges of ``train``, feature reference of its
    image features with the threshold set on ``held_out``'s, so that the rules, the score
    and the rule on the logit range (fitted on the same held-out patients,
    :func:`fit_held_out_calibration`: it flags about ``beyond_range_rate`` of new patients)
    together flag at most 5 % of ``held_out``; where every row has a ``background``, at most
    that share of patients on a background the reference never saw as well."""
    ranges = training_ranges(train)
    grouped = all(r.get("background") is not None for r in train + held_out)
    features = fit_feature_reference(
        np.stack([r["image_features"] for r in train]),
        np.stack([r["image_features"] for r in held_out]),
        rate=HELD_OUT_FLAG_RATE - beyond_range_rate(len(held_out)),
        flagged_otherwise=range_flagged(held_out, ranges, standardisation),
        train_groups=[r["background"] for r in train] if grouped else None,
        held_out_groups=[r["background"] for r in held_out] if grouped else None)
    return OODReference(ranges, features, dict(source))


def mean_logits(rows: list[dict]) -> np.ndarray:
    """(N,) each row's logit, mean over its noise draws."""
    return np.array([float(np.mean(r["logits"])) for r in rows])


def fit_held_out_calibration(held_out: list[dict], source: dict) -> Calibration:
    """Platt scaling on the held-out rows with a known response, fitted on their true
    response probabilities where every row has one (``true_probability``: a simulated
    cohort, :func:`with_true_probabilities`), else on the responses; ``source`` gains the
    patients, what was fitted on, the ECE before (the head's sigmoid) and after
    (cross-fitted; against the true probabilities too where known) and the logit range."""
    rows = [r for r in held_out if r["response"] is not None]
    logits = mean_logits(rows)
    labels = np.array([int(r["response"]) for r in rows])
    known = all(r.get("true_probability") is not None for r in rows)
    truth = np.array([float(r["true_probability"]) for r in rows]) if known else None
    calibration = fit_calibration(logits, labels if truth is None else truth)
    honest = cross_fitted(logits, labels, targets=truth)
    calibration.source = {
        **source, "patients": len(rows), "responders": int(labels.sum()),
        "fitted_on": "responses" if truth is None else "true response probabilities",
        "ece_uncalibrated": round(expected_calibration_error(labels, sigmoid(logits)), 4),
        "ece_calibrated_cross_fitted": round(expected_calibration_error(labels, honest), 4),
        "logit_range": [round(float(logits.min()), 4), round(float(logits.max()), 4)]}
    if truth is not None:
        calibration.source["ece_to_true_probability_cross_fitted"] = round(
            expected_calibration_error(truth, honest), 4)
    return calibration


def with_true_probabilities(rows: list[dict], manifest) -> list[dict]:
    """``rows`` of a simulated cohort given each patient's true response probability
    (``true_probability``, from the simulation's truth file beside ``manifest``); rows of
    a cohort without one are returned as they are."""
    from ..simulation.simulate import TRUTH_NAME  # deferred: only simulated cohorts have it

    path = Path(manifest).parent / TRUTH_NAME
    if not path.is_file():
        return rows
    truth = {p["patient_id"]: p.get("response_probability")
             for p in json.loads(path.read_text(encoding="utf-8")).get("patients", [])}
    return [{**row, "true_probability": truth.get(row["patient_id"])} for row in rows]


def with_backgrounds(rows: list[dict], cases: list[CohortCase]) -> list[dict]:
    """``rows`` (one per case of ``cases``) given the CT each simulated patient is built on
    (``background``, from the simulation's truth file in the case's cohort folder); None for
    a patient without one (a real cohort: no groups, one threshold)."""
    from ..simulation.simulate import TRUTH_NAME  # deferred: only simulated cohorts have it

    truths: dict[Path, dict] = {}
    out = []
    for row, case in zip(rows, cases, strict=True):
        path = Path(case.baseline_ct).parent.parent / TRUTH_NAME
        if path not in truths:
            truths[path] = ({p["patient_id"]: p.get("background") for p in json.loads(
                path.read_text(encoding="utf-8")).get("patients", [])}
                if path.is_file() else {})
        out.append({**row, "background": truths[path].get(case.patient_id)})
    return out
