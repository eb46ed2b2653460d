"""Target registration error (TRE), tumour volume and cost of the follow-up alignment on real
chest CTs with a known transform.

For each real sample CT (lung2, the TotalSegmentator chest CT, LIDC-IDRI-0001) a follow-up is
made as in the simulator: the tumour (lung2's label, LIDC's nodule by >= 2 of its 4 readers;
none on the TotalSegmentator CT) shrunk to 60 % of its diameter, then scanned again with
``simulation.acquisition`` (repositioning up to 15 mm / 4 degrees, breathing 5-20 mm at the
bases, another scan range, grid and noise). The follow-up is aligned with no alignment, rigid,
affine and deformable; TRE is measured on 300 random lung landmarks whose true follow-up points
are known; the tumour's volume after the warp against its volume in the follow-up scan.
Each alignment runs in a fresh process, so its peak memory (this process and elastix's child
together) is its own.

Usage: python benchmarks/alignment.py [--cases lung2,totalseg_chest,lidc] [--seed 7]
       [--modes none,rigid,affine,deformable]
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PAIR_SCRIPT = """
import json, sys
import numpy as np, SimpleITK as sitk
from ImmunoDiffLib.anatomy import segment_anatomy
from ImmunoDiffLib.imaging import read_ct, read_image
from ImmunoDiffLib.imaging.labels import label_centroid
from ImmunoDiffLib.sample_data import fetch_sample_data
from ImmunoDiffLib.simulation import lesions
from ImmunoDiffLib.simulation.acquisition import acquire_second_scan
case, seed, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = fetch_sample_data()
image = {"lung2": "lung2_image", "totalseg_chest": "totalseg_chest", "lidc": "lidc_ct"}[case]
ct = sitk.Clamp(read_ct(files[image]), sitk.sitkFloat32, lowerBound=-1024)
tumour = None
if case == "lung2":
    tumour = sitk.Cast(read_image(files["lung2_tumour"]) > 0, sitk.sitkUInt8)
elif case == "lidc" and len(sys.argv) > 4:
    tumour = sitk.Cast(read_image(sys.argv[4]) >= 2, sitk.sitkUInt8)
lungs = segment_anatomy(ct, "classic").lungs
rng = np.random.default_rng(seed)
values = sitk.GetArrayFromImage(ct)
labels = {}
if tumour is not None:
    centre = label_centroid(tumour)
    lesions.erase(values, sitk.GetArrayViewFromImage(tumour) > 0, rng)
    shrunk = lesions.scale_mask(tumour, centre, 0.6)
    scaled = sitk.GetArrayFromImage(lesions.scale_content(ct, centre, 0.6))
    inside = sitk.GetArrayViewFromImage(shrunk) > 0
    values[inside] = scaled[inside]
    labels["tumour"] = shrunk
    sitk.WriteImage(tumour, folder + "/tumour.nii.gz")
follow = sitk.GetImageFromArray(values)
follow.CopyInformation(ct)
scan = acquire_second_scan(follow, lungs, rng, labels=labels)
sitk.WriteImage(ct, folder + "/baseline.nii.gz")
sitk.WriteImage(lungs, folder + "/lungs.nii.gz")
sitk.WriteImage(scan.image, folder + "/followup.nii.gz")
if labels:
    sitk.WriteImage(scan.labels["tumour"], folder + "/followup_tumour.nii.gz")
np.save(folder + "/landmarks.npy", scan.landmarks(lungs, 300, rng))
print(json.dumps({"baseline_size": ct.GetSize(), "followup_size": scan.image.GetSize(),
                  **scan.parameters}))
"""

ALIGN_SCRIPT = """
import json, os, resource, sys, time
import numpy as np, SimpleITK as sitk
from ImmunoDiffLib.alignment import align_followup
folder, mode = sys.argv[1], sys.argv[2]
baseline = sitk.ReadImage(folder + "/baseline.nii.gz")
followup = sitk.ReadImage(folder + "/followup.nii.gz")
lungs = sitk.ReadImage(folder + "/lungs.nii.gz")
has_tumour = os.path.exists(folder + "/tumour.nii.gz")
tumour = sitk.ReadImage(folder + "/tumour.nii.gz") if has_tumour else None
follow_tumour = sitk.ReadImage(folder + "/followup_tumour.nii.gz") if has_tumour else None
landmarks = np.load(folder + "/landmarks.npy")
start = time.perf_counter()
if mode == "none":
    mapped, change, quality, seconds = landmarks[:, 0], None, {}, {}
else:
    result = align_followup(baseline, followup, mode, tumour_mask=tumour,
                            followup_tumour_mask=follow_tumour)
    mapped = result.map_points(landmarks[:, 0])
    change, quality, seconds = (result.quality.tumour_volume_change, result.quality.as_dict(),
                                result.seconds)
elapsed = time.perf_counter() - start
tre = np.linalg.norm(mapped - landmarks[:, 1], axis=1)
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
print(json.dumps({"tre_mean": float(tre.mean()), "tre_p95": float(np.percentile(tre, 95)),
                  "tre_max": float(tre.max()), "tumour_change": change, "seconds": elapsed,
                  "stages": seconds, "peak_mb": peak, "quality": quality}))
"""


def _run(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {args}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="lung2,totalseg_chest,lidc")
    parser.add_argument("--modes", default="none,rigid,affine,deformable")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lidc-nodule", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data" /
                        "lidc" / "LIDC-IDRI-0001_nodule_reader_count.nii.gz",
                        help="LIDC-IDRI-0001's reader-count nodule mask (optional)")
    args = parser.parse_args()
    rows = []
    for case in args.cases.split(","):
        with tempfile.TemporaryDirectory() as folder:
            extra = [str(args.lidc_nodule)] if case == "lidc" and args.lidc_nodule.is_file() \
                else []
            pair = _run(PAIR_SCRIPT, case, str(args.seed), folder, *extra)
            print(f"# {case}: baseline {pair['baseline_size']}, follow-up "
                  f"{pair['followup_size']} at {pair['spacing_mm']} mm; rotation "
                  f"{pair['rotation_deg']} deg, translation {pair['translation_mm']} mm, "
                  f"breathing {pair['breathing_cc_mm']} / {pair['breathing_ap_mm']} mm",
                  flush=True)
            for mode in args.modes.split(","):
                result = _run(ALIGN_SCRIPT, folder, mode)
                rows.append((case, mode, result))
                print(f"#   {mode}: {json.dumps(result)}", flush=True)
    print("\n| CT | alignment | TRE mean mm | TRE p95 mm | TRE max mm | tumour volume under "
          "the warp | seconds | peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for case, mode, r in rows:
        change = "–" if r["tumour_change"] is None else f"{r['tumour_change']:+.1%}"
        seconds = "–" if mode == "none" else f"{r['seconds']:.0f}"
        peak = "–" if mode == "none" else f"{r['peak_mb']:.0f}"
        print(f"| {case} | {mode} | {r['tre_mean']:.2f} | {r['tre_p95']:.2f} | "
              f"{r['tre_max']:.2f} | {change} | {seconds} | {peak} |")
    deformable = [r for _, m, r in rows if m == "deformable"]
    if deformable:
        mean = np.mean([r["tre_mean"] for r in deformable])
        print(f"\ndeformable over all CTs: TRE mean {mean:.2f} mm, worst p95 "
              f"{max(r['tre_p95'] for r in deformable):.2f} mm")


if __name__ == "__main__":
    main()
