"""Seconds per training step and peak memory of every stage at the default configuration
(paper crop 96 x 96 x 16, batch 2, ModelConfig defaults), each stage in a fresh process.

Usage: python benchmarks/train_step.py [--steps 3] [--device cpu|cuda]
Inputs are random tensors of the real shapes: the cost of a step does not depend on content.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STAGE_SCRIPT = """
import json, resource, sys, time, torch
from ImmunoDiffLib.clinical import encode_clinical, parse_clinical
from ImmunoDiffLib.models import ImmunoDiffModel, ModelConfig
from ImmunoDiffLib.train.runner import step_generator
from ImmunoDiffLib.train.stages import StageLoss
from ImmunoDiffLib.train.heads import case_features
stage, steps, device = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = ImmunoDiffModel(ModelConfig()).to(device)
shape = (2, 1, 96, 96, 16)
clinical = encode_clinical([parse_clinical({"age": 60, "pdl1": 10, "anc": 4, "alc": 1})] * 2)
batch = {"baseline": torch.rand(shape) * 2 - 1, "followup": torch.rand(shape) * 2 - 1,
         "vessels": (torch.rand(shape) > 0.9).float(), "lobes": torch.randint(0, 6, shape).float(),
         "clinical": clinical.values, "clinical_mask": clinical.mask}
batch = {k: (v.to(device) if torch.is_tensor(v) else {g: t.to(device) for g, t in v.items()})
         for k, v in batch.items()}
def sync():
    if device == "cuda":
        torch.cuda.synchronize()
if stage == "heads":
    item = {k: (v[0] if torch.is_tensor(v) else {g: t[0] for g, t in v.items()})
            for k, v in batch.items()}
    item.update(response=torch.tensor(1.0), survival_months=torch.tensor(5.0),
                event=torch.tensor(1.0))
    times = []
    for i in range(steps + 1):
        sync(); start = time.perf_counter()
        case_features(model, [item])
        sync(); times.append(time.perf_counter() - start)
else:
    parameters = model.set_trainable(stage)
    optimizer = torch.optim.Adam(parameters, lr=2.5e-5)
    loss_module = StageLoss(model, stage)
    times = []
    for i in range(steps + 1):
        sync(); start = time.perf_counter()
        loss = loss_module(batch, step_generator(0, i, 0))
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        sync(); times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
print(json.dumps({"seconds": sorted(times[1:])[len(times[1:]) // 2], "peak_rss_mb": peak,
                  "gpu_mb": gpu, "trainable": sum(p.numel() for p in model.parameters()
                                                  if p.requires_grad)}))
"""

WHAT = {"1A": "VL contrastive (InfoNCE)", "1B": "DDPM U-Net", "1C": "anatomy ControlNet",
        "2": "adapter + ControlNet (conditioned)", "heads": "up-block features, 1 case"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{'stage':<6} {'what':<36} {'s/step':>8} {'peak RSS MB':>12} {'GPU MB':>8} "
          f"{'trainable':>10}")
    for stage in ("1A", "1B", "1C", "2", "heads"):
        done = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, stage, str(args.steps),
                               args.device], capture_output=True, encoding="utf-8",
                              errors="replace", check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        trainable = "-" if stage == "heads" else f"{row['trainable'] / 1e6:.2f} M"
        print(f"{stage:<6} {WHAT[stage]:<36} {row['seconds']:>8.2f} {row['peak_rss_mb']:>12.0f} "
              f"{row['gpu_mb']:>8.0f} {trainable:>10}")


if __name__ == "__main__":
    main()
