"""CT imaging: read/write with geometry kept, DICOM series, crops in physical space, HU scaling.

Conventions: SimpleITK images, physical points in LPS millimetres (as ITK and DICOM; 3D Slicer
shows RAS, which negates x and y). Arrays from SimpleITK are indexed (z, y, x).
"""

from ..outputs import check_output_path
from .crop import Crop, CropSpec, crop_around_point, crop_grid, paste_back, paste_change
from .dicom import list_dicom_series, read_dicom_series, write_dicom_series
from .intensity import AIR_HU, HUWindow, denormalise, normalise
from .io import read_ct, read_image, validate_ct, write_image
from .labels import label_centroid, label_volume_ml
from .resample import resample_like, to_lps_orientation

__all__ = [
    "AIR_HU",
    "Crop",
    "CropSpec",
    "HUWindow",
    "check_output_path",
    "crop_around_point",
    "crop_grid",
    "denormalise",
    "label_centroid",
    "label_volume_ml",
    "list_dicom_series",
    "normalise",
    "paste_back",
    "paste_change",
    "read_ct",
    "read_dicom_series",
    "read_image",
    "resample_like",
    "to_lps_orientation",
    "validate_ct",
    "write_dicom_series",
    "write_image",
]
