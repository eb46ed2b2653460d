"""One case's results, from the scene to disk: the case folder ``immunodiff predict`` writes,
and with ``dicom`` its ``dicom/`` folder (``predict --dicom``) in the study of the baseline
volume (its DICOM identity: :mod:`.dicom_identity`).

Results of :func:`~.cases.process_case` carry the pipeline's Result, so every file of the case
folder is written, as the command line writes it. Results loaded from a case folder
(:func:`~.cases.load_case_folder`: the Slicer panel's background run) already have their case
folder; for them the DICOM outputs are made from the nodes (the synthesized follow-up, the
lobes and vessels of the segmentation node) and the predictions, beside ``predictions.json``;
when they still have that case folder (``nodes["case folder"]``: the Slicer panel keeps the
last one), it is copied whole (the scenario follow-ups with it), the DICOM outputs beside it.
Every check runs before anything is written, and the folder is written all or nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import BackendUnavailableError, ImageError
from ..inference.cases import PREDICTIONS_NAME, write_case
from ..outputs import atomic_folder, check_output_path
from .dicom_identity import volume_identity
from .segmentations import segmentation_to_anatomy
from .volumes import volume_node_to_image


def _check_same_grid(image: sitk.Image, ct: sitk.Image, what: str, volume_name: str) -> None:
    same = (image.GetSize() == ct.GetSize()
            and np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
            and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
            and np.allclose(image.GetDirection(), ct.GetDirection(), atol=1e-5))
    if not same:
        raise ImageError(
            f"The results' {what} ({' x '.join(map(str, image.GetSize()))} voxels) is not on "
            f"the grid of volume '{volume_name}' ({' x '.join(map(str, ct.GetSize()))} "
            "voxels): save the results with the baseline volume they were computed from.")


def _dicom_baseline(volume_node, ct: sitk.Image, case_id: str, tumour_mask, database):
    """The baseline as the DICOM outputs need it: its CT, identity and drawn tumour."""
    try:  # deferred: highdicom, an optional dependency, is needed only for DICOM outputs
        from ..dicom_export.write import DicomBaseline
    except ImportError as error:
        raise BackendUnavailableError(
            f"DICOM outputs need the highdicom package ({error}); install it (the module's "
            "Install button, or pip install highdicom) or save without DICOM.") from error
    return DicomBaseline(ct, volume_identity(volume_node, ct, case_id, database), tumour_mask)


def _case_from_nodes(volume_node, nodes: dict, ct: sitk.Image, case_id: str):
    """The DICOM outputs' :class:`~ImmunoDiffLib.dicom_export.write.DicomCase` from loaded
    results: the follow-up node, the segmentation node's lobes and vessels (named by the
    backends that made them), the predictions."""
    from ..dicom_export.write import DicomCase  # deferred: highdicom (checked by the caller)

    summary = nodes["summary"]
    followup = volume_node_to_image(nodes["followup"])
    _check_same_grid(followup, ct, "synthesized follow-up", volume_node.GetName())
    try:
        anatomy = segmentation_to_anatomy(nodes["segmentation"], volume_node)
    except ValueError as error:  # a segment missing: said as it is
        raise ImageError(str(error)) from error
    anatomy = dataclasses.replace(
        anatomy, lobes_backend=str(summary.get("lobes_backend") or anatomy.lobes_backend),
        vessels_backend=str(summary.get("vessels_backend") or anatomy.vessels_backend),
        lobes_method=str(summary.get("lobes_method") or ""))
    point = summary.get("tumour_point_lps")
    if point is None or len(point) != 3:
        raise ImageError("The results' predictions have no tumour_point_lps (x, y, z in LPS "
                         "mm); they are needed to place the tumour in the DICOM outputs.")
    return DicomCase(followup, anatomy, tuple(float(v) for v in point),
                     {"patient_id": case_id, **summary})


def save_results(volume_node, nodes: dict, folder: str | os.PathLike, *, dicom: bool = False,
                 overwrite: bool = False, case_id: str | None = None, tumour_mask=None,
                 database=None) -> Path:
    """Write the results ``nodes`` of ``volume_node`` (the baseline) into ``folder``, all or
    nothing, and return it.

    Results of :func:`~.cases.process_case` (with ``result``): the case folder ``immunodiff
    predict`` writes, with ``dicom`` also ``dicom/``. Results loaded from a case folder (with
    ``summary``): ``predictions.json`` and ``dicom/``, so ``dicom`` must be True; with their
    folder still at hand (``case folder``), that whole folder, with ``dicom`` also ``dicom/``.
    ``case_id``:
    the case's name (default: the volume's); ``tumour_mask``: the drawn tumour (label map)
    for the segmentation, else the lesion at the tumour point; ``database``: where the
    volume's DICOM files are found (default ``slicer.dicomDatabase``). The volume and the
    nodes are only read."""
    folder = Path(folder)
    case_id = case_id or volume_node.GetName()
    result = nodes.get("result")
    if result is None and "summary" not in nodes:
        raise ImageError("These are not the results of a case: they hold neither 'result' "
                         "(from process) nor 'summary' (from a case folder).")
    source = nodes.get("case folder")
    if source is not None and not (Path(source) / PREDICTIONS_NAME).is_file():
        raise ImageError(f"The results' case folder '{source}' is gone (no {PREDICTIONS_NAME}"
                         "); run the case again to save it.")
    if result is None and source is None and not dicom:
        raise ImageError("These results were loaded from a case folder, which holds them "
                         "already; pass dicom=True to write their DICOM outputs.")
    missing = [key for key in ("followup", "segmentation") if nodes.get(key) is None]
    if result is None and missing:
        raise ImageError(f"The results lack the node(s) {', '.join(missing)}; the DICOM "
                         "outputs are made from them.")
    check_output_path(folder, overwrite)
    try:
        ct = volume_node_to_image(volume_node)
    except ValueError as error:  # under a transform
        raise ImageError(str(error)) from error
    baseline = _dicom_baseline(volume_node, ct, case_id, tumour_mask, database) if dicom \
        else None
    if result is not None:
        _check_same_grid(result.followup_ct, ct, "synthesized follow-up",
                         volume_node.GetName())
        return write_case(result, folder, case_id, overwrite,
                          real_followup=nodes.get("real followup comparison"), dicom=baseline)
    case = _case_from_nodes(volume_node, nodes, ct, case_id) if dicom else None
    with atomic_folder(folder, overwrite) as staging:
        summary = case.summary if case is not None else None
        if source is not None:  # the whole case folder, under the case's name; DICOM
            # outputs it has already are made again below, in the baseline volume's study
            def stale_dicom(folder, names):
                return ["dicom"] if case is not None and Path(folder) == Path(source) else []

            shutil.copytree(source, staging, dirs_exist_ok=True, ignore=stale_dicom)
            summary = {**json.loads((staging / PREDICTIONS_NAME).read_text(encoding="utf-8")),
                       "patient_id": case_id}
        (staging / PREDICTIONS_NAME).write_text(json.dumps(summary, indent=2),
                                                encoding="utf-8")
        if case is not None:  # the case folder's report picture, when it came with it
            picture = staging / "report.png"
            baseline.write(case, staging, case_id, picture if picture.is_file() else None)
    return folder
