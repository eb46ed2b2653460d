"""``run_evaluation``: every method in the same stratified folds, predictions stored per fold.

Output folder::

    folds.json                       the folds (patient IDs), reused when the run resumes
    runs/stage1/{1A,1B,1C}/          the shared stage-1 training (checkpoints, losses)
    runs/fold_K/{immunodiff,stage2}/ stage-2 training per fold
    predictions/<method>/fold_K.json out-of-fold P(responder), risk; written when finished
    synthesis/<variant>/fold_K.json  SSIM, MMD and lesion volumes of synthesized follow-ups
    table1.md/.csv, table2.md/.csv, table3.md/.csv, roc.png, kaplan_meier.png, evaluation.json

A killed run resumes where it stopped: finished (method, fold) files are kept, training
stages continue from their checkpoints.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..outputs import atomic_output
from ..progress import CancelFlag, ProgressCallback, Task
from .config import DEMO, EvaluationConfig
from .data import CohortTensors, clinical_matrix
from .folds import load_folds, make_folds, save_folds

PREDICTIONS = "predictions"
SYNTHESIS = "synthesis"


def method_slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True, suffix=".json") as temporary:
        Path(temporary).write_text(json.dumps(data, indent=1), encoding="utf-8")


class FoldStore:
    """Finished results of one fold, one JSON file per method (or synthesis variant)."""

    def __init__(self, output: Path, fold: int):
        self.output, self.fold = output, fold

    def path(self, kind: str, name: str) -> Path:
        return self.output / kind / method_slug(name) / f"fold_{self.fold}.json"

    def done(self, kind: str, name: str) -> bool:
        return self.path(kind, name).is_file()

    def save_predictions(self, name: str, ids, probability=None, risk=None,
                         seconds: float = 0.0) -> None:
        def listed(values):
            return None if values is None else [float(v) for v in np.asarray(values).ravel()]

        _write_json(self.path(PREDICTIONS, name),
                    {"method": name, "fold": self.fold, "patient_id": list(ids),
                     "probability": listed(probability), "risk": listed(risk),
                     "seconds": round(seconds, 2)})

    def save_synthesis(self, variant: str, rows: list[dict], mmd: float,
                       seconds: float) -> None:
        _write_json(self.path(SYNTHESIS, variant),
                    {"variant": variant, "fold": self.fold, "rows": rows, "mmd": mmd,
                     "seconds": round(seconds, 2)})


def _folds(output: Path, tensors: CohortTensors, config: EvaluationConfig) -> list[dict]:
    path = output / "folds.json"
    if path.is_file():
        folds = load_folds(path)
        if sorted(pid for f in folds for pid in f["test"]) != sorted(tensors.ids):
            raise ValueError(f"'{path}' was made for other patients; use a new output folder.")
        return folds
    folds = make_folds(tensors.ids, tensors.labels(tensors.ids), config.n_folds, config.seed)
    save_folds(folds, path)
    return folds


def load_cohort_tensors(cohort: Path, config: EvaluationConfig, task: Task) -> tuple:
    from ..clinical import fit_standardisation
    from ..cohort import load_cohort
    from ..datasets import CohortDataset, PreprocessConfig

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
    from .summary import write_summary

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    task = Task(progress, cancel)
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dataset, tensors = load_cohort_tensors(Path(cohort), config, task.sub(0.0, 0.05))
    folds = _folds(output, tensors, config)
    from .immunodiff_runs import pretrain_stage1

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
    from . import methods

    steps = methods.fold_steps(config)
    context = methods.FoldContext(fold, tensors, dataset, stage1, config, store)
    for index, step in enumerate(steps):
        task.check()
        part = task.sub(index / len(steps), (index + 1) / len(steps))
        part.report(0.0, f"fold {fold['fold']}: {step.name}")
        if all(store.done(kind, name) for kind, name in step.outputs):
            continue
        step.run(context, part)


def pooled(output: Path, name: str, kind: str = PREDICTIONS) -> list[dict]:
    """Every stored fold file of one method (or synthesis variant), in fold order."""
    folder = output / kind / method_slug(name)
    files = sorted(folder.glob("fold_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in files]


def clinical_features(tensors: CohortTensors, ids) -> np.ndarray:
    return clinical_matrix(tensors.subset(ids)).numpy()
