"""Finished results of an evaluation, on disk: one JSON file per (method or synthesis
variant, fold), written atomically, so a killed run resumes where it stopped.

    predictions/<method>/fold_K.json   out-of-fold P(responder), risk
    synthesis/<variant>/fold_K.json    SSIM, MMD and lesion volumes of synthesized follow-ups
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..outputs import atomic_output

PREDICTIONS = "predictions"
SYNTHESIS = "synthesis"


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
                         seconds: float = 0.0) -> None:
        def listed(values):
            return None if values is None else [float(v) for v in np.asarray(values).ravel()]

        write_json(self.path(PREDICTIONS, name),
                    {"method": name, "fold": self.fold, "patient_id": list(ids),
                     "probability": listed(probability), "risk": listed(risk),
                     "seconds": round(seconds, 2)})

    def save_synthesis(self, variant: str, rows: list[dict], mmd: float,
                       seconds: float) -> None:
        write_json(self.path(SYNTHESIS, variant),
                    {"variant": variant, "fold": self.fold, "rows": rows, "mmd": mmd,
                     "seconds": round(seconds, 2)})


def pooled(output: Path, name: str, kind: str = PREDICTIONS) -> list[dict]:
    """Every stored fold file of one method (or synthesis variant), in fold order."""
    folder = output / kind / method_slug(name)
    files = sorted(folder.glob("fold_*.json"), key=lambda p: int(p.stem.split("_")[1]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in files]
