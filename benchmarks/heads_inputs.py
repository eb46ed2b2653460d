"""What the response and survival heads should read: the same trained generator, heads fitted
on the demo training cohort with parts of their input left out, measured on both held-out
cohorts.

    python benchmarks/heads_inputs.py [--bundle Resources/demo_bundle] [--work .demo_bundle_work]

Inputs (``ModelConfig.heads_input``):
* "crop": the paper's, the up-block features averaged over the whole crop under every
  condition, into an MLP (the bundles before "lesion_and_clinical");
* "lesion_and_clinical" (shipped): the up-block features averaged over the baseline lesion
  (8 principal components), the clinical variables, the lesion's size; and the same with the
  scan's features, the size or the clinical variables left out (their columns set to 0:
  constant columns carry nothing after standardisation).
Features from one noise draw per patient (``train.heads.case_features``; the pipeline averages
several), heads fitted as ``train.heads.fit_heads`` fits them (500 full-batch steps), response
AUC (uncalibrated: calibration does not change it) and survival c-index. Cohorts: the bundle's
training, held-out and unseen-background cohorts (scripts/train_demo_bundle.py, cached in
--work).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

COHORTS = (("train", "train_cohort", "train_cohort"),
           ("held_out", "held_out_cohort", "held_out_cohort"),
           ("unseen", "unseen_cohort", "unseen_background_cohort"))
LEFT_OUT = {  # variant -> the parts of the "lesion_and_clinical" input set to 0
    "scan over the lesion + clinical + size (shipped)": (),
    "clinical + size": ("scan",),
    "scan over the lesion + clinical": ("size",),
    "scan over the lesion + size": ("clinical",),
    "clinical only": ("scan", "size"),
}


def cohort_items(manifest: Path, info) -> tuple[list[dict], dict]:
    """(dataset items, stacked batch) of a cohort, through the preprocessing cache."""
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
    from ImmunoDiffLib.evaluate.data import CohortTensors

    dataset = CohortDataset(load_cohort(manifest, require_followup=True, require_outcomes=True),
                            PreprocessConfig(crop=info.crop),
                            standardisation=info.standardisation)
    batch = CohortTensors.from_dataset(dataset, info.crop.spacing).batch
    items = [{k: ({g: v[i] for g, v in value.items()} if isinstance(value, dict) else value[i])
              for k, value in batch.items()} for i in range(len(batch["baseline"]))]
    return items, batch


def measure(model, features: dict, batches: dict, steps: int) -> dict:
    """Fit the model's fresh heads on the training features; AUC and c-index per cohort."""
    from sklearn.metrics import roc_auc_score

    from ImmunoDiffLib.evaluate.metrics import c_index
    from ImmunoDiffLib.train import TrainConfig
    from ImmunoDiffLib.train.heads_fit import fit_heads

    train = batches["train"]
    fit_heads(model, features["train"], train["response"].float(),
              train["survival_months"].float(), train["event"].float(),
              TrainConfig(stage="heads", steps=steps))
    numbers = {}
    with torch.no_grad():
        for key in ("held_out", "unseen"):
            logits = model.response_head(features[key]).numpy()
            risk = model.survival_head(features[key]).numpy()
            batch = batches[key]
            numbers[key] = (roc_auc_score(batch["response"].numpy(), logits),
                            c_index(batch["survival_months"].numpy(), batch["event"].numpy(),
                                    risk))
    return numbers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()

    import train_demo_bundle as demo

    from ImmunoDiffLib.bundle import load_bundle
    from ImmunoDiffLib.clinical import feature_layout
    from ImmunoDiffLib.train.heads import case_features

    started = time.perf_counter()
    loaded, info = load_bundle(args.bundle)
    items, batches = {}, {}
    for key, folder, setting in COHORTS:
        manifest, _ = demo.simulated_cohort(args.work / folder, info.training[setting])
        items[key], batches[key] = cohort_items(manifest, info)
    rows = []
    model = loaded.with_fresh_heads("crop")
    crop = {key: case_features(model, items[key], seed=0 if key == "train" else 1)
            for key in items}
    rows.append(("whole-crop features, MLP (the paper's; bundles before)",
                 measure(model, crop, batches, args.steps)))
    model = loaded.with_fresh_heads("lesion_and_clinical")
    lesion = {key: case_features(model, items[key], seed=0 if key == "train" else 1)
              for key in items}
    scan = sum(block.resnets[-1].out_channels for block in model.unet.up_blocks)
    clinical = 2 * sum(len(f) for f in feature_layout().values())
    columns = {"scan": slice(0, scan), "clinical": slice(scan, scan + clinical),
               "size": slice(scan + clinical, scan + clinical + 2)}
    for name, left_out in LEFT_OUT.items():
        kept = {}
        for key, values in lesion.items():
            values = values.clone()
            for part in left_out:
                values[:, columns[part]] = 0.0
            kept[key] = values
        rows.append((name, measure(model.with_fresh_heads("lesion_and_clinical"), kept,
                                   batches, args.steps)))
    print("| heads read | response AUC held out / unseen background | survival c-index held "
          "out / unseen |\n|---|---|---|")
    for name, numbers in rows:
        (auc_h, c_h), (auc_u, c_u) = numbers["held_out"], numbers["unseen"]
        print(f"| {name} | {auc_h:.2f} / {auc_u:.2f} | {c_h:.2f} / {c_u:.2f} |")
    print(f"{len(items['train'])} training, {len(items['held_out'])} held-out and "
          f"{len(items['unseen'])} unseen-background patients; "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
