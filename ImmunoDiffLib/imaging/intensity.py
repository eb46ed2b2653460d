"""Hounsfield-unit window and the linear map to the model's range [-1, 1], with its inverse.

The default window [-1024, 1024] HU has a power-of-two half width, so normalise -> denormalise
returns every float32 HU value inside the window bit-exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingError

AIR_HU = -1024.0


@dataclass(frozen=True)
class HUWindow:
    """HU range mapped linearly onto [-1, 1]; values outside are clipped."""

    lower: float = -1024.0
    upper: float = 1024.0

    def __post_init__(self):
        if not self.upper > self.lower:
            raise SettingError(
                f"HU window upper ({self.upper}) must be greater than lower ({self.lower})."
            )

    @property
    def centre(self) -> float:
        return (self.upper + self.lower) / 2.0

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2.0


def normalise(hu, window: HUWindow = HUWindow()):
    """HU -> [-1, 1] (numpy array or torch tensor, any shape; dtype kept)."""
    return (hu.clip(window.lower, window.upper) - window.centre) / window.half_width


def denormalise(values, window: HUWindow = HUWindow()):
    """[-1, 1] -> HU, the exact inverse of :func:`normalise` inside the window."""
    return values.clip(-1.0, 1.0) * window.half_width + window.centre
