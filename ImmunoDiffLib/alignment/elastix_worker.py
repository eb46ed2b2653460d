"""elastix in a child process: one registration stage, from plain arrays to plain arrays.

The child imports ITK (``itk-elastix``) and never SimpleITK: the two ship their own builds of
the ITK libraries, and using filters of both in one process can crash it. Running elastix
apart also lets a cancel stop it at once (the child is terminated) and turns a crash inside
elastix into an error naming it. The child lives on between stages (:class:`ElastixWorker`):
ITK is imported once per process, not once per stage.

An image crosses as ``(values (Z, Y, X), origin, spacing, direction (9,))``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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


def _run_folder(folder: Path) -> None:
    """The stage described in ``folder`` (``fixed.npz``, ``moving.npz``, ``mask.npz``,
    ``stage.json``) into ``result.npz``, or its error into ``error.txt``."""
    os.chdir(folder)  # transformix writes files into the working folder
    try:
        stage = json.loads((folder / "stage.json").read_text(encoding="utf-8"))
        result = run_stage(_load(folder, "fixed"), _load(folder, "moving"),
                           _load(folder, "mask"), tuple(stage["map"]), stage["threads"],
                           stage["want_field"])
        np.savez(folder / "result.tmp.npz", **{k: np.asarray(v) for k, v in result.items()})
        os.replace(folder / "result.tmp.npz", folder / "result.npz")
    except Exception as error:  # noqa: BLE001 - any failure goes back to the parent in words
        (folder / "error.tmp").write_text(f"{type(error).__name__}: {error}", encoding="utf-8")
        os.replace(folder / "error.tmp", folder / "error.txt")


def serve() -> int:
    """The child's entry point: import ITK once, then run the stage folder named on each
    line of stdin, one after another, until stdin closes."""
    import itk  # deferred: ITK is loaded in the child process only (see the module note)

    itk.ElastixRegistrationMethod  # noqa: B018 - loads elastix now, not during the first stage
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip():
            _run_folder(Path(line.strip()))
            print("done", flush=True)
    return 0


class ElastixWorker:
    """One child Python process that runs elastix stages one after another.

    Importing ITK with elastix takes ~10 s, more than a stage itself on a registration grid;
    the child pays it once and then serves every stage of every alignment this process asks
    for. A cancel or a crash ends the child; the next stage starts a new one."""

    def __init__(self):
        self._child: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._home = Path(tempfile.mkdtemp(prefix="immunodiff-elastix-"))
        self._log = self._home / "log.txt"

    def _ensure_child(self) -> subprocess.Popen:
        if self._child is None or self._child.poll() is not None:
            with open(self._log, "w", encoding="utf-8") as log:
                self._child = subprocess.Popen(
                    [python_executable(), "-m", "ImmunoDiffLib.alignment.elastix_worker"],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True,
                    env=library_environment(), cwd=self._home)
        return self._child

    def _stop_child(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        self._child = None

    def start(self) -> None:
        """Start the child now (it imports ITK, ~10 s, on one core) so that the import runs
        while the caller prepares the scans; a child already running is kept."""
        with self._lock:
            self._ensure_child()

    def close(self) -> None:
        with self._lock:
            if self._child is not None and self._child.poll() is None and self._child.stdin:
                self._child.stdin.close()
                try:
                    self._child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._stop_child()
            shutil.rmtree(self._home, ignore_errors=True)

    def run(self, fixed: ImageParts, moving: ImageParts, mask: ImageParts | None,
            parameter_map: ParameterMap, threads: int, want_field: bool,
            cancel: CancelFlag = None, poll_s: float = 0.05) -> dict:
        """:func:`run_stage` in the child; a cancel terminates it (raises Cancelled), a
        crash or error raises :class:`AlignmentError` naming the stage."""
        with self._lock, tempfile.TemporaryDirectory(dir=self._home) as temporary:
            folder = Path(temporary)
            _save(folder, "fixed", fixed)
            _save(folder, "moving", moving)
            _save(folder, "mask", mask)
            (folder / "stage.json").write_text(json.dumps(
                {"map": parameter_map, "threads": threads, "want_field": want_field}),
                encoding="utf-8")
            child = self._ensure_child()
            try:
                child.stdin.write(f"{folder}\n")
                child.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the child died: reported below with its log
            try:
                while not ((folder / "result.npz").is_file()
                           or (folder / "error.txt").is_file()) and child.poll() is None:
                    if is_cancelled(cancel):
                        raise Cancelled("Cancelled by the user.")
                    time.sleep(poll_s)
            except BaseException:
                self._stop_child()
                raise
            if (folder / "result.npz").is_file():
                with np.load(folder / "result.npz") as stored:
                    return {name: stored[name] for name in stored.files}
            if (folder / "error.txt").is_file():
                cause = (folder / "error.txt").read_text(encoding="utf-8")[:300]
            else:
                code = child.wait()
                self._stop_child()
                lines = self._log.read_text(encoding="utf-8", errors="replace").splitlines()
                last = [line for line in lines if line.strip() and line != "ready"][-1:]
                cause = (f"a crash inside elastix (signal {-code})" if code < 0
                         else f"exit code {code}: {(last or [''])[0][:300]}")
            raise AlignmentError(f"elastix could not align the scans during the "
                                 f"{parameter_map[0]} stage ({cause}); do both scans show the "
                                 "same chest?")


_SHARED: ElastixWorker | None = None
_SHARED_LOCK = threading.Lock()


def shared_worker() -> ElastixWorker:
    """The process's elastix worker (started on first use, closed at exit)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = ElastixWorker()
            atexit.register(_SHARED.close)
        return _SHARED


def run_stage_isolated(fixed: ImageParts, moving: ImageParts, mask: ImageParts | None,
                       parameter_map: ParameterMap, threads: int, want_field: bool,
                       cancel: CancelFlag = None) -> dict:
    """:func:`run_stage` in the shared child process (:class:`ElastixWorker`)."""
    return shared_worker().run(fixed, moving, mask, parameter_map, threads, want_field, cancel)


if __name__ == "__main__":
    sys.exit(serve())
