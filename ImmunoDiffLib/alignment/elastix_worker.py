"""elastix in a child process: one registration stage, from plain arrays to plain arrays.

The child imports ITK (``itk-elastix``) and never SimpleITK: the two ship their own builds of
the ITK libraries, and using filters of both in one process can crash it. Running elastix
apart also lets a cancel stop it at once (the child is terminated) and turns a crash inside
elastix into an error naming it.

An image crosses as ``(values (Z, Y, X), origin, spacing, direction (9,))``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..background import library_environment, python_executable
from ..errors import AlignmentError
from ..progress import CancelFlag, Cancelled, is_cancelled
from .elastix_maps import ParameterMap

ImageParts = tuple[np.ndarray, tuple, tuple, tuple]


def _itk_image(parts: ImageParts):
    import itk  # deferred: ITK is loaded in the child process only (see the module note)

    values, origin, spacing, direction = parts
    image = itk.image_from_array(np.ascontiguousarray(values))
    image.SetOrigin([float(v) for v in origin])
    image.SetSpacing([float(v) for v in spacing])
    image.SetDirection(itk.matrix_from_array(np.asarray(direction, float).reshape(3, 3)))
    return image


def _parameter_object(parameter_map: ParameterMap):
    import itk  # deferred: ITK is loaded in the child process only (see the module note)

    kind, grid_mm, overrides = parameter_map
    parameters = itk.ParameterObject.New()
    default_kind = "bspline" if kind.startswith("bspline") else kind
    resolutions = int(overrides.get("NumberOfResolutions", ["3"])[0])
    found = (parameters.GetDefaultParameterMap(default_kind, resolutions, grid_mm)
             if default_kind == "bspline" else
             parameters.GetDefaultParameterMap(default_kind, resolutions))
    for name, value in overrides.items():
        found[name] = value
    if len(found["Metric"]) == 1:
        for name in ("Metric0Weight", "Metric1Weight"):
            if name in found:
                del found[name]
    parameters.AddParameterMap(found)
    return parameters


def run_stage(fixed: ImageParts, moving: ImageParts, mask: ImageParts | None,
              parameter_map: ParameterMap, threads: int, want_field: bool) -> dict:
    """One elastix stage (in the calling process): the transform parameters, the centre of
    rotation (linear maps) and, when ``want_field``, the displacement (Z, Y, X, 3) on the
    fixed grid (fixed point -> moving point)."""
    import itk  # deferred: ITK is loaded in the child process only (see the module note)

    extra = {"fixed_mask": _itk_image(mask)} if mask is not None else {}
    moving_image = _itk_image(moving)
    _, transform = itk.elastix_registration_method(
        _itk_image(fixed), moving_image, parameter_object=_parameter_object(parameter_map),
        number_of_threads=threads, log_to_console=False, **extra)
    found = transform.GetParameterMap(0)
    result = {"parameters": [float(v) for v in found["TransformParameters"]]}
    if "CenterOfRotationPoint" in found:
        result["centre"] = [float(v) for v in found["CenterOfRotationPoint"]]
    if want_field:
        field = itk.transformix_deformation_field(moving_image, transform)
        result["field"] = itk.array_from_image(field).astype(np.float32)
    return result


def _save(folder: Path, name: str, parts: ImageParts | None) -> None:
    if parts is not None:
        values, origin, spacing, direction = parts
        np.savez(folder / f"{name}.npz", values=values, origin=origin, spacing=spacing,
                 direction=direction)


def _load(folder: Path, name: str) -> ImageParts | None:
    path = folder / f"{name}.npz"
    if not path.is_file():
        return None
    with np.load(path) as stored:
        return (stored["values"], tuple(stored["origin"]), tuple(stored["spacing"]),
                tuple(stored["direction"]))


def main(folder: str) -> int:
    """The child's entry point: the stage described in ``folder`` (``fixed.npz``,
    ``moving.npz``, ``mask.npz``, ``stage.json``) into ``result.npz``."""
    folder = Path(folder)
    stage = json.loads((folder / "stage.json").read_text(encoding="utf-8"))
    result = run_stage(_load(folder, "fixed"), _load(folder, "moving"), _load(folder, "mask"),
                       tuple(stage["map"]), stage["threads"], stage["want_field"])
    np.savez(folder / "result.tmp.npz", **{k: np.asarray(v) for k, v in result.items()})
    os.replace(folder / "result.tmp.npz", folder / "result.npz")
    return 0


def run_stage_isolated(fixed: ImageParts, moving: ImageParts, mask: ImageParts | None,
                       parameter_map: ParameterMap, threads: int, want_field: bool,
                       cancel: CancelFlag = None, poll_s: float = 0.2) -> dict:
    """:func:`run_stage` in a child Python process; a cancel terminates it (raises
    Cancelled), a crash or error raises :class:`AlignmentError` naming the stage."""
    with tempfile.TemporaryDirectory(prefix="immunodiff-elastix-") as temporary:
        folder = Path(temporary)
        _save(folder, "fixed", fixed)
        _save(folder, "moving", moving)
        _save(folder, "mask", mask)
        (folder / "stage.json").write_text(json.dumps(
            {"map": parameter_map, "threads": threads, "want_field": want_field}),
            encoding="utf-8")
        command = [python_executable(), "-m", "ImmunoDiffLib.alignment.elastix_worker",
                   str(folder)]
        with open(folder / "log.txt", "w", encoding="utf-8") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=library_environment(),
                                     cwd=folder)  # transformix writes files into its cwd
            try:
                while child.poll() is None:
                    if is_cancelled(cancel):
                        raise Cancelled("Cancelled by the user.")
                    time.sleep(poll_s)
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        if child.returncode != 0 or not (folder / "result.npz").is_file():
            lines = (folder / "log.txt").read_text(encoding="utf-8", errors="replace")
            last = [line for line in lines.splitlines() if line.strip()][-1:] or [""]
            cause = (f"a crash inside elastix (signal {-child.returncode})"
                     if child.returncode < 0 else f"exit code {child.returncode}: {last[0][:300]}")
            raise AlignmentError(f"elastix could not align the scans during the "
                                 f"{parameter_map[0]} stage ({cause}); do both scans show the "
                                 "same chest?")
        with np.load(folder / "result.npz") as stored:
            return {name: stored[name] for name in stored.files}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
