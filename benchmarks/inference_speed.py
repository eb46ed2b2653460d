"""Speed of the generate step at the default model size, against this CPU's matmul peak and
MONAI's stock sampler, and quality of the fast setting beside 1000-step DDPM.

Part A (default ModelConfig, crop 96 x 96 x 16, random weights: speed does not depend on
them): per-step time, FLOPs per step (torch's FlopCounterMode), achieved GFLOP/s against a
measured fp32 / bf16 matmul rate, whole generate time, peak RSS; and MONAI's stock
ControlNetDiffusionInferer.sample with a 1000-step DDPMScheduler in fp32 on the same model —
timed over a few steps in the same process and extrapolated to 1000 (said so in the table).

Part B (quality): a trained bundle (default: the demo bundle) on simulated cases it was not
trained on; SSIM (MONAI SSIMMetric) and MAE (HU) of DDIM-k and of 1000-step DDPM against the
true follow-up, beside the trivial "unchanged" prediction (the baseline itself).

Usage: python benchmarks/inference_speed.py [--cohort HELD_OUT/cohort.csv] [--bundle DIR]
       [--cases 8] [--threads 2] [--skip-speed]
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


def matmul_peak(dtype, size=4096, repeats=5, trials=3) -> float:
    """Best of ``trials`` timings of ``repeats`` square matmuls, in GFLOP/s."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def time_breakdown(model, x, t, conditions, peak: float) -> None:
    """Where one bf16 step's time goes: convolutions (and their GFLOP/s) vs the rest."""
    with torch.autocast("cpu", dtype=torch.bfloat16), FlopCounterMode(display=False) as counter:
        model.predict_noise(x, t, conditions)
    conv_flops = sum(v for k, v in counter.get_flop_counts()["Global"].items()
                     if "convolution" in str(k)) / 1e9
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.profiler.profile() as profile:
        model.predict_noise(x, t, conditions)
    by_op = {e.key: e.self_cpu_time_total / 1e6 for e in profile.key_averages()}
    total = sum(by_op.values())
    conv = sum(v for k, v in by_op.items() if "convolution" in k)
    print(f"\none default step, by operator (torch.profiler, {total:.3f} s in all):")
    print(f"  convolutions: {conv / total:.0%} of the time, {conv_flops:.0f} GFLOP at "
          f"{conv_flops / conv:.0f} GFLOP/s ({conv_flops / conv / peak:.0%} of the bf16 peak)")
    for key, seconds in sorted(by_op.items(), key=lambda kv: -kv[1])[:7]:
        if "convolution" not in key:
            print(f"  {key:<50} {seconds / total:>4.0%}")


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
    # The first row runs before anything sets the allocator's thresholds (process-wide).
    rows = [("DDIM-25, 1 sample, default, freed memory unmapped", True, True, 1, 25, True, False),
            ("DDIM-25, 1 sample, bf16+flash+ch-last (default)", True, True, 1, 25, True, True),
            ("DDIM-25, 2 samples, bf16+flash+ch-last", True, True, 2, 25, True, True),
            ("DDIM-25, 1 sample, bf16 + flash", True, True, 1, 25, False, True),
            ("DDIM-25, 1 sample, fp32 + flash", False, True, 1, 25, False, True),
            ("DDIM-25, 1 sample, fp32, no flash", False, False, 1, 25, False, True)]
    batch = default_batch()
    results = {}
    for name, bf16, flash, samples, steps, channels_last, reuse in rows:
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
                                  channels_last=channels_last, reuse_freed_memory=reuse)
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
    with torch.inference_mode():
        flash = ImmunoDiffModel(replace(ModelConfig(), use_flash_attention=True)).eval()
        flash = flash.to(memory_format=torch.channels_last_3d)
        time_breakdown(flash, torch.randn(1, 1, 96, 96, 16).contiguous(
            memory_format=torch.channels_last_3d), torch.full((1,), 500),
            flash.encode_conditions(batch, "2"), peaks["bf16"])
    print(f"{'MONAI stock DDPM-1000 fp32 (extrapolated)':<48} {stock_step:>7.2f} "
          f"{'':>11} {'':>8} {'':>7} {1000:>6} {stock_step * 1000:>11.0f}")
    print(f"\nstock DDPM-1000 fp32 / default DDIM-25 (1 sample): "
          f"{stock_step * 1000 / (fast * 25):.0f}x faster; per step {stock_step / fast:.1f}x")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_rss:.0f} MB")


def part_b(cohort: Path, bundle: Path, threads: int, cases: int) -> None:
    from monai.metrics import SSIMMetric
    from torch.utils.data import default_collate

    from ImmunoDiffLib.bundle import load_bundle
    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig

    torch.set_num_threads(threads)
    model, info = load_bundle(bundle)
    model.eval()
    dataset = CohortDataset(load_cohort(cohort, require_followup=True)[:cases],
                            PreprocessConfig(crop=info.crop),
                            standardisation=info.standardisation)
    shape = (1, *info.crop.size)
    ssim = SSIMMetric(spatial_dims=3, data_range=2.0, win_size=3)
    print(f"\nquality on {len(dataset)} simulated cases not used in training (bundle {bundle}, "
          f"crop {info.crop.size} @ {info.crop.spacing} mm, fp32):")
    print(f"{'sampler':<12} {'SSIM':>6} {'MAE HU':>7} {'s/case':>7}  vs the true follow-up; "
          "'unchanged' = the baseline itself")
    items = [{k: (v.float() if torch.is_tensor(v) and v.dtype == torch.uint8 else v)
              for k, v in default_collate([dataset[i]]).items()} for i in range(len(dataset))]

    def scores(followups):
        pairs = list(zip(followups, [i["followup"] for i in items], strict=True))
        return (sum(float(ssim(f, t).mean()) for f, t in pairs) / len(pairs),
                sum(float((f - t).abs().mean()) * 1024 for f, t in pairs) / len(pairs))

    similarity, error = scores([i["baseline"] for i in items])
    print(f"{'unchanged':<12} {similarity:>6.3f} {error:>7.1f} {0.0:>7.1f}")
    for sampler, steps in (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddpm", 1000)):
        followups, seconds = [], 0.0
        for item in items:
            with torch.inference_mode():
                conditions = model.encode_conditions(item, "2")
            start = time.perf_counter()
            x0 = sample(model, conditions, shape,
                        SamplingOptions(sampler=sampler, steps=steps, samples=1, bf16=False))
            seconds += time.perf_counter() - start
            followups.append(model.followup_from(x0, item["baseline"]))
        similarity, error = scores(followups)
        print(f"{sampler.upper() + '-' + str(steps):<12} {similarity:>6.3f} {error:>7.1f} "
              f"{seconds / len(items):>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cohort", type=Path, help="simulated cohort for the quality part "
                        "(one the bundle was not trained on, e.g. the demo bundle's held-out "
                        "cohort)")
    parser.add_argument("--bundle", type=Path,
                        default=Path(__file__).resolve().parents[1] / "Resources" / "demo_bundle")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    if not args.skip_speed:
        part_a(args.threads)
    if args.cohort:
        part_b(args.cohort, args.bundle, args.threads, args.cases)


if __name__ == "__main__":
    main()
