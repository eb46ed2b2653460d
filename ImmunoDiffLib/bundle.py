"""The model bundle: one folder holding every part's weights (safetensors) and a JSON
description (configuration, crop, HU window, clinical standardisation, library version,
training-data hash, metrics) with the weights' sha256. Loading verifies all of it and refuses
any mismatch with a clear error. Nothing is ever unpickled.

    bundle/
      weights.safetensors   every tensor, named "<part>.<parameter>"
      bundle.json           {"format_version", "library_version", "weights_sha256", ...}
      ood_reference.safetensors   optional: the training features' reference for the
                            out-of-distribution flag (bundle.json's "out_of_distribution"
                            section holds the rest and this file's sha256)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

from . import __version__
from .calibration import Calibration
from .clinical import Standardisation
from .errors import BundleError
from .imaging import CropSpec, HUWindow
from .models.config import ModelConfig
from .models.immunodiff import ImmunoDiffModel
from .ood_reference import OODReference
from .outputs import atomic_folder, atomic_output
from .sample_data import sha256_of

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
DESCRIPTION_NAME = "bundle.json"
OOD_NAME = "ood_reference.safetensors"


@dataclass
class BundleInfo:
    """Everything but the weights."""

    model: ModelConfig = field(default_factory=ModelConfig)
    crop: CropSpec = field(default_factory=CropSpec)
    window: HUWindow = field(default_factory=HUWindow)
    standardisation: Standardisation = field(default_factory=Standardisation)
    training: dict = field(default_factory=dict)  # data hash, seed, steps, commit, stages
    metrics: dict = field(default_factory=dict)
    notes: str = "Trained on simulated data; research use only, not for clinical decisions."
    # the training data's ranges and features for the out-of-distribution flag (None: rules
    # from library defaults only)
    out_of_distribution: OODReference | None = None
    # Platt scaling of the response head's logit, fitted on held-out patients (None: the
    # head's own sigmoid)
    calibration: Calibration | None = None


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def save_bundle(path: str | os.PathLike, model: torch.nn.Module, info: BundleInfo,
                overwrite: bool = False) -> Path:
    """Write the bundle folder atomically (a temporary sibling renamed into place)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise BundleError(f"Bundle '{path}' exists already.")
    with atomic_folder(path, overwrite=True) as staging:
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        description = {
            "format_version": FORMAT_VERSION, "library_version": __version__,
            "weights_sha256": sha256_of(staging / WEIGHTS_NAME),
            "model": info.model.to_dict(), "crop": asdict(info.crop),
            "window": asdict(info.window),
            "standardisation": {"mean": dict(info.standardisation.mean),
                                "sd": dict(info.standardisation.sd)},
            "training": info.training, "metrics": info.metrics, "notes": info.notes,
        }
        if info.calibration is not None:
            description["calibration"] = info.calibration.description()
        _write_ood(staging, description, info.out_of_distribution)
        (staging / DESCRIPTION_NAME).write_text(json.dumps(description, indent=2), encoding="utf-8")
    return path


def _write_ood(folder: Path, description: dict, reference: OODReference | None) -> None:
    """Add the out-of-distribution reference to ``description`` (and its arrays file)."""
    description.pop("out_of_distribution", None)
    if reference is None:
        return
    section = reference.description()
    tensors = reference.tensors()
    if tensors:
        with atomic_output(folder / OOD_NAME, overwrite=True, suffix=".safetensors") as temporary:
            save_arrays({k: v.astype("float64") for k, v in tensors.items()}, str(temporary))
        section["tensors_sha256"] = sha256_of(folder / OOD_NAME)
    description["out_of_distribution"] = section


def _read_ood(path: Path, section: dict | None) -> OODReference | None:
    if section is None:
        return None
    tensors = {}
    if section.get("tensors_sha256") is not None:
        arrays = path / OOD_NAME
        if not arrays.is_file():
            raise BundleError(f"Model bundle '{path}' has no {OOD_NAME}, which its "
                              f"{DESCRIPTION_NAME} names.")
        actual = sha256_of(arrays)
        if actual != section["tensors_sha256"]:
            raise BundleError(f"'{arrays}' has sha256 {actual}, but the bundle says "
                              f"{section['tensors_sha256']}: the file is damaged or was "
                              "changed. Restore or re-download the bundle.")
        try:
            tensors = load_arrays(str(arrays))
        except (SafetensorError, OSError) as error:
            raise BundleError(f"'{arrays}' cannot be read as safetensors: {error}") from error
    return OODReference.from_parts(section, tensors)


def with_held_out_parts(source: str | os.PathLike, destination: str | os.PathLike,
                        reference: OODReference, calibration: Calibration | None = None,
                        overwrite: bool = False, calibration_cohort: dict | None = None,
                        metrics: dict | None = None) -> Path:
    """A copy of the bundle ``source`` with ``reference`` as its out-of-distribution
    reference (and ``calibration``, when given, as its probability calibration, with the
    settings of the ``calibration_cohort`` it was fitted on recorded in ``training``;
    ``metrics``, when given, merged per cohort into its held-out numbers: those the new
    parts change), written atomically to ``destination`` (which may be ``source`` itself):
    the weights are copied byte for byte, so their sha256 stays valid."""
    source, destination = Path(source), Path(destination)
    read_bundle_info(source)  # a valid bundle, or a clear error
    description = json.loads((source / DESCRIPTION_NAME).read_text(encoding="utf-8"))
    if destination.exists() and not overwrite:
        raise BundleError(f"Bundle '{destination}' exists already.")
    with atomic_folder(destination, overwrite=True) as staging:
        shutil.copy2(source / WEIGHTS_NAME, staging / WEIGHTS_NAME)
        if sha256_of(staging / WEIGHTS_NAME) != description.get("weights_sha256"):
            raise BundleError(f"'{source / WEIGHTS_NAME}' does not match its sha256 in "
                              f"{source / DESCRIPTION_NAME}.")
        _write_ood(staging, description, reference)
        if calibration is not None:
            description["calibration"] = calibration.description()
        if calibration_cohort is not None:
            description.setdefault("training", {})["calibration_cohort"] = calibration_cohort
        for cohort, numbers in (metrics or {}).items():
            description.setdefault("metrics", {}).setdefault(cohort, {}).update(numbers)
        (staging / DESCRIPTION_NAME).write_text(json.dumps(description, indent=2),
                                                encoding="utf-8")
    return destination


def read_bundle_info(path: str | os.PathLike) -> tuple[BundleInfo, dict]:
    """Read and check bundle.json; return (info, raw description)."""
    path = Path(path)
    description_path = path / DESCRIPTION_NAME
    if not description_path.is_file():
        raise BundleError(f"Model bundle '{path}' has no {DESCRIPTION_NAME} (is this a bundle "
                          "folder?).")
    try:
        description = json.loads(description_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BundleError(f"'{description_path}' is not valid JSON: {error}") from error
    version = description.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"Bundle '{path}' has format version {version}; this library reads "
                          f"version {FORMAT_VERSION}.")
    made_with = str(description.get("library_version", "0.0"))
    if _major_minor(made_with) != _major_minor(__version__):
        raise BundleError(f"Bundle '{path}' was made with ImmunoDiffLib {made_with}, which is "
                          f"incompatible with this version {__version__} (major.minor differ).")
    try:
        info = BundleInfo(
            ModelConfig.from_dict(description["model"], legacy=True),
            CropSpec(**{k: tuple(v) if isinstance(v, list) else v
                        for k, v in description["crop"].items()}),
            HUWindow(**description["window"]),
            Standardisation(description["standardisation"]["mean"],
                            description["standardisation"]["sd"]),
            description.get("training", {}), description.get("metrics", {}),
            description.get("notes", ""))
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"'{description_path}' has an invalid field: {error}") from error
    try:
        info.out_of_distribution = _read_ood(path, description.get("out_of_distribution"))
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"'{description_path}' has an invalid out_of_distribution section: "
                          f"{error}") from error
    if description.get("calibration") is not None:
        try:
            info.calibration = Calibration.from_dict(description["calibration"])
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"'{description_path}' has an invalid calibration section: "
                              f"{error}") from error
    return info, description


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu",
                flash_attention: bool | None = None):
    """Verify and load a bundle: returns (ImmunoDiffModel in eval mode, BundleInfo).
    ``flash_attention`` switches the attention kernel (same weights, faster on most hardware)."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"Model bundle '{path}' does not exist.")
    info, description = read_bundle_info(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise BundleError(f"Model bundle '{path}' has no {WEIGHTS_NAME}.")
    actual = sha256_of(weights)
    if actual != description.get("weights_sha256"):
        raise BundleError(f"'{weights}' has sha256 {actual}, but the bundle says "
                          f"{description.get('weights_sha256')}: the file is damaged or was "
                          "changed. Restore or re-download the bundle.")
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as error:
        raise BundleError(f"'{weights}' cannot be read as safetensors: {error}") from error
    config = info.model
    if flash_attention is not None:
        config = replace(config, use_flash_attention=flash_attention)
    model = ImmunoDiffModel(config)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines()
                      if "size mismatch" in line), str(error)[:200])
        raise BundleError(f"'{weights}' does not match its configuration in "
                          f"{path / DESCRIPTION_NAME}: {first}") from error
    if missing or unexpected:
        raise BundleError(f"'{weights}' does not match its configuration: missing "
                          f"{len(missing)} tensor(s) (e.g. {missing[:2]}), unexpected "
                          f"{len(unexpected)} (e.g. {unexpected[:2]}).")
    return model.to(device).eval(), info
