"""Real chest CTs prepared as simulation backgrounds: resampled to the simulation grid,
cropped to the chest around the lungs, with lungs, lobes, vessels and (lung2) the real tumour.
Voxels below -1024 HU (outside the scanner's field of view) become air."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..anatomy import segment_anatomy
from ..imaging import read_ct, read_image
from ..imaging.crop import physical_extent
from ..imaging.resample import resample_like
from ..sample_data import SAMPLE_CASES, sample_case_paths

MARGIN_MM = 15.0
AIR_HU = -1024.0  # padding below it (-2048, -3024: outside the scanner's field of view) is air


@dataclass
class Background:
    name: str
    ct: sitk.Image  # float32 HU
    lungs: sitk.Image  # uint8
    lobes: sitk.Image
    vessels: sitk.Image
    tumour: sitk.Image | None  # uint8, the real labelled tumour when there is one


def _grid_around(mask: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """An identity-direction grid at ``spacing``: the scan's whole axial field of view (model
    crops are wide), and in z the lungs' extent plus a margin."""
    indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]
    corners = [mask.TransformIndexToPhysicalPoint(tuple(int(v) for v in c))
               for c in (indices.min(0), indices.max(0))]
    field_low, field_high = physical_extent(mask)
    low = np.min(corners, axis=0) - MARGIN_MM
    high = np.max(corners, axis=0) + MARGIN_MM
    low[:2], high[:2] = field_low[:2], field_high[:2]
    size = np.ceil((high - low) / np.array(spacing)).astype(int) + 1
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin(low.tolist())
    return grid


def prepare_background(name: str, spacing: tuple[float, float, float]) -> Background:
    """Load sample case ``name`` and put it, with its anatomy, on the simulation grid."""
    _, image_path, label_path = sample_case_paths(name)
    ct = read_ct(image_path)
    anatomy = segment_anatomy(ct, "classic")
    grid = _grid_around(anatomy.lungs, spacing)
    ct_small = resample_like(sitk.Clamp(ct, sitk.sitkFloat32, lowerBound=AIR_HU), grid,
                             sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)

    def labels(image):
        return resample_like(image, grid, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)

    tumour = labels(read_image(label_path)) if label_path else None
    return Background(name, ct_small, labels(anatomy.lungs), labels(anatomy.lobes),
                      labels(anatomy.vessels), tumour)


def prepare_backgrounds(spacing: tuple[float, float, float],
                        names: tuple[str, ...] | None = None) -> list[Background]:
    return [prepare_background(n, spacing) for n in (names or tuple(SAMPLE_CASES))]
