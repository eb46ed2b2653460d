"""Calibration and the out-of-distribution flag on hundreds of held-out simulated patients,
with the calibration (and the feature score's threshold) refitted on a cohort of its own.

    python benchmarks/calibration_cohorts.py [--bundle Resources/demo_bundle]
        [--work .demo_bundle_work] [--calibration-patients 200] [--test-patients 300]
        [--write-bundle DIR [--keep-threshold]] [--figure PNG] [--json FILE]

The bundle's held-out cohorts have 24 patients each: too few to measure an ECE of 0.05 (a
perfectly calibrated model shows a median ECE of ~0.15 on 24 patients) or a flagged share
of 5 % (one patient is 4 %). Here three larger cohorts are simulated, with the same settings
as the bundle's held-out ones (held-out LIDC lesion shapes, response rate 0.5) and new seeds:

* ``calibration`` (training backgrounds): the Platt calibration and the feature score's
  threshold are fitted on it;
* ``test_training_backgrounds`` and ``test_unseen_background`` (LIDC-IDRI-0001, never
  trained on): measured only.

Only the baselines are read (the heads' input and the flag's evidence), so the cohorts are
simulated with their follow-ups on the baseline grid: no alignment is needed. Per cohort:
AUC, ECE of the bundle's calibration and of the refitted one (with the ECE a perfectly
calibrated model would show on the same patients, median and 90th percentile, and the ECE
against the simulator's true response probabilities, on which the refit is fitted), and the
share flagged out of distribution, by kind of reason. The "scenario could not be drawn"
reason needs the synthesis and is not counted here (benchmarks/held_out_predictions.py
counts it). ``--write-bundle DIR`` writes the bundle with the refitted calibration and
threshold (weights unchanged; ``--keep-threshold``: the calibration only). The rows are
cached under WORK, so a rerun is quick.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.train_demo_bundle import (  # noqa: E402
    CALIBRATION_COHORT,
    CALIBRATION_FOLDER,
    TRAINING_BACKGROUNDS,
    UNSEEN_BACKGROUND,
    _progress,
    commit,
    simulated_cohort,
)

COMMON = {"responder_rate": 0.5, "lesion_split": "held_out", "lesion_source": "lidc",
          "second_scan": "same-grid"}
COHORTS = {  # the calibration cohort is the one train_demo_bundle fits the held-out parts on
    "calibration": {k: CALIBRATION_COHORT[k] for k in ("seed", "backgrounds")},
    "test_training_backgrounds": {"seed": 505, "backgrounds": TRAINING_BACKGROUNDS},
    "test_unseen_background": {"seed": 606, "backgrounds": (UNSEEN_BACKGROUND,)},
}
REASON_KINDS = (("tumour", "lesion size"), ("no lesion", "lesion size"),
                ("outside the field of view", "field of view"),
                ("beyond the training range", "clinical value"),
                ("not in the training cohort", "clinical value"),
                ("SD from the training mean", "clinical value"),
                ("more certain than", "certainty"), ("image features", "feature score"))
KINDS = tuple(dict.fromkeys(kind for _, kind in REASON_KINDS))


def cohort_rows(pipeline, work: Path, name: str, patients: int, weights: str) -> list[dict]:
    """The cohort's case rows (inference/reference_fitting.case_rows), simulated and read
    once, then cached under ``work``, one cache per bundle (``weights``: its sha256)."""
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.inference.reference_fitting import case_rows, with_true_probabilities

    if name == "calibration":
        manifest, _ = simulated_cohort(work / CALIBRATION_FOLDER,
                                       {**CALIBRATION_COHORT, "n_patients": patients})
    else:
        manifest, _ = simulated_cohort(work / f"ece_{name}",
                                       {**COMMON, **COHORTS[name], "n_patients": patients})
    cache = manifest.parent / f"case_rows_{weights[:12]}.pkl"
    if cache.is_file():
        with open(cache, "rb") as stored:
            return with_true_probabilities(pickle.load(stored), manifest)
    rows = case_rows(pipeline, load_cohort(manifest, require_outcomes=True),
                     progress=_progress(f"features of {name}"))
    print()
    with open(cache, "wb") as stored:
        pickle.dump(rows, stored)
    return with_true_probabilities(rows, manifest)


def flag_kinds(pipeline, rows: list[dict], reference, calibration) -> list[set[str]]:
    """Per row: the kinds of reason it is flagged for (empty: not flagged)."""
    from ImmunoDiffLib.inference.out_of_distribution import assess

    kinds = []
    for row in rows:
        flag = assess(reference, lesion_diameter_mm=row["diameter_mm"],
                      lesion_found=row["diameter_mm"] > 0,
                      padded_fraction=row["padded_fraction"], record=row["record"],
                      standardisation=pipeline.info.standardisation,
                      features=row["image_features"], logits=row["logits"],
                      calibration=calibration)
        found = set()
        if flag.flagged:
            for reason in flag.reasons:
                found |= {kind for text, kind in REASON_KINDS if text in reason}
        kinds.append(found)
    return kinds


def measure(pipeline, rows: list[dict], reference, calibration) -> dict:
    from ImmunoDiffLib.calibration import calibrated_ece_spread, expected_calibration_error
    from ImmunoDiffLib.inference.reference_fitting import mean_logits

    labels = np.array([int(r["response"]) for r in rows])
    probability = calibration.probability(mean_logits(rows))
    kinds = flag_kinds(pipeline, rows, reference, calibration)
    spread = calibrated_ece_spread(probability)
    return {"patients": len(rows), "responders": int(labels.sum()),
            "auc": float(roc_auc_score(labels, probability)),
            "ece": float(expected_calibration_error(labels, probability)),
            "ece_if_calibrated": [float(v) for v in spread],
            "ece_to_true_probability": float(expected_calibration_error(
                [r["true_probability"] for r in rows], probability)),
            "flagged": float(np.mean([bool(k) for k in kinds])),
            "flagged_by": {kind: float(np.mean([kind in k for k in kinds]))
                           for kind in KINDS},
            "probability": probability.tolist(), "labels": labels.tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    parser.add_argument("--calibration-patients", type=int, default=200)
    parser.add_argument("--test-patients", type=int, default=300)
    parser.add_argument("--unseen-patients", type=int, default=None,
                        help="size of the unseen-background test cohort (default: as "
                             "--test-patients)")
    parser.add_argument("--write-bundle", type=Path, default=None, metavar="DIR",
                        help="write the bundle with the refitted calibration and threshold")
    parser.add_argument("--keep-threshold", action="store_true",
                        help="with --write-bundle: write the refitted calibration only, the "
                             "bundle's out-of-distribution reference (and threshold) kept")
    parser.add_argument("--figure", type=Path, default=None,
                        help="reliability diagrams of the refitted calibration (PNG)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from ImmunoDiffLib.bundle import with_held_out_parts
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.reference_fitting import (
        fit_held_out_calibration,
        range_flagged,
    )
    from ImmunoDiffLib.ood_reference import HELD_OUT_FLAG_RATE, feature_threshold

    started = time.perf_counter()
    pipeline = ImmunoDiffPipeline(args.bundle, anatomy_backend="classic")
    info = pipeline.info
    sizes = {"calibration": args.calibration_patients,
             "test_training_backgrounds": args.test_patients,
             "test_unseen_background": args.unseen_patients or args.test_patients}
    weights = json.loads((args.bundle / "bundle.json").read_text(encoding="utf-8"))[
        "weights_sha256"]
    rows = {name: cohort_rows(pipeline, args.work, name, n, weights)
            for name, n in sizes.items() if n > 0}

    shipped_reference, shipped_calibration = info.out_of_distribution, info.calibration
    source = {"train_cohort": shipped_calibration.source.get("train_cohort"),
              "calibration_cohort": {  # as cohort_rows simulated it (the folder's name)
                  **{k: list(v) if isinstance(v, tuple) else v
                     for k, v in CALIBRATION_COHORT.items()},
                  "n_patients": args.calibration_patients},
              "commit": commit(), "command": " ".join(["python benchmarks/calibration_cohorts.py",
                                                       *sys.argv[1:]])}
    calibration = fit_held_out_calibration(rows["calibration"], source)
    features = replace(shipped_reference.features)
    scores = features.score(np.stack([r["image_features"] for r in rows["calibration"]]))
    features.threshold = feature_threshold(
        scores, HELD_OUT_FLAG_RATE,
        range_flagged(rows["calibration"], shipped_reference.ranges, info.standardisation))
    features.n_held_out = len(scores)
    features.held_out_flagged = float(np.mean(scores > features.threshold))  # (score alone)
    reference = replace(shipped_reference, features=features)

    results = {}
    for name, cohort in rows.items():
        results[name] = {
            "shipped": measure(pipeline, cohort, shipped_reference, shipped_calibration),
            "refitted": measure(pipeline, cohort, reference, calibration)}
    kinds = KINDS
    print("| cohort | patients | AUC | calibration | ECE (a calibrated model's: median, p90) "
          f"| ECE to the true P | flagged | {' | '.join(kinds)} |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(kinds))
    for name, result in results.items():
        for which, r in result.items():
            by = " | ".join(f"{100 * r['flagged_by'][k]:.1f} %" for k in kinds)
            print(f"| {name} | {r['patients']} ({r['responders']} responders) | "
                  f"{r['auc']:.3f} | {which} | {r['ece']:.3f} ({r['ece_if_calibrated'][0]:.3f}"
                  f", {r['ece_if_calibrated'][1]:.3f}) | {r['ece_to_true_probability']:.3f} "
                  f"| {100 * r['flagged']:.1f} % | {by} |")
    print(f"feature threshold: shipped {shipped_reference.features.threshold:.3f} (set on "
          f"{shipped_reference.features.n_held_out}), refitted {features.threshold:.3f} (on "
          f"{features.n_held_out}); calibration: {calibration.description()}")
    if args.figure:
        from ImmunoDiffLib.reporting.reliability import save_reliability_diagram

        names = {n: n.replace("_", " ") for n in results}
        save_reliability_diagram(
            None, {names[n]: np.array(r["refitted"]["probability"]) for n, r in results.items()},
            args.figure, "Responder probability, refitted calibration",
            labels_per_panel={names[n]: np.array(r["refitted"]["labels"])
                              for n, r in results.items()})
    if args.write_bundle:
        with_held_out_parts(args.bundle, args.write_bundle,
                            shipped_reference if args.keep_threshold else reference,
                            calibration, overwrite=True,
                            calibration_cohort=source["calibration_cohort"])
        print(f"wrote {args.write_bundle}")
    print(f"{time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
