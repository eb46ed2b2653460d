"""What a finished stage leaves in its folder, for the diffusion stages and the heads alike:
``losses.csv`` (step, loss), ``training.json`` (summary), and :class:`TrainResult`."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

CHECKPOINT_DIR = "checkpoint"
LOSSES_NAME = "losses.csv"
SUMMARY_NAME = "training.json"


@dataclass
class TrainResult:
    stage: str
    steps: int
    losses: list[float]
    output: Path
    weight_digests: list[str]


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the module's state dict (names and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_records(output: Path, losses: list[float], summary: dict) -> None:
    """``output/losses.csv`` and ``output/training.json`` (``summary``)."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / LOSSES_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
    (output / SUMMARY_NAME).write_text(json.dumps(summary, indent=2), encoding="utf-8")


def data_hash(paths: list[Path | None]) -> str:
    """A short SHA-256 of the training manifests' bytes (None entries skipped), recorded in a
    bundle so that a model can be traced to the data it was trained on."""
    digest = hashlib.sha256()
    for path in paths:
        if path is not None:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]
