"""``immunodiff train STAGE``: the command line over :func:`train_stage`.

    immunodiff train 1B --cohort cohort.csv -o runs/1B [--model-config tiny] [--steps N]
    immunodiff train 1C --cohort cohort.csv -o runs/1C --init runs/1B/checkpoint
    immunodiff train all --cohort cohort.csv -o runs/all --bundle my_bundle
Stages 1A-1C read ``--pretraining`` (public CTs) when given, else the cohort's baseline CTs.
Works unchanged under ``torchrun --nproc_per_node N -m ImmunoDiffLib.cli train ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..bundle import BundleInfo, save_bundle
from ..clinical import fit_standardisation
from ..cohort import load_cohort, load_pretraining_manifest
from ..datasets import CohortDataset, PreprocessConfig, PretrainingDataset
from ..errors import SettingError
from ..models.config import PRETRAINING_STAGES, TINY, ModelConfig
from ..models.immunodiff import ImmunoDiffModel
from ..progress import CancelFlag
from ..train.checkpoint import load_model_weights
from ..train.config import STAGES, TrainConfig
from ..train.records import data_hash
from ..train.runner import train_stage
from .options import add_crop_grid, add_progress_and_cancel, crop_grid

TITLE = "Training"

MODEL_PRESETS = {"paper": ModelConfig(), "default": ModelConfig(), "tiny": TINY}


def add_parser(commands) -> None:
    train = commands.add_parser("train", help="train a stage (or all) of the model")
    train.add_argument("stage", choices=[*STAGES, "all"])
    train.add_argument("--cohort", type=Path, help="immunotherapy cohort manifest (CSV)")
    train.add_argument("--pretraining", type=Path, help="stage-1 manifest of public CTs")
    train.add_argument("-o", "--output", type=Path, required=True, help="run folder")
    train.add_argument("--config", type=Path, help="training settings (JSON)")
    train.add_argument("--model-config", default="paper",
                       help="model settings: JSON file or preset (paper, tiny)")
    train.add_argument("--init", type=Path, help="checkpoint or bundle folder to start from")
    train.add_argument("--steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, dest="learning_rate")
    train.add_argument("--seed", type=int)
    train.add_argument("--checkpoint-every", type=int)
    train.add_argument("--lesion-loss-weight", type=float,
                       help="stage 2: weight of the voxels near the tumour (default 1, plain)")
    add_crop_grid(train)
    train.add_argument("--bundle", type=Path, help="after 'heads' or 'all': write a bundle")
    add_progress_and_cancel(train)


def _model_config(args, init: Path | None) -> ModelConfig:
    if init is not None:
        for name in ("state.json", "bundle.json"):
            if (init / name).is_file():
                data = json.loads((init / name).read_text(encoding="utf-8"))
                return ModelConfig.from_dict(data.get("model_config") or data["model"],
                                             legacy=True)
    if args.model_config in MODEL_PRESETS:
        return MODEL_PRESETS[args.model_config]
    return ModelConfig.from_json(args.model_config)


def _train_config(args, stage: str) -> TrainConfig:
    overrides = {k: getattr(args, k) for k in ("steps", "batch_size", "learning_rate", "seed",
                                               "checkpoint_every", "lesion_loss_weight")
                 if getattr(args, k, None) is not None}
    overrides["stage"] = stage
    if args.config:
        return TrainConfig.from_json(args.config, **overrides)
    return TrainConfig(**overrides)


def _datasets(args, stage: str, preprocess, standardisation):
    if stage in PRETRAINING_STAGES and args.pretraining:
        return PretrainingDataset(load_pretraining_manifest(args.pretraining), preprocess)
    if args.cohort is None:
        raise SettingError(f"Stage {stage} needs --cohort (or --pretraining for stages 1A-1C).")
    cases = load_cohort(args.cohort, require_followup=stage == "2",
                        require_outcomes=stage == "heads")
    return CohortDataset(cases, preprocess, standardisation=standardisation)


def run(args, progress=None, cancel: CancelFlag = None) -> dict:
    crop = crop_grid(args)
    preprocess = PreprocessConfig(crop=crop)
    standardisation = None
    if args.cohort:
        standardisation = fit_standardisation(c.clinical for c in load_cohort(args.cohort))
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    init = args.init
    torch.manual_seed(_train_config(args, stages[0]).seed)  # same seed, same initial weights
    model = ImmunoDiffModel(_model_config(args, init))
    if init is not None:
        load_model_weights(init, model)
    results = {}
    for stage in stages:
        output = args.output / stage if args.stage == "all" else args.output
        result = train_stage(model, _datasets(args, stage, preprocess, standardisation),
                             _train_config(args, stage), output, progress, cancel)
        results[stage] = {"final_loss": result.losses[-1], "steps": result.steps,
                          "output": str(result.output)}
    if args.bundle:
        info = BundleInfo(model=model.config, crop=crop,
                          standardisation=standardisation or BundleInfo().standardisation,
                          training={"stages": stages, "data_hash": data_hash(
                              [args.cohort, args.pretraining]), "results": results})
        save_bundle(args.bundle, model, info, overwrite=True)
        results["bundle"] = str(args.bundle)
    return results
