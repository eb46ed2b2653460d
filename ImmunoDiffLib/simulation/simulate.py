"""``simulate_cohort``: a longitudinal immunotherapy cohort on real chest CT with known truth.

For each patient: a background (real CT) with a random rigid + elastic deformation, noise and
a HU shift; a target lesion (the real lung2 tumour, or a synthetic solid/part-solid lesion in
the lung); clinical variables; a response drawn from the documented logistic model; a
follow-up CT in which the lesion shrinks (responders) or stays/grows (non-responders) and
everything else differs only by noise and slight repositioning; survival with censoring.
Writes NIfTI files, ``cohort.csv`` (the cohort manifest) and ``simulation.json`` (truth).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import __version__
from ..errors import OutputPathError
from ..imaging import write_image
from ..imaging.labels import label_centroid
from ..imaging.recist import longest_axial_diameter_mm, recist_category
from ..outputs import atomic_folder
from ..progress import CancelFlag, ProgressCallback, Task
from ..reporting.cohort_montage import save_montage
from . import lesions
from .backgrounds import Background, prepare_backgrounds
from .clinical_model import (
    bayes_accuracy,
    calibrate_intercept,
    draw_survival,
    draw_variables,
    response_probability,
)
from .config import SimulationConfig

MANIFEST_NAME = "cohort.csv"
TRUTH_NAME = "simulation.json"


@dataclass
class Deformation:
    transform: sitk.Transform

    def apply(self, image: sitk.Image, is_label: bool) -> sitk.Image:
        interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
        pixel = sitk.sitkUInt8 if is_label else sitk.sitkFloat32
        return sitk.Resample(image, image, self.transform, interpolator,
                             0.0 if is_label else -1024.0, pixel)


def _rigid(rng, reference: sitk.Image, degrees: float, millimetres: float) -> sitk.Transform:
    rigid = sitk.Euler3DTransform()
    size = np.array(reference.GetSize())
    centre = reference.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    rigid.SetCenter(centre)
    rigid.SetRotation(*np.deg2rad(rng.uniform(-degrees, degrees, 3)))
    rigid.SetTranslation(rng.uniform(-millimetres, millimetres, 3).tolist())
    return rigid


def baseline_deformation(rng, reference: sitk.Image, config: SimulationConfig) -> Deformation:
    """Random rigid + B-spline elastic deformation, as one displacement field."""
    elastic = sitk.BSplineTransformInitializer(reference, [4, 4, 4])
    parameters = rng.normal(0.0, config.elastic_mm, len(elastic.GetParameters()))
    elastic.SetParameters(parameters.tolist())
    composite = sitk.CompositeTransform(
        [_rigid(rng, reference, config.rotation_deg, config.translation_mm), elastic])
    field = sitk.TransformToDisplacementField(composite, sitk.sitkVectorFloat64,
                                              reference.GetSize(), reference.GetOrigin(),
                                              reference.GetSpacing(), reference.GetDirection())
    return Deformation(sitk.DisplacementFieldTransform(field))


def _lesion_centre(rng, lungs: np.ndarray, image: sitk.Image, radius_mm: float):
    """A random point of lung parenchyma at least ~the lesion radius from the lung border."""
    depth = ndimage.distance_transform_edt(lungs, sampling=image.GetSpacing()[::-1])
    candidates = np.argwhere(depth >= min(radius_mm, 0.8 * depth.max()))
    z, y, x = candidates[rng.integers(len(candidates))]
    return image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))


def _to_image(values: np.ndarray, reference: sitk.Image, pixel=sitk.sitkInt16) -> sitk.Image:
    if pixel == sitk.sitkInt16:
        values = np.clip(np.rint(values), -1024, 3071).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.CopyInformation(reference)
    return image


def _diameter_change(rng, responder: int, config: SimulationConfig) -> tuple[float, bool]:
    """(fractional change of the longest diameter, new satellite nodules?)."""
    if responder:
        if rng.random() < config.near_complete_probability:
            return -rng.uniform(0.70, 0.95), False
        return -rng.uniform(0.35, 0.70), False
    if rng.random() < config.progression_probability:
        return rng.uniform(*config.progression_change), rng.random() < config.satellite_probability
    return rng.uniform(*config.stable_change), False


def simulate_patient(index: int, background: Background, intercept: float,
                     config: SimulationConfig, rng: np.random.Generator) -> dict:
    """Images and truth of one patient (nothing written)."""
    deformation = baseline_deformation(rng, background.ct, config)
    ct = deformation.apply(background.ct, False)
    lungs = deformation.apply(background.lungs, True)
    lobes = deformation.apply(background.lobes, True)
    vessels = deformation.apply(background.vessels, True)
    values = sitk.GetArrayFromImage(ct)
    lung_values = sitk.GetArrayFromImage(lungs) > 0

    real = background.tumour is not None and rng.random() < config.real_tumour_probability
    shape = None
    if real:
        tumour = deformation.apply(background.tumour, True)
        mask = sitk.GetArrayFromImage(tumour)
        centre = label_centroid(tumour)
    else:
        if background.tumour is not None:  # remove the real tumour before adding another
            lesions.erase(values, sitk.GetArrayFromImage(
                deformation.apply(background.tumour, True)) > 0, rng)
        diameter = rng.uniform(*config.lesion_diameter_mm)
        centre = _lesion_centre(rng, lung_values, ct, diameter / 2)
        shape = lesions.LesionShape(
            tuple(centre), diameter, bool(rng.random() < config.part_solid_probability),
            float(rng.uniform(0.4, 0.7)), float(rng.uniform(*config.irregularity)),
            int(rng.integers(2**31)))
        mask = lesions.render(values, ct, shape, 1.0, rng)
    baseline_mask = _to_image(mask.astype(np.uint8), ct, sitk.sitkUInt8)
    baseline_mm = longest_axial_diameter_mm(baseline_mask)

    variables = draw_variables(rng)
    probability = response_probability(config.clinical.response, intercept, variables,
                                       baseline_mm)
    responder = int(rng.random() < probability)
    change, satellites = _diameter_change(rng, responder, config)
    scale = max(1.0 + change, 0.0)

    follow = values.copy()
    density = -rng.uniform(*config.density_drop_hu) if responder else 0.0
    halo = -600.0 if responder and rng.random() < config.halo_probability else None
    if real:
        lesions.erase(follow, mask > 0, rng)
        scaled_mask = sitk.GetArrayFromImage(lesions.scale_mask(baseline_mask, centre, scale))
        original = _to_image(values, ct, sitk.sitkFloat32)
        scaled = sitk.GetArrayFromImage(lesions.scale_content(original, centre, scale))
        inside = scaled_mask > 0
        follow[inside] = scaled[inside] + density
        follow_mask = scaled_mask.astype(np.uint8)
    else:
        lesions.erase(follow, mask > 0, rng)
        follow_mask = lesions.render(follow, ct, shape, scale, rng, density, halo)
    new_lesions = 0
    if satellites:
        for _ in range(int(rng.integers(1, 3))):
            offset = rng.normal(0, 1, 3)
            offset *= rng.uniform(15, 30) / np.linalg.norm(offset)
            point = tuple(np.array(centre) + offset)
            index = ct.TransformPhysicalPointToIndex(point)
            inside_image = all(0 <= i < n for i, n in zip(index, ct.GetSize(), strict=True))
            if inside_image and lung_values[index[2], index[1], index[0]]:
                small = lesions.LesionShape(point, float(rng.uniform(3, 6)), False, 0.5, 0.1,
                                            int(rng.integers(2**31)))
                lesions.render(follow, ct, small, 1.0, rng)
                new_lesions += 1

    # Same HU shift for both scans; independent noise; follow-up slightly repositioned.
    shift = rng.uniform(-config.hu_shift, config.hu_shift)
    sigma = rng.uniform(*config.noise_hu)
    baseline_values = values + shift + rng.normal(0, sigma, values.shape)
    reposition = Deformation(_rigid(rng, ct, config.repositioning_deg, config.repositioning_mm))
    follow_image = reposition.apply(_to_image(follow, ct, sitk.sitkFloat32), False)
    follow_values = sitk.GetArrayFromImage(follow_image) + shift + rng.normal(0, sigma,
                                                                             values.shape)
    follow_mask_image = reposition.apply(_to_image(follow_mask, ct, sitk.sitkUInt8), True)
    followup_mm = longest_axial_diameter_mm(follow_mask_image)
    months, event, hazard = draw_survival(config.clinical.survival, rng, variables, responder)
    return {
        "images": {
            "baseline_ct": _to_image(baseline_values, ct),
            "followup_ct": _to_image(follow_values, ct),
            "tumour_mask": baseline_mask,
            "followup_tumour_mask": follow_mask_image,
            "lobes_mask": lobes,
            "vessels_mask": vessels,
        },
        "centre": centre, "variables": variables, "responder": responder,
        "truth": {
            "background": background.name, "lesion": "real" if real else (
                "part-solid" if shape.part_solid else "solid"),
            "response_probability": round(probability, 4), "diameter_change": round(change, 4),
            "new_lesions": new_lesions, "hazard_per_month": round(hazard, 5),
            "density_change_hu": round(density, 1), "halo": halo is not None,
            "noise_sd_hu": round(sigma, 2), "hu_shift": round(shift, 2),
        },
        "survival": (months, event),
        "diameters": (baseline_mm, followup_mm),
        "recist": recist_category(baseline_mm, followup_mm, new_lesions > 0),
    }


MANIFEST_COLUMNS = (
    "patient_id", "baseline_ct", "followup_ct", "tumour_x", "tumour_y", "tumour_z",
    "tumour_mask", "followup_tumour_mask", "lobes_mask", "vessels_mask",
    "age", "sex", "race", "cea", "anc", "alc", "nlr", "aec", "amc", "pdl1",
    "response", "survival_months", "event", "recist", "baseline_diameter_mm",
    "followup_diameter_mm",
)


def simulate_cohort(output: str | os.PathLike, config: SimulationConfig | None = None,
                    progress: ProgressCallback | None = None, cancel: CancelFlag = None,
                    overwrite: bool = False) -> Path:
    """Write the cohort into ``output`` (built in a temporary sibling folder, renamed when
    complete); return the manifest's path."""
    config = config or SimulationConfig()
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputPathError(f"Output folder '{output}' exists already; choose another or "
                              "allow overwriting.")
    task = Task(progress, cancel)
    task.report(0.0, "preparing backgrounds")
    backgrounds = prepare_backgrounds(config.grid_spacing_mm, config.backgrounds)
    intercept = calibrate_intercept(config.clinical.response, config.responder_rate,
                                    config.lesion_diameter_mm, seed=config.seed)
    rows, truths = [], []
    with atomic_folder(output, overwrite) as staging:
        for index in range(config.n_patients):
            task.report(0.1 + 0.9 * index / config.n_patients,
                        f"patient {index + 1}/{config.n_patients}")
            rng = np.random.default_rng([config.seed, index])
            background = backgrounds[int(rng.integers(len(backgrounds)))]
            patient = simulate_patient(index, background, intercept, config, rng)
            pid = f"SIM{index + 1:04d}"
            folder = staging / pid
            folder.mkdir()
            row = {"patient_id": pid}
            for key, image in patient["images"].items():
                name = f"{key.replace('_mask', '')}.nii.gz"
                write_image(image, folder / name)
                row[key] = f"{pid}/{name}"
            row.update(dict(zip(("tumour_x", "tumour_y", "tumour_z"),
                                (round(c, 2) for c in patient["centre"]), strict=True)))
            variables = dict(patient["variables"])
            variables["nlr"] = round(variables["anc"] / variables["alc"], 2)
            missing_rng = np.random.default_rng([config.seed, index, 7])
            for name in ("cea", "anc", "alc", "nlr", "aec", "amc"):
                if missing_rng.random() < config.clinical.missing_rate:
                    variables[name] = "NA"
            row.update({k: (round(v, 2) if isinstance(v, float) else v)
                        for k, v in variables.items()})
            months, event = patient["survival"]
            row.update(response=patient["responder"], survival_months=months, event=event,
                       recist=patient["recist"],
                       baseline_diameter_mm=round(patient["diameters"][0], 1),
                       followup_diameter_mm=round(patient["diameters"][1], 1))
            rows.append(row)
            truths.append({"patient_id": pid, **patient["truth"]})
        with open(staging / MANIFEST_NAME, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        truth = {"library_version": __version__, "config": config.as_dict(),
                 "response_intercept": intercept,
                 "bayes_accuracy": bayes_accuracy([t["response_probability"] for t in truths]),
                 "patients": truths}
        (staging / TRUTH_NAME).write_text(json.dumps(truth, indent=2, default=str),
                                          encoding="utf-8")

        save_montage(staging, rows, staging / "montage.png")
    task.report(1.0, "cohort written")
    return output / MANIFEST_NAME
