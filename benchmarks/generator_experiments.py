"""Stage-2 design measurements on held-out simulated patients: which parameterisation and
conditioning make the synthesized follow-up follow the response and keep the anatomy.

    python benchmarks/generator_experiments.py --stage1 BUNDLE [--steps 800]
        [--variants x0_unet_scaled,eps_frozen,...] [--work .demo_bundle_work]

Every variant starts from the same stage-1 weights (U-Net, ControlNet, VL encoders of
``--stage1``, a bundle at the demo size), trains stage 2 for ``--steps`` steps on the demo
bundle's training cohort (lung2 and TotalSegmentator backgrounds) and is measured by
ImmunoDiffLib.evaluate.generator_checks on the held-out cohort of the same backgrounds
(seed 202) with DDIM-25, one sample. The cohorts are the demo bundle script's (simulated
once, cached in ``--work``).
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
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

VARIANTS = {  # ModelConfig overrides on top of the demo's (change target)
    "eps_frozen_paper": dict(prediction_type="epsilon", stage2_unet=False, lesion_control=False,
                             clinical_tokens=False, scenario=False),
    "x0_frozen": dict(prediction_type="sample", stage2_unet=False),
    "x0_unet_unscaled": dict(prediction_type="sample"),
    "x0_unet_scaled": dict(prediction_type="sample"),
    "v_unet_scaled": dict(prediction_type="v_prediction"),
    "x0_unet_scaled_no_mask": dict(prediction_type="sample", lesion_control=False),
    "x0_unet_unscaled_no_tokens": dict(prediction_type="sample", clinical_tokens=False),
    "x0_unet_unscaled_no_aux": dict(prediction_type="sample"),
}
TRAIN_OVERRIDES = {  # TrainConfig overrides of a variant
    "x0_unet_unscaled_no_aux": dict(response_loss_weight=0.0),
}
UNSCALED = ("eps_frozen_paper", "x0_frozen", "x0_unet_unscaled", "x0_unet_unscaled_no_tokens",
            "x0_unet_unscaled_no_aux")
COLUMNS = ["auc_generator_estimate", "auc_synthesized_shrink", "auc_baseline_size_only",
           "auc_clinical_only_logistic",
           "synthesized_shrinks_responders", "false_shrink_non_responders",
           "scenario_responder_shrinks", "scenario_non_responder_keeps", "background_mae_hu",
           "true_background_mae_hu", "tissue_change_fraction", "ssim", "ssim_copy_baseline"]


def load_stage1(model, bundle: Path) -> int:
    """Copy the stage-1 parts' tensors of ``bundle`` (a bundle folder, or a training
    checkpoint folder such as the demo work's runs/1C/checkpoint) whose shapes match; returns
    the count."""
    weights = bundle / "weights.safetensors"
    tensors = load_file(str(weights if weights.is_file() else bundle / "model.safetensors"))
    own = model.state_dict()
    parts = ("unet.", "controlnet.", "vl.", "anatomy_tokens.", "anatomy_map.")
    chosen = {k: v for k, v in tensors.items() if k.startswith(parts)
              and k in own and own[k].shape == v.shape}
    model.load_state_dict(chosen, strict=False)
    return len(chosen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage1", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    parser.add_argument("--train-patients", type=int, default=60)
    parser.add_argument("--alignment", default="deformable",
                        choices=("deformable", "affine", "rigid", "none"),
                        help="how the training follow-ups reach the baseline (none: cropped "
                             "where the scanner put them, the unaligned control)")
    parser.add_argument("--output", type=Path, help="JSON of the results")
    args = parser.parse_args()

    import train_demo_bundle as demo

    from ImmunoDiffLib.clinical import fit_standardisation
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
    from ImmunoDiffLib.evaluate.config import DEMO
    from ImmunoDiffLib.evaluate.data import CohortTensors
    from ImmunoDiffLib.evaluate.generator_checks import (
        case_rows,
        clinical_only_scores,
        summarise,
    )
    from ImmunoDiffLib.inference.sampling import SamplingOptions
    from ImmunoDiffLib.models import ImmunoDiffModel
    from ImmunoDiffLib.train import TrainConfig, train_stage

    train_manifest, _ = demo.simulated_cohort(
        args.work / "train_cohort", {**demo.TRAIN_COHORT, "n_patients": args.train_patients})
    held_manifest, ceiling = demo.simulated_cohort(args.work / "held_out_cohort",
                                                   demo.HELD_OUT_COHORT)
    train_cases = load_cohort(train_manifest)
    standardisation = fit_standardisation(c.clinical for c in train_cases)
    preprocess = PreprocessConfig(crop=DEMO.crop)  # held out: always the aligned truth
    dataset = CohortDataset(train_cases, replace(preprocess, alignment=args.alignment),
                            standardisation=standardisation)
    held = CohortTensors.from_dataset(
        CohortDataset(load_cohort(held_manifest, require_followup=True, require_outcomes=True),
                      preprocess, standardisation=standardisation), DEMO.crop.spacing)
    train_tensors = CohortTensors.from_dataset(dataset, DEMO.crop.spacing)
    clinical_scores = clinical_only_scores(train_tensors.batch, held.batch)
    options = SamplingOptions(steps=25, samples=1, seed=1, bf16=False, channels_last=False)
    results = {}
    for name in args.variants.split(","):
        torch.manual_seed(0)
        config = replace(DEMO.model, target="change", **VARIANTS[name])
        model = ImmunoDiffModel(config)
        copied = load_stage1(model, args.stage1)
        clock = time.perf_counter()
        train_stage(model, dataset, TrainConfig(
            stage="2", steps=args.steps, batch_size=2, learning_rate=1e-3, seed=0,
            checkpoint_every=args.steps, lesion_loss_weight=demo.LESION_LOSS_WEIGHT,
            fit_target_scale=name not in UNSCALED,  # the scaled variants fit target_scale
            **TRAIN_OVERRIDES.get(name, {})),
            args.work / "experiments" / f"{name}_{args.steps}_{args.alignment}")
        seconds = time.perf_counter() - clock
        model.eval()
        rows = case_rows(model, held.batch, held.ids, options, scenarios=config.scenario)
        numbers = summarise(rows, clinical_scores)
        results[name] = {**numbers, "train_seconds": round(seconds, 1), "tensors_copied": copied,
                         "target_scale": model.config.target_scale}
        print(name, json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                for k, v in results[name].items()}), flush=True)
    print(f"\nheld-out: {len(held)} patients (seed 202), Bayes ceiling accuracy {ceiling:.3f}; "
          f"stage 2: {args.steps} steps on follow-ups aligned: {args.alignment}")
    print("| variant | " + " | ".join(COLUMNS) + " | train s |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for name, numbers in results.items():
        cells = [("-" if numbers.get(c) is None or np.isnan(numbers.get(c, np.nan))
                  else f"{numbers[c]:.2f}") for c in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + f" | {numbers['train_seconds']:.0f} |")
    if args.output:
        args.output.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
