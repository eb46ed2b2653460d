"""``immunodiff review [CT|DICOM folder] [--port 8080]``: the radiologist's review as a local
web app (trame-slicer), on 127.0.0.1 unless ``--host`` says otherwise."""

from __future__ import annotations

import socket
import webbrowser
from pathlib import Path

from ..anatomy import BACKENDS
from ..errors import BackendUnavailableError, ImageError, SettingError
from ..sample_data import local_sample_case
from ..settings import default_bundle
from .options import add_bundle

TITLE = "Review"
SHOWS_PROGRESS = False  # the page shows it


def add_parser(commands) -> None:
    review = commands.add_parser("review", help="review a case in the browser (local web app)")
    review.add_argument("ct", nargs="?", type=Path,
                        help="CT file or DICOM folder (default: the sample chest CT)")
    review.add_argument("--port", type=int, default=8080, help="0: any free port")
    review.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: this computer only)")
    review.add_argument("--open", action="store_true", help="open the page in the browser")
    review.add_argument("--allow", type=Path, action="append", default=[],
                        help="another folder the page may read CTs from and save into")
    review.add_argument("--anatomy", default="auto", choices=BACKENDS, help="anatomy backend")
    review.add_argument("--work-dir", type=Path,
                        help="scratch folder for runs not yet saved (default: a temporary one)")
    add_bundle(review)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def allowed_folders(ct: Path | None, extra: list[Path]) -> list[Path]:
    """The folders the page may read from and save into: the working folder, the CT's, the
    sample CT's and those given with --allow."""
    folders = [Path.cwd(), *extra]
    if ct is not None:
        folders.append(ct if ct.is_dir() else ct.parent)
    return [f.resolve() for f in folders]


def run(args, progress=None, cancel=None) -> dict:
    if not 0 <= args.port <= 65535:
        raise SettingError(f"--port must be 0 to 65535, got {args.port}.")
    bundle = args.bundle or default_bundle()
    if bundle is None:
        raise SettingError("No model bundle: pass --bundle or set IMMUNODIFF_BUNDLE.")
    if args.ct is not None and not args.ct.exists():
        raise ImageError(f"CT '{args.ct}' does not exist.")
    try:  # deferred: trame-slicer is an optional dependency (pip install immunodiff[review])
        from ..review.page import ReviewPage
    except ImportError as error:
        raise BackendUnavailableError(
            f"The review needs trame-slicer ({error.name} is missing): "
            "pip install 'trame-slicer[standalone]==2.0.0'.") from error
    ct = args.ct or local_sample_case("lung2")
    folders = allowed_folders(ct, args.allow)
    port = args.port or free_port(args.host)
    page = ReviewPage(bundle, folders, ct, args.anatomy, args.work_dir)
    url = f"http://{args.host}:{port}/"
    print(f"ImmunoDiff review at {url}  (Ctrl-C to stop)", flush=True)
    if args.open:
        webbrowser.open(url)
    page.start(port, args.host)
    return {"url": url, "stopped": True}
