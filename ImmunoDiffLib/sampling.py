"""Sampling the synthesized follow-up with MONAI's schedulers (DDPM for fidelity to the
paper, DDIM for speed), several samples in one batch, with progress and cancel.

Conditions are encoded once per case and repeated for the samples; every step is one
(ControlNet + U-Net) evaluation (by default the fused one of models/fused_inference.py), or
two with classifier-free guidance on the clinical variables (guidance_scale != 1:
out = out_uncond + w · (out_cond − out_uncond), for any prediction type). The schedulers are
the ones the model was trained with (models/diffusion.py: schedule, prediction type, clipping).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from monai.networks.schedulers import DDPMScheduler

from .memory_reuse import reuse_freed_memory
from .models.diffusion import SAMPLERS, make_scheduler
from .models.fused_inference import FusedDenoiser
from .models.immunodiff import Conditions, ImmunoDiffModel
from .precision import resolve_bf16, resolve_channels_last
from .progress import CancelFlag, ProgressCallback, Task


@dataclass(frozen=True)
class SamplingOptions:
    sampler: str = "ddim"
    steps: int = 25  # DDIM steps (DDPM always uses all training timesteps)
    # Generated follow-ups, in one batch; >= 2 gives the voxel-wise uncertainty map.
    samples: int = 2
    prediction_draws: int = 8  # noise draws for the predictions' spread (one forward each)
    seed: int = 0
    guidance_scale: float = 1.0
    # bfloat16 autocast; None: where the device multiplies bf16 in hardware (precision.py),
    # fp32 elsewhere (emulated bf16 is several times slower than fp32)
    bf16: bool | None = None
    # channels-last 3-D tensors; None: on the CPU always (oneDNN's native layout), on a GPU
    # with bf16. The model should be in the same layout (ImmunoDiffPipeline converts it).
    channels_last: bool | None = None
    # keep freed activation buffers in the process for the next step (glibc; see
    # memory_reuse.py): 10-15 % less time per step on the CPU
    reuse_freed_memory: bool = True
    # the ControlNet's conditioning embedding once per case, time embeddings folded into conv
    # biases, residual additions fused into oneDNN convolutions (models/fused_inference.py)
    fused: bool = True

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}.")
        if self.steps < 1 or self.samples < 1 or self.prediction_draws < 1:
            raise ValueError("steps, samples and prediction_draws must be at least 1.")

    def for_device(self, device: torch.device | str) -> SamplingOptions:
        """These options with ``bf16`` and ``channels_last`` decided for ``device``."""
        bf16 = resolve_bf16(self.bf16, device)
        return replace(self, bf16=bf16,
                       channels_last=resolve_channels_last(self.channels_last, bf16, device))


def make_sampling_scheduler(model: ImmunoDiffModel, options: SamplingOptions):
    return make_scheduler(model.config, options.sampler, options.steps)


def repeat_conditions(conditions: Conditions, times: int) -> Conditions:
    def repeat(tensor):
        return None if tensor is None else tensor.repeat_interleave(times, dim=0)

    return Conditions(repeat(conditions.context), repeat(conditions.control))


def _autocast(options: SamplingOptions, device: torch.device):
    if options.bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def sample(model: ImmunoDiffModel, conditions: Conditions, shape: tuple[int, ...],
           options: SamplingOptions = SamplingOptions(),
           unconditional: Conditions | None = None,
           progress: ProgressCallback | None = None, cancel: CancelFlag = None) -> torch.Tensor:
    """Draw ``options.samples`` samples of x_0 for ONE case.

    conditions: that case's encoded conditions (batch 1); shape: (1, X, Y, Z) of one sample.
    Returns (samples, 1, X, Y, Z) float32 x_0 in ± ``target_scale`` (the model's target:
    follow-up or change, scaled; ``model.followup_from`` turns it into the follow-up).
    """
    task = Task(progress, cancel)
    device = next(model.parameters()).device
    options = options.for_device(device)
    if options.reuse_freed_memory and device.type == "cpu":
        reuse_freed_memory()
    scheduler = make_sampling_scheduler(model, options)
    n = options.samples
    guided = options.guidance_scale != 1.0 and unconditional is not None
    both = repeat_conditions(conditions, n)
    layout = torch.channels_last_3d if options.channels_last else torch.contiguous_format
    if both.control is not None:
        both = Conditions(both.context, both.control.contiguous(memory_format=layout))
    if guided:
        uncond = repeat_conditions(unconditional, n)
        both = Conditions(None if both.context is None else torch.cat([both.context,
                                                                         uncond.context]),
                          None if both.control is None else torch.cat([both.control,
                                                                         uncond.control]))
    generator = torch.Generator().manual_seed(options.seed)
    x = torch.randn((n, *shape), generator=generator).to(device)
    x = x.contiguous(memory_format=layout)
    timesteps = scheduler.timesteps
    with _autocast(options, device):
        if options.fused and both.control is not None:
            denoise = FusedDenoiser(model, both.context, both.control)
        else:
            def denoise(x_t, batch_t):
                return model.predict_noise(x_t, batch_t, both)
        for index, t in enumerate(timesteps):
            task.report(index / len(timesteps), f"denoising step {index + 1}/{len(timesteps)}")
            batch_t = torch.full((x.shape[0] * (2 if guided else 1),), int(t), device=device)
            model_input = (torch.cat([x, x]) if guided else x).contiguous(memory_format=layout)
            output = denoise(model_input, batch_t).float()
            if guided:
                conditional, plain = output.chunk(2)
                output = plain + options.guidance_scale * (conditional - plain)
            step_generator = torch.Generator(device=device).manual_seed(
                options.seed * 7919 + index)
            if isinstance(scheduler, DDPMScheduler):
                x, _ = scheduler.step(output, t, x, generator=step_generator)
            else:
                x, _ = scheduler.step(output, t, x)
    task.report(1.0, "sampling done")
    bound = model.config.target_scale
    return x.float().clamp(-bound, bound)
