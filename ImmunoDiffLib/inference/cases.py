"""One case, or a whole cohort manifest, through the pipeline into case folders.

Per case, into ``<output>/<case>/`` (written as a whole, atomically): ``followup_ct.nii.gz``
(full baseline geometry), ``followup_crop.nii.gz``, ``uncertainty_crop.nii.gz``,
``lobes.nii.gz``, ``vessels.nii.gz``, ``predictions.json`` and ``report.png``. A cohort run
adds ``predictions.csv``; cases whose folder is complete are skipped, so a killed run resumes
where it stopped; under torchrun each rank takes every N-th case.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch.distributed as dist

from ..anatomy.from_files import anatomy_from_files
from ..cohort import load_cohort
from ..errors import OutputPathError, TumourPointError
from ..imaging import label_centroid, read_ct, read_image, write_image
from ..outputs import atomic_folder, atomic_output
from ..progress import CancelFlag, ProgressCallback, Task
from ..reporting.case_report import save_case_report
from ..train.distributed import init_world
from .pipeline import ImmunoDiffPipeline, Result
from .sampling import SamplingOptions

PREDICTIONS_NAME = "predictions.json"
CSV_COLUMNS = ("patient_id", "response_probability", "response_probability_sd",
               "predicted_responder", "survival_risk", "survival_risk_sd", "recist",
               "baseline_lesion_ml", "followup_lesion_ml", "lesion_volume_change",
               "baseline_diameter_mm", "followup_diameter_mm")


def write_case(result: Result, folder: str | os.PathLike, case_id: str,
               overwrite: bool = False) -> Path:
    """Write every output of one case into ``folder`` (all or nothing)."""
    folder = Path(folder)
    with atomic_folder(folder, overwrite) as staging:
        write_image(result.followup_ct, staging / "followup_ct.nii.gz")
        write_image(result.baseline_crop, staging / "baseline_crop.nii.gz")
        write_image(result.followup_crop, staging / "followup_crop.nii.gz")
        write_image(result.uncertainty_crop, staging / "uncertainty_crop.nii.gz")
        write_image(result.anatomy.lobes, staging / "lobes.nii.gz")
        write_image(result.anatomy.vessels, staging / "vessels.nii.gz")
        for name, scenario in result.scenarios.items():
            write_image(scenario.followup_crop, staging / f"followup_crop_if_{name}.nii.gz")
        save_case_report(result, staging / "report.png", title=f"ImmunoDiff: {case_id}")
        (staging / PREDICTIONS_NAME).write_text(json.dumps(
            {"patient_id": case_id, **result.summary()}, indent=2), encoding="utf-8")
    return folder


def predict_case(pipeline: ImmunoDiffPipeline, ct_path, clinical, output, *, point=None,
                 mask_path=None, case_id: str = "case", options: SamplingOptions | None = None,
                 progress: ProgressCallback | None = None, cancel: CancelFlag = None,
                 overwrite: bool = False, allow_outside_lungs: bool = False,
                 scenarios: bool = False, lobes_path=None, vessels_path=None) -> dict:
    output = Path(output)
    if output.exists() and not overwrite:
        raise OutputPathError(f"Output '{output}' exists already; choose another folder or "
                              "allow overwriting.")
    ct = read_ct(ct_path)
    mask = None if mask_path is None else read_image(mask_path)
    if point is None:
        if mask is None:
            raise TumourPointError("Give a tumour point (x y z, LPS mm) or a tumour mask.")
        point = label_centroid(mask, source=f"tumour mask '{mask_path}'")
    anatomy = (None if lobes_path is None and vessels_path is None
               else anatomy_from_files(ct, lobes_path, vessels_path))
    result = pipeline.run(ct, clinical, point, options, progress, cancel, allow_outside_lungs,
                          scenarios=scenarios, tumour_mask=mask, anatomy=anatomy)
    write_case(result, output, case_id, overwrite)
    return {"patient_id": case_id, **result.summary()}


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def predict_cohort(pipeline: ImmunoDiffPipeline, manifest, output,
                   options: SamplingOptions | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelFlag = None) -> Path:
    """Predict every case of a cohort manifest; return the path of ``predictions.csv``."""
    cases = load_cohort(manifest)  # every row checked before any work
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rank, world = _rank()
    mine = [c for i, c in enumerate(cases) if i % world == rank]
    task = Task(progress, cancel)
    for index, case in enumerate(mine):
        folder = output / case.patient_id
        task.report(index / max(len(mine), 1), f"case {case.patient_id} "
                                               f"({index + 1}/{len(mine)})")
        if (folder / PREDICTIONS_NAME).is_file():
            continue  # done in an earlier run
        ct = read_ct(case.baseline_ct)
        mask = read_image(case.tumour_mask) if case.tumour_mask else None
        point = case.tumour_point or label_centroid(mask)
        result = pipeline.run(ct, case.clinical, point, options,
                              task.sub(index / len(mine), (index + 1) / len(mine)).callback(),
                              cancel, tumour_mask=mask)
        write_case(result, folder, case.patient_id, overwrite=True)
    task.report(1.0, "cohort done")
    if world > 1:
        init_world()
        dist.barrier()
        if rank != 0:
            return output / "predictions.csv"
    return write_predictions_csv(output, [c.patient_id for c in cases])


def write_predictions_csv(output: Path, patient_ids: list[str]) -> Path:
    """Collect the finished cases' predictions.json into predictions.csv (in manifest order)."""
    rows = []
    for pid in patient_ids:
        path = output / pid / PREDICTIONS_NAME
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            rows.append({k: data.get(k) for k in CSV_COLUMNS})
    with atomic_output(output / "predictions.csv", overwrite=True, suffix=".csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return output / "predictions.csv"
