"""The shipped bundle on real chest CTs it never trained on: does it keep the anatomy, fill a
vanished tumour with lung, obey its scenarios, tell one story, and say when it is unsure?

    python benchmarks/real_ct_checks.py [--bundle Resources/demo_bundle] [--cases a,b]
        [--report-case "lung2 hilar (simulated)"] [-o OUT] [--json FILE]

Cases: lung2 with its labelled tumour, LIDC-IDRI-0001 with its nodule (readers >= 2), and
simulated central (against the mediastinum), juxtapleural and 85 mm tumours drawn into both
CTs (benchmarks/lesion_segmentation.py's cases). Each whole, and cut to a reduced field of
view as targeted reconstructions come (a 200 mm in-plane square with the tumour 40 mm from
its lateral edge). Three clinical profiles each (average; favourable: PD-L1 95 %, NLR 1.5;
unfavourable: PD-L1 0 %, NLR 22, CEA 40), with both response scenarios. The tumour is given
as its mask (the reference), as a user who drew it would.

Per run, on the crop: outside the tumour dilated 9 mm, mean |synthesized - baseline| (HU)
and the share of voxels changing tissue class (above/below -400 HU), for the follow-up and
both scenarios; in the "if it responds" follow-up, the share of the old tumour's voxels
below -950 HU (air); whether heads and synthesized RECIST agree, whether each scenario's
RECIST is the scenario's, P within [0.02, 0.98], and the out-of-distribution flag. A run
passes when it is coherent, obedient and not extreme, or flagged with a reason. The case
folder of ``--report-case`` (average profile, whole CT) is written to OUT to look at.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lesion_segmentation import LIDC_READERS, load_cases  # noqa: E402

from ImmunoDiffLib.imaging import crop_around_point  # noqa: E402

PROFILES = {
    "average": {"age": 65, "sex": "male", "race": "white", "cea": 4.0, "anc": 5.0,
                "alc": 1.6, "nlr": 3.1, "aec": 0.15, "amc": 0.5, "pdl1": 40},
    "favourable": {"age": 65, "sex": "male", "race": "white", "cea": 2.0, "anc": 3.6,
                   "alc": 2.4, "nlr": 1.5, "aec": 0.3, "amc": 0.4, "pdl1": 95},
    "unfavourable": {"age": 65, "sex": "male", "race": "white", "cea": 40.0, "anc": 11.0,
                     "alc": 0.5, "nlr": 22.0, "aec": 0.05, "amc": 1.0, "pdl1": 0},
}
OUTSIDE_MM = 9.0
TISSUE_HU = -400.0
AIR_HU = -950.0
FOV_MM = 200.0
FOV_EDGE_MM = 40.0


def reduced_field_of_view(ct: sitk.Image, mask: sitk.Image, point) -> tuple:
    """(CT, mask) cut in-plane to a FOV_MM square with the tumour FOV_EDGE_MM from the
    square's lateral edge (the side away from the image's centre)."""
    centre = ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()])
    side = 1.0 if point[0] > centre[0] else -1.0  # LPS x: toward the patient's left
    fov_centre = np.array(point[:2]) + np.array([side * (FOV_MM / 2 - FOV_EDGE_MM), 0.0])
    low = fov_centre - FOV_MM / 2
    high = fov_centre + FOV_MM / 2
    corners = [ct.TransformPhysicalPointToContinuousIndex((x, y, point[2]))
               for x in (low[0], high[0]) for y in (low[1], high[1])]
    index_low = np.maximum(np.floor(np.min(corners, axis=0)[:2]), 0).astype(int)
    index_high = np.minimum(np.ceil(np.max(corners, axis=0)[:2]),
                            np.array(ct.GetSize()[:2]) - 1).astype(int)
    size = [int(v) for v in index_high - index_low + 1] + [ct.GetSize()[2]]
    start = [int(v) for v in index_low] + [0]
    return (sitk.RegionOfInterest(ct, size, start), sitk.RegionOfInterest(mask, size, start))


def _xyz(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)


def crop_measures(result, mask: sitk.Image, spec) -> dict:
    """Outside-tumour change and tissue flips of the follow-up and each scenario; air left in
    the old tumour by the "if it responds" follow-up (``spec``: the bundle's crop)."""
    spec_crop = result.baseline_crop
    tumour = _xyz(crop_around_point(mask, result.tumour_point_lps, spec,
                                    is_label=True).image) > 0
    spacing = np.array(spec_crop.GetSpacing())
    distance = ndimage.distance_transform_edt(~tumour, sampling=spacing)
    outside = distance > OUTSIDE_MM
    baseline = _xyz(spec_crop)
    shown = {"follow-up": result.followup_crop,
             **{f"if {n}": r.followup_crop for n, r in result.scenarios.items()}}
    out = {}
    for name, image in shown.items():
        values = _xyz(image)
        out[f"{name} outside MAE HU"] = float(np.abs(values - baseline)[outside].mean())
        out[f"{name} outside flips"] = float(((values > TISSUE_HU) != (baseline > TISSUE_HU))
                                             [outside].mean())
    if "responder" in result.scenarios and tumour.any():
        values = _xyz(result.scenarios["responder"].followup_crop)
        out["if responder: old tumour below -950"] = float((values[tumour] < AIR_HU).mean())
    return out


def verdict(summary: dict) -> tuple[bool, str]:
    """(passes, why) of one run."""
    flagged = summary["out_of_distribution"]["flagged"]
    p = summary["response_probability"]
    obeyed = all(s["obeyed"] is not False for s in summary["scenarios"].values())
    coherent = summary["agreement"] is not False
    good = coherent and obeyed and 0.02 <= p <= 0.98
    if good:
        return True, "coherent, obedient, P in range" + (" (flagged too)" if flagged else "")
    if flagged:
        return True, "flagged: " + "; ".join(summary["out_of_distribution"]["reasons"])[:140]
    problems = [w for w, bad in (("incoherent", not coherent), ("disobeyed", not obeyed),
                                 (f"P = {p:.3f}", not 0.02 <= p <= 0.98)) if bad]
    return False, ", ".join(problems) + " and not flagged"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--profiles", default=",".join(PROFILES),
                        help="comma-separated profiles (default: all three)")
    parser.add_argument("--report-case", default="lung2 hilar (simulated)")
    parser.add_argument("-o", "--output", type=Path, default=Path("real_ct_checks"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--lidc-readers", type=Path, default=LIDC_READERS)
    args = parser.parse_args()

    from ImmunoDiffLib.inference.cases import write_case
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions

    pipeline = ImmunoDiffPipeline(args.bundle, anatomy_backend="classic")
    names = set(args.cases.split(",")) if args.cases else None
    rows = []
    print("| case | field of view | profile | P | follow-up | if responder | if not | "
          "outside MAE HU (fu / r / n) | outside flips % (fu / r / n) | old tumour < -950 % "
          "| flagged | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in load_cases(args.lidc_readers, names):
        variants = [("whole", case.ct, case.reference)]
        variants.append(("reduced", *reduced_field_of_view(case.ct, case.reference,
                                                           case.point_lps)))
        for fov, ct, mask in variants:
            for profile in args.profiles.split(","):
                clinical = PROFILES[profile]
                started = time.perf_counter()
                result = pipeline.run(ct, clinical, case.point_lps, SamplingOptions(),
                                      scenarios=True, tumour_mask=mask,
                                      allow_outside_lungs=True)
                summary = result.summary()
                measures = crop_measures(result, mask, pipeline.info.crop)
                passes, why = verdict(summary)
                row = {"case": case.name, "fov": fov, "profile": profile,
                       "seconds": round(time.perf_counter() - started, 1),
                       "passes": passes, "why": why, **measures,
                       **{k: summary[k] for k in ("response_probability", "recist",
                                                  "followup_scenario", "agreement",
                                                  "scenarios", "out_of_distribution",
                                                  "baseline_diameter_mm")}}
                rows.append(row)
                scen = summary["scenarios"]
                print(f"| {case.name} | {fov} | {profile} | {summary['response_probability']:.3f} "
                      f"| {summary['recist']} | {scen['responder']['recist']} "
                      f"| {scen['non-responder']['recist']} "
                      f"| {measures['follow-up outside MAE HU']:.1f} / "
                      f"{measures['if responder outside MAE HU']:.1f} / "
                      f"{measures['if non-responder outside MAE HU']:.1f} "
                      f"| {100 * measures['follow-up outside flips']:.2f} / "
                      f"{100 * measures['if responder outside flips']:.2f} / "
                      f"{100 * measures['if non-responder outside flips']:.2f} "
                      f"| {100 * measures.get('if responder: old tumour below -950', 0):.1f} "
                      f"| {'yes' if summary['out_of_distribution']['flagged'] else 'no'} "
                      f"| {'PASS' if passes else 'FAIL'}: {why} |", flush=True)
                if case.name == args.report_case and fov == "whole" and profile == "average":
                    folder = write_case(result, args.output / "report_case", case.name,
                                        overwrite=True)
                    print(f"(report of {case.name}: {folder / 'report.png'})")
    keys = ("follow-up outside MAE HU", "if responder outside MAE HU",
            "if non-responder outside MAE HU")
    flips = [k.replace("MAE HU", "flips") for k in keys]
    totals = {"runs": len(rows), "passing": sum(r["passes"] for r in rows),
              "max outside MAE HU": max(max(r[k] for k in keys) for r in rows),
              "max outside flips": max(max(r[k] for k in flips) for r in rows),
              "max old tumour below -950": max(r.get("if responder: old tumour below -950", 0)
                                               for r in rows),
              "flagged": sum(r["out_of_distribution"]["flagged"] for r in rows)}
    print(json.dumps(totals, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "rows": rows}, indent=1,
                                        default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
