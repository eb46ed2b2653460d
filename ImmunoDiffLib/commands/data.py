"""``immunodiff data fetch [--dest DIR]``: the sample chest CTs, fetched and verified."""

from __future__ import annotations

from pathlib import Path

from ..sample_data import fetch_sample_data
from ..settings import SAMPLE_DATA_ENV

TITLE = "Sample data"


def add_parser(commands) -> None:
    data = commands.add_parser("data", help="sample data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser(
        "fetch", help=f"download the sample chest CTs (or check {SAMPLE_DATA_ENV})")
    fetch.add_argument("--dest", type=Path, help="folder to store them (default: user cache)")


def run(args, progress, cancel=None) -> dict:
    return {key: str(path) for key, path in fetch_sample_data(args.dest, progress).items()}
