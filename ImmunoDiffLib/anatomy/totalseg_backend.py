"""Vessels (task ``lung_vessels``: airways, arteries, veins) and, if preferred, lobes (task
``total``) from TotalSegmentator (Wasserthal et al. 2023), through its Python API.

Weights are never downloaded here: before any call the weight folders the task needs are
looked up in TotalSegmentator's weights directory (``TOTALSEG_WEIGHTS_PATH``, else
``$TOTALSEG_HOME_DIR/nnunet/results``, else ``~/.totalsegmentator/nnunet/results``), and a clear
error says what to install if any is absent. TotalSegmentator's usage statistics are switched
off before it runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BackendUnavailableError
from ..imaging.resample import resample_like
from ..progress import Task

VESSELS_TASK = "lung_vessels"
LOBES_TASK = "total"
LOBE_NAMES = {"lung_upper_lobe_left": 1, "lung_lower_lobe_left": 2, "lung_upper_lobe_right": 3,
              "lung_middle_lobe_right": 4, "lung_lower_lobe_right": 5}
# the vessel segments' names (TotalSegmentator's, as its Slicer extension names them)
VESSEL_NAMES = {"vessels": "lung_vessels", "arteries": "lung_arteries", "veins": "lung_veins"}
CROP_TASK_ID = 297  # TotalSegmentator's 3 mm "total" model, used to crop tasks to the lungs


def required_weights(task: str, fast: bool = False) -> dict[int, Path]:
    """{task id: weight folder} that ``task`` needs, in TotalSegmentator's weights directory.
    Raises :class:`BackendUnavailableError` when the TotalSegmentator package is absent."""
    try:  # deferred: an optional dependency, and a heavy one
        from totalsegmentator.config import get_weights_dir
        from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
        from totalsegmentator.python_api import get_task_config
    except ImportError as error:
        raise BackendUnavailableError(
            f"The TotalSegmentator package is not installed ({error}): pip install "
            "TotalSegmentator, or install the TotalSegmentator extension in 3D Slicer.") \
            from error

    config = get_task_config(task, fast=fast, quiet=True)
    ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    if config.get("crop") is not None:
        ids = [*ids, CROP_TASK_ID]
    folders = {}
    for task_id in ids:
        info = TASK_ID_WEIGHTS_CONFIGS[task_id]
        folder = Path(info["foldername"])
        if info.get("rel_path"):
            folder = Path(info["rel_path"]) / folder
        folders[task_id] = Path(get_weights_dir()) / folder
    return folders


def check_weights(task: str, fast: bool = False) -> None:
    """Raise :class:`BackendUnavailableError` naming every weight folder that is absent."""
    absent = {i: p for i, p in required_weights(task, fast).items() if not p.is_dir()}
    if absent:
        listing = ", ".join(f"Dataset{i} ({p.name})" for i, p in absent.items())
        raise BackendUnavailableError(
            f"TotalSegmentator weights for task '{task}' are not installed: {listing} missing "
            f"in {next(iter(absent.values())).parent}. On a machine with internet run "
            f"'TotalSegmentator -i ct.nii.gz -o out --task {task}' once, or install downloaded "
            "zips with 'totalseg_import_weights -i FILE.zip'; set TOTALSEG_WEIGHTS_PATH to use "
            "another folder. Without them use backend 'classic' (no weights needed)."
        )


def disable_usage_statistics() -> Path:
    """Make sure TotalSegmentator's config.json exists with ``send_usage_stats`` false."""
    from totalsegmentator.config import (  # deferred: optional, heavy (torch, nnU-Net)
        get_totalseg_dir,
        set_config_key,
        setup_totalseg,
    )

    home = Path(get_totalseg_dir())
    home.mkdir(parents=True, exist_ok=True)
    setup_totalseg()
    set_config_key("send_usage_stats", False)
    return home / "config.json"


def build_call(input_path: Path, task: str, fast: bool = False, device: str = "cpu") -> dict:
    """Keyword arguments for ``totalsegmentator.python_api.totalsegmentator``."""
    call = dict(input=input_path, output=None, ml=True, task=task, fast=fast, device=device,
                quiet=True, skip_saving=True, nr_thr_saving=1)
    if task == LOBES_TASK:
        call["roi_subset"] = list(LOBE_NAMES)
    return call


def _class_map(task: str) -> dict[int, str]:
    from totalsegmentator.map_to_binary import class_map  # deferred: optional dependency

    return class_map[task]


def run_task(ct: sitk.Image, task: str, fast: bool = False, device: str = "cpu",
             progress: Task | None = None) -> dict[str, sitk.Image]:
    """Run one TotalSegmentator task on ``ct``; {structure name: binary map on the CT grid}."""
    from totalsegmentator.python_api import totalsegmentator  # deferred: optional, heavy

    progress = progress or Task()
    check_weights(task, fast)
    disable_usage_statistics()
    progress.report(0.05, f"TotalSegmentator {task}")
    with tempfile.TemporaryDirectory() as scratch:
        input_path = Path(scratch) / "ct.nii.gz"
        sitk.WriteImage(ct, str(input_path))
        labelled = totalsegmentator(**build_call(input_path, task, fast, device))
        output_path = Path(scratch) / "labels.nii.gz"
        import nibabel  # deferred: comes with TotalSegmentator, needed only here

        nibabel.save(labelled, str(output_path))
        labels = resample_like(sitk.ReadImage(str(output_path)), ct, sitk.sitkNearestNeighbor,
                               0, sitk.sitkUInt8)
    progress.report(1.0, f"TotalSegmentator {task} done")
    values = sitk.GetArrayFromImage(labels)
    maps = {}
    for value, name in _class_map(task).items():
        binary = sitk.GetImageFromArray((values == value).astype(np.uint8))
        binary.CopyInformation(ct)
        maps[name] = binary
    return maps


def lobes_from_maps(maps: dict[str, sitk.Image], reference: sitk.Image) -> sitk.Image:
    lobes = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    for name, value in LOBE_NAMES.items():
        lobes[sitk.GetArrayViewFromImage(maps[name]) > 0] = value
    result = sitk.GetImageFromArray(lobes)
    result.CopyInformation(reference)
    return result


def weights_dir() -> Path:
    from totalsegmentator.config import get_weights_dir  # deferred: optional dependency

    return Path(get_weights_dir())


__all__ = ["build_call", "check_weights", "disable_usage_statistics", "lobes_from_maps",
           "required_weights", "run_task", "weights_dir"]
