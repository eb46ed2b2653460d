"""Lobes and vessels from label maps the user gives (e.g. a segmentation corrected in Slicer
and exported on the CT's grid), instead of segmenting them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import ImageError
from ..imaging import read_image
from .segment import Anatomy


def anatomy_from_files(ct, lobes_path, vessels_path):
    """An :class:`Anatomy` from a lobe label map (1-5) and a vessel label map (0/1), both on
    the CT's grid (e.g. a segmentation the user corrected, exported by the Slicer module)."""
    if lobes_path is None or vessels_path is None:
        raise ImageError("--lobes and --vessels go together: give both label maps.")
    maps = {}
    for name, path in (("lobes", lobes_path), ("vessels", vessels_path)):
        image = read_image(path)
        same = (image.GetSize() == ct.GetSize()
                and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
                and np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4))
        if not same:
            raise ImageError(f"--{name} '{path}' is not on the CT's grid (size "
                                  f"{image.GetSize()} vs {ct.GetSize()}); export it on the CT.")
        maps[name] = sitk.Cast(image, sitk.sitkUInt8)
    values = sitk.GetArrayViewFromImage(maps["lobes"])
    if values.max() > 5 or not values.any():
        raise ImageError(f"--lobes '{lobes_path}' must hold lobe labels 1-5 (found "
                              f"{int(values.min())}..{int(values.max())}).")
    lungs = sitk.Cast(maps["lobes"] > 0, sitk.sitkUInt8)
    source = f"label maps '{Path(lobes_path).name}', '{Path(vessels_path).name}'"
    return Anatomy(lungs=lungs, lobes=maps["lobes"], vessels=sitk.Cast(maps["vessels"] > 0,
                                                                      sitk.sitkUInt8),
                   lobes_backend=source, vessels_backend=source,
                   warnings=[f"Lobes and vessels taken from the {source}."])
