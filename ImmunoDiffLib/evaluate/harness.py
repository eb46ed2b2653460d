"""Every method in the same folds, predictions stored per fold: ``run_evaluation`` (stratified
k-fold cross-validation, the paper's protocol) and ``run_background_evaluation`` (leave one
background CT out); ``run_folds`` runs a protocol's folds on a cohort already in memory.

Output folder::

    folds.json                       the folds (patient IDs), reused when the run resumes
    runs/stage1/{1A,1B,1C}/          the shared stage-1 training (checkpoints, losses); when a
                                     background is left out: runs/fold_K/stage1/, trained on
                                     the fold's training patients only
    runs/fold_K/{immunodiff,stage2}/ stage-2 training per fold
    predictions/<method>/fold_K.json out-of-fold P(responder), risk  (see .store)
    synthesis/<variant>/fold_K.json  SSIM, MMD and lesion volumes      (see .store)
    compute/                         CPU seconds of stage 1            (see .store)
    table1.md/.csv, table2.md/.csv, table3.md/.csv, roc.png, kaplan_meier.png, evaluation.json

A killed run resumes where it stopped: finished (method, fold) files are kept and skipped,
training stages continue from their checkpoints. Stage 1 of the k-fold protocol sees every
patient's baseline crop, never an outcome or a follow-up (as the paper pre-trained it on public
CTs); with a background left out it sees only the other backgrounds, so the held-out CT is new
to every part of the model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..clinical import fit_standardisation
from ..cohort import load_cohort
from ..datasets import CohortDataset, PreprocessConfig
from ..errors import SettingError
from ..progress import CancelFlag, ProgressCallback, Task
from . import methods
from .compute import Stopwatch
from .config import DEMO, EvaluationConfig
from .data import CohortTensors
from .folds import background_folds, load_folds, make_folds, read_backgrounds, save_folds
from .immunodiff_runs import pretrain_stage1
from .records import STAGE1
from .store import FoldStore, add_compute
from .summary import write_summary

STAGE1_SHARE = 0.15  # of a fold's progress range when it trains stage 1


def saved_folds(output: Path, tensors: CohortTensors, make: Callable[[], list[dict]]) -> list:
    """``output/folds.json``, made by ``make()`` the first time; a resumed run must be on the
    same patients."""
    path = output / "folds.json"
    if path.is_file():
        folds = load_folds(path)
        if sorted(pid for f in folds for pid in f["test"]) != sorted(tensors.ids):
            raise SettingError(f"'{path}' was made for other patients; use a new output folder.")
        return folds
    folds = make()
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


class Stage1:
    """The stage-1 model of a protocol, trained when a fold first needs it: shared by every
    fold (``per_fold`` False: on every patient's baseline, in ``output/runs/stage1``) or one per
    fold (on the fold's training patients, in ``output/runs/fold_K/stage1``). Its CPU seconds
    are added to ``output/compute/``."""

    def __init__(self, dataset, config: EvaluationConfig, output: Path, per_fold: bool = False):
        self.dataset, self.config, self.output, self.per_fold = dataset, config, output, per_fold
        self._shared = None

    def model(self, fold: dict, rows: list[int], task: Task):
        if not self.per_fold and self._shared is not None:
            return self._shared
        clock = Stopwatch.started()
        if self.per_fold:
            folder, part = self.output / "runs" / f"fold_{fold['fold']}" / "stage1", \
                f"{STAGE1} fold {fold['fold']}"
            model = pretrain_stage1(Subset(self.dataset, rows), self.config, folder, task)
        else:
            folder, part = self.output / "runs" / "stage1", STAGE1
            model = self._shared = pretrain_stage1(self.dataset, self.config, folder, task)
        add_compute(self.output, part, clock.cpu_seconds(), clock.seconds())
        return model


def run_fold(fold: dict, tensors: CohortTensors, dataset, stage1: Stage1 | None,
             config: EvaluationConfig, store: FoldStore, task: Task,
             steps: list[methods.Step] | None = None) -> None:
    """Every method (``steps``, default ``methods.fold_steps(config)``) on one fold; methods
    already stored are skipped, and stage 1 is only trained when a pending method needs it."""
    steps = methods.fold_steps(config) if steps is None else steps
    pending = [s for s in steps if not all(store.done(kind, name) for kind, name in s.outputs)]
    task.check()
    if not pending:
        task.report(1.0, f"fold {fold['fold']}: stored")
        return
    model, start = None, 0.0
    if any(s.needs_stage1 for s in pending):
        model = stage1.model(fold, tensors.rows(fold["train"]).tolist(),
                             task.sub(0.0, STAGE1_SHARE))
        start = STAGE1_SHARE
    context = methods.FoldContext(fold, tensors, dataset, model, config, store)
    for index, step in enumerate(pending):
        task.check()
        part = task.sub(start + (1 - start) * index / len(pending),
                        start + (1 - start) * (index + 1) / len(pending))
        part.report(0.0, f"fold {fold['fold']}: {step.name}")
        step.run(context, part)
    task.report(1.0, f"fold {fold['fold']}: done")


def run_folds(output: Path, folds: list[dict], tensors: CohortTensors, dataset,
              config: EvaluationConfig, task: Task, stage1: Stage1 | None = None,
              steps: list[methods.Step] | None = None) -> None:
    """Every fold of a protocol, results into ``output`` (resumable, see the module)."""
    for index, fold in enumerate(folds):
        part = task.sub(index / len(folds), (index + 1) / len(folds))
        run_fold(fold, tensors, dataset, stage1, config, FoldStore(output, fold["fold"]), part,
                 steps)


def cross_validation_folds(output: Path, tensors: CohortTensors,
                           config: EvaluationConfig) -> list[dict]:
    return saved_folds(output, tensors, lambda: make_folds(
        tensors.ids, tensors.labels(tensors.ids), config.n_folds, config.seed))


def leave_one_background_out_folds(output: Path, tensors: CohortTensors,
                                   backgrounds: dict[str, str]) -> list[dict]:
    return saved_folds(output, tensors, lambda: background_folds(
        tensors.ids, backgrounds, tensors.labels(tensors.ids)))


def _start(cohort, output, config: EvaluationConfig, task: Task):
    methods.check_methods(config)
    dataset, tensors = load_cohort_tensors(Path(cohort), config, task)
    Path(output).mkdir(parents=True, exist_ok=True)  # only once the cohort has been read
    return dataset, tensors


def run_evaluation(cohort: str | os.PathLike, output: str | os.PathLike,
                   config: EvaluationConfig = DEMO, progress: ProgressCallback | None = None,
                   cancel: CancelFlag = None) -> dict:
    """Cross-validate ImmunoDiff, its ablations and the baselines on ``cohort`` (manifest with
    follow-ups and outcomes); write the tables and figures into ``output``. Returns the
    summary written to ``evaluation.json``."""
    output, task, started = Path(output), Task(progress, cancel), time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dataset, tensors = _start(cohort, output, config, task.sub(0.0, 0.05))
    folds = cross_validation_folds(output, tensors, config)
    run_folds(output, folds, tensors, dataset, config, task.sub(0.05, 0.95),
              Stage1(dataset, config, output))
    task.report(0.96, "tables and figures")
    summary = write_summary(output, tensors, folds, config,
                            seconds=time.perf_counter() - started)
    task.report(1.0, "evaluation done")
    return summary


def run_background_evaluation(cohort: str | os.PathLike, output: str | os.PathLike,
                              config: EvaluationConfig = DEMO,
                              progress: ProgressCallback | None = None,
                              cancel: CancelFlag = None) -> dict:
    """Leave one background out: train on the other backgrounds' patients, test on the held-out
    background's (``folds.read_backgrounds`` names each patient's); the same methods, tables
    and figures as :func:`run_evaluation`."""
    output, task, started = Path(output), Task(progress, cancel), time.perf_counter()
    backgrounds = read_backgrounds(cohort)  # before anything is loaded or written
    dataset, tensors = _start(cohort, output, config, task.sub(0.0, 0.05))
    folds = leave_one_background_out_folds(output, tensors, backgrounds)
    run_folds(output, folds, tensors, dataset, config, task.sub(0.05, 0.95),
              Stage1(dataset, config, output, per_fold=True))
    task.report(0.96, "tables and figures")
    summary = write_summary(output, tensors, folds, config, time.perf_counter() - started,
                            "leave one background out")
    task.report(1.0, "evaluation done")
    return summary
