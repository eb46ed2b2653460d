"""Vessel–lobe (VL) contrastive encoders (METHOD.md stage 1A).

F_v and F_l are small 3-D convolutional encoders (MONAI ``Convolution`` blocks, stride 2)
ending in global average pooling, h ∈ R^d. Projection heads g(h) = W2·ReLU(W1·h). The loss is
InfoNCE over the batch with cosine similarity and temperature τ: the vessel and lobe
embeddings of the same patient are the positive pair, other patients' lobes the negatives.

Inputs (built by :func:`vessel_input` / :func:`lobe_input` from a CT crop and its masks):
Z_v = [CT · vessels, vessels] (B, 2, X, Y, Z); Z_l = [CT · lungs, one-hot lobes 1..5]
(B, 6, X, Y, Z). CT values are the model's normalised HU in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

VESSEL_CHANNELS = 2
LOBE_CHANNELS = 6


def vessel_input(ct: torch.Tensor, vessels: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) CT and vessel mask -> Z_v (B, 2, X, Y, Z)."""
    mask = (vessels > 0).to(ct.dtype)
    return torch.cat([(ct + 1.0) * mask - 1.0, mask], dim=1)


def lobe_input(ct: torch.Tensor, lobes: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) CT and lobe labels 0..5 -> Z_l (B, 6, X, Y, Z)."""
    labels = lobes.long().squeeze(1)
    one_hot = F.one_hot(labels.clamp(0, 5), 6).movedim(-1, 1).to(ct.dtype)[:, 1:]
    lungs = (labels > 0).unsqueeze(1).to(ct.dtype)
    return torch.cat([(ct + 1.0) * lungs - 1.0, one_hot], dim=1)


class MaskEncoder(nn.Module):
    """3-D conv encoder: (B, C, X, Y, Z) -> h (B, d) by strided convolutions and average pool."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64),
                 embed_dim: int = 128):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            layers.append(Convolution(3, channels, width, strides=2, kernel_size=3,
                                      act="SWISH", norm=("GROUP", {"num_groups": 8})))
            channels = width
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(channels, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(2, 3, 4))
        return self.out(pooled)


class ProjectionHead(nn.Module):
    """g(h) = W2 · ReLU(W1 · h)."""

    def __init__(self, embed_dim: int, projection_dim: int):
        super().__init__()
        self.w1 = nn.Linear(embed_dim, embed_dim)
        self.w2 = nn.Linear(embed_dim, projection_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w2(F.relu(self.w1(h)))


def info_nce(z_vessel: torch.Tensor, z_lobe: torch.Tensor, temperature: float = 0.5):
    """L_a = mean_i -log( exp(sim(v_i, l_i)/τ) / Σ_k exp(sim(v_i, l_k)/τ) ), sim = cosine.

    z_vessel, z_lobe: (B, p). Cross-entropy over the similarity matrix with the diagonal as
    targets is exactly this sum.
    """
    similarity = F.cosine_similarity(z_vessel[:, None, :], z_lobe[None, :, :], dim=-1)
    targets = torch.arange(len(z_vessel), device=z_vessel.device)
    return F.cross_entropy(similarity / temperature, targets)


class VLEncoders(nn.Module):
    """F_v, F_l and their projection heads; ``embed`` gives c_a = ẑ_v ⊕ ẑ_l (B, 2p)."""

    def __init__(self, widths=(16, 32, 64), embed_dim: int = 128, projection_dim: int = 64):
        super().__init__()
        self.vessel_encoder = MaskEncoder(VESSEL_CHANNELS, widths, embed_dim)
        self.lobe_encoder = MaskEncoder(LOBE_CHANNELS, widths, embed_dim)
        self.vessel_head = ProjectionHead(embed_dim, projection_dim)
        self.lobe_head = ProjectionHead(embed_dim, projection_dim)
        self.projection_dim = projection_dim

    def project(self, ct, vessels, lobes) -> tuple[torch.Tensor, torch.Tensor]:
        z_v = self.vessel_head(self.vessel_encoder(vessel_input(ct, vessels)))
        z_l = self.lobe_head(self.lobe_encoder(lobe_input(ct, lobes)))
        return z_v, z_l

    def embed(self, ct, vessels, lobes) -> torch.Tensor:
        z_v, z_l = self.project(ct, vessels, lobes)
        return torch.cat([z_v, z_l], dim=1)
