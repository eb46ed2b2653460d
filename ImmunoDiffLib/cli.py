"""The ``immunodiff`` command: sample data, crops and the demo.

    immunodiff data fetch [--dest DIR]
    immunodiff crop CT (--point X Y Z | --mask LABEL) -o OUT.nii.gz [--png OUT.png]
    immunodiff segment CT -o DIR [--backend auto|paper|lungmask|totalsegmentator|classic]
    immunodiff simulate [--n 40] [--seed 0] [-o DIR]
    immunodiff train STAGE --cohort CSV -o DIR   (STAGE: 1A, 1B, 1C, 2, heads, all)
    immunodiff predict --ct CT --point X Y Z --var age=64 ... -o DIR  (or --cohort CSV)
    immunodiff evaluate --cohort CSV -o DIR  (5-fold CV: the paper's Tables 1-3)
    immunodiff demo [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import ImmunoDiffError
from .imaging.crop import CropSpec
from .progress import Cancelled

CANCELLED_EXIT = 130  # the shell's code for a command stopped by the user


class TerminalProgress:
    """A ``progress(fraction, message)`` callback drawing a tqdm bar on stderr."""

    def __init__(self, description: str):
        from tqdm import tqdm

        self._bar = tqdm(total=1000, desc=description, unit="permille", leave=True, file=sys.stderr,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str = "") -> None:
        self._bar.n = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        self._bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        self._bar.close()


class LineProgress:
    """A ``progress(fraction, message)`` callback printing ``PROGRESS <fraction> <message>``
    lines on stdout, flushed, for a parent process (the Slicer module) to parse with
    :func:`ImmunoDiffLib.background.parse_progress_line`."""

    def __call__(self, fraction: float, message: str = "") -> None:
        text = " ".join(message.split())
        print(f"PROGRESS {min(max(fraction, 0.0), 1.0):.4f} {text}", flush=True)

    def close(self) -> None:
        pass


def _cancel_file_flag(path):
    """A cancel flag that is set once ``path`` exists (None without a path)."""
    return None if path is None else path.exists


def _crop_command(args) -> dict:
    from .imaging import (
        crop_around_point,
        label_centroid,
        read_ct,
        read_image,
        write_image,
    )
    from .outputs import check_output_path

    spec = CropSpec(size=tuple(args.size), spacing=tuple(args.spacing))
    check_output_path(args.output, args.overwrite)
    if args.png:
        check_output_path(args.png, args.overwrite)
    ct = read_ct(args.ct)
    label = None
    if args.mask:
        label = read_image(args.mask)
        point = label_centroid(label, source=f"Tumour mask '{args.mask}'")
    else:
        point = tuple(args.point)
    crop = crop_around_point(ct, point, spec, source=f"CT '{args.ct}'")
    write_image(crop.image, args.output, overwrite=args.overwrite)
    if args.png:
        from .reporting.figures import save_crop_overview

        label_crop = crop_around_point(label, point, spec, is_label=True).image if label else None
        save_crop_overview(ct, crop.image, point, args.png, label_crop, spec,
                           overwrite=args.overwrite)
    return {"crop": str(args.output), "centre_lps": point, "padded_fraction":
            crop.padded_fraction, "warnings": crop.warnings}


def _segment_command(args) -> dict:
    from .anatomy import segment_anatomy
    from .imaging import read_ct, write_image
    from .reporting.figures import save_anatomy_overview

    output = Path(args.output)
    suffix = ".nii.gz" if args.format == "nifti" else ".nrrd"
    ct = read_ct(args.ct)
    progress = TerminalProgress("Anatomy")
    try:
        anatomy = segment_anatomy(ct, args.backend, lungmask_weights=args.lungmask_weights,
                                  totalseg_fast=args.fast, device=args.device,
                                  cache=not args.no_cache, progress=progress)
    finally:
        progress.close()
    output.mkdir(parents=True, exist_ok=True)
    files = {name: str(write_image(image, output / f"{name}{suffix}", args.overwrite))
             for name, image in anatomy.maps().items()}
    files["png"] = str(save_anatomy_overview(ct, anatomy, output / "anatomy.png",
                                             overwrite=args.overwrite))
    return {"lobes_backend": anatomy.lobes_backend, "vessels_backend": anatomy.vessels_backend,
            "lobes_approximate": anatomy.lobes_approximate, "from_cache": anatomy.from_cache,
            "warnings": anatomy.warnings, "files": files}


def _simulate_command(args) -> dict:
    import csv

    from .simulation import ClinicalModel, ResponseModel, SimulationConfig, simulate_cohort

    config = SimulationConfig(n_patients=args.n, seed=args.seed,
                              responder_rate=args.responder_rate,
                              clinical=ClinicalModel(ResponseModel(signal=args.response_signal)))
    progress = TerminalProgress("Simulating cohort")
    try:
        manifest = simulate_cohort(args.output, config, progress, overwrite=args.overwrite)
    finally:
        progress.close()
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {"manifest": str(manifest), "patients": len(rows),
            "responders": sum(r["response"] == "1" for r in rows),
            "montage": str(Path(args.output) / "montage.png")}


def build_parser() -> argparse.ArgumentParser:
    from .anatomy import BACKENDS  # deferred like the other commands' parsers: torch

    parser = argparse.ArgumentParser(
        prog="immunodiff",
        description="ImmunoDiff: immunotherapy response prediction from chest CT "
                    "(research use only; not for clinical decisions).")
    parser.add_argument("--version", action="version", version=f"immunodiff {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="sample data")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser(
        "fetch", help="download the sample chest CTs (or check IMMUNODIFF_SAMPLE_DATA)")
    fetch.add_argument("--dest", type=Path, help="folder to store them (default: user cache)")

    crop = commands.add_parser("crop", help="crop a CT around a tumour point or mask")
    crop.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM folder")
    where = crop.add_mutually_exclusive_group(required=True)
    where.add_argument("--point", type=float, nargs=3, metavar=("X", "Y", "Z"),
                       help="tumour point in LPS mm (Slicer shows RAS: negate X and Y)")
    where.add_argument("--mask", type=Path, help="tumour label map; its centroid is used")
    crop.add_argument("-o", "--output", type=Path, required=True, help="crop file to write")
    crop.add_argument("--png", type=Path, help="also write an overview picture")
    paper = CropSpec()
    crop.add_argument("--size", type=int, nargs=3, default=list(paper.size),
                      metavar=("NX", "NY", "NZ"),
                      help=f"voxels (default: the paper's {' '.join(map(str, paper.size))})")
    crop.add_argument("--spacing", type=float, nargs=3, default=list(paper.spacing),
                      metavar=("SX", "SY", "SZ"),
                      help=f"mm (default: the paper's {' '.join(map(str, paper.spacing))})")
    crop.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    segment = commands.add_parser("segment", help="lung lobes and vessels of a CT")
    segment.add_argument("ct", type=Path, help="CT file or DICOM folder")
    segment.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    segment.add_argument("--backend", default="auto", choices=BACKENDS,
                         help="auto: lungmask + TotalSegmentator where installed, else classic")
    segment.add_argument("--lungmask-weights", nargs=2, type=Path, metavar=("LOBES", "R231"),
                         help="lungmask weight files (unet_ltrclobes-*.pth, unet_r231-*.pth)")
    segment.add_argument("--fast", action="store_true", help="TotalSegmentator fast mode")
    segment.add_argument("--device", default="cpu", help="cpu or gpu (TotalSegmentator)")
    segment.add_argument("--format", choices=["nifti", "nrrd"], default="nifti")
    segment.add_argument("--no-cache", action="store_true", help="do not use the anatomy cache")
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs")

    simulate = commands.add_parser(
        "simulate", help="write a simulated longitudinal immunotherapy cohort on real CT")
    simulate.add_argument("--n", type=int, default=40, help="number of patients")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--responder-rate", type=float, default=0.25)
    simulate.add_argument("--response-signal", type=float, default=1.0,
                          help="multiply the response model's coefficients (1: published-like, "
                               "weakly predictable; 4: learnable, for demos)")
    simulate.add_argument("-o", "--output", type=Path, default=Path("simulated_cohort"))
    simulate.add_argument("--overwrite", action="store_true")

    from .evaluate.command import add_evaluate_parser
    from .predict import add_predict_parser
    from .train.command import add_train_parser

    add_train_parser(commands)
    add_predict_parser(commands)
    add_evaluate_parser(commands)

    demo = commands.add_parser("demo", help="run the demo on the sample chest CT")
    demo.add_argument("--output", type=Path, default=Path("demo_output"))
    demo.add_argument("--case", default="lung2", help="sample case (lung2 or totalseg_chest)")
    return parser


def _tolerate_plain_terminals() -> None:
    """Print characters such as ± and µ as escapes on terminals that only take ASCII."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _terminate_as_interrupt() -> None:
    """SIGTERM (a parent stopping this process) unwinds like Ctrl-C: outputs being written
    are discarded, nothing partial is kept."""
    if threading.current_thread() is threading.main_thread():
        def interrupt(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    _tolerate_plain_terminals()
    _terminate_as_interrupt()
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            from .sample_data import fetch_sample_data

            progress = TerminalProgress("Sample data")
            try:
                result = {k: str(v) for k, v in fetch_sample_data(args.dest, progress).items()}
            finally:
                progress.close()
        elif args.command == "crop":
            result = _crop_command(args)
        elif args.command == "segment":
            result = _segment_command(args)
        elif args.command == "simulate":
            result = _simulate_command(args)
        elif args.command == "predict":
            from .predict import run_predict

            progress = LineProgress() if args.progress_lines else TerminalProgress("Predicting")
            try:
                result = run_predict(args, progress, _cancel_file_flag(args.cancel_file))
            finally:
                progress.close()
        elif args.command == "train":
            from .train.command import run_train

            progress = TerminalProgress(f"Training {args.stage}")
            try:
                result = run_train(args, progress)
            finally:
                progress.close()
        elif args.command == "evaluate":
            from .evaluate.command import run_evaluate

            progress = TerminalProgress("Evaluating")
            try:
                result = run_evaluate(args, progress)
            finally:
                progress.close()
        else:
            from .demo import run_demo

            result = run_demo(args.output, args.case, TerminalProgress)
    except Cancelled as error:
        print(f"immunodiff: cancelled: {error}", file=sys.stderr)
        return CANCELLED_EXIT
    except ImmunoDiffError as error:
        print(f"immunodiff: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("immunodiff: cancelled; no partial output was kept.", file=sys.stderr)
        return CANCELLED_EXIT
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
