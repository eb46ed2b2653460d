"""Speed of the generate step at the default model size, against this CPU's matmul peak and
MONAI's stock sampler, and quality of the fast setting beside 1000-step DDPM.

Part A (default ModelConfig, crop 96 x 96 x 16, random weights: speed does not depend on
them): per-step time, FLOPs per step (torch's FlopCounterMode), achieved GFLOP/s against a
measured fp32 / bf16 matmul rate, whole generate time, peak RSS; and MONAI's stock
ControlNetDiffusionInferer.sample with a 1000-step DDPMScheduler in fp32 on the same model —
timed over a few steps in the same process and extrapolated to 1000 (said so in the table).

Part B (quality): a small model trained briefly on a simulated cohort (as in
conditioning_experiments.py); SSIM (MONAI SSIMMetric) and MAE (HU) of DDIM-k and of
1000-step DDPM against the true follow-up, on held-out cases.

Usage: python benchmarks/inference_speed.py [--cohort DIR/cohort.csv] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ImmunoDiffLib.clinical import encode_clinical, parse_clinical
from ImmunoDiffLib.models import ImmunoDiffModel, ModelConfig
from ImmunoDiffLib.sampling import SamplingOptions, sample


def matmul_peak(dtype, size=2048, repeats=10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def default_batch(shape=(1, 1, 96, 96, 16)):
    clinical = encode_clinical([parse_clinical({"age": 60, "pdl1": 10, "anc": 4, "alc": 1})])
    return {"baseline": torch.rand(shape) * 2 - 1, "vessels": (torch.rand(shape) > 0.9).float(),
            "lobes": torch.randint(0, 6, shape).float(), "clinical": clinical.values,
            "clinical_mask": clinical.mask}


def part_a(threads: int) -> None:
    torch.set_num_threads(threads)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak here ({threads} threads): fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s\n")
    print(f"{'setting':<48} {'s/step':>7} {'GFLOP/step':>11} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'steps':>6} {'generate s':>11}")
    rows = [("DDIM-25, 1 sample, bf16+flash+ch-last (default)", True, True, 1, 25, True),
            ("DDIM-25, 2 samples, bf16+flash+ch-last", True, True, 2, 25, True),
            ("DDIM-25, 1 sample, bf16 + flash", True, True, 1, 25, False),
            ("DDIM-25, 1 sample, fp32 + flash", False, True, 1, 25, False),
            ("DDIM-25, 1 sample, fp32, no flash", False, False, 1, 25, False)]
    batch = default_batch()
    results = {}
    for name, bf16, flash, samples, steps, channels_last in rows:
        torch.manual_seed(0)
        model = ImmunoDiffModel(replace(ModelConfig(), use_flash_attention=flash)).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        with torch.inference_mode():
            conditions = model.encode_conditions(batch, "2")
            from ImmunoDiffLib.sampling import repeat_conditions

            layout = torch.channels_last_3d if channels_last else torch.contiguous_format
            x = torch.randn(samples, 1, 96, 96, 16).contiguous(memory_format=layout)
            t = torch.full((samples,), 500)
            cond = repeat_conditions(conditions, samples)
            context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else \
                torch.autocast("cpu", enabled=False)
            with context, FlopCounterMode(display=False) as counter:
                model.predict_noise(x, t, cond)
            flops = counter.get_total_flops() / 1e9
        options = SamplingOptions(steps=steps, samples=samples, bf16=bf16,
                                  channels_last=channels_last)
        start = time.perf_counter()
        sample(model, conditions, (1, 96, 96, 16), options)
        total = time.perf_counter() - start
        per_step = total / steps
        rate = flops / per_step
        peak = peaks["bf16" if bf16 else "fp32"]
        results[name] = per_step
        print(f"{name:<48} {per_step:>7.2f} {flops:>11.1f} {rate:>8.0f} {rate / peak:>6.0%} "
              f"{steps:>6} {total:>11.1f}")

    from monai.inferers import ControlNetDiffusionInferer
    from monai.networks.schedulers import DDPMScheduler

    torch.manual_seed(0)
    model = ImmunoDiffModel(ModelConfig()).eval()
    with torch.inference_mode():
        conditions = model.encode_conditions(batch, "2")
        scheduler = DDPMScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(1000)
        measured = 5
        scheduler.timesteps = scheduler.timesteps[:measured]  # time 5 of its 1000 steps
        inferer = ControlNetDiffusionInferer(scheduler)
        start = time.perf_counter()
        inferer.sample(torch.randn(1, 1, 96, 96, 16), model.unet, model.controlnet,
                       conditions.control, scheduler, conditioning=conditions.context,
                       verbose=False)
        stock_step = (time.perf_counter() - start) / measured
    fast = results["DDIM-25, 1 sample, bf16+flash+ch-last (default)"]
    print(f"{'MONAI stock DDPM-1000 fp32 (extrapolated)':<48} {stock_step:>7.2f} "
          f"{'':>11} {'':>8} {'':>7} {1000:>6} {stock_step * 1000:>11.0f}")
    print(f"\nstock DDPM-1000 fp32 / default DDIM-25 (1 sample): "
          f"{stock_step * 1000 / (fast * 25):.0f}x faster; per step {stock_step / fast:.1f}x")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_rss:.0f} MB")


def part_b(cohort: Path, threads: int) -> None:
    import tempfile

    from monai.metrics import SSIMMetric
    from torch.utils.data import default_collate

    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
    from ImmunoDiffLib.imaging import CropSpec
    from ImmunoDiffLib.train import TrainConfig, train_stage

    torch.set_num_threads(threads)
    small = ModelConfig(channels=(16, 32, 32), num_head_channels=(0, 0, 16), norm_num_groups=8,
                        context_dim=32, control_channels=8, vl_widths=(8, 16), vl_embed_dim=32,
                        vl_projection_dim=16, adapter_dim=32, adapter_heads=2)
    preprocess = PreprocessConfig(crop=CropSpec(size=(48, 48, 8), spacing=(6.0, 6.0, 2.0)))
    cases = load_cohort(cohort)
    train_set = CohortDataset(cases[:-4], preprocess)
    held_out = [CohortDataset(cases[-4:], preprocess)[i] for i in range(4)]
    torch.manual_seed(0)
    model = ImmunoDiffModel(small)
    with tempfile.TemporaryDirectory() as scratch:
        for stage in ("1A", "1B", "1C", "2"):
            train_stage(model, train_set, TrainConfig(stage=stage, steps=300, learning_rate=1e-3,
                                                      checkpoint_every=300),
                        Path(scratch) / stage)
    model.eval()
    ssim = SSIMMetric(spatial_dims=3, data_range=2.0, win_size=3)
    print(f"\nquality on {len(held_out)} held-out simulated cases (small model, 300 steps per "
          "stage, crop 48x48x8 @ 6x6x2 mm):")
    print(f"{'sampler':<12} {'SSIM':>6} {'MAE HU':>7} {'s/case':>7}")
    for sampler, steps in (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 1000)):
        scores, errors, seconds = [], [], []
        for item in held_out:
            batch = {k: (v.float() if torch.is_tensor(v) and v.dtype == torch.uint8 else v)
                     for k, v in default_collate([item]).items()}
            with torch.inference_mode():
                conditions = model.encode_conditions(batch, "2")
            start = time.perf_counter()
            x0 = sample(model, conditions, (1, 48, 48, 8),
                        SamplingOptions(sampler=sampler, steps=steps, samples=1, bf16=False))
            seconds.append(time.perf_counter() - start)
            followup = model.followup_from(x0, batch["baseline"])
            scores.append(float(ssim(followup, batch["followup"]).mean()))
            errors.append(float((followup - batch["followup"]).abs().mean()) * 1024)
        name = f"{sampler.upper()}-{steps}"
        print(f"{name:<12} {sum(scores) / 4:>6.3f} {sum(errors) / 4:>7.1f} "
              f"{sum(seconds) / 4:>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=Path, help="simulated cohort for the quality part")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if not args.skip_speed:
        part_a(args.threads)
    if args.cohort:
        part_b(args.cohort, args.threads)


if __name__ == "__main__":
    main()
