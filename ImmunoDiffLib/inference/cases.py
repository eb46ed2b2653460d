"""One case, or a whole cohort manifest, through the pipeline into case folders.

Per case, into ``<output>/<case>/`` (written as a whole, atomically): ``followup_ct.nii.gz``
(full baseline geometry), ``followup_crop.nii.gz``, ``uncertainty_crop.nii.gz``,
``lobes.nii.gz``, ``vessels.nii.gz``, ``predictions.json`` and ``report.png``; with the real
follow-up given (``--followup``, a manifest's ``followup_ct``) also
``real_followup_aligned.nii.gz`` and ``real_followup_crop.nii.gz``; with ``dicom`` (``predict
--dicom``) the folder ``dicom/`` (:mod:`ImmunoDiffLib.dicom_export.write`). A cohort run
adds ``predictions.csv``; cases whose folder is complete are skipped, so a killed run resumes
where it stopped; under torchrun each rank takes every N-th case.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk
import torch.distributed as dist

from ..anatomy.from_files import anatomy_from_files
from ..cohort import load_cohort
from ..errors import BackendUnavailableError, OutputPathError, TumourPointError
from ..imaging import label_centroid, read_ct, read_image, write_image
from ..outputs import atomic_folder, atomic_output
from ..progress import CancelFlag, ProgressCallback, Task
from ..reporting.case_report import save_case_report
from ..train.distributed import init_world
from .followup_comparison import RealFollowup, compare_with_real_followup
from .pipeline import ImmunoDiffPipeline, Result
from .sampling import SamplingOptions

if TYPE_CHECKING:
    from ..dicom_export.write import DicomBaseline

PREDICTIONS_NAME = "predictions.json"
CSV_COLUMNS = ("patient_id", "response_probability", "response_probability_sd",
               "predicted_responder", "survival_risk", "survival_risk_sd", "recist",
               "baseline_lesion_ml", "followup_lesion_ml", "lesion_volume_change",
               "baseline_diameter_mm", "followup_diameter_mm", "out_of_distribution",
               "out_of_distribution_reasons")


def _csv_row(data: dict) -> dict:
    """One case's predictions.json as a predictions.csv row: the out-of-distribution flag as
    true/false and its reasons joined by "; "."""
    row = {k: data.get(k) for k in CSV_COLUMNS}
    flag = data.get("out_of_distribution") or {}
    row["out_of_distribution"] = ("" if "flagged" not in flag
                                  else "true" if flag["flagged"] else "false")
    row["out_of_distribution_reasons"] = "; ".join(flag.get("reasons", []))
    return row


def write_case(result: Result, folder: str | os.PathLike, case_id: str,
               overwrite: bool = False, real_followup: RealFollowup | None = None,
               dicom: DicomBaseline | None = None) -> Path:
    """Write every output of one case into ``folder`` (all or nothing); with the real
    follow-up compared, also that follow-up aligned (full geometry and crop) and its
    measurements under "real_followup" in predictions.json; with ``dicom`` (the baseline
    and its identity), the DICOM outputs in ``dicom/``."""
    folder = Path(folder)
    with atomic_folder(folder, overwrite) as staging:
        if real_followup is not None:
            write_image(_hu_int16(real_followup.aligned_ct),
                        staging / "real_followup_aligned.nii.gz")
            write_image(real_followup.crop, staging / "real_followup_crop.nii.gz")
        write_image(result.followup_ct, staging / "followup_ct.nii.gz")
        write_image(result.baseline_crop, staging / "baseline_crop.nii.gz")
        write_image(result.followup_crop, staging / "followup_crop.nii.gz")
        write_image(result.uncertainty_crop, staging / "uncertainty_crop.nii.gz")
        write_image(result.anatomy.lobes, staging / "lobes.nii.gz")
        write_image(result.anatomy.vessels, staging / "vessels.nii.gz")
        for name, scenario in result.scenarios.items():
            write_image(scenario.followup_crop, staging / f"followup_crop_if_{name}.nii.gz")
        save_case_report(result, staging / "report.png", title=f"ImmunoDiff: {case_id}",
                         real_followup=real_followup)
        summary = {"patient_id": case_id, **result.summary()}
        if real_followup is not None:
            summary["real_followup"] = real_followup.summary()
        (staging / PREDICTIONS_NAME).write_text(json.dumps(summary, indent=2),
                                                encoding="utf-8")
        if dicom is not None:
            dicom.write(result, staging, case_id, staging / "report.png")
    return folder


def _dicom_baseline(ct_path, ct: sitk.Image, case_id: str,
                    mask: sitk.Image | None) -> DicomBaseline:
    """The baseline and its identity for the DICOM outputs, read before any work."""
    try:  # deferred: highdicom, an optional dependency, is needed only for DICOM outputs
        from ..dicom_export.write import dicom_baseline
    except ImportError as error:
        raise BackendUnavailableError(
            f"DICOM outputs need the highdicom package ({error}); install it with "
            "'pip install highdicom' or leave out --dicom.") from error
    return dicom_baseline(ct_path, ct, case_id, mask)


def _hu_int16(image: sitk.Image) -> sitk.Image:
    return sitk.Cast(sitk.Clamp(image, lowerBound=-1024, upperBound=3071), sitk.sitkInt16)


def _compare(pipeline: ImmunoDiffPipeline, result: Result, ct, followup_path,
             task: Task, registered: bool = False) -> RealFollowup | None:
    if followup_path is None:
        return None
    task.report(0.0, "reading the registered real follow-up" if registered
                else "aligning the real follow-up")
    return compare_with_real_followup(result, ct, read_ct(followup_path), pipeline.info.window,
                                      task.callback(), task.cancel, registered=registered)


def predict_case(pipeline: ImmunoDiffPipeline, ct_path, clinical, output, *, point=None,
                 mask_path=None, case_id: str = "case", options: SamplingOptions | None = None,
                 progress: ProgressCallback | None = None, cancel: CancelFlag = None,
                 overwrite: bool = False, allow_outside_lungs: bool = False,
                 scenarios: bool = False, lobes_path=None, vessels_path=None,
                 followup_path=None, recist_scenarios: bool = False,
                 dicom: bool = False) -> dict:
    """``dicom``: also write the DICOM outputs (``dicom/``), in the input's study when it is
    a DICOM series."""
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
    baseline = _dicom_baseline(ct_path, ct, case_id, mask) if dicom else None
    anatomy = (None if lobes_path is None and vessels_path is None
               else anatomy_from_files(ct, lobes_path, vessels_path))
    task = Task(progress, cancel)
    share = 0.7 if followup_path is not None else 1.0
    result = pipeline.run(ct, clinical, point, options, task.sub(0.0, share).callback(),
                          cancel, allow_outside_lungs, scenarios=scenarios, tumour_mask=mask,
                          anatomy=anatomy, recist_scenarios=recist_scenarios)
    real = _compare(pipeline, result, ct, followup_path, task.sub(share, 1.0))
    write_case(result, output, case_id, overwrite, real, dicom=baseline)
    return {"patient_id": case_id, **result.summary(),
            **({} if real is None else {"real_followup": real.summary()})}


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def predict_cohort(pipeline: ImmunoDiffPipeline, manifest, output,
                   options: SamplingOptions | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelFlag = None,
                   dicom: bool = False) -> Path:
    """Predict every case of a cohort manifest; return the path of ``predictions.csv``.
    ``dicom``: also write each case's DICOM outputs."""
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
        baseline = (_dicom_baseline(case.baseline_ct, ct, case.patient_id, mask) if dicom
                    else None)
        share = task.sub(index / len(mine), (index + 1) / len(mine))
        compare = case.followup_ct is not None
        result = pipeline.run(ct, case.clinical, point, options,
                              share.sub(0.0, 0.7 if compare else 1.0).callback(), cancel,
                              tumour_mask=mask)
        real = _compare(pipeline, result, ct, case.followup_ct, share.sub(0.7, 1.0),
                        registered=case.followup_registered)
        write_case(result, folder, case.patient_id, overwrite=True, real_followup=real,
                   dicom=baseline)
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
            rows.append(_csv_row(data))
    with atomic_output(output / "predictions.csv", overwrite=True, suffix=".csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return output / "predictions.csv"
