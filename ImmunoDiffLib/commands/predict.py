"""``immunodiff predict``: synthesize the follow-up and predict the response of one CT, or of
every case of a cohort manifest, into case folders (:mod:`ImmunoDiffLib.inference.cases`).

    immunodiff predict --ct CT --point X Y Z --var age=64 ... -o DIR
    immunodiff predict --cohort cohort.csv -o DIR
    immunodiff predict ... --dicom      (also OUT/dicom/: DICOM CT, SEG, SR)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..anatomy import BACKENDS
from ..clinical import parse_clinical
from ..errors import BundleError, ClinicalValueError
from ..inference.cases import predict_case, predict_cohort
from ..inference.pipeline import ImmunoDiffPipeline
from ..inference.precision import PRECISIONS
from ..inference.sampling import SAMPLERS, SamplingOptions
from ..progress import CancelFlag
from ..settings import default_bundle
from .options import add_bundle, add_overwrite, add_precision, add_progress_and_cancel

TITLE = "Predicting"


def add_parser(commands) -> None:
    parser = commands.add_parser("predict", help="synthesize follow-ups and predict response")
    add_bundle(parser)
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
    add_precision(parser)
    parser.add_argument("--anatomy", default="auto", choices=BACKENDS, help="anatomy backend")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allow-outside-lungs", action="store_true")
    parser.add_argument("--followup", type=Path,
                        help="the patient's real follow-up CT (file or DICOM folder): aligned "
                             "to the baseline and shown and measured beside the synthesized "
                             "one (a cohort manifest's followup_ct is used the same way)")
    parser.add_argument("--scenarios", action="store_true",
                        help="also show the follow-ups 'if it responds' and 'if it does not' "
                        "(the follow-up itself is the one the prediction chose; one more "
                        "sampling run; single CT)")
    parser.add_argument("--recist-scenarios", action="store_true",
                        help="also synthesize the follow-ups 'if it reaches CR / PR / SD / PD' "
                        "(a few sampling runs each; single CT)")
    parser.add_argument("--dicom", action="store_true",
                        help="also write DICOM outputs into OUT/dicom/ (per case with "
                        "--cohort): the synthesized follow-up as a derived CT series in the "
                        "input's study, lobes, vessels and tumour as DICOM SEG, the "
                        "predictions as DICOM SR, the report as Secondary Capture")
    add_overwrite(parser)
    add_progress_and_cancel(parser)


def _clinical_from_args(args) -> dict:
    values = json.loads(args.clinical.read_text(encoding="utf-8")) if args.clinical else {}
    for item in args.var:
        name, separator, value = item.partition("=")
        if not separator:
            raise ClinicalValueError([f"--var {item!r} is not NAME=VALUE (e.g. age=64)."])
        values[name.strip()] = value.strip()
    return values


def run(args, progress=None, cancel: CancelFlag = None) -> dict:
    bundle = args.bundle or default_bundle()
    if bundle is None:
        raise BundleError("No model bundle: pass --bundle, set IMMUNODIFF_BUNDLE, or train one "
                          "(immunodiff train all ... --bundle DIR).")
    options = SamplingOptions(sampler=args.sampler, steps=args.steps, samples=args.samples,
                              seed=args.seed, guidance_scale=args.guidance,
                              scenario_guidance=args.scenario_guidance,
                              bf16=PRECISIONS[args.precision])
    if args.ct:
        clinical = _clinical_from_args(args)
        parse_clinical(clinical)  # checked before the model is loaded
    pipeline = ImmunoDiffPipeline(bundle, device=args.device, anatomy_backend=args.anatomy)
    if args.cohort:
        return {"predictions": str(predict_cohort(pipeline, args.cohort, args.output, options,
                                                  progress, cancel, dicom=args.dicom))}
    return predict_case(pipeline, args.ct, clinical, args.output, point=args.point,
                        mask_path=args.mask, case_id=args.id, options=options,
                        progress=progress, cancel=cancel, overwrite=args.overwrite,
                        allow_outside_lungs=args.allow_outside_lungs,
                        scenarios=args.scenarios, recist_scenarios=args.recist_scenarios,
                        lobes_path=args.lobes,
                        vessels_path=args.vessels, followup_path=args.followup,
                        dicom=args.dicom)
