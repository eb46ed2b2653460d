"""``immunodiff align BASELINE FOLLOWUP -o DIR [--mode ...] [--tumour-mask M]
[--followup-tumour-mask M]``: the follow-up CT registered to the baseline (elastix), written as
``followup_aligned.nii.gz`` (baseline grid), ``displacement.nii.gz`` (LPS mm, the follow-up
point of baseline point p is p + d(p); on the registration grid: the baseline's extent and
axes at ~1.5 mm voxels, where the smooth field is exact under linear interpolation and the
file a tenth of the size; ``--full-grid-displacement`` for the baseline's own voxels),
``alignment.json`` (quality, timings) and ``alignment.png`` (before / after / checkerboard
around the tumour); with a follow-up tumour mask also ``followup_tumour_aligned.nii.gz``.
The folder appears only when complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..alignment import MODES, align_followup
from ..imaging import read_ct, read_image, write_image
from ..imaging.labels import label_centroid
from ..imaging.resample import resample_mask
from ..outputs import atomic_folder, check_output_path
from ..progress import Task
from ..reporting.alignment_figure import save_alignment_figure
from .options import add_overwrite, add_progress_and_cancel

TITLE = "Alignment"


def add_parser(commands) -> None:
    align = commands.add_parser("align", help="register a follow-up CT to its baseline")
    align.add_argument("baseline", type=Path, help="baseline CT file or DICOM folder")
    align.add_argument("followup", type=Path, help="follow-up CT file or DICOM folder")
    align.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    align.add_argument("--mode", choices=MODES, default="deformable",
                       help="rigid, affine, or deformable (rigid + B-spline on the lungs; "
                            "default)")
    align.add_argument("--tumour-mask", type=Path,
                       help="baseline tumour label map: kept out of the deformable metric so "
                            "a changed tumour is not registered away")
    align.add_argument("--followup-tumour-mask", type=Path,
                       help="follow-up tumour label map, warped onto the baseline too")
    align.add_argument("--full-grid-displacement", action="store_true",
                       help="write the displacement on the baseline's own voxels (large: "
                            "hundreds of MB for a 512 x 512 x 133 CT)")
    add_overwrite(align)
    add_progress_and_cancel(align)


def run(args, progress=None, cancel=None) -> dict:
    check_output_path(args.output, args.overwrite)
    task = Task(progress, cancel)
    baseline = read_ct(args.baseline)
    followup = read_ct(args.followup)
    tumour = (resample_mask(read_image(args.tumour_mask), baseline)
              if args.tumour_mask else None)
    followup_tumour = read_image(args.followup_tumour_mask) if args.followup_tumour_mask else None
    alignment = align_followup(baseline, followup, args.mode, tumour_mask=tumour,
                               followup_tumour_mask=followup_tumour,
                               progress=task.sub(0.0, 0.85).callback(), cancel=cancel)
    task.report(0.85, "writing the aligned follow-up")
    if tumour is not None and np.any(sitk.GetArrayViewFromImage(tumour)):
        point = label_centroid(tumour)
    else:
        size = np.array(baseline.GetSize())
        point = baseline.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    summary = alignment.summary()
    with atomic_folder(args.output, args.overwrite) as staging:
        aligned = sitk.Cast(sitk.Clamp(alignment.followup, lowerBound=-1024,
                                       upperBound=3071), sitk.sitkInt16)
        write_image(aligned, staging / "followup_aligned.nii.gz")
        task.report(0.9, "writing the displacement field")
        grid = baseline if args.full_grid_displacement else alignment.field
        write_image(alignment.displacement_on(grid), staging / "displacement.nii.gz")
        if alignment.followup_tumour is not None:
            write_image(alignment.followup_tumour, staging / "followup_tumour_aligned.nii.gz")
        save_alignment_figure(baseline, followup, alignment.followup, point,
                              staging / "alignment.png", summary["quality"])
        summary.update(baseline=str(args.baseline), followup=str(args.followup),
                       displacement_grid={"size": list(grid.GetSize()),
                                          "spacing_mm": list(grid.GetSpacing())},
                       figure_point_lps=[round(float(v), 2) for v in point])
        (staging / "alignment.json").write_text(json.dumps(summary, indent=2),
                                                encoding="utf-8")
    task.report(1.0, "aligned")
    return {**summary, "output": str(args.output)}
