"""Report PNGs of held-out patients on the background the demo bundle never saw (LIDC-IDRI-0001),
with the "if it responds / if it does not" scenarios: the README's generator figures.

    .venv/bin/python scripts/make_scenario_figures.py [--work .demo_bundle_work] [-o docs/images]

Takes the first responder and the first non-responder of the demo bundle script's unseen-
background cohort (simulated on LIDC-IDRI-0001, seed 303), runs the prediction exactly as
``immunodiff predict --scenarios --followup`` does (demo bundle, offline anatomy, the
patient's clinical variables, tumour point and mask from the cohort, its simulated follow-up
scan aligned and shown beside the synthesized one) and copies each case's report.png to
``<output>/unseen_<patient>_report.png``; prints each case's predictions beside its truth.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / ".demo_bundle_work")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--bundle", type=Path, default=REPO / "Resources" / "demo_bundle")
    parser.add_argument("--samples", type=int, default=2)
    args = parser.parse_args()

    import train_demo_bundle as demo

    from ImmunoDiffLib.cohort import load_cohort
    from ImmunoDiffLib.inference.cases import predict_case
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline
    from ImmunoDiffLib.inference.sampling import SamplingOptions

    manifest, _ = demo.simulated_cohort(args.work / "unseen_cohort", demo.UNSEEN_COHORT)
    cases = load_cohort(manifest, require_followup=True, require_outcomes=True)
    chosen = [next(c for c in cases if c.response == label) for label in (1, 0)]
    pipeline = ImmunoDiffPipeline(args.bundle, anatomy_backend="auto")
    args.output.mkdir(parents=True, exist_ok=True)
    for case in chosen:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / case.patient_id
            summary = predict_case(pipeline, case.baseline_ct, case.clinical, folder,
                                   point=case.tumour_point, case_id=f"{case.patient_id} "
                                   "(unseen background)",
                                   options=SamplingOptions(samples=args.samples),
                                   scenarios=True, followup_path=case.followup_ct,
                                   mask_path=case.tumour_mask)
            target = args.output / f"unseen_{case.patient_id}_report.png"
            shutil.copyfile(folder / "report.png", target)
        truth = "responder" if case.response else "non-responder"
        print(f"{case.patient_id}: truly a {truth}; "
              + json.dumps({k: summary[k] for k in ("response_probability", "recist",
                                                     "followup_scenario", "agreement",
                                                     "scenarios", "out_of_distribution",
                                                     "real_followup")}))
        print(f"  -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
