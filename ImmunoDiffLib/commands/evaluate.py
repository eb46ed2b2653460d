"""``immunodiff evaluate``: the command line over :func:`run_evaluation`.

    immunodiff evaluate --cohort cohort.csv -o evaluation [--folds 5] [--scale 1.0]
                        [--baselines ResNet-50 Swin ...] [--paper-sizes]
The cohort needs follow-up CTs, responses and survival (a simulated cohort has them all).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..evaluate.config import DEMO, IMAGE_BASELINES, EvaluationConfig
from ..evaluate.harness import run_evaluation
from ..progress import CancelFlag
from .options import add_progress_and_cancel

TITLE = "Evaluating"


def add_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="cross-validate ImmunoDiff and the baselines (the paper's Tables 1-3)")
    evaluate.add_argument("--cohort", type=Path, required=True,
                          help="cohort manifest (CSV) with follow-ups and outcomes")
    evaluate.add_argument("-o", "--output", type=Path, required=True,
                          help="output folder (a stopped run resumes there)")
    evaluate.add_argument("--folds", type=int, default=DEMO.n_folds)
    evaluate.add_argument("--seed", type=int, default=DEMO.seed)
    evaluate.add_argument("--scale", type=float, default=1.0,
                          help="multiply every training step count (e.g. 0.1 for a dry run)")
    evaluate.add_argument("--baselines", nargs="*", choices=IMAGE_BASELINES,
                          default=list(IMAGE_BASELINES), help="image baselines to include")
    evaluate.add_argument("--paper-sizes", action="store_true",
                          help="full-size baseline networks (hours on a CPU)")
    evaluate.add_argument("--bootstrap", type=int, default=DEMO.bootstrap_repeats,
                          help="bootstrap resamples of the confidence intervals")
    add_progress_and_cancel(evaluate)


def evaluation_config(args) -> EvaluationConfig:
    config = replace(DEMO, n_folds=args.folds, seed=args.seed,
                     image_baselines=tuple(args.baselines), paper_sizes=args.paper_sizes,
                     bootstrap_repeats=args.bootstrap)
    return config.scaled(args.scale) if args.scale != 1.0 else config


def run(args, progress=None, cancel: CancelFlag = None) -> dict:
    summary = run_evaluation(args.cohort, args.output, evaluation_config(args), progress,
                             cancel)
    printed = {k: summary[k] for k in ("patients", "responders", "folds", "seconds",
                                       "figures")}
    printed["tables"] = [str(args.output / f"table{i}.md") for i in (1, 2, 3)]
    return json.loads(json.dumps(printed, default=str))
