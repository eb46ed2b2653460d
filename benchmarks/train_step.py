"""Seconds per training step, FLOPs, share of the matmul peak and peak memory of every stage,
each stage in a fresh process, in the arithmetic training uses (inference/precision.py: bf16
autocast and channels-last where the CPU multiplies bf16 in hardware, else fp32).

Usage: python benchmarks/train_step.py [--steps 3] [--device cpu|cuda] [--size paper|demo]
  paper: crop 96 x 96 x 16, ModelConfig defaults; demo: the demo bundle's 48 x 48 x 8 and
  model (evaluate/config.py DEMO, change target). Batch 2.
Inputs are random tensors of the real shapes: the cost of a step does not depend on content.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

STAGE_SCRIPT = """
import contextlib, json, resource, sys, time, torch
from dataclasses import replace
from torch.utils.flop_counter import FlopCounterMode
from ImmunoDiffLib.clinical import encode_clinical, parse_clinical
from ImmunoDiffLib.evaluate.config import DEMO
from ImmunoDiffLib.models import ImmunoDiffModel, ModelConfig
from ImmunoDiffLib.models.batch import model_batch
from ImmunoDiffLib.inference.precision import resolve_bf16, resolve_channels_last
from ImmunoDiffLib.train.runner import _to_device, step_generator
from ImmunoDiffLib.train.stages import StageLoss
from ImmunoDiffLib.train.heads import case_features
stage, steps, device, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
config = ModelConfig() if size == "paper" else replace(DEMO.model, target="change")
shape = (2, 1, 96, 96, 16) if size == "paper" else (2, 1, *DEMO.crop.size)
bf16 = resolve_bf16(None, device)
layout = (torch.channels_last_3d if resolve_channels_last(None, bf16, device)
          else torch.contiguous_format)
model = ImmunoDiffModel(config).to(device, memory_format=layout)
autocast = (lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)) if bf16 \
    else contextlib.nullcontext
clinical = encode_clinical([parse_clinical({"age": 60, "pdl1": 10, "anc": 4, "alc": 1})] * 2)
batch = model_batch(torch.rand(shape) * 2 - 1, torch.randint(0, 6, shape),
                    torch.rand(shape) > 0.9, clinical, tumour=torch.rand(shape) > 0.95,
                    followup=torch.rand(shape) * 2 - 1, response=torch.tensor([0.0, 1.0]))
batch = _to_device(batch, device, layout)
flops = 0.0
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
    loss_module = StageLoss(model, stage, lesion_weight=20.0 if stage == "2" else 1.0)
    times = []
    for i in range(steps + 2):
        counter = FlopCounterMode(display=False) if i == 0 else contextlib.nullcontext()
        sync(); start = time.perf_counter()
        with counter:
            with autocast():
                loss = loss_module(batch, step_generator(0, i, 0))
            optimizer.zero_grad(); loss.backward(); optimizer.step()
        sync(); times.append(time.perf_counter() - start)
        if i == 0:
            flops = counter.get_total_flops() / 1e9
    times = times[1:]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else 0
print(json.dumps({"seconds": sorted(times[1:])[len(times[1:]) // 2], "peak_rss_mb": peak,
                  "gpu_mb": gpu, "gflop": flops, "bf16": bf16,
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}))
"""

WHAT = {"1A": "VL contrastive (InfoNCE)", "1B": "DDPM U-Net", "1C": "anatomy ControlNet",
        "2": "U-Net + ControlNet + adapter (conditioned)", "heads": "up-block features, 1 case"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", choices=["paper", "demo"], default="paper")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from inference_speed import matmul_peak

    from ImmunoDiffLib.models.config import Stage

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print(f"{'stage':<6} {'what':<44} {'arith':>5} {'s/step':>7} {'GFLOP':>7} {'% peak':>7} "
          f"{'RSS MB':>7} {'GPU MB':>7} {'trainable':>10}")
    for stage in Stage:
        done = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, stage, str(args.steps),
                               args.device, args.size], capture_output=True, encoding="utf-8",
                              errors="replace", check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        trainable = "-" if stage == "heads" else f"{row['trainable'] / 1e6:.2f} M"
        arithmetic = "bf16" if row["bf16"] else "fp32"
        counted = row["gflop"] > 0  # FLOPs are counted for the training steps only
        gflop = f"{row['gflop']:.1f}" if counted else "-"
        share = (f"{100 * row['gflop'] / row['seconds'] / peaks[arithmetic]:.1f}%" if counted
                 else "-")
        print(f"{stage:<6} {WHAT[stage]:<44} {arithmetic:>5} {row['seconds']:>7.3f} "
              f"{gflop:>7} {share:>7} {row['peak_rss_mb']:>7.0f} "
              f"{row['gpu_mb']:>7.0f} {trainable:>10}")


if __name__ == "__main__":
    main()
