"""``simulate_cohort``: a longitudinal immunotherapy cohort on real chest CT with known truth.

For each patient: a background (real CT) with a random rigid + elastic deformation, noise and
a HU shift; a target lesion (the real lung2 tumour, or a synthetic one: a real LIDC-IDRI
nodule shape placed deep in the lung, at the hilum or against the chest wall, or a blob deep
in the lung); clinical variables; a response drawn from the documented logistic model; a
follow-up CT in which the lesion shrinks (responders) or stays/grows (non-responders) and
everything else differs only by noise and slight repositioning; survival with censoring.
Writes NIfTI files, ``cohort.csv`` (the cohort manifest) and ``simulation.json`` (truth).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import OutputPathError
from ..imaging import write_image
from ..imaging.labels import label_centroid
from ..imaging.recist import longest_axial_diameter_mm, recist_category
from ..outputs import atomic_folder
from ..progress import CancelFlag, ProgressCallback, Task
from ..reporting.cohort_montage import save_montage
from . import lesions, placement, template_lesions
from .acquisition import acquire_second_scan
from .backgrounds import Background, prepare_backgrounds
from .clinical_model import (
    bayes_accuracy,
    calibrate_intercept,
    draw_diameter,
    draw_survival,
    draw_variables,
    response_probability,
)
from .config import SimulationConfig
from .lesion_library import LesionLibrary, load_library

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


def _library_lesion(rng, library: LesionLibrary, config: SimulationConfig,
                    lungs: np.ndarray, lobes: np.ndarray, image: sitk.Image):
    """(a LIDC-shaped target lesion, its truth): diameter, placement, shape, orientation."""
    diameter = draw_diameter(rng, config.lesion_diameter_mm, config.lesion_diameter_distribution)
    kind = placement.draw_kind(rng, config.placement_probabilities)
    where = placement.place_lesion(rng, lungs, lobes, image, diameter / 2, kind)
    candidates = library.indices(config.lesion_split, config.lesion_min_malignancy)
    template = library.choose(rng, candidates, diameter)
    lesion = template_lesions.draw_lesion(rng, template, where.centre_lps, diameter,
                                          config.lesion_max_tilt_deg)
    if where.toward is not None:  # against the mediastinum or chest wall, whatever its shape
        where = placement.abut(rng, where, lungs, lambda centre: template_lesions.lesion_mask(
            replace(lesion, centre_lps=centre), image), diameter / 2)
        lesion = replace(lesion, centre_lps=where.centre_lps)
    truth = {"placement": where.kind, "lobe": where.lobe, "border_mm": where.border_mm,
             "target_diameter_mm": round(diameter, 1), "template_id": template.annotation_id,
             "template_patient": template.patient_id, "template_split": template.split,
             **{f"{k}_rating": template.ratings[k]
                for k in ("texture", "spiculation", "lobulation", "calcification",
                          "malignancy")}}
    return lesion, truth


def _followup_pattern(rng, config: SimulationConfig) -> str | None:
    """A responder's follow-up pattern (LIDC shapes): None, "cavitation" or "scar"."""
    draw = rng.random()
    if draw < config.cavitation_probability:
        return "cavitation"
    return "scar" if draw < config.cavitation_probability + config.scar_probability else None


def simulate_patient(index: int, background: Background, intercept: float,
                     config: SimulationConfig, rng: np.random.Generator,
                     library: LesionLibrary | None = None) -> dict:
    """Images and truth of one patient (nothing written). ``library``: the LIDC shapes
    (loaded when needed and not given)."""
    deformation = baseline_deformation(rng, background.ct, config)
    ct = deformation.apply(background.ct, False)
    lungs = deformation.apply(background.lungs, True)
    lobes = deformation.apply(background.lobes, True)
    vessels = deformation.apply(background.vessels, True)
    values = sitk.GetArrayFromImage(ct)
    lung_values = sitk.GetArrayFromImage(lungs) > 0

    real = background.tumour is not None and rng.random() < config.real_tumour_probability
    shape = lesion = None  # the blob, or the LIDC-shaped lesion
    lesion_truth = {"lesion_source": "real" if real else config.lesion_source}
    if real:
        tumour = deformation.apply(background.tumour, True)
        mask = sitk.GetArrayFromImage(tumour)
        centre = label_centroid(tumour)
        lesion_kind = "real"
    else:
        if background.tumour is not None:  # remove the real tumour before adding another
            lesions.erase(values, sitk.GetArrayFromImage(
                deformation.apply(background.tumour, True)) > 0, rng)
        if config.lesion_source == "blob":
            diameter = draw_diameter(rng, config.lesion_diameter_mm,
                                     config.lesion_diameter_distribution)
            centre = placement.deep_centre(rng, lung_values, ct, diameter / 2)
            shape = lesions.LesionShape(
                tuple(centre), diameter, bool(rng.random() < config.part_solid_probability),
                float(rng.uniform(0.4, 0.7)), float(rng.uniform(*config.irregularity)),
                int(rng.integers(2**31)))
            mask = lesions.render(values, ct, shape, 1.0, rng)
            lesion_kind = "part-solid" if shape.part_solid else "solid"
        else:
            library = library if library is not None else load_library()
            lesion, found = _library_lesion(rng, library, config, lung_values,
                                            sitk.GetArrayFromImage(lobes), ct)
            lesion_truth.update(found)
            clean = values.copy()  # the follow-up starts from the scan without the lesion
            mask = template_lesions.render(values, ct, lesion, 1.0, rng)
            centre, lesion_kind = lesion.centre_lps, lesion.kind
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
    elif shape is not None:
        lesions.erase(follow, mask > 0, rng)
        follow_mask = lesions.render(follow, ct, shape, scale, rng, density, halo)
    else:
        pattern = _followup_pattern(rng, config) if responder else None
        if pattern == "cavitation" and not template_lesions.cavity_possible(lesion, scale):
            pattern = None
        follow = clean.copy()
        follow_mask = template_lesions.render(follow, ct, lesion, scale, rng, density, halo,
                                              pattern)
        lesion_truth["followup_pattern"] = pattern
    new_lesions = 0
    if satellites:
        for _ in range(int(rng.integers(1, 3))):
            offset = rng.normal(0, 1, 3)
            offset *= rng.uniform(15, 30) / np.linalg.norm(offset)
            point = tuple(np.array(centre) + offset)
            index = ct.TransformPhysicalPointToIndex(point)
            inside_image = all(0 <= i < n for i, n in zip(index, ct.GetSize(), strict=True))
            if inside_image and lung_values[index[2], index[1], index[0]]:
                size = float(rng.uniform(3, 6))
                if lesion is None:
                    small = lesions.LesionShape(point, size, False, 0.5, 0.1,
                                                int(rng.integers(2**31)))
                    lesions.render(follow, ct, small, 1.0, rng)
                else:
                    candidates = library.indices(config.lesion_split,
                                                 config.lesion_min_malignancy)
                    small = template_lesions.draw_lesion(
                        rng, library.choose(rng, candidates, size), point, size)
                    template_lesions.render(follow, ct, small, 1.0, rng)
                new_lesions += 1

    # Same HU shift for both scans; independent noise. The follow-up is either scanned again
    # as real ones are (another position, breathing state, scan range and grid: see
    # acquisition.py; aligning it is the cohort path's job) or, as before, on the baseline's
    # grid slightly repositioned (already registered).
    shift = rng.uniform(-config.hu_shift, config.hu_shift)
    sigma = rng.uniform(*config.noise_hu)
    baseline_values = values + shift + rng.normal(0, sigma, values.shape)
    landmarks = None
    if config.second_scan == "realistic":
        scan = acquire_second_scan(_to_image(follow + shift, ct, sitk.sitkFloat32), lungs,
                                   rng, config.acquisition,
                                   labels={"tumour": _to_image(follow_mask, ct,
                                                               sitk.sitkUInt8)})
        followup_ct, follow_mask_image = scan.image, scan.labels["tumour"]
        landmarks = scan.landmarks(lungs, LANDMARKS_PER_PATIENT, rng)
        followup_centre = tuple(float(v) for v in scan.true_mapping([centre])[0])
        acquisition_truth = {"second_scan": "realistic", **scan.parameters}
    else:
        reposition = Deformation(_rigid(rng, ct, config.repositioning_deg,
                                        config.repositioning_mm))
        follow_image = reposition.apply(_to_image(follow, ct, sitk.sitkFloat32), False)
        followup_ct = _to_image(sitk.GetArrayFromImage(follow_image) + shift +
                                rng.normal(0, sigma, values.shape), ct)
        follow_mask_image = reposition.apply(_to_image(follow_mask, ct, sitk.sitkUInt8), True)
        acquisition_truth = {"second_scan": "same-grid"}
        followup_centre = tuple(centre)
    followup_mm = longest_axial_diameter_mm(follow_mask_image)
    months, event, hazard = draw_survival(config.clinical.survival, rng, variables, responder)
    return {
        "images": {
            "baseline_ct": _to_image(baseline_values, ct),
            "followup_ct": followup_ct,
            "tumour_mask": baseline_mask,
            "followup_tumour_mask": follow_mask_image,
            "lobes_mask": lobes,
            "vessels_mask": vessels,
        },
        "centre": centre, "variables": variables, "responder": responder,
        "truth": {
            "background": background.name, "lesion": lesion_kind, **lesion_truth,
            "response_probability": round(probability, 4), "diameter_change": round(change, 4),
            "new_lesions": new_lesions, "hazard_per_month": round(hazard, 5),
            "density_change_hu": round(density, 1), "halo": halo is not None,
            "noise_sd_hu": round(sigma, 2), "hu_shift": round(shift, 2),
            "acquisition": acquisition_truth,
        },
        "landmarks": landmarks, "followup_centre": followup_centre,
        "survival": (months, event),
        "diameters": (baseline_mm, followup_mm),
        "recist": recist_category(baseline_mm, followup_mm, new_lesions > 0),
    }


def _write_landmarks(path: Path, landmarks: np.ndarray) -> None:
    """(N, 2, 3) baseline / true follow-up points as CSV, for measuring alignment error."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["baseline_x", "baseline_y", "baseline_z",
                         "followup_x", "followup_y", "followup_z"])
        writer.writerows(np.round(landmarks.reshape(-1, 6), 3).tolist())


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """(N, 2, 3) landmarks written by the simulator (baseline point, true follow-up point)."""
    values = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return values.reshape(-1, 2, 3)


MANIFEST_COLUMNS = (
    "patient_id", "baseline_ct", "followup_ct", "tumour_x", "tumour_y", "tumour_z",
    "tumour_mask", "followup_tumour_mask", "lobes_mask", "vessels_mask",
    "age", "sex", "race", "cea", "anc", "alc", "nlr", "aec", "amc", "pdl1",
    "response", "survival_months", "event", "recist", "baseline_diameter_mm",
    "followup_diameter_mm", "followup_registered",
)
LANDMARKS_PER_PATIENT = 200
LANDMARKS_NAME = "landmarks.csv"  # per patient: baseline point -> true follow-up point, LPS mm


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
    library = None
    if config.lesion_source == "lidc":
        task.report(0.05, "preparing the lesion shapes")
        library = load_library(progress=task.sub(0.05, 0.1).callback())
    intercept = calibrate_intercept(config.clinical.response, config.responder_rate,
                                    config.lesion_diameter_mm, seed=config.seed,
                                    distribution=config.lesion_diameter_distribution)
    rows, truths, followup_centres = [], [], {}
    with atomic_folder(output, overwrite) as staging:
        for index in range(config.n_patients):
            task.report(0.1 + 0.9 * index / config.n_patients,
                        f"patient {index + 1}/{config.n_patients}")
            rng = np.random.default_rng([config.seed, index])
            background = backgrounds[int(rng.integers(len(backgrounds)))]
            patient = simulate_patient(index, background, intercept, config, rng, library)
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
                       followup_diameter_mm=round(patient["diameters"][1], 1),
                       followup_registered=str(patient["landmarks"] is None).lower())
            if patient["landmarks"] is not None:
                _write_landmarks(folder / LANDMARKS_NAME, patient["landmarks"])
            rows.append(row)
            followup_centres[pid] = patient["followup_centre"]
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

        save_montage(staging, rows, staging / "montage.png", followup_centres)
    task.report(1.0, "cohort written")
    return output / MANIFEST_NAME
