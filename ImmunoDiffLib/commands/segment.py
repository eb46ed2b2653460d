"""``immunodiff segment CT -o DIR [--backend ...]``: lung lobes and vessels of a CT, as label
maps and a PNG overview."""

from __future__ import annotations

from pathlib import Path

from ..anatomy import BACKENDS, segment_anatomy
from ..imaging import read_ct, write_image
from ..reporting.figures import save_anatomy_overview
from .options import add_overwrite, add_progress_and_cancel

TITLE = "Anatomy"


def add_parser(commands) -> None:
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
    add_overwrite(segment)
    add_progress_and_cancel(segment)


def run(args, progress=None, cancel=None) -> dict:
    output = Path(args.output)
    suffix = ".nii.gz" if args.format == "nifti" else ".nrrd"
    ct = read_ct(args.ct)
    anatomy = segment_anatomy(ct, args.backend, lungmask_weights=args.lungmask_weights,
                              totalseg_fast=args.fast, device=args.device,
                              cache=not args.no_cache, progress=progress, cancel=cancel)
    output.mkdir(parents=True, exist_ok=True)
    files = {name: str(write_image(image, output / f"{name}{suffix}", args.overwrite))
             for name, image in anatomy.maps().items()}
    files["png"] = str(save_anatomy_overview(ct, anatomy, output / "anatomy.png",
                                             overwrite=args.overwrite))
    return {"lobes_backend": anatomy.lobes_backend, "vessels_backend": anatomy.vessels_backend,
            "lobes_approximate": anatomy.lobes_approximate, "lobes_method": anatomy.lobes_method,
            "from_cache": anatomy.from_cache,
            "warnings": anatomy.warnings, "files": files}
