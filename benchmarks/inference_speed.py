"""Speed of the generate step at the default model size, against this CPU's matmul peak and
MONAI's stock sampler, and quality of the fast setting beside 1000-step DDPM.

Part A (default ModelConfig, crop 96 x 96 x 16, random weights: speed does not depend on
them): per-step time, FLOPs per step (torch's FlopCounterMode, attention counted through its
matmuls, since the counter does not see the CPU flash kernel), achieved GFLOP/s against the
measured matmul rate of the row's precision and against the bf16 rate, whole generate time,
peak RSS, for the default precision (inference/precision.py: bf16 only where the CPU
multiplies it in hardware) and the others, the fused forward and MONAI's; where a default
step's time goes, and the bound if GroupNorm and SiLU cost nothing; and MONAI's stock
ControlNetDiffusionInferer.sample with a 1000-step DDPMScheduler in fp32 on the same model —
timed over a few steps in the same process and extrapolated to 1000 (said so in the table).

Then the same for a real bundle (default: the demo bundle, what ``immunodiff predict`` uses
when given none) at its own crop.

Part B (quality): a trained bundle (default: the demo bundle) on simulated cases it was not
trained on; SSIM (MONAI SSIMMetric) and MAE (HU) of DDIM-k and of 1000-step DDPM against the
true follow-up, beside the trivial "unchanged" prediction (the baseline itself).

Usage: python benchmarks/inference_speed.py [--cohort HELD_OUT/cohort.csv] [--bundle DIR]
       [--cases 8] [--threads 2] [--skip-speed]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from unittest import mock

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ImmunoDiffLib.clinical import encode_clinical, parse_clinical
from ImmunoDiffLib.inference.fused_denoiser import FusedDenoiser
from ImmunoDiffLib.inference.precision import describe, native_bf16
from ImmunoDiffLib.inference.sampling import SamplingOptions, repeat_conditions, sample
from ImmunoDiffLib.models import Conditions, ImmunoDiffModel, ModelConfig
from ImmunoDiffLib.models.batch import model_batch


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


def flops_per_step(model, x, t, conditions, bf16: bool) -> float:
    """GFLOP of one denoising step (torch's FlopCounterMode on MONAI's forward), less the
    ControlNet's conditioning embedding, which sampling computes once per case. Attention is
    counted through the plain-math kernel: the counter does not count the CPU flash kernel,
    which does the same matmuls."""
    context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with torch.inference_mode(), context, sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as step:
            model.predict_noise(x, t, conditions)
        with FlopCounterMode(display=False) as once:
            model.controlnet.controlnet_cond_embedding(conditions.control)
    return (step.get_total_flops() - once.get_total_flops()) / 1e9


def time_breakdown(model, x, t, conditions, flops: float, peak: float, bf16: bool) -> None:
    """Where one default (fused) step's time goes, by operator; flops: the step's GFLOP."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        denoiser = FusedDenoiser(model, conditions.context, conditions.control)
        denoiser(x, t)
        with torch.profiler.profile() as profile:
            denoiser(x, t)
    by_op = {e.key: e.self_cpu_time_total / 1e6 for e in profile.key_averages()}
    total = sum(by_op.values())
    matmul = sum(v for k, v in by_op.items() if "convolution" in k or "attention" in k)
    print(f"\none default step (fused, 1 sample, {'bf16' if bf16 else 'fp32'}), by operator "
          f"(torch.profiler, {total:.3f} s in all):")
    print(f"  convolutions and attention: {matmul / total:.0%} of the time, {flops:.0f} GFLOP "
          f"at {flops / matmul:.0f} GFLOP/s ({flops / matmul / peak:.0%} of the matmul rate)")
    for key, seconds in sorted(by_op.items(), key=lambda kv: -kv[1])[:10]:
        if "convolution" not in key:
            print(f"  {key:<50} {seconds / total:>4.0%}  {seconds * 1e3:5.1f} ms")


def step_without_normalisation(model, x, t, conditions, flops: float, peak: float,
                               bf16: bool) -> None:
    """An upper bound, timing only (outputs meaningless): the fused step with SiLU, then also
    GroupNorm, made identities — what no faster kernel for them could beat."""
    def best_step() -> float:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            denoiser = FusedDenoiser(model, conditions.context, conditions.control)
            for _ in range(2):
                denoiser(x, t)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                denoiser(x, t)
                times.append(time.perf_counter() - start)
        return min(times)

    def report(label: str, seconds: float) -> None:
        print(f"  {label:<44} {seconds:.3f} s/step  {flops / seconds:5.0f} GFLOP/s  "
              f"{flops / seconds / peak:.0%} of the matmul rate")

    print("\nbound (1 sample, fused, default precision, best of 5 steps; timing only):")
    report("as it is", best_step())
    with mock.patch.object(torch.nn.functional, "silu", lambda x, inplace=False: x):
        report("SiLU costing nothing", best_step())
        with mock.patch.object(torch.nn.GroupNorm, "forward", lambda self, x: x):
            report("SiLU and GroupNorm costing nothing", best_step())


def default_batch(shape=(1, 1, 96, 96, 16)):
    clinical = encode_clinical([parse_clinical({"age": 60, "pdl1": 10, "anc": 4, "alc": 1})])
    return model_batch(torch.rand(shape) * 2 - 1, torch.randint(0, 6, shape),
                       torch.rand(shape) > 0.9, clinical, tumour=torch.rand(shape) > 0.95)


@dataclass(frozen=True)
class Row:
    name: str
    samples: int = 1
    bf16: bool | None = None  # None: the default (inference/precision.py)
    flash: bool = True
    channels_last: bool | None = None  # None: with bf16
    reuse: bool = True
    fused: bool = True


# The first row runs before anything sets the allocator's thresholds (process-wide).
ROWS = (Row("1 sample, default, freed memory unmapped", reuse=False),
        Row("1 sample, default"),
        Row("2 samples, default (the default)", samples=2),
        Row("1 sample, default precision, MONAI forward", fused=False),
        Row("2 samples, default precision, MONAI forward", samples=2, fused=False),
        Row("1 sample, fp32, channels-last", bf16=False, channels_last=True),
        Row("1 sample, fp32, channels-first", bf16=False, channels_last=False),
        Row("1 sample, bf16, channels-last", bf16=True, channels_last=True),
        Row("1 sample, fp32, no flash, MONAI forward", bf16=False, flash=False,
            channels_last=False, fused=False))


def timed_sampling(model, conditions, options: SamplingOptions, steps: int,
                   shape=(1, 96, 96, 16)) -> tuple[float, float, float]:
    """(steady per-step s = median of steps 2..n, first step s, whole generate s)."""
    stamps = []
    options = replace(options, steps=steps)
    start = time.perf_counter()
    sample(model, conditions, shape, options,
           progress=lambda fraction, message: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    step_ends = stamps[1:]  # a report opens every step, and one closes the loop
    return (statistics.median([b - a for a, b in pairwise(step_ends)]),
            step_ends[0] - start, total)


def part_a(threads: int, bundle: Path, steps: int = 25) -> None:
    torch.set_num_threads(threads)
    peaks = {False: matmul_peak(torch.float32), True: matmul_peak(torch.bfloat16)}
    default = SamplingOptions().for_device("cpu")
    print(f"matmul peak here ({threads} threads): fp32 {peaks[False]:.0f} GFLOP/s, "
          f"bf16 {peaks[True]:.0f} GFLOP/s; bf16 in hardware (AMX or AVX512-BF16): "
          f"{native_bf16('cpu')}; default precision: "
          f"{describe(default.bf16, default.channels_last)}")
    print(f"DDIM-{steps}; s/step: median of steps 2..{steps}; GFLOP/step: per step, without "
          "the once-per-case work; '% own': of the matmul rate of the row's precision\n")
    print(f"{'setting':<46} {'precision':<22} {'s/step':>7} {'GFLOP/step':>11} {'GFLOP/s':>8} "
          f"{'% own':>6} {'% bf16':>7} {'1st step s':>10} {'generate s':>11}")
    batch = default_batch()
    results = {}
    for row in ROWS:
        options = SamplingOptions(bf16=row.bf16, channels_last=row.channels_last,
                                  samples=row.samples, reuse_freed_memory=row.reuse,
                                  fused=row.fused).for_device("cpu")
        torch.manual_seed(0)
        model = ImmunoDiffModel(replace(ModelConfig(), use_flash_attention=row.flash)).eval()
        layout = torch.channels_last_3d if options.channels_last else torch.contiguous_format
        model = model.to(memory_format=layout)
        with torch.inference_mode():
            conditions = model.encode_conditions(batch, "2")
        x = torch.randn(row.samples, 1, 96, 96, 16).contiguous(memory_format=layout)
        flops = flops_per_step(model, x, torch.full((row.samples,), 500),
                               repeat_conditions(conditions, row.samples), options.bf16)
        per_step, first, total = timed_sampling(model, conditions, options, steps)
        rate = flops / per_step
        results[row.name] = per_step
        print(f"{row.name:<46} {describe(options.bf16, options.channels_last):<22} "
              f"{per_step:>7.3f} {flops:>11.1f} {rate:>8.0f} {rate / peaks[options.bf16]:>6.0%} "
              f"{rate / peaks[True]:>7.0%} {first:>10.2f} {total:>11.1f}", flush=True)

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
    fast = results["1 sample, default"]
    flash = ImmunoDiffModel(replace(ModelConfig(), use_flash_attention=True)).eval()
    layout = torch.channels_last_3d if default.channels_last else torch.contiguous_format
    flash = flash.to(memory_format=layout)
    with torch.inference_mode():
        encoded = flash.encode_conditions(batch, "2")
    flash_conditions = Conditions(  # the layout sample() gives the control image
        encoded.context, encoded.control.contiguous(memory_format=layout))
    x = torch.randn(1, 1, 96, 96, 16).contiguous(memory_format=layout)
    t = torch.full((1,), 500)
    step_flops = flops_per_step(flash, x, t, flash_conditions, default.bf16)
    peak = peaks[default.bf16]
    time_breakdown(flash, x, t, flash_conditions, step_flops, peak, default.bf16)
    step_without_normalisation(flash, x, t, flash_conditions, step_flops, peak, default.bf16)
    print(f"\n{'MONAI stock DDPM-1000 fp32 (extrapolated)':<46} {'fp32, channels-first':<22} "
          f"{stock_step:>7.3f} {stock_step * 1000:>11.0f} s in all")
    print(f"\nstock DDPM-1000 fp32 / default DDIM-{steps} (1 sample): "
          f"{stock_step * 1000 / (fast * steps):.0f}x faster; per step {stock_step / fast:.1f}x")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_rss:.0f} MB")
    if bundle.is_dir():
        bundle_speed(bundle, peaks, steps)


def bundle_speed(bundle: Path, peaks: dict, steps: int = 25) -> None:
    """The same measurement on a real bundle's model at its own crop, default options."""
    from ImmunoDiffLib.bundle import load_bundle

    model, info = load_bundle(bundle)
    shape = (1, *info.crop.size)
    print(f"\nthe bundle {bundle} (channels {model.config.channels}, crop {info.crop.size}), "
          f"DDIM-{steps}, default options:")
    print(f"{'samples':<8} {'precision':<22} {'s/step':>7} {'GFLOP/step':>11} {'GFLOP/s':>8} "
          f"{'% own':>6} {'% bf16':>7} {'generate s':>11}")
    for samples in (1, 2):
        options = SamplingOptions(samples=samples).for_device("cpu")
        layout = torch.channels_last_3d if options.channels_last else torch.contiguous_format
        model = model.eval().to(memory_format=layout)
        with torch.inference_mode():
            conditions = model.encode_conditions(default_batch((1, *shape)), "2")
        x = torch.randn(samples, *shape).contiguous(memory_format=layout)
        repeated = repeat_conditions(conditions, samples)
        repeated = Conditions(repeated.context, repeated.control.contiguous(memory_format=layout))
        flops = flops_per_step(model, x, torch.full((samples,), 500), repeated, options.bf16)
        per_step, _, total = timed_sampling(model, conditions, options, steps, shape)
        rate = flops / per_step
        print(f"{samples:<8} {describe(options.bf16, options.channels_last):<22} "
              f"{per_step:>7.3f} {flops:>11.2f} {rate:>8.0f} {rate / peaks[options.bf16]:>6.0%} "
              f"{rate / peaks[True]:>7.0%} {total:>11.1f}", flush=True)


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
          f"crop {info.crop.size} @ {info.crop.spacing} mm; fp32 unless 'bf16'; fused "
          "forward, one sample per case):")
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
    settings = (("DDIM-10", "ddim", 10, False), ("DDIM-25", "ddim", 25, False),
                ("DDIM-25 bf16", "ddim", 25, True), ("DDIM-50", "ddim", 50, False),
                ("DDPM-1000", "ddpm", 1000, False))
    for label, sampler, steps, bf16 in settings:
        followups, seconds = [], 0.0
        for item in items:
            with torch.inference_mode():
                conditions = model.encode_conditions(item, "2")
            start = time.perf_counter()
            x0 = sample(model, conditions, shape,
                        SamplingOptions(sampler=sampler, steps=steps, samples=1, bf16=bf16))
            seconds += time.perf_counter() - start
            followups.append(model.followup_from(x0, item["baseline"]))
        similarity, error = scores(followups)
        print(f"{label:<12} {similarity:>6.3f} {error:>7.1f} "
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
        part_a(args.threads, args.bundle)
    if args.cohort:
        part_b(args.cohort, args.bundle, args.threads, args.cases)


if __name__ == "__main__":
    main()
