"""``run_evaluation``: every method in the same stratified folds, predictions stored per fold.

Output folder::

    folds.json                       the folds (patient IDs), reused when the run resumes
    runs/stage1/{1A,1B,1C}/          the shared stage-1 training (checkpoints, losses)
    runs/fold_K/{immunodiff,stage2}/ stage-2 training per fold
    predictions/<method>/fold_K.json out-of-fold P(responder), risk  (see .store)
    synthesis/<variant>/fold_K.json  SSIM, MMD and lesion volumes      (see .store)
    table1.md/.csv, table2.md/.csv, table3.md/.csv, roc.png, kaplan_meier.png, evaluation.json

A killed run resumes where it stopped: finished (method, fold) files are kept, training
stages continue from their checkpoints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..clinical import fit_standardisation
from ..cohort import load_cohort
from ..datasets import CohortDataset, PreprocessConfig
from ..errors import SettingError
from ..progress import CancelFlag, ProgressCallback, Task
from . import methods
from .config import DEMO, EvaluationConfig
from .data import CohortTensors
from .folds import load_folds, make_folds, save_folds
from .immunodiff_runs import pretrain_stage1
from .store import FoldStore
from .summary import write_summary


def _folds(output: Path, tensors: CohortTensors, config: EvaluationConfig) -> list[dict]:
    path = output / "folds.json"
    if path.is_file():
        folds = load_folds(path)
        if sorted(pid for f in folds for pid in f["test"]) != sorted(tensors.ids):
            raise SettingError(f"'{path}' was made for other patients; use a new output folder.")
        return folds
    folds = make_folds(tensors.ids, tensors.labels(tensors.ids), config.n_folds, config.seed)
    save_folds(folds, path)
    return folds


def load_cohort_tensors(cohort: Path, config: EvaluationConfig, task: Task) -> tuple:
    cases = load_cohort(cohort, require_followup=True, require_outcomes=True)
    # z-scores of the clinical variables from the whole cohort: no outcome is used
    standardisation = fit_standardisation(c.clinical for c in cases)
    dataset = CohortDataset(cases, PreprocessConfig(crop=config.crop),
                            standardisation=standardisation)
    dataset.prepare(task.sub(0.0, 0.8).callback(), task.cancel)
    return dataset, CohortTensors.from_dataset(dataset, config.crop.spacing, task.sub(0.8, 1.0))


def run_evaluation(cohort: str | os.PathLike, output: str | os.PathLike,
                   config: EvaluationConfig = DEMO, progress: ProgressCallback | None = None,
                   cancel: CancelFlag = None) -> dict:
    """Cross-validate ImmunoDiff, its ablations and the baselines on ``cohort`` (manifest with
    follow-ups and outcomes); write the tables and figures into ``output``. Returns the
    summary written to ``evaluation.json``."""
    output = Path(output)
    task = Task(progress, cancel)
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dataset, tensors = load_cohort_tensors(Path(cohort), config, task.sub(0.0, 0.05))
    output.mkdir(parents=True, exist_ok=True)  # only once the cohort has been read
    folds = _folds(output, tensors, config)

    stage1 = pretrain_stage1(dataset, config, output / "runs" / "stage1", task.sub(0.05, 0.25))
    for index, fold in enumerate(folds):
        part = task.sub(0.25 + 0.7 * index / len(folds), 0.25 + 0.7 * (index + 1) / len(folds))
        run_fold(fold, tensors, dataset, stage1, config, FoldStore(output, fold["fold"]), part)
    task.report(0.96, "tables and figures")
    summary = write_summary(output, tensors, folds, config,
                            seconds=time.perf_counter() - started)
    task.report(1.0, "evaluation done")
    return summary


def run_fold(fold: dict, tensors: CohortTensors, dataset, stage1, config: EvaluationConfig,
             store: FoldStore, task: Task) -> None:
    """Every method on one fold; methods already stored are skipped."""
    steps = methods.fold_steps(config)
    context = methods.FoldContext(fold, tensors, dataset, stage1, config, store)
    for index, step in enumerate(steps):
        task.check()
        part = task.sub(index / len(steps), (index + 1) / len(steps))
        part.report(0.0, f"fold {fold['fold']}: {step.name}")
        if all(store.done(kind, name) for kind, name in step.outputs):
            continue
        step.run(context, part)
