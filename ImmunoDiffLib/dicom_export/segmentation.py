"""Lobes, vessels and the tumour of the baseline as one DICOM Segmentation (highdicom),
referencing the baseline series slice by slice.

Each segment carries the SNOMED CT codes the Slicer module's terminology uses
(:mod:`ImmunoDiffLib.anatomy.labels`: category Anatomical Structure, the structure as type,
left/right as type modifier); the tumour is a Morphologically Altered Structure of type
Neoplasm in the lung. The tumour is the drawn tumour mask when one was given, else the lesion
at the tumour point grown on the full baseline CT as the pipeline measures it
(:func:`~ImmunoDiffLib.imaging.lesion.segment_lesion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__
from ..anatomy import ARTERIES, LOBES, VEINS, VESSELS, Anatomy, Structure
from ..anatomy.labels import LATERALITY_CODES
from ..imaging.lesion import segment_lesion
from .equipment import (
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    SEGMENTATION_SERIES_NUMBER,
    SOFTWARE_VERSION,
)

# The categories of DICOM's CID 7150 that Slicer's terminology uses.
ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
NEOPLASM = Code("108369006", "SCT", "Neoplasm")
LUNG = Code("39607008", "SCT", "Lung")
TUMOUR_LABEL = "tumour"
TUMOUR_COLOUR = (0.90, 0.85, 0.20)  # RGB 0..1
LEARNED_BACKENDS = ("lungmask", "totalsegmentator")


@dataclass(frozen=True)
class Segment:
    """One segment to write: the voxels of ``labels`` (a label map on the baseline grid)
    equal to ``value`` (any non-zero voxel when None), its label, SNOMED CT category, type and
    type modifier (laterality), anatomic region, display colour (RGB 0..1) and how it was
    made: ``algorithm`` (the method's name) of ``family`` (DICOM CID 7162), or given by the
    user (``family`` None: a drawn tumour, label maps from files)."""

    label: str
    category: Code
    type: Code
    labels: sitk.Image
    value: int | None
    colour: tuple[float, float, float]
    algorithm: str
    family: Code | None
    type_modifier: Code | None = None
    anatomic_region: Code | None = None

    def mask(self) -> np.ndarray:
        """(z, y, x) bool."""
        values = sitk.GetArrayViewFromImage(self.labels)
        return values > 0 if self.value is None else values == self.value


def baseline_tumour_mask(ct: sitk.Image, point_lps, drawn: sitk.Image | None = None
                         ) -> sitk.Image:
    """The tumour on ``ct``'s grid (uint8 0/1): ``drawn`` (a label map, resampled onto the
    grid by nearest neighbour when it is on another) or, without it, the lesion grown from
    ``point_lps`` (LPS mm) on the full CT."""
    if drawn is None:
        return segment_lesion(ct, point_lps)
    on_grid = sitk.Resample(drawn, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                            sitk.sitkUInt8)
    return sitk.Cast(on_grid > 0, sitk.sitkUInt8)


def _family(backend: str) -> Code | None:
    """How an anatomy backend works (DICOM CID 7162); None: maps the user gave."""
    if backend in LEARNED_BACKENDS:
        return codes.cid7162.ArtificialIntelligence
    if backend == "classic":
        return codes.cid7162.MorphologicalOperations
    return None


def _structure_segment(structure: Structure, labels: sitk.Image, value: int | None,
                       label: str, backend: str, what: str) -> Segment:
    modifier = None
    if structure.laterality:
        code, meaning = LATERALITY_CODES[structure.laterality]
        modifier = Code(code, "SCT", meaning)
    return Segment(label, ANATOMICAL_STRUCTURE,
                   Code(structure.snomed_code, "SCT", structure.snomed_meaning), labels,
                   value, structure.colour, f"{what}: {backend}", _family(backend),
                   type_modifier=modifier)


def case_segments(anatomy: Anatomy, tumour: sitk.Image, tumour_drawn: bool) -> list[Segment]:
    """The segments of a case, in segment-number order: the five lobes, the vessels (and
    arteries and veins when the backend separates them), the tumour."""
    suffix = " (approximate)" if anatomy.lobes_approximate else ""
    segments = [_structure_segment(s, anatomy.lobes, s.value, s.name + suffix,
                                   anatomy.lobes_backend, "lobes") for s in LOBES]
    vessels = [(VESSELS, anatomy.vessels)]
    if anatomy.arteries is not None and anatomy.veins is not None:
        vessels += [(ARTERIES, anatomy.arteries), (VEINS, anatomy.veins)]
    for structure, image in vessels:
        segments.append(_structure_segment(structure, image, None, structure.name,
                                           anatomy.vessels_backend, "vessels"))
    segments.append(Segment(TUMOUR_LABEL, ALTERED_STRUCTURE, NEOPLASM, tumour, None,
                            TUMOUR_COLOUR,
                            "drawn tumour" if tumour_drawn else "lesion at the tumour point",
                            None if tumour_drawn else codes.cid7162.MorphologicalOperations,
                            anatomic_region=LUNG))
    return segments


def _description(number: int, segment: Segment) -> hd.seg.SegmentDescription:
    algorithm = None
    if segment.family is not None:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=f"ImmunoDiff {segment.algorithm}"[:64], family=segment.family,
            version=__version__)
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=segment.label[:64],
        segmented_property_category=segment.category, segmented_property_type=segment.type,
        algorithm_type="MANUAL" if segment.family is None else "AUTOMATIC",
        algorithm_identification=algorithm, tracking_uid=generate_uid(),
        tracking_id=segment.label[:64],
        anatomic_regions=None if segment.anatomic_region is None else [segment.anatomic_region],
        display_color=hd.color.CIELabColor.from_rgb(
            *(int(round(255 * c)) for c in segment.colour)))
    if segment.type_modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence \
            = [hd.sr.CodedConcept.from_code(segment.type_modifier)]
    return description


def build_segmentation(source_slices: Sequence[Dataset], segments: Sequence[Segment]
                       ) -> hd.seg.Segmentation:
    """One binary DICOM SEG of ``segments`` on the baseline series ``source_slices`` (its
    headers, in the masks' ``z`` order); segment numbers follow the order of ``segments``."""
    size = segments[0].labels.GetSize()
    if len(source_slices) != size[2]:
        raise ValueError(f"{len(source_slices)} baseline slices for masks of {size[2]}.")
    pixels = np.zeros((size[2], size[1], size[0], len(segments)), bool)
    for index, segment in enumerate(segments):  # one mask at a time: memory of one copy
        pixels[..., index] = segment.mask()
    return hd.seg.Segmentation(
        source_images=list(source_slices), pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(n, s) for n, s in enumerate(segments, start=1)],
        series_instance_uid=generate_uid(), series_number=SEGMENTATION_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME, software_versions=SOFTWARE_VERSION,
        device_serial_number=DEVICE_SERIAL_NUMBER,
        content_description="Lobes, vessels and tumour of the baseline CT",
        content_label="IMMUNODIFF", series_description="ImmunoDiff anatomy and tumour")


def segment_number(segmentation: hd.seg.Segmentation, label: str) -> int:
    """The number of the segment labelled ``label`` in ``segmentation``."""
    for item in segmentation.SegmentSequence:
        if item.SegmentLabel == label:
            return int(item.SegmentNumber)
    raise KeyError(f"No segment labelled {label!r}.")
