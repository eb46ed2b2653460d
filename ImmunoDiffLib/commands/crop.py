"""``immunodiff crop CT (--point X Y Z | --mask LABEL) -o OUT.nii.gz [--png OUT.png]``: the
CT cropped around a tumour on the model's grid."""

from __future__ import annotations

from pathlib import Path

from ..imaging import crop_around_point, label_centroid, read_ct, read_image, write_image
from ..outputs import check_output_path
from ..reporting.figures import save_crop_overview
from .options import add_crop_grid, add_overwrite, crop_grid

TITLE = "Cropping"


def add_parser(commands) -> None:
    crop = commands.add_parser("crop", help="crop a CT around a tumour point or mask")
    crop.add_argument("ct", type=Path, help="CT file (NIfTI, NRRD, MHA) or DICOM folder")
    where = crop.add_mutually_exclusive_group(required=True)
    where.add_argument("--point", type=float, nargs=3, metavar=("X", "Y", "Z"),
                       help="tumour point in LPS mm (Slicer shows RAS: negate X and Y)")
    where.add_argument("--mask", type=Path, help="tumour label map; its centroid is used")
    crop.add_argument("-o", "--output", type=Path, required=True, help="crop file to write")
    crop.add_argument("--png", type=Path, help="also write an overview picture")
    add_crop_grid(crop, short_names=True)
    add_overwrite(crop)


def run(args, progress=None, cancel=None) -> dict:
    spec = crop_grid(args)
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
        label_crop = crop_around_point(label, point, spec, is_label=True).image if label else None
        save_crop_overview(ct, crop.image, point, args.png, label_crop, spec,
                           overwrite=args.overwrite)
    return {"crop": str(args.output), "centre_lps": point, "padded_fraction":
            crop.padded_fraction, "warnings": crop.warnings}
