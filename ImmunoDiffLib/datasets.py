"""Torch datasets over cohort manifests, with an on-disk preprocessing cache.

Each case is read, resampled and cropped once: the crops are stored as ``<key>.npz`` where the
key hashes the input files' bytes, the preprocessing configuration and the library version,
so a changed file or setting never serves a stale crop. Entries are written atomically, so an
interrupted pass leaves only complete entries.

Tensor layout: MONAI's channel-first (C, X, Y, Z); with the paper's crop (1, 96, 96, 16).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from . import __version__
from .alignment import MODES, align_followup
from .anatomy import segment_anatomy
from .clinical import ClinicalTensors, Standardisation, encode_clinical
from .cohort import CohortCase, PretrainingCase
from .errors import SettingError
from .imaging import CropSpec, HUWindow, crop_around_point, normalise, read_ct, read_image
from .imaging.labels import label_centroid
from .imaging.resample import resample_mask
from .imaging.rtstruct import read_rtstruct_roi
from .models.batch import model_batch
from .outputs import atomic_output
from .progress import CancelFlag, ProgressCallback, Task
from .seeds import numpy_generator
from .settings import cache_dir as default_cache


@dataclass(frozen=True)
class PreprocessConfig:
    crop: CropSpec = field(default_factory=CropSpec)
    window: HUWindow = field(default_factory=HUWindow)
    anatomy_backend: str = "classic"  # for cases without lobe/vessel masks
    # follow-ups not marked registered are aligned to the baseline first: "deformable",
    # "affine", "rigid" (alignment.MODES), or "none" (cropped where the scanner put them)
    alignment: str = "deformable"

    def __post_init__(self):
        if self.alignment not in (*MODES, "none"):
            raise SettingError(f"alignment must be one of {', '.join(MODES)} or none, got "
                               f"{self.alignment!r}.")

    def signature(self) -> str:
        return json.dumps({**asdict(self), "version": __version__}, sort_keys=True)


def _file_digest(path: Path, digest) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)


def case_key(paths: list[Path | None], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        digest.update(b"|none|" if path is None else b"|file|")
        if path is not None:
            _file_digest(path, digest)
    return digest.hexdigest()[:32]


def _xyz(crop: sitk.Image) -> np.ndarray:
    """A crop's voxels as (X, Y, Z) float32 (SimpleITK arrays are (Z, Y, X))."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(crop).transpose(2, 1, 0), np.float32)


class PreprocessCache:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.folder / f"{key}.npz"
        if not path.is_file():
            return None
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.folder / f"{key}.npz", overwrite=True, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)


def _crops(ct: sitk.Image, point, config: PreprocessConfig, labels: dict[str, sitk.Image | None],
           source: str) -> dict[str, np.ndarray]:
    crop = crop_around_point(ct, point, config.crop, source=source)
    arrays = {"baseline": normalise(_xyz(crop.image), config.window),
              "point": np.asarray(point, np.float64),
              "padded_fraction": np.float32(crop.padded_fraction)}
    if labels.get("lobes") is None or labels.get("vessels") is None:
        anatomy = segment_anatomy(ct, config.anatomy_backend)
        for name in ("lobes", "vessels"):
            if labels.get(name) is None:
                labels = {**labels, name: getattr(anatomy, name)}
    for name, image in labels.items():
        if image is not None:
            arrays[name] = _xyz(crop_around_point(image, point, config.crop,
                                                  is_label=True).image).astype(np.uint8)
    return arrays


def aligned_followup(case: CohortCase, ct: sitk.Image, tumour: sitk.Image | None,
                     config: PreprocessConfig) -> tuple[sitk.Image, sitk.Image | None, dict]:
    """The case's follow-up CT (and follow-up tumour mask) in the baseline's space: aligned
    with :func:`~ImmunoDiffLib.alignment.align_followup` (``config.alignment``, the baseline
    tumour kept out of the metric), or as given when the manifest says it is registered
    already (or ``config.alignment`` is "none"). Returns (CT, mask or None, summary)."""
    followup = read_ct(case.followup_ct)
    mask = read_image(case.followup_tumour_mask) if case.followup_tumour_mask else None
    if case.followup_registered or config.alignment == "none":
        return followup, mask, {"mode": "none (registered already)"}
    tumour_on_ct = resample_mask(tumour, ct) if tumour is not None else None
    alignment = align_followup(ct, followup, config.alignment, tumour_mask=tumour_on_ct,
                               followup_tumour_mask=mask)
    return alignment.followup, alignment.followup_tumour, alignment.summary()


def preprocess_cohort_case(case: CohortCase, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """Crops of one cohort case: baseline (and the aligned follow-up) normalised CT, lobes,
    vessels, tumour masks, at the tumour point (given, or the tumour mask's centroid)."""
    ct = read_ct(case.baseline_ct)
    tumour = read_image(case.tumour_mask) if case.tumour_mask else None
    point = case.tumour_point or label_centroid(tumour, source=str(case.tumour_mask))
    labels = {"lobes": read_image(case.lobes_mask) if case.lobes_mask else None,
              "vessels": read_image(case.vessels_mask) if case.vessels_mask else None,
              "tumour": tumour}
    followup = None
    if case.followup_ct:
        followup, labels["followup_tumour"], _ = aligned_followup(case, ct, tumour, config)
        if labels["followup_tumour"] is None:
            del labels["followup_tumour"]
    arrays = _crops(ct, point, config, labels, f"baseline CT of {case.patient_id}")
    if followup is not None:
        follow = crop_around_point(followup, point, config.crop,
                                   source=f"follow-up CT of {case.patient_id}")
        arrays["followup"] = normalise(_xyz(follow.image), config.window)
    return arrays


class CohortDataset(Dataset):
    """Items (:func:`~ImmunoDiffLib.models.batch.model_batch` without the batch dimension):
    ``baseline``/``followup`` (1, X, Y, Z) in [-1, 1]; ``lobes``/``vessels``/``tumour``
    (1, X, Y, Z) labels as float; ``clinical`` {group: (F_g,)} and ``clinical_mask``; ``response``,
    ``survival_months``, ``event`` (NaN where unknown); ``patient_id``."""

    def __init__(self, cases: list[CohortCase], config: PreprocessConfig = PreprocessConfig(),
                 cache_dir: str | os.PathLike | None = None,
                 standardisation: Standardisation | None = None):
        self.cases, self.config = list(cases), config
        self.cache = PreprocessCache(cache_dir or default_cache() / "preprocessed")
        self.encoded = encode_clinical([c.clinical for c in self.cases],
                                       standardisation or Standardisation())

    def __len__(self) -> int:
        return len(self.cases)

    def fingerprint(self) -> str:
        """"N cases, <sha12>": what a training checkpoint records of its data (train/runner.py):
        a digest of every case's files, tumour point and clinical values, and of the
        preprocessing."""
        digest = hashlib.sha256(self.config.signature().encode())
        for case in self.cases:
            digest.update(repr((case.patient_id, case.baseline_ct, case.followup_ct,
                                case.tumour_mask, case.tumour_point,
                                sorted(case.clinical.values.items()))).encode())
        return f"{len(self.cases)} cases, {digest.hexdigest()[:12]}"

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        case = self.cases[index]
        paths = [case.baseline_ct, case.followup_ct, case.tumour_mask, case.followup_tumour_mask,
                 case.lobes_mask, case.vessels_mask]
        key = case_key(paths, f"{self.config.signature()}|{case.tumour_point}|"
                              f"{case.followup_registered}")
        arrays = self.cache.get(key)
        if arrays is None:
            arrays = preprocess_cohort_case(case, self.config)
            self.cache.put(key, arrays)
        return arrays

    def prepare(self, progress: ProgressCallback | None = None, cancel: CancelFlag = None):
        """Fill the cache for every case (resumable: finished cases are skipped)."""
        task = Task(progress, cancel)
        for index in range(len(self)):
            task.report(index / len(self), f"preprocessing {self.cases[index].patient_id}")
            self.arrays(index)
        task.report(1.0, "preprocessing done")

    def __getitem__(self, index: int) -> dict:
        case, arrays = self.cases[index], self.arrays(index)
        images = {name: torch.from_numpy(np.asarray(arrays[name]))[None]  # (1, X, Y, Z)
                  for name in ("baseline", "followup", "lobes", "vessels", "tumour",
                               "followup_tumour") if name in arrays}
        clinical = ClinicalTensors({g: v[index] for g, v in self.encoded.values.items()},
                                   {g: m[index] for g, m in self.encoded.mask.items()},
                                   self.encoded.feature_names)
        outcomes = {name: torch.tensor(float("nan") if getattr(case, name) is None
                                       else float(getattr(case, name)))
                    for name in ("response", "survival_months", "event")}
        item = model_batch(images.pop("baseline"), images.pop("lobes"), images.pop("vessels"),
                           clinical, tumour=images.pop("tumour", None),
                           followup=images.pop("followup", None), **images, **outcomes)
        item["patient_id"] = case.patient_id
        return item


def pretraining_point(case: PretrainingCase, ct: sitk.Image, seed: int, index: int):
    """Crop centre: the tumour (point, mask or RTSTRUCT ROI), else a random lung voxel."""
    if case.tumour_point is not None:
        return case.tumour_point
    if case.tumour_mask is not None:
        return label_centroid(read_image(case.tumour_mask), source=str(case.tumour_mask))
    if case.rtstruct is not None:
        return label_centroid(read_rtstruct_roi(case.rtstruct, ct, case.roi_name),
                              source=f"ROI {case.roi_name!r} of '{case.rtstruct}'")
    lungs = sitk.GetArrayViewFromImage(segment_anatomy(ct, "classic").lungs)
    voxels = np.argwhere(lungs > 0)
    rng = numpy_generator(seed, "pretraining crop point", index)
    z, y, x = voxels[rng.integers(len(voxels))]
    return ct.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))


class PretrainingDataset(Dataset):
    """Stage-1 items from public CTs: ``baseline`` (1, X, Y, Z), ``lobes``, ``vessels``."""

    def __init__(self, cases: list[PretrainingCase],
                 config: PreprocessConfig = PreprocessConfig(),
                 cache_dir: str | os.PathLike | None = None, seed: int = 0):
        self.cases, self.config, self.seed = list(cases), config, seed
        self.cache = PreprocessCache(cache_dir or default_cache() / "preprocessed")

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index]
        key = case_key([case.ct, case.tumour_mask, case.rtstruct],
                       f"{self.config.signature()}|{case.tumour_point}|{case.roi_name}|"
                       f"{self.seed}|{index}")
        arrays = self.cache.get(key)
        if arrays is None:
            ct = read_ct(case.ct)
            point = pretraining_point(case, ct, self.seed, index)
            arrays = _crops(ct, point, self.config, {}, f"CT '{case.ct}'")
            self.cache.put(key, arrays)
        baseline, lobes, vessels = (torch.from_numpy(np.asarray(arrays[name]))[None]
                                    for name in ("baseline", "lobes", "vessels"))
        return model_batch(baseline, lobes, vessels, None)
