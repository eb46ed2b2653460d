"""``immunodiff evaluate --protocol fair``: the paper's Table 1 with every method at its own
budget, in one resumable command.

1. Learning curves (``learning_curve``) on fold 0's training patients, a share held out: each
   curve key's held-out AUC and balanced accuracy against its steps, with the CPU seconds each
   budget cost; its budget is chosen where the curve flattens (``budgets.choose_budget``).
   Budgets given with ``--budget`` / ``--budgets`` are used as given and get no curve.
2. k-fold cross-validation (``harness``) of every method at those budgets: Tables 1-3 in
   ``cv/``, each fold's decision threshold chosen on its training patients, bootstrap CIs,
   CPU-minutes per fold.
3. Leave one background out at the same budgets: the same tables in ``lobo/`` (stage 1
   trained per fold without the held-out background).
4. The two side by side (``fair_tables``): ``table1``-``table3`` and ``fair.json``.

Output::

    protocol.json        the settings of the run; a resumed run must be given the same
    curves/              split, points, learning_curve.md/.csv, learning_curves.png,
                         budgets.json
    cv/, lobo/           the harness's layout (folds.json, predictions/, runs/, tables)
    table1.md/.csv, table2.md/.csv, table3.md/.csv, fair.json

Every part resumes: finished learning-curve points and (method, fold) results are stored and
skipped; progress and cancel reach every training step.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from ..errors import SettingError
from ..progress import CancelFlag, ProgressCallback, Task
from . import methods
from .budgets import current_budgets, with_budgets
from .compute import Stopwatch
from .config import DEMO, CurveSettings, EvaluationConfig
from .data import CohortTensors
from .fair_tables import write_fair_tables
from .folds import inner_split, read_backgrounds, save_folds
from .harness import (
    Stage1,
    cross_validation_folds,
    leave_one_background_out_folds,
    load_cohort_tensors,
    run_folds,
)
from .learning_curve import curve_keys, run_learning_curves
from .store import PREDICTIONS, write_json
from .summary import table1_methods, write_summary

PROTOCOL_FILE = "protocol.json"


def protocol_settings(config: EvaluationConfig, curves: CurveSettings,
                      overrides: dict) -> dict:
    """What a resumed run must share with the first: the folds, methods and budgets."""
    return json.loads(json.dumps({
        "seed": config.seed, "n_folds": config.n_folds, "methods": config.methods,
        "image_baselines": config.image_baselines, "paper_sizes": config.paper_sizes,
        "budgets_before_curves": current_budgets(config), "budget_overrides": overrides,
        "curves": {k: list(v) for k, v in curves.budgets.items()},
        "curve_tolerance": curves.tolerance,
        "curve_validation_fraction": curves.validation_fraction}, default=list))


def check_resume(output: Path, settings: dict) -> None:
    path = output / PROTOCOL_FILE
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(stored) | set(settings)
                         if stored.get(k) != settings.get(k))
        if changed:
            raise SettingError(f"'{output}' holds a run with other settings ({', '.join(changed)});"
                               " give the same settings to resume it, or a new output folder.")
    else:
        write_json(path, settings)


def _extra_methods(steps) -> list[str]:
    if steps is None:
        return []
    return [name for step in steps for kind, name in step.outputs
            if kind == PREDICTIONS and name not in table1_methods(DEMO)]


def run_fair_on(output: Path, tensors: CohortTensors, dataset, backgrounds: dict[str, str],
                config: EvaluationConfig, curves: CurveSettings, overrides: dict, task: Task,
                steps=None, runners=None) -> dict:
    """The fair protocol on a cohort in memory (see the module). ``overrides``: {key: steps}
    fixed budgets; ``steps`` / ``runners``: the fold steps and curve runners instead of the
    built-in ones (tests)."""
    clock = Stopwatch.started()
    output.mkdir(parents=True, exist_ok=True)
    check_resume(output, protocol_settings(config, curves, overrides))
    config = with_budgets(config, overrides)
    curves = CurveSettings(budgets={k: v for k, v in curves.budgets.items()
                                    if k not in overrides}, tolerance=curves.tolerance,
                           validation_fraction=curves.validation_fraction)
    cv_root, lobo_root = output / "cv", output / "lobo"
    cv_root.mkdir(exist_ok=True)
    folds = cross_validation_folds(cv_root, tensors, config)
    lobo_root.mkdir(exist_ok=True)
    lobo_folds = leave_one_background_out_folds(lobo_root, tensors, backgrounds)
    shared_stage1 = Stage1(dataset, config, cv_root)

    split_path = output / "curves" / "split.json"
    if split_path.is_file():
        split = json.loads(split_path.read_text(encoding="utf-8"))
    else:
        split = inner_split(folds[0], tensors.labels(folds[0]["train"]),
                            curves.validation_fraction, config.seed)
        split_path.parent.mkdir(parents=True, exist_ok=True)
        save_folds(split, split_path)
    curve = run_learning_curves(output / "curves", split, tensors, dataset, config, curves,
                                task.sub(0.0, 0.3), shared_stage1, runners) \
        if curves.budgets else {"budgets": {}, "chosen": {}, "points": [], "figure": None}
    chosen = {k: v for k, v in curve["budgets"].items() if k not in (runners or {})}
    config = with_budgets(config, chosen)
    shared_stage1.config = config
    source = {key: ("--budget" if key in overrides else "learning curve" if key in chosen
                    else "default") for key in current_budgets(config)}

    extra = _extra_methods(steps)
    run_folds(cv_root, folds, tensors, dataset, config, task.sub(0.3, 0.7), shared_stage1,
              steps)
    task.report(0.7, "k-fold tables")
    cv = write_summary(cv_root, tensors, folds, config, clock.seconds(),
                       f"{config.n_folds}-fold cross-validation", extra)
    run_folds(lobo_root, lobo_folds, tensors, dataset, config, task.sub(0.72, 0.97),
              Stage1(dataset, config, lobo_root, per_fold=True), steps)
    task.report(0.97, "tables and figures")
    lobo = write_summary(lobo_root, tensors, lobo_folds, config, clock.seconds(),
                         "leave one background out", extra)
    tables = write_fair_tables(output, cv, lobo, config.n_folds)
    summary = {
        "patients": len(tensors), "responders": int(tensors.labels(tensors.ids).sum()),
        "backgrounds": {f["background"]: len(f["test"]) for f in lobo_folds},
        "budgets": current_budgets(config), "budget_source": source,
        "curves": {"chosen": curve["chosen"], "figure": curve["figure"],
                   "split": {"train": len(split["train"]), "held_out": len(split["test"])}},
        "tables": tables, "cv": {k: cv[k] for k in ("table1", "table2", "table3", "figures")},
        "lobo": {k: lobo[k] for k in ("table1", "table2", "table3", "figures")},
        "seconds_this_run": round(clock.seconds(), 1),
        "cpu_seconds_this_run": round(clock.cpu_seconds(), 1)}
    write_json(output / "fair.json", json.loads(json.dumps(summary, default=str)))
    task.report(1.0, "fair evaluation done")
    return summary


def check_fair_settings(config: EvaluationConfig, curves: CurveSettings) -> None:
    """Every setting checked before anything is read or written."""
    methods.check_methods(config)
    curve_keys(curves, config)


def run_fair_evaluation(cohort: str | os.PathLike, output: str | os.PathLike,
                        config: EvaluationConfig = DEMO, curves: CurveSettings | None = None,
                        overrides: dict | None = None,
                        progress: ProgressCallback | None = None,
                        cancel: CancelFlag = None) -> dict:
    """Learning curves -> budgets -> k-fold and leave-one-background-out tables on ``cohort``
    (a manifest with follow-ups, outcomes and each patient's background), into ``output``."""
    curves, overrides = curves or CurveSettings(), dict(overrides or {})
    config = with_budgets(config, overrides)
    check_fair_settings(config, curves)
    output, task, started = Path(output), Task(progress, cancel), time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    backgrounds = read_backgrounds(cohort)  # before anything is loaded or written
    dataset, tensors = load_cohort_tensors(Path(cohort), config, task.sub(0.0, 0.05))
    summary = run_fair_on(output, tensors, dataset, backgrounds, config, curves, overrides,
                          task.sub(0.05, 1.0))
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
