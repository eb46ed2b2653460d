"""The lesion measurement from a point (``imaging.lesion.segment_lesion``) against reference
masks, beside the previous method (voxels above -550 HU connected to the point inside a 35 mm
ball, opened by one voxel in plane).

Cases, each on the full CT and on the model's crop grid (``imaging.crop.crop_around_point``
with the default ``CropSpec``: 96 x 96 x 16 voxels of 3 x 3 x 0.5 mm, where the pipeline
measures the lesion; a tumour thicker than the crop's 8 mm is cut by it, and so is its
reference, so the crop rows compare the slab the crop holds):

* lung2: pyradiomics' labelled tumour (left lower lobe, on the chest wall), point = the
  label's centroid;
* LIDC-IDRI-0001's nodule: the voxels at least 2 of the 4 readers drew (``--lidc-readers``,
  a file beside the CT that only ``../shared/data/lidc`` holds; skipped without it);
* simulated lesions (``simulation.lesions``, solid, irregular) drawn into those two CTs on
  the right lung of the classic lung mask: a large one against the mediastinum at mid-height
  (hilar level) and a smaller one against the lateral chest wall, each centred 0.85 of its
  radius from the nearest voxel outside the lungs, so that it presses into the wall; the
  rendered mask is the reference; and an 85 mm one in each (the right lung's deepest place
  at 20-60 % of its height), larger than any fixed cap.

Columns: reference and measured volume (mL), their ratio, Dice, the longest axial diameter
(``imaging.recist.longest_axial_diameter_mm``) of reference and measurement, and seconds.
Usage: IMMUNODIFF_SAMPLE_DATA=... python benchmarks/lesion_segmentation.py
       [--lidc-readers FILE] [--cases lung2,lidc,...] [--no-crops] [--case NAME=CT,MASK ...]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ImmunoDiffLib.anatomy import segment_anatomy
from ImmunoDiffLib.imaging import crop_around_point, label_centroid, label_volume_ml, read_ct
from ImmunoDiffLib.imaging.lesion import segment_lesion
from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm
from ImmunoDiffLib.sample_data import fetch_sample_data, sample_case_paths
from ImmunoDiffLib.simulation.lesions import LesionShape, render

LIDC_READERS = (Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"
                / "LIDC-IDRI-0001_nodule_reader_count.nii.gz")
SIMULATED = {  # case: (CT, where, diameter mm, seed)
    "lung2 hilar (simulated)": ("lung2", "mediastinum", 65.0, 1),
    "lung2 chest wall (simulated)": ("lung2", "chest wall", 35.0, 2),
    "LIDC hilar (simulated)": ("lidc", "mediastinum", 50.0, 3),
    "LIDC chest wall (simulated)": ("lidc", "chest wall", 25.0, 4),
    "lung2 large (simulated)": ("lung2", "deepest", 85.0, 5),
    "LIDC large (simulated)": ("lidc", "deepest", 85.0, 6),
}


def previous_segment_lesion(ct: sitk.Image, point_lps, max_radius_mm: float = 35.0):
    """The method before: -550..400 HU connected to the point inside a ball, opened by one
    voxel in plane (kept here for comparison)."""
    values = sitk.GetArrayFromImage(ct).astype(np.float32)
    dense = (values > -550.0) & (values < 400.0)
    index = np.array(ct.TransformPhysicalPointToIndex([float(v) for v in point_lps]))[::-1]
    zz, yy, xx = np.indices(values.shape)
    spacing = np.array(ct.GetSpacing())[::-1]
    distance = np.sqrt(sum(((g - i) * s) ** 2 for g, i, s in zip((zz, yy, xx), index, spacing,
                                                                  strict=True)))
    dense &= distance <= max_radius_mm
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    if not dense.any() or not np.all((index >= 0) & (index < values.shape)):
        return empty
    seed = tuple(int(v) for v in index)
    if not dense[seed]:
        near = np.argwhere(dense & (distance <= 5.0))
        if not len(near):
            return empty
        seed = tuple(int(v) for v in near[np.argmin(distance[tuple(near.T)])])
    region = sitk.GetImageFromArray(dense.astype(np.uint8))
    region.CopyInformation(ct)
    region = sitk.BinaryMorphologicalOpening(region, [1, 1, 0])
    if not sitk.GetArrayViewFromImage(region)[seed]:
        region = sitk.GetImageFromArray(dense.astype(np.uint8))
        region.CopyInformation(ct)
    grown = sitk.ConnectedThreshold(region, seedList=[seed[::-1]], lower=1, upper=1)
    return sitk.Cast(grown, sitk.sitkUInt8)


@dataclass
class Case:
    name: str
    ct: sitk.Image
    reference: sitk.Image  # uint8 mask on ct's grid
    point_lps: tuple[float, float, float]


def _mask_like(values: np.ndarray, image: sitk.Image) -> sitk.Image:
    mask = sitk.GetImageFromArray(values.astype(np.uint8))
    mask.CopyInformation(image)
    return mask


def _physical(image: sitk.Image, indices_zyx: np.ndarray) -> np.ndarray:
    """LPS points (N, 3) of voxel indices (N, 3) given in (z, y, x) order."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    scaled = indices_zyx[:, ::-1] * np.array(image.GetSpacing())
    return scaled @ direction.T + np.array(image.GetOrigin())


def simulated_lesion(ct: sitk.Image, lungs: sitk.Image, where: str, diameter_mm: float,
                     seed: int, avoid_lps) -> tuple[sitk.Image, sitk.Image]:
    """(CT with the lesion, its mask): a solid lesion of ``diameter_mm`` in the right lung,
    against the mediastinum (the most medial place at 45-65 % of the lungs' height) or the
    lateral chest wall (the most lateral place at 35-65 %), centred 0.85 of its radius from
    the nearest voxel outside ``lungs``, at least its radius + 40 mm from ``avoid_lps``."""
    lung = sitk.GetArrayViewFromImage(lungs) > 0  # (z, y, x)
    spacing = np.array(ct.GetSpacing())[::-1]
    depth = ndimage.distance_transform_edt(lung, sampling=spacing)
    radius = diameter_mm / 2.0
    heights = np.flatnonzero(lung.any(axis=(1, 2)))
    low, high = {"mediastinum": (0.45, 0.65), "chest wall": (0.35, 0.65)}.get(where, (0.2, 0.6))
    z0, z1 = (heights[0] + f * (heights[-1] - heights[0]) for f in (low, high))
    middle = _physical(ct, np.argwhere(lung)[::97])[:, 0].mean()
    if where == "deepest":
        places = np.argwhere(depth >= 15.0)
        places = places[(places[:, 0] >= z0) & (places[:, 0] <= z1)]
        places = places[_physical(ct, places)[:, 0] < middle]  # LPS: x grows to the left
        centre = _physical(ct, places[[np.argmax(depth[tuple(places.T)])]])[0]
    else:
        places = np.argwhere(np.abs(depth - 0.85 * radius) < 0.05 * radius)
        places = places[(places[:, 0] >= z0) & (places[:, 0] <= z1)]
        points = _physical(ct, places)
        points = points[np.linalg.norm(points - np.array(avoid_lps), axis=1) > radius + 40.0]
        right = points[points[:, 0] < middle]
        centre = right[np.argmax(right[:, 0]) if where == "mediastinum"
                       else np.argmin(right[:, 0])]
    values = sitk.GetArrayFromImage(ct).astype(np.float32)
    shape = LesionShape(tuple(float(c) for c in centre), diameter_mm, False, 0.0, 0.15, seed)
    mask = render(values, ct, shape, 1.0, np.random.default_rng(seed))
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(ct)
    return image, _mask_like(mask, ct)


def load_cases(lidc_readers: Path, names: set[str] | None) -> list[Case]:
    _, image, label = sample_case_paths("lung2")
    cts = {"lung2": read_ct(image)}
    cases = [Case("lung2", cts["lung2"], sitk.Cast(sitk.ReadImage(str(label)) > 0,
                                                    sitk.sitkUInt8), None)]
    cts["lidc"] = read_ct(fetch_sample_data()["lidc_ct"])
    if lidc_readers.is_file():
        readers = sitk.ReadImage(str(lidc_readers))
        cases.append(Case("LIDC-IDRI-0001", cts["lidc"], sitk.Cast(readers >= 2, sitk.sitkUInt8),
                          None))
    else:
        print(f"(no {lidc_readers}: LIDC-IDRI-0001's nodule left out)")
    real = {"lung2": cases[0].reference,
            "lidc": cases[1].reference if len(cases) > 1 else None}
    for name, (ct_name, where, diameter, seed) in SIMULATED.items():
        if names and name not in names:
            continue
        ct = cts[ct_name]
        lungs = segment_anatomy(ct, "classic").lungs
        avoid = label_centroid(real[ct_name]) if real[ct_name] is not None else (0, 0, 1e6)
        image, mask = simulated_lesion(ct, lungs, where, diameter, seed, avoid)
        cases.append(Case(name, image, mask, None))
    cases = [c for c in cases if not names or c.name in names]
    for case in cases:
        case.point_lps = label_centroid(case.reference)
    return cases


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return 2.0 * float((x & y).sum()) / max(float(x.sum() + y.sum()), 1.0)


def measure(method, ct: sitk.Image, point, reference: sitk.Image) -> dict:
    start = time.perf_counter()
    mask = method(ct, point)
    seconds = time.perf_counter() - start
    volume, truth = label_volume_ml(mask), label_volume_ml(reference)
    return {"ml": volume, "ratio": volume / truth if truth else float("nan"),
            "dice": dice(mask, reference), "mm": longest_axial_diameter_mm(mask),
            "s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lidc-readers", type=Path, default=LIDC_READERS)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--no-crops", action="store_true")
    parser.add_argument("--case", action="append", default=[], metavar="NAME=CT,MASK",
                        help="a CT of your own (file or DICOM folder) with its reference "
                             "tumour mask on the CT's grid; the point is the mask's centroid "
                             "(repeatable)")
    args = parser.parse_args()
    names = set(args.cases.split(",")) if args.cases else None
    extra = []
    for given in args.case:
        name, _, paths = given.partition("=")
        ct_path, _, mask_path = paths.partition(",")
        if not (name and ct_path and mask_path):
            parser.error(f"--case expects NAME=CT,MASK, got {given!r}")
        mask = sitk.Cast(sitk.ReadImage(mask_path) > 0, sitk.sitkUInt8)
        extra.append(Case(name, read_ct(ct_path), mask, label_centroid(mask)))
    methods = {"previous": previous_segment_lesion, "new": segment_lesion}
    print("| case | grid | reference mL | previous mL | new mL | ratio prev / new "
          "| Dice prev / new | reference mm | previous mm | new mm | s prev / new |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for case in load_cases(args.lidc_readers, names) + extra:
        grids = [("full CT", case.ct, case.reference)]
        if not args.no_crops:
            crop = crop_around_point(case.ct, case.point_lps)
            reference = crop_around_point(case.reference, case.point_lps, is_label=True).image
            extent = sitk.GetArrayViewFromImage(case.reference).any(axis=(1, 2)).sum() \
                * case.ct.GetSpacing()[2]
            cut = " (cut by the crop)" if extent > crop.image.GetSize()[2] * \
                crop.image.GetSpacing()[2] else ""
            grids.append(("crop" + cut, crop.image, sitk.Cast(reference > 0, sitk.sitkUInt8)))
        for grid, ct, reference in grids:
            rows = {name: measure(method, ct, case.point_lps, reference)
                    for name, method in methods.items()}
            old, new = rows["previous"], rows["new"]
            print(f"| {case.name} | {grid} | {label_volume_ml(reference):.1f} "
                  f"| {old['ml']:.1f} | {new['ml']:.1f} | {old['ratio']:.2f} / {new['ratio']:.2f} "
                  f"| {old['dice']:.2f} / {new['dice']:.2f} "
                  f"| {longest_axial_diameter_mm(reference):.1f} | {old['mm']:.1f} "
                  f"| {new['mm']:.1f} | {old['s']:.2f} / {new['s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
