"""Where the out-of-distribution flag's share of held-out patients goes, for one or more
sets of held-out parts (threshold, calibration) on the same model.

    python benchmarks/flag_budget.py BUNDLE [BUNDLE ...] --patients 100
        [--scenario-flags FILE] [--seeds held_out_cohort=222 unseen_background_cohort=323]
        [--work .demo_bundle_work]

The bundles must hold the same weights, to float rounding (e.g. one refitted with
scripts/fit_held_out_parts.py or ``scripts/train_demo_bundle.py --heads-from``): only their
held-out parts differ. The
patients are held_out_predictions.py's ``--patients N`` cohorts (training backgrounds and the
unseen CT, seeds ``LARGER_SEEDS``, or fresh ones with ``--seeds``), read from their
baselines as the pipeline reads a case
(inference/reference_fitting.case_rows). Per cohort and bundle: AUC, ECE (with a calibrated
model's median on the same probabilities), ECE to the simulator's true response
probabilities, the share flagged by the rules, by the feature
score, and, from ``--scenario-flags`` (held_out_predictions.py's ``--json`` of the same model
on the same patients, run with both scenarios; of a ``--first K`` run, the first K patients
are counted; without it, all patients and "n/a"), by a scenario the generator could not draw:
the follow-up the prediction chose (drawn in every run) or the other one (drawn only with
``--scenarios``), in all and as a run without ``--scenarios`` would be; then the feature score's
upper tail on these cohorts and on the bundle's calibration cohort, beside each threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.calibration_cohorts import flag_kinds  # noqa: E402
from benchmarks.held_out_predictions import LARGER_SEEDS  # noqa: E402
from scripts.train_demo_bundle import CALIBRATION_FOLDER, simulated_cohort  # noqa: E402

FOLDERS = {"held_out_cohort": "held_out_cohort_same_grid",
           "unseen_background_cohort": "unseen_cohort_same_grid"}
NOT_DRAWN = "could not synthesize"
SAID_RESPONDER = "'if it is a responder'"  # (scenarios.not_obeyed_reason's wording)


def largest_weight_difference(bundles: list[Path]) -> float:
    """The largest absolute difference of any weight between the first bundle and the others
    (refitted heads agree to float rounding, not bit for bit); inf when the names differ."""
    from safetensors.numpy import load_file

    first = load_file(str(bundles[0] / "weights.safetensors"))
    largest = 0.0
    for bundle in bundles[1:]:
        other = load_file(str(bundle / "weights.safetensors"))
        if set(other) != set(first) or any(other[k].shape != first[k].shape for k in first):
            return float("inf")
        largest = max([largest] + [float(np.abs(other[k].astype(np.float64) - first[k]).max())
                                   for k in first if first[k].size])
    return largest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--scenario-flags", type=Path, default=None, metavar="FILE")
    parser.add_argument("--seeds", nargs="+", default=[], metavar="COHORT=SEED",
                        help="other seeds than held_out_predictions.py's (fresh patients)")
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    args = parser.parse_args()

    from ImmunoDiffLib.bundle import load_bundle
    from ImmunoDiffLib.calibration import calibrated_ece_spread, expected_calibration_error
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.reference_fitting import (
        case_rows,
        mean_logits,
        with_true_probabilities,
    )

    difference = largest_weight_difference(args.bundles)
    if difference > 1e-4:
        parser.error(f"the bundles' weights differ by up to {difference:g}: only their "
                     "held-out parts may differ")
    pipeline = ImmunoDiffPipeline(args.bundles[0], anatomy_backend="classic")
    training = pipeline.info.training
    synthesized = (None if args.scenario_flags is None
                   else json.loads(args.scenario_flags.read_text(encoding="utf-8")))
    seeds = {**LARGER_SEEDS, **{k: int(v) for k, v in (s.split("=") for s in args.seeds)}}
    rows = {}
    for key, folder in FOLDERS.items():
        settings = {**training[key], "n_patients": args.patients, "seed": seeds[key],
                    "second_scan": "same-grid"}
        manifest, _ = simulated_cohort(args.work / folder, settings)
        rows[key] = with_true_probabilities(
            case_rows(pipeline, load_cohort(manifest, require_outcomes=True)), manifest)
    if "calibration_cohort" in training:
        manifest, _ = simulated_cohort(args.work / CALIBRATION_FOLDER,
                                       training["calibration_cohort"])
        rows["calibration_cohort"] = case_rows(pipeline, load_cohort(manifest,
                                                                     require_outcomes=True))
    infos = {b: load_bundle(b)[1] for b in args.bundles}
    print("| cohort | parts | AUC | ECE (a calibrated model's median) | ECE to the true P "
          "| flagged by rules "
          "| by feature score | chosen follow-up not drawn | other scenario not drawn "
          "| flagged in all | without --scenarios |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key in FOLDERS:
        not_drawn = ({r["patient_id"]: [] for r in rows[key]} if synthesized is None else
                     {r["patient_id"]: [reason for reason in r["reasons"] if NOT_DRAWN in reason]
                      for r in synthesized[key]["rows"]})
        unknown = "n/a" if synthesized is None else None
        cohort = [r for r in rows[key] if r["patient_id"] in not_drawn]  # (a --first K run)
        labels = np.array([int(r["response"]) for r in cohort])
        truth = np.array([r["true_probability"] for r in cohort])
        for bundle, info in infos.items():
            probability = info.calibration.probability(mean_logits(cohort))
            kinds = flag_kinds(pipeline, cohort, info.out_of_distribution, info.calibration)
            score = np.array(["feature score" in k for k in kinds])
            rules = np.array([bool(k - {"feature score"}) for k in kinds])
            # the follow-up the prediction chose is drawn in every run; the other scenario
            # only with --scenarios (pipeline.run: a scenario not drawn flags the case)
            chosen = np.array([any((SAID_RESPONDER in reason) == (p >= 0.5) for reason in
                                   not_drawn[r["patient_id"]])
                               for r, p in zip(cohort, probability, strict=True)])
            other = np.array([any((SAID_RESPONDER in reason) != (p >= 0.5) for reason in
                                  not_drawn[r["patient_id"]])
                              for r, p in zip(cohort, probability, strict=True)])
            always = rules | score | chosen
            print(f"| {key} ({len(labels)}) | {bundle} | {roc_auc_score(labels, probability):.3f} "
                  f"| {expected_calibration_error(labels, probability):.3f} "
                  f"({calibrated_ece_spread(probability)[0]:.3f}) "
                  f"| {expected_calibration_error(truth, probability):.3f} "
                  f"| {100 * rules.mean():.0f} % "
                  f"| {100 * score.mean():.0f} % | {unknown or f'{100 * chosen.mean():.0f} %'} "
                  f"| {unknown or f'{100 * other.mean():.0f} %'} "
                  f"| {100 * (always | other).mean():.0f} % | {100 * always.mean():.0f} % |")
    thresholds = {b: info.out_of_distribution.features.threshold for b, info in infos.items()}
    features = next(iter(infos.values())).out_of_distribution.features
    print("\n| cohort | median | 90th pct | 95th pct | 98th pct | max | share above "
          + " / ".join(f"{t:.3f}" for t in thresholds.values()) + " |")
    print("|---|---|---|---|---|---|---|")
    for key, cohort in rows.items():
        scores = features.score(np.stack([r["image_features"] for r in cohort]))
        quantiles = np.quantile(scores, [0.5, 0.9, 0.95, 0.98, 1.0])
        shares = " / ".join(f"{100 * np.mean(scores > t):.1f} %" for t in thresholds.values())
        print(f"| {key} ({len(cohort)}) | " + " | ".join(f"{q:.3f}" for q in quantiles)
              + f" | {shares} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
