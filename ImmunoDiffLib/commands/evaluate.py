"""``immunodiff evaluate``: the command line over the evaluation protocols.

    immunodiff evaluate --cohort cohort.csv -o evaluation [--protocol cv|lobo|fair]
                        [--folds 5] [--scale 1.0] [--baselines ResNet-50 Swin ...]
                        [--methods NAME ...] [--paper-sizes] [--bootstrap 1000]
                        [--sampling-steps 10]
                        [--budget KEY=STEPS ...] [--budgets budgets.json]
                        [--curve KEY=S1,S2,... ...] [--curve-tolerance 0.02]

``cv``: stratified k-fold cross-validation (the paper's Tables 1-3); ``lobo``: leave one
background CT out; ``fair``: learning curves choose each method's budget, then both, side by
side (``evaluate/fair_protocol.py``). The cohort needs follow-up CTs, responses and survival
(a simulated cohort has them all, and each patient's background).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..errors import SettingError
from ..evaluate.budgets import parse_budgets, parse_curves, read_budgets_file, with_budgets
from ..evaluate.config import DEMO, IMAGE_BASELINES, CurveSettings, EvaluationConfig
from ..evaluate.fair_protocol import check_fair_settings, run_fair_evaluation
from ..evaluate.harness import run_background_evaluation, run_evaluation
from ..evaluate.learning_curve import applicable_curves
from ..evaluate.methods import check_methods
from ..progress import CancelFlag
from .options import add_progress_and_cancel

TITLE = "Evaluating"
PROTOCOLS = ("cv", "lobo", "fair")


def add_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="cross-validate ImmunoDiff and the baselines (the paper's Tables 1-3)")
    evaluate.add_argument("--cohort", type=Path, required=True,
                          help="cohort manifest (CSV) with follow-ups and outcomes")
    evaluate.add_argument("-o", "--output", type=Path, required=True,
                          help="output folder (a stopped run resumes there)")
    evaluate.add_argument("--protocol", choices=PROTOCOLS, default="cv",
                          help="cv: k-fold cross-validation; lobo: leave one background out; "
                               "fair: learning curves choose the budgets, then cv and lobo")
    evaluate.add_argument("--folds", type=int, default=DEMO.n_folds)
    evaluate.add_argument("--seed", type=int, default=DEMO.seed)
    evaluate.add_argument("--scale", type=float, default=1.0,
                          help="multiply every training step count and learning-curve budget "
                               "(e.g. 0.1 for a dry run)")
    evaluate.add_argument("--baselines", nargs="*", choices=IMAGE_BASELINES,
                          default=list(IMAGE_BASELINES), help="image baselines to include")
    evaluate.add_argument("--methods", nargs="+", metavar="NAME",
                          help="only these Table 1 methods (names as in the table)")
    evaluate.add_argument("--paper-sizes", action="store_true",
                          help="full-size baseline networks (hours on a CPU)")
    evaluate.add_argument("--bootstrap", type=int, default=DEMO.bootstrap_repeats,
                          help="bootstrap resamples of the confidence intervals")
    evaluate.add_argument("--sampling-steps", type=int, default=DEMO.sampling_steps,
                          help="DDIM steps of each Table 3 synthesis (one per test patient "
                               "and variant)")
    evaluate.add_argument("--budget", action="append", metavar="KEY=STEPS",
                          help="training steps per fold of one budget key: 1A, 1B, 1C, 2, "
                               "heads, diffusion or an image method (e.g. 'ViT-B/16 + "
                               "clinical=200'); repeat for several; not curved under fair")
    evaluate.add_argument("--budgets", type=Path, metavar="FILE",
                          help="the budgets.json of a learning-curve run (fair's "
                               "curves/budgets.json)")
    evaluate.add_argument("--curve", action="append", metavar="KEY=S1,S2,...",
                          help="fair: a learning curve's budgets (keys 2, heads or an image "
                               "method); given, only these curves run")
    evaluate.add_argument("--curve-tolerance", type=float,
                          default=CurveSettings().tolerance,
                          help="fair: a budget is the smallest within this of its curve's "
                               "best held-out AUC")
    add_progress_and_cancel(evaluate)


def evaluation_config(args) -> EvaluationConfig:
    if args.folds < 2:
        raise SettingError(f"--folds must be at least 2, got {args.folds}.")
    if args.scale <= 0:
        raise SettingError(f"--scale must be positive, got {args.scale}.")
    if args.bootstrap < 1:
        raise SettingError(f"--bootstrap must be at least 1, got {args.bootstrap}.")
    if args.sampling_steps < 1:
        raise SettingError(f"--sampling-steps must be at least 1, got {args.sampling_steps}.")
    config = replace(DEMO, n_folds=args.folds, seed=args.seed,
                     image_baselines=tuple(args.baselines), paper_sizes=args.paper_sizes,
                     bootstrap_repeats=args.bootstrap, sampling_steps=args.sampling_steps,
                     methods=tuple(args.methods) if args.methods else None)
    check_methods(config)
    return config.scaled(args.scale) if args.scale != 1.0 else config


def budget_overrides(args, config: EvaluationConfig) -> dict[str, int]:
    """--budgets FILE, then --budget KEY=STEPS (which wins), every key and value checked."""
    overrides = read_budgets_file(args.budgets, config) if args.budgets else {}
    overrides.update(parse_budgets(args.budget, config))
    return overrides


def curve_settings(args, config: EvaluationConfig) -> CurveSettings:
    if args.protocol != "fair" and args.curve:
        raise SettingError(f"--curve applies to --protocol fair, not {args.protocol!r}.")
    if not 0.0 <= args.curve_tolerance < 1.0:
        raise SettingError(f"--curve-tolerance must be in [0, 1), got {args.curve_tolerance}.")
    defaults = CurveSettings(tolerance=args.curve_tolerance)
    if args.curve:
        return replace(defaults, budgets=parse_curves(args.curve, config))
    defaults = applicable_curves(defaults, config)  # only the methods this run has
    return defaults.scaled(args.scale) if args.scale != 1.0 else defaults


def run(args, progress=None, cancel: CancelFlag = None) -> dict:
    config = evaluation_config(args)
    overrides = budget_overrides(args, config)
    curves = curve_settings(args, config)
    if args.protocol == "fair":
        check_fair_settings(config, curves)
        summary = run_fair_evaluation(args.cohort, args.output, config, curves, overrides,
                                      progress, cancel)
        printed = {k: summary[k] for k in ("patients", "responders", "backgrounds", "budgets",
                                           "budget_source", "tables", "seconds")}
        printed["learning_curves"] = summary["curves"]["figure"]
        return json.loads(json.dumps(printed, default=str))
    config = with_budgets(config, overrides)
    evaluate = run_background_evaluation if args.protocol == "lobo" else run_evaluation
    summary = evaluate(args.cohort, args.output, config, progress, cancel)
    printed = {k: summary[k] for k in ("patients", "responders", "folds", "seconds",
                                       "figures")}
    printed["tables"] = [str(args.output / f"table{i}.md") for i in (1, 2, 3)]
    return json.loads(json.dumps(printed, default=str))
