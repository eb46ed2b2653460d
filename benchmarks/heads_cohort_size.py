"""How many simulated patients the response head needs: the shipped generator's heads fitted
on the demo training cohort alone (60 patients) and with the heads cohort beside it
(scripts/train_demo_bundle.py ``--heads-patients``), each calibrated on the calibration
cohort's true probabilities and measured on 100 + 100 held-out patients.

    python benchmarks/heads_cohort_size.py [--bundle Resources/demo_bundle]
        [--heads-patients 200] [--work .demo_bundle_work]

Per patient the heads' inputs are read as the pipeline reads them (baseline only, the
prediction draws of ``SamplingOptions``, the clinical variables entering the heads
directly); the heads are linear, so the mean of the draws' inputs gives the mean of their
logits. Heads fitted as ``train.heads.fit_heads`` fits them (500 full-batch steps, the
bundle's L2). Calibration: Platt scaling on the calibration cohort (150 patients, held-out
lesion shapes) against its true response probabilities, and isotonic regression on the same
for comparison. Measured on the held-out cohorts of ``held_out_predictions.py --patients 100``
(training backgrounds, unseen LIDC background): AUC against the outcomes, ECE against the
simulator's true probabilities, balanced accuracy at P = 0.5. The inputs of each cohort are
cached in ``--work``/heads_inputs (seconds a patient to compute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))


def cohort_inputs(pipeline, manifest: Path, cache: Path) -> dict:
    """The heads' inputs (N, draws, H), outcomes and true probabilities of one cohort."""
    from torch.utils.data import default_collate

    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
    from ImmunoDiffLib.inference.sampling import SamplingOptions

    if cache.is_file():
        with np.load(cache) as stored:
            return {key: stored[key] for key in stored.files}
    info = pipeline.info
    cases = load_cohort(manifest, require_outcomes=True)
    truth = json.loads((manifest.parent / "simulation.json").read_text(encoding="utf-8"))
    true_p = {p["patient_id"]: p["response_probability"] for p in truth["patients"]}
    baselines = [replace(c, followup_ct=None, followup_tumour_mask=None) for c in cases]
    dataset = CohortDataset(baselines, PreprocessConfig(crop=info.crop, window=info.window),
                            standardisation=info.standardisation)
    options = pipeline._options_for_this_model(SamplingOptions())
    inputs = []
    with torch.inference_mode():
        for index in range(len(cases)):
            print(f"\r{manifest.parent.name[:50]}: {index + 1}/{len(cases)}", end="", flush=True)
            item = dataset[index]
            batch = default_collate([{k: v for k, v in item.items() if k != "patient_id"}])
            batch = {k: (v.float() if torch.is_tensor(v) else v) for k, v in batch.items()}
            conditions = pipeline.model.head_conditions(batch)
            inputs.append(pipeline._pooled_features(batch, conditions, options)[0].numpy())
    print()
    result = {"inputs": np.stack(inputs),
              "response": np.array([float(c.response) for c in cases]),
              "survival": np.array([float(c.survival_months) for c in cases]),
              "event": np.array([float(c.event) for c in cases]),
              "true_p": np.array([true_p[c.patient_id] for c in cases])}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **result)
    return result


def fitted_heads(source, cohorts: list[dict]):
    """A copy of ``source`` with heads fitted on ``cohorts`` (mean of the draws' inputs)."""
    from ImmunoDiffLib.models.config import ModelConfig
    from ImmunoDiffLib.train.config import TrainConfig
    from ImmunoDiffLib.train.heads_fit import fit_heads

    model = source.with_fresh_heads(ModelConfig.heads_input)
    column = lambda key: torch.tensor(  # noqa: E731
        np.concatenate([c[key] for c in cohorts]), dtype=torch.float32)
    features = torch.tensor(np.concatenate([c["inputs"].mean(1) for c in cohorts]),
                            dtype=torch.float32)
    fit_heads(model, features, column("response"), column("survival"), column("event"),
              TrainConfig(stage="heads", steps=500))
    return model


def response_logits(model, cohort: dict) -> np.ndarray:
    with torch.no_grad():
        return model.response_head(torch.tensor(cohort["inputs"].mean(1),
                                                dtype=torch.float32)).numpy()


def measure(model, calibration: dict, held_out: dict) -> dict:
    """AUC, ECE to the true P (Platt and isotonic), balanced accuracy on ``held_out``."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    from ImmunoDiffLib.calibration import expected_calibration_error, fit_calibration

    fitting = response_logits(model, calibration)
    platt = fit_calibration(fitting, calibration["true_p"])
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.01, y_max=0.99).fit(
        fitting, calibration["true_p"])
    logits = response_logits(model, held_out)
    probability = platt.probability(logits)
    labels, true_p = held_out["response"], held_out["true_p"]
    called = probability >= 0.5
    return {"auc": float(roc_auc_score(labels, probability)),
            "auc_to_true_responders": float(roc_auc_score(true_p >= 0.5, probability)),
            "ece_to_true_p": expected_calibration_error(true_p, probability),
            "ece_to_true_p_isotonic": expected_calibration_error(
                true_p, isotonic.predict(logits)),
            "balanced_accuracy": float(0.5 * (called[labels == 1].mean()
                                              + (~called[labels == 0]).mean())),
            "called_responders": int(called.sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    parser.add_argument("--heads-patients", type=int, default=200,
                        help="size of the heads cohort (0: the training cohort alone)")
    parser.add_argument("--held-out-patients", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from held_out_predictions import LARGER_SEEDS
    from train_demo_bundle import (
        CALIBRATION_COHORT,
        CALIBRATION_FOLDER,
        HEADS_COHORT,
        HEADS_FOLDER,
        simulated_cohort,
    )

    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline

    started = time.perf_counter()
    pipeline = ImmunoDiffPipeline(args.bundle, anatomy_backend="classic")
    training = pipeline.info.training
    digest = json.loads((args.bundle / "bundle.json").read_text(encoding="utf-8"))[
        "weights_sha256"][:12]  # (the cache's inputs are this generator's)
    folders = {
        "train": (args.work / "train_cohort", training["train_cohort"]),
        "calibration": (args.work / CALIBRATION_FOLDER, CALIBRATION_COHORT),
        **{key: (args.work / f"{folder}_same_grid",
                 {**training[key], "n_patients": args.held_out_patients,
                  "seed": LARGER_SEEDS[key], "second_scan": "same-grid"})
           for key, folder in (("held_out_cohort", "held_out_cohort"),
                               ("unseen_background_cohort", "unseen_cohort"))}}
    if args.heads_patients > 0:
        folders["heads"] = (args.work / HEADS_FOLDER,
                            {**HEADS_COHORT, "n_patients": args.heads_patients})
    cohorts = {}
    for key, (folder, settings) in folders.items():
        manifest, _ = simulated_cohort(folder, settings)
        cohorts[key] = cohort_inputs(pipeline, manifest, args.work / "heads_inputs"
                                     / f"{manifest.parent.name}_{digest}.npz")
    variants = {"shipped heads (calibration refitted)": pipeline.model,
                f"training cohort ({len(cohorts['train']['response'])})":
                    fitted_heads(pipeline.model, [cohorts["train"]])}
    if "heads" in cohorts:
        variants[f"training + heads cohort ({len(cohorts['train']['response'])} + "
                 f"{len(cohorts['heads']['response'])})"] = fitted_heads(
            pipeline.model, [cohorts["train"], cohorts["heads"]])
    results = {name: {key: measure(model, cohorts["calibration"], cohorts[key])
                      for key in ("held_out_cohort", "unseen_background_cohort")}
               for name, model in variants.items()}
    print("| heads fitted on | cohort | AUC | ECE to the true P (isotonic) | bal. acc. "
          "| called responders |")
    print("|---|---|---|---|---|---|")
    for name, per_cohort in results.items():
        for key, r in per_cohort.items():
            print(f"| {name} | {key} | {r['auc']:.3f} | {r['ece_to_true_p']:.3f} "
                  f"({r['ece_to_true_p_isotonic']:.3f}) | {r['balanced_accuracy']:.3f} "
                  f"| {r['called_responders']} |")
    print(f"{time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
