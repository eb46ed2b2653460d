"""Which arithmetic a device runs the denoising steps fastest in.

bfloat16 autocast pays only where the hardware multiplies bf16 natively: a CUDA GPU that
supports it, or a CPU with AMX tiles or AVX512-BF16 (oneDNN then runs bf16 convolutions 3-6x
faster than fp32). Elsewhere oneDNN emulates bf16 through fp32 and a step is several times
*slower* than plain fp32 (measured on a 2-core AVX-512 Xeon without either: bf16 matmul
61 GFLOP/s vs fp32 312 GFLOP/s; a default-size step 2.95 s vs 0.77 s). The choice is made
from the device's capabilities, never from a timing, so the same machine always gives the same
output for a seed.

Memory layout: on the CPU channels-last 3-D in both precisions (oneDNN's native layout: its
convolutions need no reorder; a default-size fp32 step 0.77 s against 0.80 s channels-first,
benchmarks/inference_speed.py); on a GPU channels-last with bf16 only.
"""

from __future__ import annotations

import torch

# what the command line's --precision names: SamplingOptions.bf16
PRECISIONS = {"auto": None, "bf16": True, "fp32": False}


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True where ``device`` has bf16 matrix arithmetic in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_bf16(requested: bool | None, device: torch.device | str = "cpu") -> bool:
    """``requested`` as given, or (``None``) whether bf16 is native on ``device``."""
    return native_bf16(device) if requested is None else bool(requested)


def resolve_channels_last(requested: bool | None, bf16: bool,
                          device: torch.device | str = "cpu") -> bool:
    """``requested`` as given, or (``None``) channels-last on the CPU, and on other devices
    exactly when computing in bf16."""
    if requested is not None:
        return bool(requested)
    return torch.device(device).type == "cpu" or bf16


def describe(bf16: bool, channels_last: bool) -> str:
    """A short label for reports and benchmark tables, e.g. 'bf16, channels-last'."""
    return f"{'bf16' if bf16 else 'fp32'}, {'channels-last' if channels_last else 'channels-first'}"
