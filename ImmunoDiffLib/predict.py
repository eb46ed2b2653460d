"""Writing predictions: one case, or a whole cohort manifest (resumable, shardable).

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

from .anatomy import BACKENDS
from .cohort import load_cohort
from .errors import OutputPathError, TumourPointError
from .imaging import label_centroid, read_ct, read_image, write_image
from .inference.pipeline import ImmunoDiffPipeline, Result
from .inference.precision import PRECISIONS
from .inference.sampling import SAMPLERS, SamplingOptions
from .outputs import atomic_folder, atomic_output
from .progress import CancelFlag, ProgressCallback, Task
from .reporting.case_report import save_case_report
from .settings import DEFAULT_BUNDLE_ENV, default_bundle

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
        from .train.distributed import init_world

        init_world()
        import torch.distributed as dist

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


def add_predict_parser(commands) -> None:
    parser = commands.add_parser("predict", help="synthesize follow-ups and predict response")
    parser.add_argument("--bundle", type=Path, help="model bundle folder (default: the demo "
                        f"bundle, or ${DEFAULT_BUNDLE_ENV})")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ct", type=Path, help="one baseline CT (file or DICOM folder)")
    source.add_argument("--cohort", type=Path, help="cohort manifest (CSV) for batch work")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--point", type=float, nargs=3, metavar=("X", "Y", "Z"),
                       help="tumour point, LPS mm (Slicer shows RAS: negate X and Y)")
    where.add_argument("--mask", type=Path, help="tumour mask; its centroid is the point")
    parser.add_argument("--clinical", type=Path, help="clinical variables as a JSON object")
    parser.add_argument("--lobes", type=Path, help="lobe label map (1-5, on the CT's grid) to "
                        "use instead of segmenting; needs --vessels")
    parser.add_argument("--vessels", type=Path, help="vessel label map (0/1, on the CT's grid)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="one clinical variable, e.g. --var age=64 --var pdl1=60")
    parser.add_argument("--id", default="case", help="case name (single CT)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    parser.add_argument("--steps", type=int, default=SamplingOptions().steps)
    parser.add_argument("--samples", type=int, default=SamplingOptions().samples,
                        help="generated follow-ups (2+ give the uncertainty map)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance on the clinical variables (1 = off)")
    parser.add_argument("--scenario-guidance", type=float,
                        default=SamplingOptions().scenario_guidance,
                        help="--scenarios: push each scenario's follow-up away from the "
                             "opposite one (1 = off)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="auto",
                        help="arithmetic of the denoising steps: bf16 autocast, full fp32, or "
                        "auto: bf16 where the device multiplies bf16 in hardware (AMX, "
                        "AVX512-BF16, a recent GPU), else fp32")
    parser.add_argument("--anatomy", default="auto", choices=BACKENDS, help="anatomy backend")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allow-outside-lungs", action="store_true")
    parser.add_argument("--scenarios", action="store_true",
                        help="also synthesize the follow-ups 'if it responds' and 'if it does "
                        "not' (two more sampling runs; single CT)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--progress-lines", action="store_true",
                        help="report progress as lines 'PROGRESS <fraction> <message>' on "
                             "stdout (for a program that runs this one, e.g. 3D Slicer)")
    parser.add_argument("--cancel-file", type=Path,
                        help="stop (keeping no partial output) as soon as this file exists")


def anatomy_from_files(ct, lobes_path, vessels_path):
    """An :class:`~ImmunoDiffLib.anatomy.segment.Anatomy` from lobe and vessel label maps on
    the CT's grid (e.g. a segmentation the user corrected, exported by the Slicer module)."""
    import numpy as np
    import SimpleITK as sitk

    from .anatomy.segment import Anatomy
    from .errors import ImmunoDiffError

    if lobes_path is None or vessels_path is None:
        raise ImmunoDiffError("--lobes and --vessels go together: give both label maps.")
    maps = {}
    for name, path in (("lobes", lobes_path), ("vessels", vessels_path)):
        image = read_image(path)
        same = (image.GetSize() == ct.GetSize()
                and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
                and np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4))
        if not same:
            raise ImmunoDiffError(f"--{name} '{path}' is not on the CT's grid (size "
                                  f"{image.GetSize()} vs {ct.GetSize()}); export it on the CT.")
        maps[name] = sitk.Cast(image, sitk.sitkUInt8)
    values = sitk.GetArrayViewFromImage(maps["lobes"])
    if values.max() > 5 or not values.any():
        raise ImmunoDiffError(f"--lobes '{lobes_path}' must hold lobe labels 1-5 (found "
                              f"{int(values.min())}..{int(values.max())}).")
    lungs = sitk.Cast(maps["lobes"] > 0, sitk.sitkUInt8)
    source = f"label maps '{Path(lobes_path).name}', '{Path(vessels_path).name}'"
    return Anatomy(lungs=lungs, lobes=maps["lobes"], vessels=sitk.Cast(maps["vessels"] > 0,
                                                                      sitk.sitkUInt8),
                   lobes_backend=source, vessels_backend=source,
                   warnings=[f"Lobes and vessels taken from the {source}."])


def _clinical_from_args(args) -> dict:
    values = json.loads(args.clinical.read_text(encoding="utf-8")) if args.clinical else {}
    for item in args.var:
        name, separator, value = item.partition("=")
        if not separator:
            from .errors import ClinicalValueError

            raise ClinicalValueError([f"--var {item!r} is not NAME=VALUE (e.g. age=64)."])
        values[name.strip()] = value.strip()
    return values


def run_predict(args, progress=None, cancel: CancelFlag = None) -> dict:
    from .errors import BundleError

    bundle = args.bundle or default_bundle()
    if bundle is None:
        raise BundleError("No model bundle: pass --bundle, set IMMUNODIFF_BUNDLE, or train one "
                          "(immunodiff train all ... --bundle DIR).")
    options = SamplingOptions(sampler=args.sampler, steps=args.steps, samples=args.samples,
                              seed=args.seed, guidance_scale=args.guidance,
                              scenario_guidance=args.scenario_guidance,
                              bf16=PRECISIONS[args.precision])
    if args.ct:
        clinical = _clinical_from_args(args)  # checked before the model is loaded
        from .clinical import parse_clinical

        parse_clinical(clinical)
    pipeline = ImmunoDiffPipeline(bundle, device=args.device, anatomy_backend=args.anatomy)
    if args.cohort:
        return {"predictions": str(predict_cohort(pipeline, args.cohort, args.output, options,
                                                  progress, cancel))}
    return predict_case(pipeline, args.ct, clinical, args.output, point=args.point,
                        mask_path=args.mask, case_id=args.id, options=options,
                        progress=progress, cancel=cancel, overwrite=args.overwrite,
                        allow_outside_lungs=args.allow_outside_lungs,
                        scenarios=args.scenarios, lobes_path=args.lobes,
                        vessels_path=args.vessels)
