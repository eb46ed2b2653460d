"""Two design measurements on a simulated cohort (held-out patients):

1. How the anatomy vector c_a enters the ControlNet (``anatomy_control``): as cross-attention
   tokens, broadcast over the control image, or both. Metric: held-out denoising loss of
   stage 1C (same data, noise and timesteps for every mode).
2. What stage 2 generates (``target``): the follow-up itself (paper) or the change
   follow-up - baseline (as TADM). Metric: from one denoising step at t, the predicted x̂_0
   turned into a follow-up, compared with the true follow-up: MAE in HU over the crop and
   inside the lesion (baseline or follow-up tumour), averaged over t in {10, 30, 50} % of T.

Usage: python benchmarks/conditioning_experiments.py --cohort DIR/cohort.csv [--steps 150]
Model: a small U-Net (16, 32, 32) at a 48 x 48 x 8 crop of 6 x 6 x 2 mm, so it runs on a CPU.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import default_collate

from ImmunoDiffLib.cohort import load_cohort
from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
from ImmunoDiffLib.imaging import CropSpec
from ImmunoDiffLib.models import ImmunoDiffModel, ModelConfig
from ImmunoDiffLib.train import TrainConfig, train_stage
from ImmunoDiffLib.train.runner import step_generator
from ImmunoDiffLib.train.stages import StageLoss, make_scheduler

SMALL = ModelConfig(channels=(16, 32, 32), num_head_channels=(0, 0, 16), norm_num_groups=8,
                    context_dim=32, control_channels=8, vl_widths=(8, 16), vl_embed_dim=32,
                    vl_projection_dim=16, adapter_dim=32, adapter_heads=2)


def _batch(items):
    batch = default_collate(items)
    return {k: (v.float() if torch.is_tensor(v) and v.dtype == torch.uint8 else v)
            for k, v in batch.items()}


@torch.no_grad()
def held_out_loss(model, stage, items, repeats=4):
    loss = StageLoss(model, stage)
    total = 0.0
    for index, item in enumerate(items):
        for r in range(repeats):
            total += float(loss(_batch([item]), step_generator(777, index * repeats + r, 0)))
    return total / (len(items) * repeats)


@torch.no_grad()
def followup_error_hu(model, items):
    scheduler = make_scheduler(model)
    whole, lesion = [], []
    for index, item in enumerate(items):
        batch = _batch([item])
        conditions = model.encode_conditions(batch, "2")
        x0 = model.target_from(batch["followup"], batch["baseline"])
        for fraction in (0.1, 0.3, 0.5):
            t = torch.tensor([int(fraction * scheduler.num_train_timesteps)])
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(index))
            x_t = scheduler.add_noise(x0, noise, t)
            eps = model.predict_noise(x_t, t, conditions)
            alpha = scheduler.alphas_cumprod[t].item()
            x0_hat = ((x_t - (1 - alpha) ** 0.5 * eps) / alpha ** 0.5).clamp(-1, 1)
            error = (model.followup_from(x0_hat, batch["baseline"]) - batch["followup"]).abs()
            error = error * 1024.0  # back to HU (window half-width)
            region = (batch["tumour"] + batch["followup_tumour"]) > 0
            whole.append(float(error.mean()))
            lesion.append(float(error[region].mean()) if region.any() else float("nan"))
    return sum(whole) / len(whole), sum(lesion) / len(lesion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--held-out", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    preprocess = PreprocessConfig(crop=CropSpec(size=(48, 48, 8), spacing=(6.0, 6.0, 2.0)))
    cases = load_cohort(args.cohort)
    train_set = CohortDataset(cases[:-args.held_out], preprocess)
    test_items = [CohortDataset(cases[-args.held_out:], preprocess)[i]
                  for i in range(args.held_out)]
    print(f"cohort {args.cohort}: {len(train_set)} training, {len(test_items)} held-out "
          f"patients; {args.steps} steps per stage, lr 1e-3, batch 2\n")
    with tempfile.TemporaryDirectory() as scratch:
        def train(model, stage, name):
            train_stage(model, train_set, TrainConfig(stage=stage, steps=args.steps,
                                                      learning_rate=1e-3,
                                                      checkpoint_every=args.steps),
                        Path(scratch) / name)

        base = ImmunoDiffModel(SMALL)
        train(base, "1A", "1A")
        train(base, "1B", "1B")
        print("1. anatomy control (stage 1C), held-out denoising loss (lower is better)")
        print(f"   {'mode':<10} {'loss':>8}")
        print(f"   {'none (1B)':<10} {held_out_loss(base, '1B', test_items):>8.4f}")
        for mode in ("context", "broadcast", "both"):
            model = ImmunoDiffModel(replace(SMALL, anatomy_control=mode))
            model.load_state_dict(base.state_dict())
            train(model, "1C", f"1C-{mode}")
            print(f"   {mode:<10} {held_out_loss(model, '1C', test_items):>8.4f}")
        print("\n2. target of stage 2, follow-up error from one denoising step (HU, lower is "
              "better)")
        print(f"   {'target':<10} {'whole crop':>11} {'lesion':>8}")
        for target in ("followup", "change"):
            model = ImmunoDiffModel(replace(SMALL, target=target))
            model.load_state_dict(copy.deepcopy(base.state_dict()))
            train(model, "1C", f"1C-{target}")
            train(model, "2", f"2-{target}")
            whole, lesion = followup_error_hu(model, test_items)
            print(f"   {target:<10} {whole:>11.1f} {lesion:>8.1f}")


if __name__ == "__main__":
    main()
