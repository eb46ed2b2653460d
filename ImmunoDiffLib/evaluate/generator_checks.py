"""Is the synthesized follow-up believable? Held-out checks of the generator on a simulated
cohort with known truth, each beside its reference:

* response: the synthesized lesion change under the patient's clinical variables, as a
  score of response (AUC of 1 − volume ratio against the true label), beside the AUC of the
  baseline lesion size alone (the simulator makes large lesions respond less: a generator that
  only erases small lesions looks predictive) and of a clinical-only logistic regression fitted
  on the training cohort; the rate of non-responders synthesized as shrunk;
* scenarios (models with a response scenario): share of lesions shrunk below 0.343 of their
  volume when told "responder", and kept when told "non-responder", with the median volume
  fractions beside the true follow-ups' (the ceiling: the share of true responders this
  measure calls shrunk);
* anatomy: outside the dilated lesions, mean |synthesized − baseline| HU beside the true
  follow-up's, and the share of voxels that change tissue class (above/below −400 HU);
  SSIM to the true follow-up;
* agreement of the heads' responder probability with the synthesized RECIST.

Lesion volume here: voxels denser than −550 HU inside the baseline tumour mask dilated by one
voxel (the cohort's mask: a region grown from the point can leak into vessels or the chest
wall), so the ratio measures how much of the baseline lesion is still there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ..imaging import HUWindow, denormalise
from ..inference.sampling import SamplingOptions, opposite_scenario, sample
from .data import clinical_matrix
from .synthesis import SHRINK_VOLUME_RATIO, ssim

DENSE_HU = -550.0
TISSUE_HU = -400.0
BACKGROUND_DILATION = 2  # voxels around both tumour masks left out of the background


def _dilate(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """(B, 1, X, Y, Z) bool -> dilated by ``voxels`` (a cube)."""
    size = 2 * voxels + 1
    return F.max_pool3d(mask.float(), size, stride=1, padding=voxels) > 0


def lesion_fraction(hu: torch.Tensor, baseline_hu: torch.Tensor, mask: torch.Tensor) -> float:
    """Dense voxels of ``hu`` inside the dilated mask, relative to the baseline's."""
    region = _dilate(mask, 1)
    before = float(((baseline_hu > DENSE_HU) & region).sum())
    return float(((hu > DENSE_HU) & region).sum()) / before if before else float("nan")


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    keep = ~np.isnan(scores)
    if len(set(labels[keep].tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels[keep], scores[keep]))


@torch.inference_mode()
def synthesize(model, one: dict, options: SamplingOptions,
               scenario: float | None = None) -> tuple[torch.Tensor, float]:
    """One case's synthesized follow-up (1, 1, X, Y, Z) in [-1, 1] (mean of the samples) and
    the scenario s it was conditioned on (NaN without scenarios); ``scenario`` s or None for
    the clinically conditioned follow-up (s = the adapter's estimate, unguided; a given s is
    guided against 1 − s as the pipeline does)."""
    given = None if scenario is None else torch.tensor([scenario])
    conditions = model.encode_conditions(one, "2", scenario=given)
    opposite = None if scenario is None else opposite_scenario(model, one, conditions, options)
    x0 = sample(model, conditions, tuple(one["baseline"].shape[1:]), options, opposite=opposite)
    chosen = float("nan") if conditions.scenario is None else float(conditions.scenario[0])
    return model.followup_from(x0, one["baseline"]).mean(0, keepdim=True), chosen


def case_rows(model, batch: dict, ids: list[str], options: SamplingOptions,
              scenarios: bool, progress=None) -> list[dict]:
    """Per held-out case: volume fractions (synthesized, true, per scenario), background
    errors, tissue-class changes, SSIM."""
    window = HUWindow()
    rows = []
    for index, patient in enumerate(ids):
        if progress is not None:
            progress(index / len(ids), f"synthesizing {patient}")
        one = {k: ({g: v[index:index + 1] for g, v in value.items()} if isinstance(value, dict)
                   else value[index:index + 1]) for k, value in batch.items()
               if isinstance(value, (dict, torch.Tensor))}
        baseline, true = one["baseline"], one["followup"]
        synthesized, estimate = synthesize(model, one, options)
        to_hu = lambda image: torch.from_numpy(denormalise(image.numpy(), window))  # noqa: E731
        hu = {"baseline": to_hu(baseline), "true": to_hu(true), "synth": to_hu(synthesized)}
        lesion = one["tumour"] > 0
        around = _dilate(lesion | (one.get("followup_tumour", one["tumour"]) > 0),
                         BACKGROUND_DILATION)
        outside = ~around
        row = {"patient_id": patient, "response": float(one["response"][0]),
               "baseline_lesion_voxels": float(lesion.sum()), "generator_estimate": estimate,
               "fraction_synthesized": lesion_fraction(hu["synth"], hu["baseline"], lesion),
               "fraction_true": lesion_fraction(hu["true"], hu["baseline"], lesion),
               "background_mae_hu": float((hu["synth"] - hu["baseline"]).abs()[outside].mean()),
               "true_background_mae_hu": float(
                   (hu["true"] - hu["baseline"]).abs()[outside].mean()),
               "tissue_change": float(((hu["synth"] > TISSUE_HU)
                                       != (hu["baseline"] > TISSUE_HU))[outside].float().mean()),
               "ssim": float(ssim(synthesized, true)[0]),
               "ssim_copy_baseline": float(ssim(baseline, true)[0])}
        if scenarios:
            for name, value in (("responder", 1.0), ("non_responder", 0.0)):
                image, _ = synthesize(model, one, options, value)
                image_hu = to_hu(image)
                row[f"fraction_if_{name}"] = lesion_fraction(image_hu, hu["baseline"], lesion)
                row[f"background_mae_hu_if_{name}"] = float(
                    (image_hu - hu["baseline"]).abs()[outside].mean())
        rows.append(row)
    return rows


def clinical_only_scores(train_batch: dict, test_batch: dict) -> np.ndarray:
    """P(responder) of a logistic regression on the clinical features alone, fitted on the
    training cohort."""
    x_train = clinical_matrix(train_batch).numpy()
    y_train = train_batch["response"].numpy().astype(int)
    fitted = LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train)
    return fitted.predict_proba(clinical_matrix(test_batch).numpy())[:, 1]


def summarise(rows: list[dict], clinical_scores: np.ndarray,
              head_probability: np.ndarray | None = None) -> dict:
    """The checks' numbers over the held-out cases (see the module docstring)."""
    labels = np.array([r["response"] for r in rows]).astype(int)
    fraction = np.array([r["fraction_synthesized"] for r in rows])
    shrunk = fraction < SHRINK_VOLUME_RATIO
    size = np.array([r["baseline_lesion_voxels"] for r in rows])
    out = {
        "patients": len(rows), "responders": int(labels.sum()),
        "auc_synthesized_shrink": _auc(labels, 1.0 - fraction),
        "auc_baseline_size_only": _auc(labels, -size),
        "auc_clinical_only_logistic": _auc(labels, clinical_scores),
        "auc_generator_estimate": _auc(labels, np.array([r["generator_estimate"]
                                                         for r in rows])),
        "synthesized_shrinks_responders": float(shrunk[labels == 1].mean()),
        "false_shrink_non_responders": float(shrunk[labels == 0].mean()),
        "true_shrink_correct": float(np.mean(
            (np.array([r["fraction_true"] for r in rows]) < SHRINK_VOLUME_RATIO) == labels)),
        "background_mae_hu": float(np.mean([r["background_mae_hu"] for r in rows])),
        "true_background_mae_hu": float(np.mean([r["true_background_mae_hu"] for r in rows])),
        "tissue_change_fraction": float(np.mean([r["tissue_change"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "ssim_copy_baseline": float(np.mean([r["ssim_copy_baseline"] for r in rows])),
    }
    if "fraction_if_responder" in rows[0]:
        out["scenario_responder_shrinks"] = float(np.mean(
            [r["fraction_if_responder"] < SHRINK_VOLUME_RATIO for r in rows]))
        out["scenario_non_responder_keeps"] = float(np.mean(
            [r["fraction_if_non_responder"] >= SHRINK_VOLUME_RATIO for r in rows]))
        # how far each scenario goes, beside what the true follow-ups did (guidance can
        # exaggerate): median volume fractions
        out["scenario_background_mae_hu"] = float(np.mean(
            [r[f"background_mae_hu_if_{n}"] for r in rows for n in ("responder",
                                                                    "non_responder")]))
        out["scenario_responder_median_fraction"] = float(np.median(
            [r["fraction_if_responder"] for r in rows]))
        out["scenario_non_responder_median_fraction"] = float(np.median(
            [r["fraction_if_non_responder"] for r in rows]))
    true_fraction = np.array([r["fraction_true"] for r in rows])
    out["true_responders_shrunk"] = float(np.mean(true_fraction[labels == 1]
                                                  < SHRINK_VOLUME_RATIO))
    out["true_responder_median_fraction"] = float(np.median(true_fraction[labels == 1]))
    out["true_non_responder_median_fraction"] = float(np.median(true_fraction[labels == 0]))
    if head_probability is not None:
        out["heads_agree_with_synthesis"] = float(np.mean((head_probability >= 0.5) == shrunk))
        out["auc_heads"] = _auc(labels, head_probability)
    return out


def sampler_comparison(model, batch: dict, ids: list[str], samplers: dict[str, SamplingOptions],
                       patients: int = 4) -> dict:
    """Background MAE (HU, outside the dilated lesions, against the baseline) and SSIM to the
    true follow-up of the first ``patients`` cases under each named sampler."""
    out = {}
    chosen = ids[:patients]
    for name, options in samplers.items():
        rows = case_rows(model, {k: v for k, v in batch.items()}, chosen, options,
                         scenarios=False)
        out[name] = {"background_mae_hu": float(np.mean([r["background_mae_hu"] for r in rows])),
                     "ssim": float(np.mean([r["ssim"] for r in rows])),
                     "true_background_mae_hu": float(np.mean(
                         [r["true_background_mae_hu"] for r in rows]))}
    return out
