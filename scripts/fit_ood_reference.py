"""Fit a bundle's out-of-distribution reference and write the bundle with it.

    .venv/bin/python scripts/fit_ood_reference.py [--bundle Resources/demo_bundle]
        [-o BUNDLE] [--train-patients N] [--held-out-patients M] [--work DIR]

1. simulates (or reuses, under --work) a training cohort with the bundle's own training-cohort
   settings (bundle.json's training.train_cohort: seed, responder rate, backgrounds, response
   signal; blob lesions with follow-ups on the baseline's grid, the cohort the demo bundle
   was trained on; its first N patients, by default all of them: the demo bundle's 60) and a
   held-out cohort with its held_out_cohort settings (another seed; by default its 24
   patients). For
   the demo bundle this takes about 8 minutes of one CPU core, mostly simulating; the cohorts
   are kept under --work, so a second run takes one or two minutes;
2. crops each baseline on the bundle's crop grid (the simulated cohort's crops, through the
   preprocessing cache the training used) and computes the up-block features the prediction
   heads read, exactly as ``ImmunoDiffPipeline.run`` does (the same noise draws and seed; no
   follow-up is synthesized: the features need only the baseline and its conditions), under
   the cohort's tumour masks and anatomy (the follow-ups left out: only baselines are read);
3. fits the reference (ImmunoDiffLib/ood_reference.py): the training patients' lesion
   diameters, crop padding and clinical ranges; the features' mean and Ledoit-Wolf
   covariance, and the score threshold that flags at most 5 % of the held-out patients;
4. writes the bundle with the reference (atomically; the weights copied byte for byte, their
   checksum unchanged, the reference's own arrays file checksummed in bundle.json) and prints
   the held-out patients' scores and flags.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_COHORTS = {  # used when the bundle does not say how its cohorts were simulated
    "train_cohort": {"n_patients": 24, "seed": 101, "responder_rate": 0.4,
                     "backgrounds": ["lung2", "totalseg_chest"]},
    "held_out_cohort": {"n_patients": 16, "seed": 202, "responder_rate": 0.5,
                        "backgrounds": ["lung2", "totalseg_chest"]},
}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _progress(label: str):
    def report(fraction: float, message: str = "") -> None:
        print(f"\r{label}: {100 * fraction:5.1f}% {message[:50]:50s}", end="", flush=True)

    return report


def _settings(info, key: str, n_patients: int | None) -> dict:
    given = dict(info.training.get(key) or DEFAULT_COHORTS[key])
    n_patients = n_patients or int(given.get("n_patients", DEFAULT_COHORTS[key]["n_patients"]))
    return {"n_patients": n_patients, "seed": int(given["seed"]),
            "responder_rate": float(given["responder_rate"]),
            "backgrounds": list(given.get("backgrounds", DEFAULT_COHORTS[key]["backgrounds"])),
            "response_signal": float(given.get("response_signal", 1.0))}


def _cohort(work: Path, name: str, settings: dict) -> Path:
    """The cohort's manifest: simulated once per settings (reused when simulation.json says
    it was made with them)."""
    from ImmunoDiffLib.simulation import (
        ClinicalModel,
        ResponseModel,
        SimulationConfig,
        simulate_cohort,
    )

    folder = work / f"{name}_seed{settings['seed']}_n{settings['n_patients']}"
    truth = folder / "simulation.json"
    if truth.is_file():
        made = json.loads(truth.read_text(encoding="utf-8"))["config"]
        if (made["n_patients"] == settings["n_patients"] and made["seed"] == settings["seed"]
                and made["responder_rate"] == settings["responder_rate"]
                and list(made["backgrounds"]) == settings["backgrounds"]
                and made["clinical"]["response"]["signal"] == settings["response_signal"]
                and made.get("lesion_source") == "blob"
                and made.get("second_scan") == "same-grid"):
            return folder / "cohort.csv"
    config = SimulationConfig(n_patients=settings["n_patients"], seed=settings["seed"],
                              responder_rate=settings["responder_rate"],
                              backgrounds=tuple(settings["backgrounds"]),
                              # the shipped bundle's training cohort: blob lesions, follow-ups
                              # on the baseline grid (only the baselines' features are used)
                              lesion_source="blob", second_scan="same-grid",
                              clinical=ClinicalModel(ResponseModel(
                                  signal=settings["response_signal"])))
    simulate_cohort(folder, config, _progress(f"simulating {folder.name}"), overwrite=True)
    print()
    return folder / "cohort.csv"


def _case_rows(pipeline, manifest: Path, label: str) -> list[dict]:
    """Per case: features (F,), lesion diameter (mm), padding fraction, clinical record."""
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
    from ImmunoDiffLib.inference.change_region import lesion_diameter_mm

    info = pipeline.info
    cases = [replace(case, followup_ct=None, followup_tumour_mask=None)  # baselines only
             for case in load_cohort(manifest)]
    dataset = CohortDataset(cases, PreprocessConfig(crop=info.crop, window=info.window),
                            standardisation=info.standardisation)
    rows = []
    for index, case in enumerate(cases):
        _progress(f"features of the {label} cohort")(index / len(cases), case.patient_id)
        item = dataset[index]
        batch = default_collate([{k: v for k, v in item.items() if k != "patient_id"}])
        batch = {k: ({g: t.to(pipeline.device) for g, t in v.items()} if isinstance(v, dict)
                     else v.to(pipeline.device).float() if torch.is_tensor(v) else v)
                 for k, v in batch.items()}
        features = pipeline.features(batch).mean(0)
        tumour = item["tumour"][0].numpy() > 0
        rows.append({"patient_id": case.patient_id, "features": features,
                     "diameter_mm": lesion_diameter_mm(tumour, info.crop.spacing),
                     "padded_fraction": float(dataset.arrays(index)["padded_fraction"]),
                     "record": case.clinical})
    _progress(f"features of the {label} cohort")(1.0, "done")
    print()
    return rows


def training_ranges(rows: list[dict]):
    from ImmunoDiffLib.clinical import BY_NAME
    from ImmunoDiffLib.ood_reference import TrainingRanges

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="the bundle to write (default: replace --bundle)")
    parser.add_argument("--train-patients", type=int, default=None,
                        help="default: the bundle's training cohort size (else 24)")
    parser.add_argument("--held-out-patients", type=int, default=None,
                        help="default: the bundle's held-out cohort size (else 16)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder of the simulated cohorts (default: the cache folder)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from ImmunoDiffLib.bundle import with_ood_reference
    from ImmunoDiffLib.inference.out_of_distribution import assess
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.ood_reference import OODReference, fit_feature_reference
    from ImmunoDiffLib.settings import cache_dir

    started = time.perf_counter()
    work = args.work or cache_dir() / "ood_reference"
    pipeline = ImmunoDiffPipeline(args.bundle, device=args.device)
    info = pipeline.info
    train_settings = _settings(info, "train_cohort", args.train_patients)
    held_settings = _settings(info, "held_out_cohort", args.held_out_patients)
    train = _case_rows(pipeline, _cohort(work, "train", train_settings), "training")
    held = _case_rows(pipeline, _cohort(work, "held_out", held_settings), "held-out")
    features = fit_feature_reference(np.stack([r["features"] for r in train]),
                                     np.stack([r["features"] for r in held]))
    options = SamplingOptions()
    reference = OODReference(training_ranges(train), features, {
        "train_cohort": train_settings, "held_out_cohort": held_settings,
        "features": f"up-block features at timestep {pipeline.model.config.feature_timestep}, "
                    f"mean of {options.prediction_draws} noise draws (seed {options.seed}), "
                    "under the cohort's tumour masks and anatomy",
        "commit": _commit(),
        "command": " ".join(["python scripts/fit_ood_reference.py", *sys.argv[1:]])})
    flags = [assess(reference, lesion_diameter_mm=r["diameter_mm"],
                    lesion_found=r["diameter_mm"] > 0, padded_fraction=r["padded_fraction"],
                    record=r["record"], standardisation=info.standardisation,
                    features=r["features"]) for r in held]
    reference.source["held_out_flagged_all_rules"] = round(
        float(np.mean([f.flagged for f in flags])), 4)
    output = with_ood_reference(args.bundle, args.output or args.bundle, reference,
                                overwrite=True)
    for row, flag in zip(held, flags, strict=True):
        print(f"{row['patient_id']}: score {flag.score:.2f}, flagged {flag.flagged}"
              + (f" ({'; '.join(flag.reasons)})" if flag.reasons else ""))
    train_scores = features.score(np.stack([r["features"] for r in train]))
    print(json.dumps({"bundle": str(output), "ranges": reference.description()["ranges"],
                      "features": features.description(),
                      "train_score_median": round(float(np.median(train_scores)), 3),
                      "held_out_flagged_all_rules": reference.source[
                          "held_out_flagged_all_rules"],
                      "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
