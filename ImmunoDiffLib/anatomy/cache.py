"""On-disk cache of anatomy results, keyed by the CT's content and geometry, the backend and
its version, so a CT is segmented once per backend. Entries are written to a temporary folder
and renamed into place, so an interrupted write never leaves a broken entry."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..outputs import atomic_folder

CACHE_FORMAT = 1


def cache_key(ct: sitk.Image, backend_signature: str) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(sitk.GetArrayViewFromImage(ct)).tobytes())
    for values in (ct.GetSize(), ct.GetOrigin(), ct.GetSpacing(), ct.GetDirection()):
        digest.update(np.asarray(values, np.float64).tobytes())
    digest.update(f"{backend_signature}|format{CACHE_FORMAT}".encode())
    return digest.hexdigest()[:32]


class AnatomyCache:
    """A folder of entries ``<key>/{name}.nrrd`` + ``meta.json``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def load(self, key: str) -> tuple[dict[str, sitk.Image], dict] | None:
        entry = self.folder / key
        meta_path = entry / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        maps = {name: sitk.ReadImage(str(entry / f"{name}.nrrd")) for name in meta["maps"]}
        return maps, meta

    def store(self, key: str, maps: dict[str, sitk.Image], meta: dict) -> None:
        with atomic_folder(self.folder / key, overwrite=True) as staging:
            for name, image in maps.items():
                sitk.WriteImage(image, str(staging / f"{name}.nrrd"), useCompression=True)
            (staging / "meta.json").write_text(json.dumps({**meta, "maps": list(maps)},
                                                          indent=2), encoding="utf-8")
