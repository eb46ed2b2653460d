"""The demo behind the README's main command, on the embedded sample CTs:

1. crop the lung2 CT around its labelled tumour on the model's grid (crop, label, PNG);
2. lobes and vessels of every sample CT (PNG overlays);
3. the whole prediction on lung2 — synthesized follow-up, response, survival risk, report —
   with the demo bundle (``Resources/demo_bundle`` or ``IMMUNODIFF_BUNDLE``). Where no bundle
   is shipped, a QUICK bundle is trained once on a small simulated cohort (a few minutes,
   cached) and everything it produces is labelled as untrained quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk
import torch

from .anatomy import segment_anatomy
from .bundle import BundleInfo, save_bundle
from .clinical import fit_standardisation
from .cohort import load_cohort
from .datasets import CohortDataset, PreprocessConfig
from .imaging import CropSpec, crop_around_point, label_centroid, read_ct, read_image, write_image
from .inference.cases import write_case
from .inference.pipeline import ImmunoDiffPipeline
from .models import ImmunoDiffModel, ModelConfig
from .models.config import Stage
from .outputs import check_output_path
from .progress import ProgressCallback, Task
from .reporting.figures import save_anatomy_overview, save_crop_overview
from .sample_data import SAMPLE_CASES, sample_case_paths
from .settings import cache_dir, default_bundle
from .simulation import SimulationConfig, simulate_cohort
from .train import TrainConfig, train_stage

QUICK_BUNDLE_VERSION = 1
DEMO_CLINICAL = {"age": 64, "sex": "male", "race": "white", "cea": 6.1, "anc": 4.6,
                 "alc": 1.4, "aec": 0.21, "amc": 0.55, "pdl1": 70}


def quick_bundle_config():
    return ModelConfig(channels=(16, 32, 32), num_head_channels=(0, 0, 16), norm_num_groups=8,
                       context_dim=32, control_channels=8, vl_widths=(8, 16), vl_embed_dim=32,
                       vl_projection_dim=16, adapter_dim=32, adapter_heads=2,
                       use_flash_attention=True)


def train_quick_bundle(folder: Path, cohort: Path | None = None, steps: int = 80,
                       progress=None) -> Path:
    """A small model trained for a few minutes on a small simulated cohort: demonstrates the
    whole path, predicts nothing reliable. Labelled "untrained quality" in its notes."""
    task = Task(progress)
    work = folder.parent / f".{folder.name}.work"
    if cohort is None:
        cohort = work / "cohort" / "cohort.csv"
        if not cohort.is_file():
            # follow-ups on the baseline grid: this quick bundle is made in minutes, with
            # no time to align eight follow-ups (the shipped bundle's cohort is realistic)
            simulate_cohort(cohort.parent, SimulationConfig(n_patients=8, seed=1,
                                                            responder_rate=0.4,
                                                            second_scan="same-grid"),
                            task.sub(0.0, 0.4).callback(), overwrite=True)
    cases = load_cohort(cohort)
    standardisation = fit_standardisation(c.clinical for c in cases)
    crop = CropSpec(size=(48, 48, 8), spacing=(6.0, 6.0, 2.0))
    dataset = CohortDataset(cases, PreprocessConfig(crop=crop), standardisation=standardisation)
    torch.manual_seed(0)
    model = ImmunoDiffModel(quick_bundle_config())
    stages = list(Stage)
    for index, stage in enumerate(stages):
        part = task.sub(0.4 + 0.6 * index / len(stages), 0.4 + 0.6 * (index + 1) / len(stages))
        train_stage(model, dataset, TrainConfig(stage=stage, steps=steps, learning_rate=1e-3,
                                                checkpoint_every=steps),
                    work / "runs" / stage, part.callback())
    info = BundleInfo(model=model.config, crop=crop, standardisation=standardisation,
                      training={"quick_demo_bundle": QUICK_BUNDLE_VERSION, "steps": steps,
                                "cohort": "simulated, 8 patients, seed 1"},
                      notes="QUICK DEMO BUNDLE, UNTRAINED QUALITY: a few minutes of training "
                            "on 8 simulated patients. Demonstrates the workflow only.")
    return save_bundle(folder, model, info, overwrite=True)


def demo_bundle(progress=None) -> tuple[Path, bool]:
    """(bundle path, is it the quick untrained-quality one)."""
    shipped = default_bundle()
    if shipped is not None:
        return shipped, False
    quick = cache_dir() / f"quick_demo_bundle_v{QUICK_BUNDLE_VERSION}"
    if not (quick / "bundle.json").is_file():
        train_quick_bundle(quick, progress=progress)
    return quick, True


def _predict_demo(ct, point, output: Path, name: str, progress, tumour_mask=None) -> dict:
    task = Task(progress, start=0.3, end=1.0)
    bundle, quick = demo_bundle(task.sub(0.0, 0.6).callback())
    pipeline = ImmunoDiffPipeline(bundle)
    result = pipeline.run(ct, DEMO_CLINICAL, point, progress=task.sub(0.6, 1.0).callback(),
                          tumour_mask=tumour_mask)
    if quick:
        result.warnings.insert(0, "QUICK DEMO BUNDLE, UNTRAINED QUALITY: predictions and the "
                                  "synthesized scan demonstrate the workflow only.")
    folder = output / f"{name}_prediction"
    check_output_path(folder, overwrite=True)
    label = f"{name} (demo clinical values)"
    if quick:
        label += " - QUICK DEMO BUNDLE, UNTRAINED QUALITY"
    write_case(result, folder, label, overwrite=True)
    summary = json.loads((folder / "predictions.json").read_text(encoding="utf-8"))
    summary["bundle"] = str(bundle)
    summary["quick_untrained_bundle"] = quick
    return summary


def run_demo(output: Path, case_name: str = "lung2",
             progress: ProgressCallback | None = None) -> dict:
    """The demo on the embedded sample CTs: crop around the tumour (crop, label and PNG), and
    lobes + vessels of every sample CT as PNG overlays (offline backends unless weights are
    installed), then the prediction on the chosen case."""
    progress = Task(progress).callback()  # a no-op without a callback
    progress(0.0, "sample data")
    case, image_path, label_path = sample_case_paths(case_name)
    ct = read_ct(image_path)
    label = read_image(label_path) if label_path else None
    point = (label_centroid(label, source=str(label_path)) if label is not None
             else case.tumour_point_lps)
    spec = CropSpec()
    progress(0.1, "cropping")
    crop = crop_around_point(ct, point, spec, source=f"sample CT '{case.name}'")
    output.mkdir(parents=True, exist_ok=True)
    files = {"crop": write_image(crop.image, output / f"{case.name}_crop.nii.gz", True)}
    summary = {"case": case.name, "centre_lps": [round(v, 2) for v in point],
               "crop_size": list(spec.size), "crop_spacing_mm": list(spec.spacing),
               "padded_fraction": round(crop.padded_fraction, 4), "warnings": crop.warnings}
    label_crop = None
    if label is not None:
        label_crop = crop_around_point(label, point, spec, is_label=True).image
        files["tumour_crop"] = write_image(
            sitk.Cast(label_crop, sitk.sitkUInt8), output / f"{case.name}_crop_tumour.nii.gz",
            True)
        summary["tumour_voxels_in_crop"] = int((sitk.GetArrayFromImage(label_crop) > 0).sum())
        summary["tumour_voxels_in_ct"] = int((sitk.GetArrayViewFromImage(label) > 0).sum())
    files["crop_png"] = save_crop_overview(
        ct, crop.image, point, output / f"{case.name}_crop.png", label_crop, spec,
        title=f"ImmunoDiff demo: sample CT '{case.name}', crop "
              f"{spec.size[0]}x{spec.size[1]}x{spec.size[2]} @ "
              f"{spec.spacing[0]}x{spec.spacing[1]}x{spec.spacing[2]} mm (research use only)")
    others = [name for name in SAMPLE_CASES if name != case.name]
    summary["anatomy"] = {}
    for step, name in enumerate([case.name, *others]):
        share = 0.1 + 0.2 * step / (1 + len(others))
        progress(share, f"lobes and vessels of '{name}'")
        this_case, this_path, _ = sample_case_paths(name)
        this_ct = ct if name == case.name else read_ct(this_path)
        this_point = point if name == case.name else this_case.tumour_point_lps
        anatomy = segment_anatomy(this_ct, "auto")
        files[f"{name}_anatomy_png"] = save_anatomy_overview(
            this_ct, anatomy, output / f"{name}_anatomy.png", this_point)
        summary["anatomy"][name] = {"lobes_backend": anatomy.lobes_backend,
                                    "vessels_backend": anatomy.vessels_backend,
                                    "lobes_approximate": anatomy.lobes_approximate}
    summary["prediction"] = _predict_demo(ct, point, output, case.name, progress, label)
    files["prediction_report"] = output / f"{case.name}_prediction" / "report.png"
    summary["files"] = {k: str(v) for k, v in files.items()}
    progress(1.0, "done")
    return summary


