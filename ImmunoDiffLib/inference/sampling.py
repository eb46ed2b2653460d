"""Sampling the synthesized follow-up with MONAI's schedulers (DDPM for fidelity to the
paper, DDIM for speed), several samples in one batch, with progress and cancel.

Conditions are encoded once per case and repeated for the samples; every step is one
(ControlNet + U-Net) evaluation (by default the fused one of inference/fused_denoiser.py), or
two with classifier-free guidance on the clinical variables (guidance_scale g != 1:
out = out_uncond + g · (out_cond − out_uncond), for any prediction type), or with scenario
guidance for the "if it responds" follow-up (scenario_guidance w != 1: on the dilated lesion
the prediction is pushed away from the opposite outcome,
out = out(s) + (w − 1) · (out(s) − out(1 − s)) · lesion; both apply when both are set). The
schedulers are the ones the model was trained with (models/diffusion.py: schedule, prediction
type, clipping).

Scenario guidance exists because a model that predicts x0 under a squared error regresses to
the mean of what it cannot tell apart: told "responder", the demo model draws a lesion
half-way between present and gone (which the RECIST measurement then calls stable).
Contrasting with the other outcome (classifier-free guidance with the opposite scenario as
the reference) makes the answer decisive. Measured on held-out patients (docs/results.md) it
is applied only where it helps: toward response (told "non-responder" the unguided model keeps
the lesion already, and guidance only exaggerated it — growth and densities beyond any true
follow-up), only on the lesion the scenario decides (elsewhere it amplified noise), and not to
the clinically conditioned follow-up (it lowered SSIM to the true follow-up and did not rank
response better).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from monai.networks.schedulers import DDPMScheduler

from ..errors import SettingError
from ..models.diffusion import SAMPLERS, make_scheduler
from ..models.immunodiff import Conditions, ImmunoDiffModel
from ..progress import CancelFlag, ProgressCallback, Task
from ..seeds import torch_generator
from .fused_denoiser import FusedDenoiser
from .memory_reuse import reuse_freed_memory
from .precision import resolve_bf16, resolve_channels_last

SCENARIO_GUIDANCE = 3.0


@dataclass(frozen=True)
class SamplingOptions:
    sampler: str = "ddim"
    steps: int = 25  # DDIM steps (DDPM always uses all training timesteps)
    # Generated follow-ups, in one batch; >= 2 gives the voxel-wise uncertainty map.
    samples: int = 2
    prediction_draws: int = 8  # noise draws for the predictions' spread (one forward each)
    seed: int = 0
    guidance_scale: float = 1.0
    # push a given-scenario follow-up away from the opposite scenario (models with scenarios);
    # 1 = off; the default was chosen on held-out simulated patients (docs/results.md)
    scenario_guidance: float = SCENARIO_GUIDANCE
    # bfloat16 autocast; None: where the device multiplies bf16 in hardware
    # (inference/precision.py), fp32 elsewhere (emulated bf16 is several times slower than fp32)
    bf16: bool | None = None
    # channels-last 3-D tensors; None: on the CPU always (oneDNN's native layout), on a GPU
    # with bf16. The model should be in the same layout (ImmunoDiffPipeline converts it).
    channels_last: bool | None = None
    # keep freed activation buffers in the process for the next step (glibc; see
    # inference/memory_reuse.py): 10-15 % less time per step on the CPU
    reuse_freed_memory: bool = True
    # the ControlNet's conditioning embedding once per case, time embeddings folded into conv
    # biases, residual additions fused into oneDNN convolutions (inference/fused_denoiser.py)
    fused: bool = True

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise SettingError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}.")
        if self.steps < 1 or self.samples < 1 or self.prediction_draws < 1:
            raise SettingError("steps, samples and prediction_draws must be at least 1.")
        if self.seed < 0:
            raise SettingError(f"seed must be a whole number >= 0, got {self.seed}.")
        if self.scenario_guidance < 1.0:
            raise SettingError("scenario_guidance must be at least 1 (1 = off), got "
                             f"{self.scenario_guidance}.")

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


@dataclass(frozen=True)
class ScenarioContrast:
    """The reference of scenario guidance: the opposite outcome's conditions and where the
    guidance applies (the lesion region the scenario enters, (1, 1, X, Y, Z), or 1.0)."""

    conditions: Conditions
    region: torch.Tensor | float


def opposite_scenario(model: ImmunoDiffModel, batch: dict, conditions: Conditions,
                      options: SamplingOptions, toward_non_response: bool = False
                      ) -> ScenarioContrast | None:
    """Scenario guidance's reference for a follow-up conditioned on a given scenario s: the
    outcome 1 − s on the model's lesion region. None where guidance does not apply: guidance
    off, a model without scenarios, or s < 0.5 (guidance goes toward response only, unless
    ``toward_non_response``: the retry of an "if it does not" follow-up that showed a
    response, inference/scenarios.py)."""
    if options.scenario_guidance == 1.0 or conditions.scenario is None:
        return None
    scenario = conditions.scenario.detach()
    if bool((scenario < 0.5).any()) and not toward_non_response:
        return None
    with torch.inference_mode():
        opposite = model.encode_conditions(batch, "2", scenario=1.0 - scenario)
        return ScenarioContrast(opposite, model.lesion_region(batch))


def _cat(*parts: Conditions) -> Conditions:
    def join(tensors):
        return None if tensors[0] is None else torch.cat(tensors)

    return Conditions(join([p.context for p in parts]), join([p.control for p in parts]))


def _autocast(options: SamplingOptions, device: torch.device):
    if options.bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def sample(model: ImmunoDiffModel, conditions: Conditions, shape: tuple[int, ...],
           options: SamplingOptions = SamplingOptions(),
           unconditional: Conditions | None = None,
           progress: ProgressCallback | None = None, cancel: CancelFlag = None,
           opposite: ScenarioContrast | None = None) -> torch.Tensor:
    """Draw ``options.samples`` samples of x_0 for ONE case.

    conditions: that case's encoded conditions (batch 1); shape: (1, X, Y, Z) of one sample;
    unconditional: the clinical variables dropped (classifier-free guidance, used when
    ``options.guidance_scale`` != 1); opposite: the opposite scenario and its region
    (:func:`opposite_scenario`, used when ``options.scenario_guidance`` != 1).
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
    # branches evaluated together each step: the conditions, then the references, each with
    # its weight and region in out = out_cond + sum_k (w_k - 1) * (out_cond - out_k) * region_k
    references = [(c, w, region) for c, w, region in (
        (unconditional, options.guidance_scale, 1.0),
        (None if opposite is None else opposite.conditions, options.scenario_guidance,
         None if opposite is None else opposite.region)) if c is not None and w != 1.0]
    branches = 1 + len(references)
    both = _cat(*(repeat_conditions(c, n) for c in [conditions, *(r for r, _, _ in references)]))
    layout = torch.channels_last_3d if options.channels_last else torch.contiguous_format
    if both.control is not None:
        both = Conditions(both.context, both.control.contiguous(memory_format=layout))
    generator = torch_generator(options.seed, "initial noise")
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
            batch_t = torch.full((x.shape[0] * branches,), int(t), device=device)
            model_input = torch.cat([x] * branches).contiguous(memory_format=layout)
            outputs = denoise(model_input, batch_t).float().chunk(branches)
            output = outputs[0]
            for (_, weight, region), reference in zip(references, outputs[1:], strict=True):
                output = output + (weight - 1.0) * (outputs[0] - reference) * region
            step_generator = torch_generator(options.seed, "denoising step", index,
                                             device=device)
            if isinstance(scheduler, DDPMScheduler):
                x, _ = scheduler.step(output, t, x, generator=step_generator)
            else:
                x, _ = scheduler.step(output, t, x)
    task.report(1.0, "sampling done")
    bound = model.config.target_scale
    return x.float().clamp(-bound, bound)
