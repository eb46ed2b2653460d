"""Fit a bundle's held-out parts (out-of-distribution reference, probability calibration) and
write the bundle with them.

    .venv/bin/python scripts/fit_held_out_parts.py [--bundle Resources/demo_bundle]
        [-o BUNDLE] [--work DIR]

``scripts/train_demo_bundle.py`` fits both at the end of training; this refits them for an
existing bundle (another held-out cohort, a changed rule):

1. simulates (or reuses, under --work) the cohorts named in bundle.json's training section
   (train_cohort, large_tumour_cohort if any, and calibration_cohort, or held_out_cohort for a
   bundle made before there was one: seed, size, responder rate, backgrounds, lesion source,
   second scan, response signal);
2. reads each baseline as the pipeline does (ImmunoDiffLib/inference/reference_fitting.py):
   the response head's logits, the up-block features with the clinical variables left out,
   lesion diameter, crop padding, clinical values;
3. fits the reference (training ranges and features; threshold flagging, with the ranges and
   the logit-range rule, at most 5 % of the calibration patients, and as few of those on a
   CT left out of the reference, each training CT in turn: ood_reference.transfer_quantile)
   and the Platt calibration on them (on their true response probabilities, from the
   simulation's truth; ECE before and after, cross-fitted);
4. writes the bundle (atomically; the weights copied byte for byte), with the share the
   score flags of its own held-out cohorts refreshed, and prints the held-out patients'
   flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.train_demo_bundle import (  # noqa: E402
    CALIBRATION_FOLDER,
    commit,
    simulated_cohort,
    training_manifests,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="the bundle to write (default: replace --bundle)")
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work",
                        help="folder of the simulated cohorts")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from ImmunoDiffLib.bundle import with_held_out_parts
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.reference_fitting import (
        case_rows,
        fit_held_out_calibration,
        fit_reference,
        with_backgrounds,
        with_true_probabilities,
    )

    started = time.perf_counter()
    pipeline = ImmunoDiffPipeline(args.bundle, device=args.device)
    training = pipeline.info.training
    fitting_key = ("calibration_cohort" if "calibration_cohort" in training
                   else "held_out_cohort")
    if "train_cohort" not in training or fitting_key not in training:
        parser.error(f"{args.bundle} does not say which cohorts it was trained and held out "
                     "on (bundle.json: training.train_cohort, training.calibration_cohort)")
    folder = CALIBRATION_FOLDER if fitting_key == "calibration_cohort" else fitting_key
    manifests = {"train_cohort": training_manifests(args.work, training),
                 fitting_key: [simulated_cohort(args.work / folder, training[fitting_key])[0]]}
    rows = {}
    for key, paths in manifests.items():
        cases = [case for manifest in paths for case in load_cohort(manifest)]
        rows[key] = with_backgrounds(case_rows(pipeline, cases, progress=_progress(key)), cases)
        print()
    rows[fitting_key] = with_true_probabilities(rows[fitting_key], manifests[fitting_key][0])
    source = {"train_cohort": training["train_cohort"], fitting_key: training[fitting_key],
              "commit": commit(),
              "command": " ".join(["python scripts/fit_held_out_parts.py", *sys.argv[1:]])}
    reference = fit_reference(rows["train_cohort"], rows[fitting_key], source,
                              pipeline.info.standardisation)
    calibration = fit_held_out_calibration(rows[fitting_key], source)
    output = with_held_out_parts(args.bundle, args.output or args.bundle, reference,
                                 calibration, overwrite=True,
                                 metrics=refreshed_metrics(pipeline, args.work, reference))
    scores = reference.features.score(np.stack([r["image_features"] for r in rows[fitting_key]]))
    for row, score in zip(rows[fitting_key], scores, strict=True):
        print(f"{row['patient_id']}: score {score:.2f}"
              f"{' flagged' if score > reference.features.threshold else ''}")
    print(json.dumps({"bundle": str(output), "ranges": reference.description()["ranges"],
                      "features": reference.features.description(),
                      "calibration": calibration.description(),
                      "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    return 0


def refreshed_metrics(pipeline, work: Path, reference) -> dict:
    """The bundle's held-out numbers that depend on the reference: per held-out cohort it
    names (training.held_out_cohort, training.unseen_background_cohort), the share its
    feature score flags."""
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.inference.reference_fitting import case_rows

    training, metrics = pipeline.info.training, {}
    for key, folder in (("held_out", "held_out_cohort"),
                        ("unseen_background", "unseen_cohort")):
        settings = training.get(f"{key}_cohort")
        if not settings or key not in pipeline.info.metrics:
            continue
        cases = load_cohort(simulated_cohort(work / folder, settings)[0])
        features = np.stack([r["image_features"] for r in case_rows(
            pipeline, cases, progress=_progress(f"{key} cohort"))])
        print()
        metrics[key] = {"feature_score_flagged": float(np.mean(
            reference.features.score(features) > reference.features.threshold))}
    return metrics


def _progress(label: str):
    def report(fraction: float, message: str = "") -> None:
        print(f"\r{label}: {100 * fraction:5.1f}% {message[:50]:50s}", end="", flush=True)

    return report


if __name__ == "__main__":
    sys.exit(main())
