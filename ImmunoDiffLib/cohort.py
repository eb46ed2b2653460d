"""Cohort manifests (CSV): the format users bring their data in.

Immunotherapy cohort (``load_cohort``), one row per patient:

| column | required | meaning |
|---|---|---|
| patient_id | yes | unique |
| baseline_ct | yes | pre-treatment CT: file or DICOM folder (relative to the CSV's folder) |
| followup_ct | training | post-treatment CT |
| tumour_x, tumour_y, tumour_z | one of | tumour point, LPS mm |
| tumour_mask | the two | tumour label map on the baseline CT (its centroid is the point) |
| age ... pdl1 | yes (may be NA) | the ten clinical variables (``ImmunoDiffLib.clinical``) |
| response | training | 1 responder (RECIST CR/PR), 0 non-responder (SD/PD) |
| survival_months, event | training | follow-up time (>= 0) and 1 = death observed, 0 = censored |
| lobes_mask, vessels_mask, followup_tumour_mask | no | label maps (baseline / follow-up grid) |
| followup_registered | no | true: follow-up already aligned on the baseline grid; else aligned |

Pre-training collection (``load_pretraining_manifest``), one row per CT: ``ct`` (file or DICOM
folder), optionally ``tumour_x/y/z``, ``tumour_mask``, or ``rtstruct`` + ``roi_name`` (a DICOM
RTSTRUCT whose ROI is the tumour). Rows without a tumour get random crops inside the lungs.

Every row is checked before anything runs, and all problems are reported together.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .clinical import NAMES as CLINICAL_NAMES
from .clinical import ClinicalRecord, parse_clinical
from .errors import ClinicalValueError, CohortError

POINT_COLUMNS = ("tumour_x", "tumour_y", "tumour_z")
PATH_COLUMNS = ("baseline_ct", "followup_ct", "tumour_mask", "followup_tumour_mask",
                "lobes_mask", "vessels_mask")


@dataclass
class CohortCase:
    patient_id: str
    baseline_ct: Path
    clinical: ClinicalRecord
    tumour_point: tuple[float, float, float] | None = None
    tumour_mask: Path | None = None
    followup_ct: Path | None = None
    followup_tumour_mask: Path | None = None
    lobes_mask: Path | None = None
    vessels_mask: Path | None = None
    response: int | None = None
    survival_months: float | None = None
    event: int | None = None
    extra: dict = field(default_factory=dict)
    followup_registered: bool = False


def _blank(value) -> bool:
    return value is None or str(value).strip() == "" or str(value).strip().upper() == "NA"


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        raise CohortError(str(path), [f"the file '{path}' does not exist"])
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    if not rows:
        raise CohortError(str(path), ["the manifest has no rows"])
    return columns, rows


def _resolve(base: Path, value: str) -> Path:
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else base / path


def _number(row: dict, column: str, where: str, problems: list[str]) -> float | None:
    raw = row.get(column)
    if _blank(raw):
        return None
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{where}: {column} = {raw!r} is not a number")
        return None
    if not math.isfinite(value):
        problems.append(f"{where}: {column} = {raw!r} is not a finite number")
        return None
    return value


def _binary(row: dict, column: str, where: str, problems: list[str]) -> int | None:
    value = _number(row, column, where, problems)
    if value is None:
        return None
    if value not in (0.0, 1.0):
        problems.append(f"{where}: {column} = {row[column]!r} must be 0 or 1")
        return None
    return int(value)


def _flag(row: dict, column: str, where: str, problems: list[str]) -> bool:
    """A yes/no column: true/yes/1 or false/no/0; empty (or absent) is false."""
    value = row.get(column)
    if _blank(value):
        return False
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    problems.append(f"{where}: {column} = {value!r} is not true or false")
    return False


def load_cohort(path: str | os.PathLike, require_followup: bool = False,
                require_outcomes: bool = False) -> list[CohortCase]:
    """Read and validate an immunotherapy cohort manifest; raise :class:`CohortError` listing
    every bad row (missing columns, duplicate IDs, absent files, labels outside {0, 1},
    negative survival times, invalid clinical values)."""
    path = Path(path)
    columns, rows = _read_rows(path)
    base = path.parent
    problems: list[str] = []
    required = ["patient_id", "baseline_ct", *CLINICAL_NAMES]
    if require_followup:
        required.append("followup_ct")
    if require_outcomes:
        required += ["response", "survival_months", "event"]
    missing = [c for c in required if c not in columns]
    has_point = all(c in columns for c in POINT_COLUMNS)
    if not has_point and "tumour_mask" not in columns:
        missing.append("tumour_x/tumour_y/tumour_z or tumour_mask")
    if missing:
        raise CohortError(str(path), [f"missing column(s): {', '.join(missing)}"])

    cases, seen = [], {}
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        pid = (row.get("patient_id") or "").strip()
        where = f"row {number} (patient {pid or '?'})"
        if not pid:
            problems.append(f"row {number}: patient_id is empty")
        elif pid in seen:
            problems.append(f"{where}: duplicate patient_id, first on row {seen[pid]}")
        else:
            seen[pid] = number
        paths = {}
        for column in PATH_COLUMNS:
            if column in columns and not _blank(row.get(column)):
                resolved = _resolve(base, row[column])
                if not resolved.exists():
                    problems.append(f"{where}: {column} '{row[column]}' does not exist "
                                    f"(looked for {resolved})")
                paths[column] = resolved
        if "baseline_ct" not in paths and not any("baseline_ct" in p for p in problems[-1:]):
            problems.append(f"{where}: baseline_ct is empty")
        if require_followup and "followup_ct" not in paths:
            problems.append(f"{where}: followup_ct is empty")
        point = None
        if has_point:
            values = [_number(row, c, where, problems) for c in POINT_COLUMNS]
            if all(v is not None for v in values):
                point = tuple(values)
        if point is None and "tumour_mask" not in paths:
            problems.append(f"{where}: no tumour point (tumour_x/y/z) and no tumour_mask")
        try:
            clinical = parse_clinical({k: row.get(k) for k in CLINICAL_NAMES})
        except ClinicalValueError as error:
            problems += [f"{where}: {p}" for p in error.problems]
            clinical = None
        response = _binary(row, "response", where, problems) if "response" in columns else None
        event = _binary(row, "event", where, problems) if "event" in columns else None
        months = (_number(row, "survival_months", where, problems)
                  if "survival_months" in columns else None)
        if months is not None and months < 0:
            problems.append(f"{where}: survival_months = {months:g} is negative")
        if require_outcomes:
            for name, value in (("response", response), ("survival_months", months),
                                ("event", event)):
                if value is None and not any(p.startswith(f"{where}: {name}")
                                             for p in problems):
                    problems.append(f"{where}: {name} is empty")
        registered = _flag(row, "followup_registered", where, problems)
        if clinical is not None and "baseline_ct" in paths:
            known = set(required) | set(PATH_COLUMNS) | set(POINT_COLUMNS) | {
                "response", "survival_months", "event", "followup_registered"}
            cases.append(CohortCase(
                pid, paths["baseline_ct"], clinical, point, paths.get("tumour_mask"),
                paths.get("followup_ct"), paths.get("followup_tumour_mask"),
                paths.get("lobes_mask"), paths.get("vessels_mask"), response, months, event,
                {k: v for k, v in row.items() if k not in known}, registered))
    if problems:
        raise CohortError(str(path), problems)
    return cases


@dataclass
class PretrainingCase:
    ct: Path
    tumour_point: tuple[float, float, float] | None = None
    tumour_mask: Path | None = None
    rtstruct: Path | None = None
    roi_name: str | None = None


def load_pretraining_manifest(path: str | os.PathLike) -> list[PretrainingCase]:
    """Read and validate a stage-1 manifest (public CT collections); all problems at once."""
    path = Path(path)
    columns, rows = _read_rows(path)
    if "ct" not in columns:
        raise CohortError(str(path), ["missing column(s): ct"])
    problems, cases = [], []
    for number, row in enumerate(rows, start=2):
        where = f"row {number}"
        if _blank(row.get("ct")):
            problems.append(f"{where}: ct is empty")
            continue
        ct = _resolve(path.parent, row["ct"])
        if not ct.exists():
            problems.append(f"{where}: ct '{row['ct']}' does not exist (looked for {ct})")
        case = PretrainingCase(ct)
        if all(c in columns for c in POINT_COLUMNS):
            values = [_number(row, c, where, problems) for c in POINT_COLUMNS]
            if all(v is not None for v in values):
                case.tumour_point = tuple(values)
        for column in ("tumour_mask", "rtstruct"):
            if column in columns and not _blank(row.get(column)):
                resolved = _resolve(path.parent, row[column])
                if not resolved.exists():
                    problems.append(f"{where}: {column} '{row[column]}' does not exist")
                setattr(case, column, resolved)
        if case.rtstruct is not None:
            case.roi_name = (row.get("roi_name") or "").strip() or None
            if case.roi_name is None:
                problems.append(f"{where}: rtstruct given without roi_name")
        cases.append(case)
    if problems:
        raise CohortError(str(path), problems)
    return cases
