"""Seconds, peak memory and lobe accuracy of the classic (offline) anatomy backend on the real
sample CTs (lung2, the TotalSegmentator chest CT, LIDC-IDRI-0001).

Each case runs in a fresh process so its peak resident memory is its own. Where reference lobe
labels sit beside a CT (LIDC-IDRI-0001's TotalSegmentator labels, ``--lidc-labels``), the Dice
of each offline lobe against them is printed too: of the backend's lobes (the vessel tree) and
of the geometric division they refine (the seconds are the whole backend's, both included).
``--analysis-spacing 0`` runs the methods on the CT's own grid (as before the analysis grid
existed), for comparison; the default is the library's (``anatomy/analysis_grid.py``).
Usage: python benchmarks/anatomy_classic.py [--repeats N] [--lidc-labels FILE]
                                            [--analysis-spacing MM]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASE_SCRIPT = """
import json, resource, sys, time
import SimpleITK as sitk
from ImmunoDiffLib.anatomy import analysis_grid, segment_anatomy
if sys.argv[3] != "default":
    analysis_grid.ANALYSIS_SPACING_MM = float(sys.argv[3])
from ImmunoDiffLib.sample_data import fetch_sample_data
path = fetch_sample_data()[sys.argv[1]]
ct = sitk.ReadImage(str(path))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    anatomy = segment_anatomy(ct, "classic", cache=False)
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import numpy as np
from ImmunoDiffLib.anatomy.classic import approximate_lobes
dice = {}
if len(sys.argv) > 4:  # reference labels: TotalSegmentator's 10 LUL, 11 LLL, 12 RUL, 13 RML, 14 RLL
    reference = sitk.GetArrayFromImage(sitk.ReadImage(sys.argv[4]))
    for method, image in ((anatomy.lobes_method, anatomy.lobes),
                          ("geometric", approximate_lobes(anatomy.lungs))):
        lobes = sitk.GetArrayFromImage(image)
        dice[method] = {}
        for ours, theirs, name in ((1, 10, "LUL"), (2, 11, "LLL"), (3, 12, "RUL"), (4, 13, "RML"),
                                   (5, 14, "RLL")):
            a, b = lobes == ours, reference == theirs
            dice[method][name] = round(2 * float((a & b).sum()) / max(1, a.sum() + b.sum()), 3)
print(json.dumps({"size": ct.GetSize(), "spacing": [round(s, 3) for s in ct.GetSpacing()],
                  "seconds": min(times), "peak_mb": peak, "ct_loaded_mb": before,
                  "lobes_method": anatomy.lobes_method,
                  "lungs_ml": float(sitk.GetArrayViewFromImage(anatomy.lungs).sum()
                                    * np.prod(ct.GetSpacing()) / 1000), "dice": dice}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lidc-labels", default=str(
        Path(__file__).resolve().parents[2] / "shared" / "data" / "lidc"
        / "LIDC-IDRI-0001_totalseg_labels.nii.gz"), help="reference lobes of LIDC-IDRI-0001")
    parser.add_argument("--analysis-spacing", default="default",
                        help="in-plane mm of the analysis grid (0: the CT's own grid)")
    args = parser.parse_args()
    print(f"{'case':<16} {'grid':<16} {'spacing mm':<20} {'seconds':>8} {'peak RSS MB':>12} "
          f"{'lungs ml':>9}  {'lobes by':<12} lobe Dice vs reference")
    for key in ("lung2_image", "totalseg_chest", "lidc_ct"):
        labels = [args.lidc_labels] if key == "lidc_ct" and Path(args.lidc_labels).is_file() \
            else []
        done = subprocess.run([sys.executable, "-c", CASE_SCRIPT, key, str(args.repeats),
                               args.analysis_spacing, *labels], capture_output=True,
                              text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        grid = "x".join(str(v) for v in row["size"])
        spacing = "x".join(str(v) for v in row["spacing"])
        print(f"{key:<16} {grid:<16} {spacing:<20} {row['seconds']:>8.1f} "
              f"{row['peak_mb']:>12.0f} {row['lungs_ml']:>9.0f}  {row['lobes_method']:<12} "
              + ("; ".join(f"{method}: " + " ".join(f"{k} {v:.2f}" for k, v in values.items())
                           + f" (mean {sum(values.values()) / 5:.3f})"
                           for method, values in row["dice"].items()) or "-"))


if __name__ == "__main__":
    main()
