"""Seconds and peak memory of the classic (offline) anatomy backend on the real sample CTs.

Each case runs in a fresh process so its peak resident memory is its own.
Usage: python benchmarks/anatomy_classic.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE_SCRIPT = """
import json, resource, sys, time
import SimpleITK as sitk
from ImmunoDiffLib.anatomy import segment_anatomy
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
print(json.dumps({"size": ct.GetSize(), "spacing": [round(s, 3) for s in ct.GetSpacing()],
                  "seconds": min(times), "peak_mb": peak, "ct_loaded_mb": before,
                  "lungs_ml": float(sitk.GetArrayViewFromImage(anatomy.lungs).sum()
                                    * __import__("numpy").prod(ct.GetSpacing()) / 1000)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{'case':<16} {'grid':<16} {'spacing mm':<20} {'seconds':>8} {'peak RSS MB':>12} "
          f"{'lungs ml':>9}")
    for key in ("lung2_image", "totalseg_chest"):
        done = subprocess.run([sys.executable, "-c", CASE_SCRIPT, key, str(args.repeats)],
                              capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        grid = "x".join(str(v) for v in row["size"])
        spacing = "x".join(str(v) for v in row["spacing"])
        print(f"{key:<16} {grid:<16} {spacing:<20} {row['seconds']:>8.1f} "
              f"{row['peak_mb']:>12.0f} {row['lungs_ml']:>9.0f}")


if __name__ == "__main__":
    main()
