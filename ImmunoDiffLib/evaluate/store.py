"""Finished results of an evaluation, on disk: one JSON file per (method or synthesis
variant, fold), written atomically, so a killed run resumes where it stopped.

    predictions/<method>/fold_K.json   out-of-fold P(responder), risk; the training patients'
                                       in-sample P(responder) (for the decision threshold),
                                       the training budget, wall-clock and CPU seconds
    synthesis/<variant>/fold_K.json    SSIM, MMD and lesion volumes of synthesized follow-ups
    compute/<part>.json                CPU seconds of work shared by several methods (stage 1)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..outputs import atomic_output

PREDICTIONS = "predictions"
SYNTHESIS = "synthesis"
COMPUTE = "compute"


def method_slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def write_json(path: Path, data) -> None:
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
                         seconds: float = 0.0, *, train_ids=None, train_probability=None,
                         cpu_seconds: float | None = None, steps: int | None = None) -> None:
        """Test patients ``ids`` with P(responder) and risk (N,); the training patients'
        in-sample P(responder) (M,); ``steps``: the method's training budget in this fold."""
        def listed(values):
            return None if values is None else [float(v) for v in np.asarray(values).ravel()]

        write_json(self.path(PREDICTIONS, name),
                    {"method": name, "fold": self.fold, "patient_id": list(ids),
                     "probability": listed(probability), "risk": listed(risk),
                     "train_patient_id": None if train_ids is None else list(train_ids),
                     "train_probability": listed(train_probability),
                     "steps": steps, "seconds": round(seconds, 2),
                     "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 2)})

    def save_synthesis(self, variant: str, rows: list[dict], mmd: float,
                       seconds: float) -> None:
        write_json(self.path(SYNTHESIS, variant),
                    {"variant": variant, "fold": self.fold, "rows": rows, "mmd": mmd,
                     "seconds": round(seconds, 2)})


def add_compute(output: Path, part: str, cpu_seconds: float, wall_seconds: float) -> dict:
    """Add the cost of one (resumed) piece of shared work to ``compute/<part>.json``."""
    path = output / COMPUTE / f"{method_slug(part)}.json"
    done = read_compute(output, part)
    done = {"part": part, "cpu_seconds": round(done["cpu_seconds"] + cpu_seconds, 2),
            "seconds": round(done["seconds"] + wall_seconds, 2)}
    write_json(path, done)
    return done


def read_compute(output: Path, part: str) -> dict:
    path = output / COMPUTE / f"{method_slug(part)}.json"
    if not path.is_file():
        return {"part": part, "cpu_seconds": 0.0, "seconds": 0.0}
    return json.loads(path.read_text(encoding="utf-8"))


def pooled(output: Path, name: str, kind: str = PREDICTIONS) -> list[dict]:
    """Every stored fold file of one method (or synthesis variant), in fold order."""
    folder = output / kind / method_slug(name)
    files = sorted(folder.glob("fold_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in files]
