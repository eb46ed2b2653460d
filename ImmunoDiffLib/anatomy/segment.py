"""``segment_anatomy``: lobes and vessels of a CT from the chosen backend(s), with fallback.

Backends (``backend=``):
* ``"paper"``: lobes from lungmask (LTRCLobes + R231), vessels from TotalSegmentator
  (``lung_vessels``: arteries and veins) — the paper's choice;
* ``"lungmask"``: lobes from lungmask, vessels classic (inside lungmask's lungs);
* ``"totalsegmentator"``: lobes from TotalSegmentator's ``total`` task, vessels from
  ``lung_vessels``;
* ``"classic"``: no weights at all; lobes are approximate (flagged): the geometric division
  refined by the vessel tree (``vessel_tree_lobes.py``), or the geometric division alone;
* ``"auto"`` (default): the paper's backends where their weights are installed (lobes from
  TotalSegmentator when only its weights are), else classic, with a warning naming what was
  missing (:func:`resolve_backends`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import BackendUnavailableError, ImageError, SettingError
from ..imaging import validate_ct
from ..progress import CancelFlag, ProgressCallback, Task
from ..settings import cache_dir
from . import classic, lungmask_backend, totalseg_backend
from .cache import AnatomyCache, cache_key
from .classic_lungs import segment_lungs
from .vessel_tree_lobes import vessel_tree_lobes

LOBE_WARNINGS = {  # the classic backend's lobes, by the method that made them
    "vessel tree": "Lobes are approximate (classic backend): the geometric division with its "
                   "boundaries moved into the gaps between the lobes' vessel trees, not a "
                   "segmentation of the fissures.",
    "geometric": "Lobes are a geometric approximation (classic backend; the vessel tree was not "
                 "used: {reason}), not a segmentation of the fissures.",
}
ONE_LUNG_WARNING = ("Lobes are approximate: only one lung is in view (a reduced field of "
                    "view), taken as the {side} lung from where it lies relative to the "
                    "scanner's centre (x = 0).")
CLASSIC_VERSION = 6  # bump when the classic algorithm changes (invalidates cached results)
BACKENDS = ("auto", "paper", "lungmask", "totalsegmentator", "classic")
PRESETS = {  # backend -> (lobes from, vessels from)
    "paper": ("lungmask", "totalsegmentator"),
    "lungmask": ("lungmask", "classic"),
    "totalsegmentator": ("totalsegmentator", "totalsegmentator"),
    "classic": ("classic", "classic"),
}


@dataclass
class Anatomy:
    """Label maps on the CT's own grid (uint8): ``lungs`` 0/1, ``lobes`` 0-5 (1 LUL, 2 LLL,
    3 RUL, 4 RML, 5 RLL), ``vessels`` 0/1, and ``arteries``/``veins`` 0/1 when the backend
    separates them. ``lobes_approximate`` is True for the classic lobes, and ``lobes_method``
    says how they were made."""

    lungs: sitk.Image
    lobes: sitk.Image
    vessels: sitk.Image
    lobes_backend: str
    vessels_backend: str
    arteries: sitk.Image | None = None
    veins: sitk.Image | None = None
    warnings: list[str] = field(default_factory=list)
    from_cache: bool = False
    lobes_method: str = ""  # classic: "vessel tree" or "geometric"; else the backend's name

    def __post_init__(self):
        self.lobes_method = self.lobes_method or self.lobes_backend

    @property
    def lobes_approximate(self) -> bool:
        return self.lobes_backend == "classic"

    def maps(self) -> dict[str, sitk.Image]:
        out = {"lungs": self.lungs, "lobes": self.lobes, "vessels": self.vessels}
        if self.arteries is not None:
            out["arteries"] = self.arteries
        if self.veins is not None:
            out["veins"] = self.veins
        return out


def _binary(values: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def resolve_backends(backend: str, lungmask_weights=None,
                     totalseg_fast: bool = False) -> tuple[str, str, list[str]]:
    """(lobes from, vessels from, warnings) for ``backend``, without running anything.

    ``"auto"``: lobes from lungmask where its weights are installed, else from TotalSegmentator's
    ``total`` task where its weights are (the TotalSegmentator Slicer extension installs them),
    else classic; vessels from TotalSegmentator's ``lung_vessels`` where installed, else classic.
    Each fallback adds a warning naming what was missing.
    """
    if backend not in BACKENDS:
        raise SettingError(f"Unknown anatomy backend {backend!r}; choose one of {BACKENDS}.")
    if backend != "auto":
        return (*PRESETS[backend], [])
    warnings = []
    lobes, vessels = "lungmask", "totalsegmentator"
    try:
        lungmask_backend.find_weights(*(lungmask_weights or (None, None)))
    except BackendUnavailableError as lungmask_error:
        try:
            totalseg_backend.check_weights(totalseg_backend.LOBES_TASK, totalseg_fast)
            lobes = "totalsegmentator"
            warnings.append(f"Lobes: lungmask unavailable, used TotalSegmentator. "
                            f"{lungmask_error}")
        except BackendUnavailableError as error:
            lobes = "classic"
            warnings.append(f"Lobes: lungmask unavailable, TotalSegmentator's lobe models too; "
                            f"used the classic approximation. {lungmask_error} {error}")
    try:
        totalseg_backend.check_weights(totalseg_backend.VESSELS_TASK, totalseg_fast)
    except BackendUnavailableError as error:
        vessels = "classic"
        warnings.append(f"Vessels: TotalSegmentator unavailable, used classic vesselness. "
                        f"{error}")
    return lobes, vessels, warnings


def _signature(lobes: str, vessels: str, lungmask_weights, totalseg_fast: bool) -> str:
    parts = [f"immunodiff{__version__}", f"lobes={lobes}", f"vessels={vessels}",
             f"classic{CLASSIC_VERSION}"]
    if lobes == "lungmask":
        paths = lungmask_backend.find_weights(*(lungmask_weights or (None, None)))
        parts += [f"lungmask{version('lungmask')}"] + [f"{p.name}:{p.stat().st_size}"
                                                      for p in paths]
    if "totalsegmentator" in (lobes, vessels):
        parts += [f"totalsegmentator{version('TotalSegmentator')}", f"fast={totalseg_fast}"]
    return "|".join(parts)


def segment_anatomy(
    ct: sitk.Image,
    backend: str = "auto",
    *,
    lungmask_weights: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    totalseg_fast: bool = False,
    device: str = "cpu",
    cache: bool | str | os.PathLike = True,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
) -> Anatomy:
    """Lungs, lobes and vessels of ``ct`` (a CT in HU) on its own grid.

    ``cache``: True for the user cache, a folder, or False. ``cancel`` stops the work within a
    few seconds by raising :class:`~ImmunoDiffLib.progress.Cancelled`; nothing is cached then.
    """
    validate_ct(ct)
    task = Task(progress, cancel)
    lobes_from, vessels_from, warnings = resolve_backends(backend, lungmask_weights,
                                                         totalseg_fast)
    store = None
    if cache:
        folder = Path(cache) if not isinstance(cache, bool) else cache_dir() / "anatomy"
        store = AnatomyCache(folder)
        key = cache_key(ct, _signature(lobes_from, vessels_from, lungmask_weights,
                                       totalseg_fast))
        hit = store.load(key)
        if hit is not None:
            maps, meta = hit
            task.report(1.0, "anatomy from cache")
            return Anatomy(maps["lungs"], maps["lobes"], maps["vessels"], meta["lobes_backend"],
                           meta["vessels_backend"], maps.get("arteries"), maps.get("veins"),
                           warnings + meta["warnings"], from_cache=True,
                           lobes_method=meta.get("lobes_method", meta["lobes_backend"]))

    arteries = veins = None
    lungs = None
    if lobes_from == "lungmask":
        lobes = lungmask_backend.segment_lobes(
            ct, *lungmask_backend.find_weights(*(lungmask_weights or (None, None))),
            task=task.sub(0.0, 0.5))
    elif lobes_from == "totalsegmentator":
        maps = totalseg_backend.run_task(ct, totalseg_backend.LOBES_TASK, totalseg_fast,
                                         device, task.sub(0.0, 0.5))
        lobes = totalseg_backend.lobes_from_maps(maps, ct)
    else:
        lungs = segment_lungs(ct)
        task.report(0.3, "lobes (approximate)")
        lobes = classic.approximate_lobes(lungs)
    if lungs is None:
        lungs = _binary(sitk.GetArrayViewFromImage(lobes) > 0, ct)
    if not sitk.GetArrayViewFromImage(lungs).any():
        raise ImageError("No lung was found in the CT: is it a chest CT with the lungs in view?")

    if vessels_from == "totalsegmentator":
        maps = totalseg_backend.run_task(ct, totalseg_backend.VESSELS_TASK, totalseg_fast,
                                         device, task.sub(0.5, 1.0))
        arteries, veins = maps["lung_arteries"], maps["lung_veins"]
        vessels = _binary((sitk.GetArrayViewFromImage(arteries) > 0)
                          | (sitk.GetArrayViewFromImage(veins) > 0), ct)
    else:
        vessels = classic.segment_vessels(ct, lungs, task.sub(0.4, 0.95))

    lobes_method = lobes_from
    if lobes_from == "classic":
        lobes, reason = vessel_tree_lobes(lungs, vessels, prior=lobes)
        lobes_method = "geometric" if reason else "vessel tree"
        warnings.append(LOBE_WARNINGS[lobes_method].format(reason=reason))
        in_view = classic.lungs_in_view(lobes)
        if in_view != "both":
            warnings.append(ONE_LUNG_WARNING.format(side=in_view))
    anatomy = Anatomy(lungs, lobes, vessels, lobes_from, vessels_from, arteries, veins, warnings,
                      lobes_method=lobes_method)
    if store is not None:
        store.store(key, anatomy.maps(), {
            "lobes_backend": lobes_from, "vessels_backend": vessels_from,
            "lobes_method": lobes_method,
            "warnings": [w for w in warnings if w.startswith("Lobes are")]})
    task.report(1.0, "anatomy done")
    return anatomy
