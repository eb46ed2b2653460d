"""Time ``immunodiff simulate`` and summarise the cohort it writes, from the saved files.

Usage: python benchmarks/simulated_cohort.py [--n 40] [--seed 0] [--existing DIR]
The summary measures lesions from the saved masks (volume; RECIST longest axial diameter).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm, recist_category
from ImmunoDiffLib.simulation import SimulationConfig, simulate_cohort


def _volume_ml(path: Path) -> float:
    image = sitk.ReadImage(str(path))
    return float((sitk.GetArrayViewFromImage(image) > 0).sum() * np.prod(image.GetSpacing())
                 / 1000)


def summarise(manifest: Path) -> None:
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    folder = manifest.parent
    truth = {p["patient_id"]: p for p in
             json.loads((folder / "simulation.json").read_text(encoding="utf-8"))["patients"]}
    print(f"{'group':<15} {'n':>3} {'diam change median [min, max]':>32} "
          f"{'vol ratio median [min, max]':>30} {'vol below baseline':>19}  RECIST (measured)")
    for label, name in (("1", "responders"), ("0", "non-responders")):
        group = [r for r in rows if r["response"] == label]
        changes, ratios, categories = [], [], []
        for row in group:
            before = sitk.ReadImage(str(folder / row["tumour_mask"]))
            after = sitk.ReadImage(str(folder / row["followup_tumour_mask"]))
            d0, d1 = longest_axial_diameter_mm(before), longest_axial_diameter_mm(after)
            changes.append(d1 / d0 - 1)
            ratios.append(_volume_ml(folder / row["followup_tumour_mask"])
                          / _volume_ml(folder / row["tumour_mask"]))
            new_lesions = truth[row["patient_id"]]["new_lesions"] > 0
            categories.append(recist_category(d0, d1, new_lesions))
        counts = {c: categories.count(c) for c in ("CR", "PR", "SD", "PD") if c in categories}
        print(f"{name:<15} {len(group):>3} "
              f"{np.median(changes):>+9.0%} [{min(changes):+.0%}, {max(changes):+.0%}]{'':>9}"
              f"{np.median(ratios):>8.2f} [{min(ratios):.2f}, {max(ratios):.2f}]{'':>11}"
              f"{np.mean(np.array(ratios) < 1):>8.0%}            {counts}")
    months = np.array([float(r["survival_months"]) for r in rows])
    events = np.array([int(r["event"]) for r in rows])
    print(f"survival: median observed {np.median(months):.1f} months, events {events.mean():.0%}")
    for label, name in (("1", "responders"), ("0", "non-responders")):
        chosen = np.array([r["response"] == label for r in rows])
        print(f"  {name}: median observed {np.median(months[chosen]):.1f} months, "
              f"deaths {events[chosen].mean():.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--existing", type=Path, help="summarise this cohort folder instead")
    args = parser.parse_args()
    if args.existing:
        summarise(args.existing / "cohort.csv")
        return
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        manifest = simulate_cohort(Path(scratch) / "cohort",
                                   SimulationConfig(n_patients=args.n, seed=args.seed))
        seconds = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in manifest.parent.rglob("*")) / 2**20
        print(f"simulate --n {args.n} --seed {args.seed}: {seconds:.0f} s "
              f"({seconds / args.n:.1f} s per patient), {size_mb:.0f} MB written\n")
        summarise(manifest)


if __name__ == "__main__":
    main()
