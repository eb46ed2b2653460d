"""cbi-Adapter (METHOD.md stage 2): attention over each clinical group's tokens with rotary
position embedding, and the fused condition ĉ = Ẑ_I + λ · Σ_i Ẑ_i.

Tokens: every encoded clinical feature j of a group becomes a token value_j · w_j + b_j (a
learned vector per feature); a missing feature becomes the learned ``missing`` vector of that
feature and is excluded from the keys, so the value behind a masked entry is never seen.
Per group i ∈ {C, B, I}: Q, K, V = L_i(tokens); RoPE (base 1e5) rotates Q and K by token
position; scaled dot-product attention; Ẑ_i is the mean over observed tokens, projected to the
control channels (a group with no observed value contributes zero).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROPE_BASE = 1e5


def rope_frequencies(dim: int, base: float = ROPE_BASE) -> torch.Tensor:
    """θ_k = base^(-2k/dim), k = 0 .. dim/2 - 1 (dim even)."""
    if dim % 2:
        raise ValueError(f"RoPE needs an even dimension, got {dim}.")
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = ROPE_BASE):
    """Rotate pairs (x_2k, x_2k+1) of x (..., T, dim) by angle position · θ_k (a rotation)."""
    angles = positions.to(torch.float64)[:, None] * rope_frequencies(x.shape[-1], base)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2)


class GroupAttention(nn.Module):
    """Self-attention over one clinical group's tokens; output (B, d) pooled over observed."""

    def __init__(self, n_features: int, dim: int, heads: int = 4):
        super().__init__()
        self.value_weight = nn.Parameter(torch.randn(n_features, dim) * 0.1)
        self.value_bias = nn.Parameter(torch.zeros(n_features, dim))
        self.missing = nn.Parameter(torch.randn(n_features, dim) * 0.1)
        self.query, self.key, self.value = (nn.Linear(dim, dim) for _ in range(3))
        self.heads = heads

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """values, mask: (B, F) -> Ẑ_i (B, d)."""
        observed = mask > 0.5
        tokens = values[..., None] * self.value_weight + self.value_bias
        tokens = torch.where(observed[..., None], tokens, self.missing.expand_as(tokens))
        batch, count, dim = tokens.shape
        positions = torch.arange(count, device=tokens.device)

        def split(x):
            return x.view(batch, count, self.heads, dim // self.heads).transpose(1, 2)

        q = apply_rope(split(self.query(tokens)), positions)
        k = apply_rope(split(self.key(tokens)), positions)
        v = split(self.value(tokens))
        keep = observed[:, None, None, :].expand(batch, 1, count, count)
        any_observed = observed.any(dim=1)
        keep = keep | ~any_observed[:, None, None, None]  # avoid all -inf rows
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        attended = attended.transpose(1, 2).reshape(batch, count, dim)
        weights = observed.to(tokens.dtype)
        pooled = (attended * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)
        return pooled * any_observed[:, None].to(pooled.dtype)


class CbiAdapter(nn.Module):
    """Clinical groups -> Σ_i Ẑ_i as a (B, control_channels) vector (and, from
    :meth:`encode`, each group's pooled attention output, for cross-attention tokens)."""

    def __init__(self, group_sizes: dict[str, int], dim: int = 64, control_channels: int = 16,
                 heads: int = 4):
        super().__init__()
        self.groups = nn.ModuleDict({g: GroupAttention(n, dim, heads)
                                     for g, n in group_sizes.items()})
        self.out = nn.ModuleDict({g: nn.Linear(dim, control_channels) for g in group_sizes})

    def encode(self, values: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]):
        """(Σ_i Ẑ_i (B, control_channels), {group: pooled attention (B, dim)}); a fully
        missing group adds nothing to the sum and gives a zero vector."""
        total, pooled = None, {}
        for group, attention in self.groups.items():
            present = mask[group].amax(dim=1, keepdim=True)
            pooled[group] = attention(values[group], mask[group]) * present
            z = self.out[group](pooled[group]) * present
            total = z if total is None else total + z
        return total, pooled

    def forward(self, values: dict[str, torch.Tensor], mask: dict[str, torch.Tensor]):
        return self.encode(values, mask)[0]


class BaselineImageEmbedding(nn.Module):
    """Ẑ_I = SiLU(Conv(z_0)): (B, in_channels, X, Y, Z) -> (B, control_channels, X, Y, Z);
    in_channels 1 (the baseline CT) or 2 (with the baseline lesion mask)."""

    def __init__(self, control_channels: int = 16, in_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, control_channels, kernel_size=3, padding=1)

    def forward(self, baseline: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(baseline))


def fuse_condition(image_embedding: torch.Tensor, clinical: torch.Tensor | None,
                   weight: float = 0.05) -> torch.Tensor:
    """ĉ = Ẑ_I + λ · Σ Ẑ_i, the clinical vector broadcast over space. Shapes: (B, C, X, Y, Z)
    and (B, C) -> (B, C, X, Y, Z)."""
    if clinical is None:
        return image_embedding
    return image_embedding + weight * clinical[:, :, None, None, None]


def drop_conditions(mask: dict[str, torch.Tensor], rate: float,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Condition dropout for training: each group of each sample is masked out with
    probability ``rate`` (so inference works with missing values and with guidance)."""
    if rate <= 0:
        return mask
    out = {}
    for group, m in mask.items():
        keep = torch.rand(m.shape[0], 1, generator=generator) >= rate
        out[group] = m * keep.to(m.dtype).to(m.device)
    return out
