"""The options several commands share, each defined once: output and overwrite, the crop
grid, the model bundle, the arithmetic, progress and cancel."""

from __future__ import annotations

from pathlib import Path

from ..imaging.crop import CropSpec
from ..inference.precision import PRECISIONS
from ..settings import DEFAULT_BUNDLE_ENV


def add_overwrite(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def add_crop_grid(parser, short_names: bool = False) -> None:
    """``--crop-size NX NY NZ`` and ``--crop-spacing SX SY SZ`` (``short_names``: also spelt
    ``--size`` and ``--spacing``); unset, the paper's grid."""
    paper = CropSpec()
    size_names = ["--crop-size", "--size"] if short_names else ["--crop-size"]
    spacing_names = ["--crop-spacing", "--spacing"] if short_names else ["--crop-spacing"]
    parser.add_argument(*size_names, type=int, nargs=3, metavar=("NX", "NY", "NZ"),
                        dest="crop_size", help="crop voxels (default: the paper's "
                                               f"{' '.join(map(str, paper.size))})")
    parser.add_argument(*spacing_names, type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                        dest="crop_spacing", help="crop spacing in mm (default: the paper's "
                                                  f"{' '.join(map(str, paper.spacing))})")


def crop_grid(args, default: CropSpec | None = None) -> CropSpec:
    """The crop grid of :func:`add_crop_grid`'s options, the rest from ``default``."""
    default = default or CropSpec()
    return CropSpec(size=tuple(args.crop_size) if args.crop_size else default.size,
                    spacing=tuple(args.crop_spacing) if args.crop_spacing else default.spacing)


def add_bundle(parser, help: str | None = None) -> None:
    parser.add_argument("--bundle", type=Path, help=help or "model bundle folder (default: "
                        f"the demo bundle, or ${DEFAULT_BUNDLE_ENV})")


def add_precision(parser) -> None:
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="auto",
                        help="arithmetic of the denoising steps: bf16 autocast, full fp32, or "
                        "auto: bf16 where the device multiplies bf16 in hardware (AMX, "
                        "AVX512-BF16, a recent GPU), else fp32")


def add_progress_and_cancel(parser) -> None:
    parser.add_argument("--progress-lines", action="store_true",
                        help="report progress as lines 'PROGRESS <fraction> <message>' on "
                             "stdout (for a program that runs this one, e.g. 3D Slicer)")
    parser.add_argument("--cancel-file", type=Path,
                        help="stop (keeping no partial output) as soon as this file exists")
