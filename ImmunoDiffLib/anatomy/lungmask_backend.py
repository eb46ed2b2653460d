"""Lobes from lungmask (Hofmanninger et al. 2020): model LTRCLobes, fused with the R231 model
that fills in what the lobe model misses. Runs lungmask's own ``LMInferer`` in-process.

Weights are never downloaded here. They are taken from, in order: the paths given by the
caller (CLI ``--lungmask-weights``), the folder in ``IMMUNODIFF_LUNGMASK_WEIGHTS``, or
lungmask's own cache (torch hub ``checkpoints`` folder, where lungmask puts its downloads).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import BackendUnavailableError
from ..progress import Task
from ..settings import LUNGMASK_WEIGHTS_ENV as WEIGHTS_ENV

WEIGHT_FILES = {"LTRCLobes": "unet_ltrclobes-3a07043d.pth", "R231": "unet_r231-d5d2fc3d.pth"}
RELEASE_PAGE = "https://github.com/JoHof/lungmask/releases/tag/v0.0"


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(lobes_path: str | os.PathLike | None = None,
                 fill_path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Paths of the LTRCLobes and R231 weight files, or a clear error saying where to put them."""
    found = {}
    for model, given in (("LTRCLobes", lobes_path), ("R231", fill_path)):
        candidates = [Path(given)] if given else []
        if os.environ.get(WEIGHTS_ENV):
            candidates.append(Path(os.environ[WEIGHTS_ENV]) / WEIGHT_FILES[model])
        candidates.append(hub_checkpoint_dir() / WEIGHT_FILES[model])
        found[model] = next((c for c in candidates if c.is_file()), None)
        if given and found[model] != Path(given):
            raise BackendUnavailableError(f"lungmask weight file '{given}' does not exist.")
    missing = [m for m, p in found.items() if p is None]
    if missing:
        files = ", ".join(WEIGHT_FILES[m] for m in missing)
        raise BackendUnavailableError(
            f"lungmask weights not found ({files}). Download them from {RELEASE_PAGE} and put "
            f"them in {hub_checkpoint_dir()} (lungmask's cache) or in a folder named by "
            f"{WEIGHTS_ENV}, or pass their paths (immunodiff segment --lungmask-weights "
            "LOBES.pth R231.pth). Without them use backend 'classic' (no weights needed; lobes "
            "are then approximate)."
        )
    return found["LTRCLobes"], found["R231"]


def check_weight_file(path: Path) -> int:
    """Open a third-party checkpoint safely (``weights_only=True``); return its class count."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is unusable
        raise BackendUnavailableError(
            f"lungmask weight file '{path}' cannot be loaded as plain weights: {error}"
        ) from error
    if not isinstance(state, dict) or not state:
        raise BackendUnavailableError(f"lungmask weight file '{path}' holds no state dict.")
    return len(list(state.values())[-1])


def segment_lobes(ct: sitk.Image, lobes_path: Path, fill_path: Path, task: Task | None = None,
                  batch_size: int = 4) -> sitk.Image:
    """Lobe labels (1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL; lungmask's own numbering) on the CT grid.

    Progress and cancel are checked before every batch of ``batch_size`` slices.
    """
    from lungmask import LMInferer  # deferred: an optional dependency, and a heavy one

    task = task or Task()
    if check_weight_file(lobes_path) != 6:
        raise BackendUnavailableError(
            f"'{lobes_path}' is not an LTRCLobes model (expected 6 output classes).")
    check_weight_file(fill_path)
    inferer = LMInferer(modelpath=str(lobes_path), fillmodel_path=str(fill_path),
                        force_cpu=True, batch_size=batch_size, tqdm_disable=True)
    total = 2 * math.ceil(ct.GetDepth() / batch_size)
    done = [0]

    def before_batch(module, inputs):
        task.report(done[0] / total, f"lungmask batch {done[0] + 1}/{total}")
        done[0] += 1

    handles = [m.register_forward_pre_hook(before_batch) for m in (inferer.model,
                                                                    inferer.fillmodelm)]
    try:
        labels = inferer.apply(ct)
    finally:
        for handle in handles:
            handle.remove()
    task.report(1.0, "lungmask done")
    result = sitk.GetImageFromArray(np.asarray(labels, np.uint8))
    result.CopyInformation(ct)
    return result
