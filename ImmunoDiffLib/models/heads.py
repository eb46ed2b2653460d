"""Downstream heads on the frozen diffusion U-Net's up-block features (METHOD.md).

Features f̂: each up-block's output, averaged over space, concatenated (B, Σ channels).
What the heads read (``ModelConfig.heads_input``):
* "crop" (the paper's): f̂ averaged over the whole crop, under every condition.
  Response head: MLP -> logit of P(responder); survival head: linear log-risk.
* "lesion_and_clinical": f̂ averaged over the baseline lesion (the crop around it is mostly
  background anatomy, which differs between scanners and patients more than any tumour does),
  read with the clinical variables left out of the conditions, beside the encoded clinical
  variables themselves (values and missing mask, (B, 2 F_clinical)) and the lesion's size on
  the crop grid (:func:`lesion_size_features`, (B, 2)). Both heads are linear
  (:class:`StandardisedLinearHead`) on these inputs standardised, f̂ reduced to its first
  principal components: with tens of patients, an MLP on them learns the training patients
  and not the response.
The survival head is trained with the Cox partial likelihood (Breslow ties); c-index by
scikit-survival.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def region_mean(output: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """(B, C) mean of ``output`` (B, C, X', Y', Z') weighted by ``region`` (B, 1, X, Y, Z) in
    [0, 1], resized to the block's grid; an empty region gives the plain mean."""
    weight = F.interpolate(region.to(output.dtype), size=output.shape[2:], mode="trilinear",
                           align_corners=False)
    total = weight.sum(dim=(2, 3, 4))
    weighted = (output * weight).sum(dim=(2, 3, 4)) / total.clamp_min(1e-6)
    return torch.where(total > 1e-6, weighted, output.mean(dim=(2, 3, 4)))


@contextmanager
def capture_up_block_features(unet: nn.Module, region: torch.Tensor | None = None):
    """Collect each up-block's output while the U-Net runs; yields a list that receives the
    pooled (B, C_i) tensors in order: averaged over space, or over ``region``
    (B, 1, X, Y, Z) when given (see :func:`region_mean`); with a region, a second list (the
    plain means) follows as ``captured.whole``."""
    captured = CapturedFeatures()

    def keep(module, inputs, output):
        captured.append(output.mean(dim=(2, 3, 4)) if region is None
                        else region_mean(output, region))
        captured.whole.append(output.mean(dim=(2, 3, 4)))

    handles = [block.register_forward_hook(keep) for block in unet.up_blocks]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


class CapturedFeatures(list):
    """The pooled up-block outputs (a list of (B, C_i)); ``whole``: the same blocks averaged
    over the whole grid."""

    def __init__(self):
        super().__init__()
        self.whole: list[torch.Tensor] = []


def up_block_channels(unet: nn.Module) -> int:
    """Total channels of the up-blocks' outputs (the feature vector's length)."""
    return sum(block.resnets[-1].out_channels for block in unet.up_blocks)


class ResponseHead(nn.Module):
    def __init__(self, in_features: int, hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_features), nn.Linear(in_features, hidden),
                                 nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> logits (B,)."""
        return self.net(features).squeeze(-1)


class StandardisedLinearHead(nn.Module):
    """y = w · z + b on (B, F) inputs. z: the inputs standardised with the training cohort's
    mean and SD; with ``image_width`` W and ``components`` k, the first W columns (the scan's
    features) are replaced by their first k principal components on the training cohort,
    each scaled to unit SD (principal-component regression: tens of patients cannot weigh
    dozens of correlated features). Mean, SD and components are buffers set by
    :meth:`standardise_to`, so they travel with the weights. ``bias``: False for the Cox
    log-risk (the baseline hazard absorbs it)."""

    def __init__(self, in_features: int, bias: bool = True, image_width: int = 0,
                 components: int = 0):
        super().__init__()
        self.image_width = image_width if components > 0 else 0
        components = components if self.image_width else 0
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("sd", torch.ones(in_features))
        self.register_buffer("basis", torch.zeros(self.image_width, components))
        self.register_buffer("score_sd", torch.ones(components))
        self.linear = nn.Linear(in_features - self.image_width + components, 1, bias=bias)

    @torch.no_grad()
    def standardise_to(self, inputs: torch.Tensor, components: int | None = None) -> None:
        """Set mean, SD and the principal components from training inputs (N, F); constant
        columns keep SD 1; with fewer patients than components, the missing ones are 0.
        ``components``: read only the first this many (the others are 0 and carry
        nothing; None: all the head has room for)."""
        self.mean.copy_(inputs.mean(dim=0))
        sd = inputs.std(dim=0) if inputs.shape[0] > 1 else torch.ones_like(self.sd)
        self.sd.copy_(torch.where(sd > 1e-6, sd, torch.ones_like(sd)))
        if not self.image_width:
            return
        image = ((inputs - self.mean) / self.sd)[:, :self.image_width]
        vectors = torch.linalg.svd(image.double(), full_matrices=False)[2]  # (r, W)
        width = self.basis.shape[1] if components is None else min(components,
                                                                   self.basis.shape[1])
        kept = vectors[:width]
        signs = torch.sign(kept.gather(1, kept.abs().argmax(dim=1, keepdim=True)))
        basis = torch.zeros_like(self.basis)
        basis[:, :kept.shape[0]] = (kept * signs).T.to(basis)
        self.basis.copy_(basis)
        scores = image @ self.basis
        score_sd = scores.std(dim=0) if inputs.shape[0] > 1 else torch.ones_like(self.score_sd)
        self.score_sd.copy_(torch.where(score_sd > 1e-6, score_sd, torch.ones_like(score_sd)))

    def penalty(self) -> torch.Tensor:
        """Σ w² (the L2 penalty of the weights, not the bias)."""
        return (self.linear.weight ** 2).sum()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, F) -> (B,)."""
        z = (inputs - self.mean) / self.sd
        if self.image_width:
            scores = z[:, :self.image_width] @ self.basis / self.score_sd
            z = torch.cat([scores, z[:, self.image_width:]], dim=1)
        return self.linear(z).squeeze(-1)


def lesion_size_features(tumour: torch.Tensor) -> torch.Tensor:
    """(B, 2) the lesion's size on the crop grid from its mask (B, 1, X, Y, Z): the square
    root of its largest axial cross-section and log(1 + its volume), both in voxels (one
    crop grid per model, so voxels stand for millimetres)."""
    mask = (tumour > 0.5).to(torch.float32)
    largest_section = mask.sum(dim=(1, 2, 3)).amax(dim=-1)
    return torch.stack([largest_section.sqrt(), torch.log1p(mask.sum(dim=(1, 2, 3, 4)))], 1)


@dataclass(frozen=True)
class HeadsLayout:
    """What kind of heads a model has (``ModelConfig.heads_input``) and, for the standardised
    linear heads, how many leading input columns are the scan's features (``image_width``)
    and how many principal components of them they read (``components``)."""

    heads_input: str = "crop"
    image_width: int = 0
    components: int = 0

    def make(self, in_features: int) -> tuple[nn.Module, nn.Module]:
        """New, untrained (response head, survival head) on (B, in_features) inputs."""
        if self.heads_input == "lesion_and_clinical":
            return (StandardisedLinearHead(in_features, True, self.image_width,
                                           self.components),
                    StandardisedLinearHead(in_features, False, self.image_width,
                                           self.components))
        return ResponseHead(in_features), SurvivalHead(in_features)


class SurvivalHead(nn.Module):
    def __init__(self, in_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.linear = nn.Linear(in_features, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, F) -> log-risk (B,): hazard h(t) = h_0(t) · exp(risk)."""
        return self.linear(self.norm(features)).squeeze(-1)


def cox_partial_likelihood_loss(risk: torch.Tensor, time: torch.Tensor,
                                event: torch.Tensor) -> torch.Tensor:
    """Negative Cox log partial likelihood (Breslow), averaged over events.

    risk, time, event: (B,). For each death i: risk_i - log Σ_{j: t_j >= t_i} exp(risk_j).
    """
    event = event.to(risk.dtype)
    if event.sum() == 0:
        return risk.sum() * 0.0
    at_risk = (time[None, :] >= time[:, None]).to(risk.dtype)  # [i, j]: j at risk at t_i
    log_denominator = torch.logsumexp(risk[None, :] + torch.log(at_risk), dim=1)
    return -((risk - log_denominator) * event).sum() / event.sum()
