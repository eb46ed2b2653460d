"""A faster evaluation of ε̂(x_t, t, conditions) for sampling: the same MONAI modules and
weights as :meth:`ImmunoDiffModel.predict_noise`, evaluated with less memory traffic.

* The ControlNet's conditioning embedding depends on the control image only, so it is computed
  once per case (:meth:`FusedDenoiser.__init__`), not at every step.
* Every ResNet block's time embedding is folded into its first convolution's bias when all
  samples of the batch share the timestep (always so while sampling), instead of a separate
  full-volume addition.
* Residual additions (ResNet skips, the ControlNet's zero-convolution residuals into the U-Net,
  the control embedding into the ControlNet's input) are fused into the convolution that
  produces one of the summands: oneDNN's convolution with a binary post-op
  (``torch.ops.mkldnn._convolution_pointwise.binary``, the kernel torch.compile uses for the
  same fusion on the CPU). Where oneDNN cannot take it, a plain convolution and addition.
* SiLU after GroupNorm runs in place.
* Activations keep the layout of the model's weights: a one-channel input is ambiguous, so
  the U-Net's input convolution would otherwise hand channels-first tensors to a channels-last
  network, and every addition and concatenation with them would pay a transposing copy.

Inference only (``torch.inference_mode``); tensors (B, C, X, Y, Z).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import (
    DiffusionUNetResnetBlock,
    get_timestep_embedding,
)
from torch import nn

FUSABLE_DTYPES = (torch.float32, torch.bfloat16)


def _conv3d(module: nn.Module) -> nn.Conv3d:
    """The Conv3d of a MONAI ``Convolution`` (or the Conv3d itself)."""
    return module if isinstance(module, nn.Conv3d) else module.conv


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return any(a.is_contiguous(memory_format=f) and b.is_contiguous(memory_format=f)
               for f in (torch.channels_last_3d, torch.contiguous_format))


def _layout_of(network: nn.Module) -> torch.memory_format:
    """channels-last 3-D if the network's (multi-channel) convolution weights are."""
    weight = next(m.weight for m in network.modules()
                  if isinstance(m, nn.Conv3d) and m.in_channels > 1)
    channels_last = (weight.is_contiguous(memory_format=torch.channels_last_3d)
                     and not weight.is_contiguous())
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def _keeps_shape(conv: nn.Conv3d) -> bool:
    return (conv.padding_mode == "zeros" and all(s == 1 for s in conv.stride)
            and isinstance(conv.padding, tuple)
            and all(p == d * (k - 1) // 2 for p, d, k in zip(conv.padding, conv.dilation,
                                                             conv.kernel_size, strict=True)))


def _onednn_convolution_with_addition(*args) -> torch.Tensor:
    """(x, other, weight, bias, padding, stride, dilation, groups, "add", alpha, unary,
    unary scalars, unary algorithm) -> other + conv(x), one oneDNN primitive."""
    return torch.ops.mkldnn._convolution_pointwise.binary(*args)


class FusedDenoiser:
    """ε̂ for one case's conditions, reused at every sampling step.

    model: an ImmunoDiffModel (with a ControlNet); context (B, T, D) or None; control
    (B, C, X, Y, Z) — the batch the sampler will denoise (samples, and the unconditional
    branch of guidance, already repeated). Call inside ``torch.inference_mode`` and the
    sampler's autocast, so the cached embedding has the dtype of the steps.
    """

    convolution_with_addition = staticmethod(_onednn_convolution_with_addition)

    def __init__(self, model: nn.Module, context: torch.Tensor | None, control: torch.Tensor):
        self.unet, self.controlnet = model.unet, model.controlnet
        if self.unet.num_class_embeds is not None or self.controlnet.num_class_embeds is not None:
            raise ValueError("FusedDenoiser does not take class-conditioned networks.")
        self.context = context
        self.layout = _layout_of(self.unet)
        self.control_embedding = self.controlnet.controlnet_cond_embedding(control).contiguous(
            memory_format=self.layout)
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.fused_additions = 0  # additions fused into a convolution (the last call's)
        self.fusion_works = True

    # --- building blocks ------------------------------------------------------------
    def conv_add(self, conv: nn.Module, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """other + conv(x), in one oneDNN convolution where it can be."""
        conv = _conv3d(conv)
        fusable = (self.fusion_works and x.device.type == "cpu"
                   and torch.backends.mkldnn.is_available()
                   and x.dtype in FUSABLE_DTYPES and other.dtype == x.dtype
                   and _keeps_shape(conv) and _same_layout(x, other)
                   and other.shape == (x.shape[0], conv.out_channels, *x.shape[2:]))
        if fusable:
            weight, bias = self._weights_as(conv, x.dtype)
            try:
                result = self.convolution_with_addition(
                    x, other, weight, bias, list(conv.padding), list(conv.stride),
                    list(conv.dilation), conv.groups, "add", None, None, [], None)
            except (RuntimeError, AttributeError):  # a torch without it: plain from now on
                self.fusion_works = False
            else:
                self.fused_additions += 1
                return result
        return other + conv(x)

    def _weights_as(self, conv: nn.Conv3d, dtype: torch.dtype):
        """The convolution's weight and bias in ``dtype``, cast once per case."""
        key = id(conv)
        if key not in self._weights or self._weights[key][0].dtype != dtype:
            weight = conv.weight.to(dtype)
            bias = None if conv.bias is None else conv.bias.to(dtype)
            self._weights[key] = (weight, bias)
        return self._weights[key]

    def resnet_block(self, block: DiffusionUNetResnetBlock, x: torch.Tensor,
                     emb: torch.Tensor) -> torch.Tensor:
        """The same computation as MONAI's ``DiffusionUNetResnetBlock.forward``."""
        h = F.silu(block.norm1(x), inplace=True)
        if block.upsample is not None:
            x, h = block.upsample(x), block.upsample(h)
        elif block.downsample is not None:
            x, h = block.downsample(x), block.downsample(h)
        temb = block.time_emb_proj(F.silu(emb))  # (B, C)
        conv1 = _conv3d(block.conv1)
        if torch.equal(temb, temb[:1].expand_as(temb)):
            shift = temb[0].to(conv1.weight.dtype)
            bias = shift if conv1.bias is None else conv1.bias + shift
            h = F.conv3d(h, conv1.weight, bias, conv1.stride, conv1.padding, conv1.dilation,
                         conv1.groups)
        else:
            h = conv1(h) + temb[:, :, None, None, None]
        h = F.silu(block.norm2(h), inplace=True)
        return self.conv_add(block.conv2, h, block.skip_connection(x))

    # --- the two networks -------------------------------------------------------------
    def __call__(self, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """ε̂: (B, 1, X, Y, Z), timesteps (B,) -> (B, 1, X, Y, Z)."""
        if torch.is_grad_enabled():
            raise RuntimeError("FusedDenoiser is for inference (it works in place): call it "
                               "under torch.inference_mode() or torch.no_grad().")
        self.fused_additions = 0
        x_t = x_t.to(self.control_embedding.dtype)  # bf16 under the sampler's autocast
        blocks = [m for m in (*self.unet.modules(), *self.controlnet.modules())
                  if isinstance(m, DiffusionUNetResnetBlock)
                  and isinstance(m.nonlinearity, nn.SiLU)]
        for block in blocks:  # instance attribute: MONAI's blocks call it for their resnets
            block.forward = _bound(self.resnet_block, block)
        try:
            residuals, middle = self._controlnet(x_t, timesteps)
            return self._unet(x_t, timesteps, residuals, middle)
        finally:
            for block in blocks:
                del block.forward

    def _time_embedding(self, network: nn.Module, timesteps: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor:
        t_emb = get_timestep_embedding(timesteps, network.block_out_channels[0])
        return network.time_embed(t_emb.to(dtype))

    def _controlnet(self, x: torch.Tensor, timesteps: torch.Tensor):
        """The ControlNet's down and middle outputs before its zero convolutions."""
        net = self.controlnet
        emb = self._time_embedding(net, timesteps, x.dtype)
        h = self.conv_add(net.conv_in, x, self.control_embedding)
        residuals = [h]
        for block in net.down_blocks:
            h, outputs = block(hidden_states=h, temb=emb, context=self.context)
            residuals += list(outputs)
        return residuals, net.middle_block(hidden_states=h, temb=emb, context=self.context)

    def _unet(self, x: torch.Tensor, timesteps: torch.Tensor, control_residuals, control_middle):
        """The U-Net with the ControlNet's residuals (conditioning scale 1) added."""
        net, control = self.unet, self.controlnet
        emb = self._time_embedding(net, timesteps, x.dtype)
        h = net.conv_in(x).contiguous(memory_format=self.layout)
        skips = [h]
        for block in net.down_blocks:
            h, outputs = block(hidden_states=h, temb=emb, context=self.context)
            skips += list(outputs)
        skips = [self.conv_add(zero_conv, residual, skip) for skip, residual, zero_conv
                 in zip(skips, control_residuals, control.controlnet_down_blocks, strict=True)]
        h = net.middle_block(hidden_states=h, temb=emb, context=self.context)
        h = self.conv_add(control.controlnet_mid_block, control_middle, h)
        for block in net.up_blocks:
            count = len(block.resnets)
            h = block(hidden_states=h, res_hidden_states_list=skips[-count:], temb=emb,
                      context=self.context)
            skips = skips[:-count]
        return net.out(h)


def _bound(method, block):
    def forward(x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return method(block, x, emb)

    return forward
