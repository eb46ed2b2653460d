"""``immunodiff demo [--output DIR]``: the demo on the sample chest CT (crop, anatomy,
prediction with the demo bundle)."""

from __future__ import annotations

from pathlib import Path

from ..demo import run_demo
from ..sample_data import SAMPLE_CASES

TITLE = "ImmunoDiff demo"


def add_parser(commands) -> None:
    demo = commands.add_parser("demo", help="run the demo on the sample chest CT")
    demo.add_argument("--output", type=Path, default=Path("demo_output"))
    demo.add_argument("--case", default="lung2", choices=list(SAMPLE_CASES),
                      help="sample case")


def run(args, progress=None, cancel=None) -> dict:
    return run_demo(args.output, args.case, progress)
