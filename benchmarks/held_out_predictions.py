"""The product on held-out simulated patients, as a user runs it: ``ImmunoDiffPipeline.run``
per patient (the cohort's tumour mask, lobes and vessels; both scenarios), measured against
the simulated truth.

    python benchmarks/held_out_predictions.py [--bundle Resources/demo_bundle]
        [--work .demo_bundle_work] [--figure docs/figures/reliability.png] [--json FILE]
        [--patients N [--seeds COHORT=SEED ...]] [--first K]

Cohorts: the bundle's own held-out cohorts (bundle.json: training.held_out_cohort, on the
training backgrounds, and training.unseen_background_cohort, on a CT never trained on; both
with lesion shapes of held-out LIDC patients), simulated as scripts/train_demo_bundle.py
does (reused under --work). The true follow-up is the aligned one the training path cropped
(the preprocessing cache), on the same crop grid as the synthesized one. ``--patients N``
measures N new patients per cohort instead (the same settings, new seeds ``LARGER_SEEDS`` or
``--seeds``),
their follow-ups on the baseline's grid (``second_scan="same-grid"``: no alignment to wait
for): 24 patients are too few for a flagged share of 5 % (one patient is 4 %) or an SSIM
difference of 0.003.

Per cohort: AUC and balanced accuracy of the (calibrated) responder probability, its ECE
(against the outcomes, and against the simulator's true response probabilities, which has
none of the outcomes' coin-flip noise), the reliability diagram; the synthesized shrink (1 -
follow-up / baseline lesion volume) as a response score (AUC) beside a clinical-only
logistic regression fitted on the training cohort; agreement of heads and synthesized
RECIST; each scenario's obedience; the share flagged out of distribution; SSIM to the true
follow-up beside keeping the baseline (with a bootstrap interval, and per group: responders
and non-responders drawn as a response, patients drawn as a non-response); and, outside the
tumour dilated 9 mm, mean
|synthesized - baseline| and tissue-class flips.
The calibration and the flag's threshold were fitted on a calibration cohort of their own
(training.calibration_cohort), so both cohorts measure them; for a bundle made before there
was one they were fitted on the 24-patient held-out cohort, whose ECE and flagged share are
then optimistic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ImmunoDiffLib.simulation import TRUTH_NAME  # noqa: E402
from scripts.train_demo_bundle import simulated_cohort, training_manifests  # noqa: E402

OUTSIDE_MM = 9.0
LARGER_SEEDS = {"held_out_cohort": 212, "unseen_background_cohort": 313}  # --patients N
TISSUE_HU = -400.0


def _auc(labels, scores) -> float:
    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else float("nan")


def _xyz(image) -> np.ndarray:
    import SimpleITK as sitk  # deferred: only the benchmark's measurements need it

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)


def run_cohort(pipeline, manifest: Path, progress_label: str, first: int | None = None,
               skip: int = 0, save_crops: Path | None = None) -> list[dict]:
    """Per patient (the manifest's ``first`` ones, all when None, less the ``skip`` first
    of them): the prediction's summary and the measurements against the truth. With
    ``save_crops``, each patient's crops (HU, (X, Y, Z): baseline, true follow-up, the
    synthesized one and each scenario's; the tumour masks) in ``<save_crops>/<id>.npz``."""
    from ImmunoDiffLib.anatomy.from_files import anatomy_from_files
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
    from ImmunoDiffLib.evaluate.synthesis import ssim
    from ImmunoDiffLib.imaging import (
        denormalise,
        label_centroid,
        normalise,
        read_ct,
        read_image,
    )
    from ImmunoDiffLib.inference.sampling import SamplingOptions

    cases = load_cohort(manifest, require_followup=True, require_outcomes=True)[skip:first]
    truth = json.loads((manifest.parent / TRUTH_NAME).read_text(encoding="utf-8"))
    true_probability = {p["patient_id"]: p["response_probability"] for p in truth["patients"]}
    info = pipeline.info
    dataset = CohortDataset(cases, PreprocessConfig(crop=info.crop, window=info.window))
    rows = []
    for index, case in enumerate(cases):
        print(f"\r{progress_label}: {index + 1}/{len(cases)}", end="", flush=True)
        ct = read_ct(case.baseline_ct)
        mask = read_image(case.tumour_mask)
        anatomy = anatomy_from_files(ct, case.lobes_mask, case.vessels_mask)
        # the crop centre the dataset uses, so that the synthesized and the true follow-up
        # share one grid (the mask's centroid lies up to a voxel or more off the point)
        point = case.tumour_point or label_centroid(mask)
        result = pipeline.run(ct, case.clinical, point, SamplingOptions(),
                              anatomy=anatomy, tumour_mask=mask, scenarios=True,
                              allow_outside_lungs=True)
        arrays = dataset.arrays(index)  # the aligned true follow-up, same crop grid
        synthesized = normalise(_xyz(result.followup_crop), info.window)
        grid_error = np.abs(normalise(_xyz(result.baseline_crop), info.window)
                            - arrays["baseline"]).max()
        if grid_error > 1e-3:
            raise RuntimeError(f"{case.patient_id}: the pipeline's crop is not the dataset's "
                               f"(baselines differ by {grid_error:.3f} in window units)")

        def tensor(values):
            return torch.from_numpy(np.ascontiguousarray(values))[None, None]

        tumour = arrays["tumour"] > 0
        outside = ndimage.distance_transform_edt(~tumour, sampling=info.crop.spacing) \
            > OUTSIDE_MM
        baseline_hu, synth_hu = _xyz(result.baseline_crop), _xyz(result.followup_crop)
        summary = result.summary()
        if save_crops is not None:
            save_crops.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                save_crops / f"{case.patient_id}.npz", baseline=baseline_hu,
                followup=denormalise(arrays["followup"], info.window), synthesized=synth_hu,
                tumour=tumour, followup_tumour=arrays.get("followup_tumour", tumour) > 0,
                probability=summary["response_probability"], response=int(case.response),
                spacing=np.asarray(info.crop.spacing, np.float32),
                **{f"scenario_{name}": _xyz(outcome.followup_crop)
                   for name, outcome in result.scenarios.items()})
        rows.append({
            "patient_id": case.patient_id, "response": int(case.response),
            "true_probability": true_probability[case.patient_id],
            "probability": summary["response_probability"],
            "shrink": (1.0 - summary["followup_lesion_ml"] / summary["baseline_lesion_ml"]
                       if summary["baseline_lesion_ml"] > 0 else 0.0),
            "agreement": summary["agreement"], "recist": summary["recist"],
            "obeyed": {n: s["obeyed"] for n, s in summary["scenarios"].items()},
            "flagged": summary["out_of_distribution"]["flagged"],
            "reasons": summary["out_of_distribution"]["reasons"],
            "ssim": float(ssim(tensor(synthesized), tensor(arrays["followup"]))[0]),
            "ssim_copy_baseline": float(ssim(tensor(arrays["baseline"]),
                                             tensor(arrays["followup"]))[0]),
            "outside_mae_hu": float(np.abs(synth_hu - baseline_hu)[outside].mean()),
            "outside_flips": float(((synth_hu > TISSUE_HU) != (baseline_hu > TISSUE_HU))
                                   [outside].mean()),
            "clinical": case.clinical})
    print()
    return rows


def clinical_only(train_manifests: list[Path], rows: list[dict], standardisation
                  ) -> np.ndarray:
    """P(responder) of a logistic regression on the encoded clinical variables, fitted on the
    training cohorts."""
    from ImmunoDiffLib.clinical import encode_clinical
    from ImmunoDiffLib.cohort import load_cohort

    def matrix(records):
        encoded = encode_clinical(records, standardisation)
        return np.concatenate([np.nan_to_num(encoded.values[g].numpy()) for g in
                               sorted(encoded.values)], axis=1)

    train = [case for manifest in train_manifests
             for case in load_cohort(manifest, require_outcomes=True)]
    fitted = LogisticRegression(C=1.0, max_iter=2000).fit(
        matrix([c.clinical for c in train]), [int(c.response) for c in train])
    return fitted.predict_proba(matrix([r["clinical"] for r in rows]))[:, 1]


def paired_interval(differences, resamples: int = 2000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the mean of per-patient ``differences`` (N,) (patients
    resampled with replacement, the same seed every run)."""
    values = np.asarray(differences, np.float64)
    picks = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    return [float(v) for v in np.quantile(values[picks].mean(1), [0.025, 0.975])]


def ssim_gain_by_drawing(rows: list[dict]) -> dict:
    """Mean SSIM - copy per group of patients by what the follow-up the heads chose was drawn
    as (a response: CR / PR) and what they were: {group: [mean, patients]}."""
    groups = {"responders drawn as a response": [], "non-responders drawn as a response": [],
              "drawn as a non-response": []}
    for r in rows:
        gain = r["ssim"] - r["ssim_copy_baseline"]
        if r["recist"] not in ("CR", "PR"):
            groups["drawn as a non-response"].append(gain)
        else:
            groups[("responders" if r["response"] else "non-responders")
                   + " drawn as a response"].append(gain)
    return {name: [float(np.mean(v)) if v else float("nan"), len(v)]
            for name, v in groups.items()}


def summarise(rows: list[dict], clinical_scores: np.ndarray) -> dict:
    from ImmunoDiffLib.calibration import calibrated_ece_spread, expected_calibration_error

    labels = np.array([r["response"] for r in rows])
    probability = np.array([r["probability"] for r in rows])
    measurable = [r for r in rows if r["agreement"] is not None]
    obeyed = [v for r in rows for v in r["obeyed"].values() if v is not None]
    return {
        "patients": len(rows), "responders": int(labels.sum()),
        "auc": _auc(labels, probability),
        "balanced_accuracy": float(balanced_accuracy_score(labels, probability >= 0.5)),
        "ece": expected_calibration_error(labels, probability),
        "ece_if_calibrated": calibrated_ece_spread(probability),
        "ece_to_true_probability": expected_calibration_error(
            [r["true_probability"] for r in rows], probability),
        "auc_synthesized_shrink": _auc(labels, [r["shrink"] for r in rows]),
        "auc_clinical_only_logistic": _auc(labels, clinical_scores),
        "agreement": float(np.mean([r["agreement"] for r in measurable])),
        "scenarios_obeyed": float(np.mean(obeyed)) if obeyed else float("nan"),
        "flagged": float(np.mean([r["flagged"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "ssim_copy_baseline": float(np.mean([r["ssim_copy_baseline"] for r in rows])),
        "ssim_minus_copy_interval": paired_interval(
            [r["ssim"] - r["ssim_copy_baseline"] for r in rows]),
        "ssim_minus_copy_by_drawing": ssim_gain_by_drawing(rows),
        "outside_mae_hu": float(np.mean([r["outside_mae_hu"] for r in rows])),
        "outside_flips": float(np.mean([r["outside_flips"] for r in rows])),
        "probability_range": [float(probability.min()), float(probability.max())]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    parser.add_argument("--figure", type=Path, default=None,
                        help="the reliability diagram PNG (default: none)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--patients", type=int, default=None, metavar="N",
                        help="N new patients per cohort, follow-ups on the baseline grid "
                             "(default: the bundle's own held-out cohorts)")
    parser.add_argument("--first", type=int, default=None, metavar="K",
                        help="only the first K patients of each cohort (a quicker look at "
                             "the same patients; default: all)")
    parser.add_argument("--skip", type=int, default=0, metavar="J",
                        help="leave out the first J patients of each cohort (with --first K: "
                             "patients J+1..K, e.g. the half a --first run left)")
    parser.add_argument("--save-crops", type=Path, default=None, metavar="DIR",
                        help="save each patient's crops (baseline, truth, synthesized, "
                             "scenarios) under DIR/<cohort>/ for a closer look")
    parser.add_argument("--seeds", nargs="+", default=[], metavar="COHORT=SEED",
                        help="with --patients: other seeds than LARGER_SEEDS, e.g. "
                             "held_out_cohort=222 unseen_background_cohort=323")
    args = parser.parse_args()
    seeds = {}
    for item in args.seeds:
        key, _, seed = item.partition("=")
        if key not in LARGER_SEEDS or not seed.isdigit():
            parser.error(f"--seeds takes COHORT=SEED with COHORT in {list(LARGER_SEEDS)}, "
                         f"got {item!r}")
        seeds[key] = int(seed)

    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.reporting.reliability import save_reliability_diagram

    started = time.perf_counter()
    pipeline = ImmunoDiffPipeline(args.bundle, anatomy_backend="classic")
    training = pipeline.info.training
    train_manifests = training_manifests(args.work, training)
    results, probabilities, labels = {}, {}, {}
    for key, folder in (("held_out_cohort", "held_out_cohort"),
                        ("unseen_background_cohort", "unseen_cohort")):
        settings = dict(training[key])
        if args.patients:  # (the folder's name does not carry second_scan: a name of its own)
            settings.update(n_patients=args.patients, seed=seeds.get(key, LARGER_SEEDS[key]),
                            second_scan="same-grid")
            folder = f"{folder}_same_grid"
        manifest, _ = simulated_cohort(args.work / folder, settings)
        rows = run_cohort(pipeline, manifest, key, args.first, args.skip,
                          args.save_crops / key if args.save_crops else None)
        results[key] = summarise(rows, clinical_only(train_manifests, rows,
                                                     pipeline.info.standardisation))
        results[key]["rows"] = [{k: v for k, v in r.items() if k != "clinical"} for r in rows]
        probabilities[key] = np.array([r["probability"] for r in rows])
        labels[key] = np.array([r["response"] for r in rows])
    if args.figure:  # one panel per cohort, each with its own patients
        fitted_on_it = "calibration_cohort" not in training and not args.patients
        names = {"held_out_cohort": "held out, training backgrounds"
                                    + (" (calibration set)" if fitted_on_it else ""),
                 "unseen_background_cohort": "held out, unseen background"}
        save_reliability_diagram(None, {names[k]: probabilities[k] for k in probabilities},
                                 args.figure, "Responder probability, demo bundle",
                                 labels_per_panel={names[k]: labels[k] for k in labels})
    print("| cohort | patients | AUC | bal. acc. | ECE (a calibrated model's: median, 90th "
          "percentile) | ECE to the true P | shrink AUC | clinical-only AUC "
          "| heads = synthesis | scenarios obeyed | flagged | SSIM (copy baseline) "
          "| SSIM - copy (95 % CI) | outside MAE HU | outside flips % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['patients']} | {r['auc']:.2f} | {r['balanced_accuracy']:.2f} "
              f"| {r['ece']:.3f} ({r['ece_if_calibrated'][0]:.3f}, "
              f"{r['ece_if_calibrated'][1]:.3f}) | {r['ece_to_true_probability']:.3f} "
              f"| {r['auc_synthesized_shrink']:.2f} "
              f"| {r['auc_clinical_only_logistic']:.2f} | {100 * r['agreement']:.0f} % "
              f"| {100 * r['scenarios_obeyed']:.0f} % | {100 * r['flagged']:.0f} % "
              f"| {r['ssim']:.4f} ({r['ssim_copy_baseline']:.4f}) "
              f"| {r['ssim'] - r['ssim_copy_baseline']:+.4f} "
              f"({r['ssim_minus_copy_interval'][0]:+.4f}, "
              f"{r['ssim_minus_copy_interval'][1]:+.4f}) | {r['outside_mae_hu']:.1f} "
              f"| {100 * r['outside_flips']:.2f} |")
    for key, r in results.items():
        print(f"{key}, SSIM - copy by what the chosen follow-up was drawn as: " + "; ".join(
            f"{name} {gain:+.4f} ({count})"
            for name, (gain, count) in r["ssim_minus_copy_by_drawing"].items()))
    print(f"{time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
