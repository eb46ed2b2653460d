"""The lung a cleared tumour leaves: parenchyma borrowed from the same lung beside it.

Where a follow-up drawn as a response clears a tumour (``change_region.committed_clearance``)
the model's own texture is the tumour's outline, so a flat lung level was all it could
draw: a smooth patch without the speckle and small vessels of the lung around it. A
radiologist reads such a patch as an artefact. This module finds, in the same slices, the
nearest patch of the baseline's parenchyma with the tumour's shape (the tumour's outline
shifted in the axial plane onto aerated lung, clear of the tumour's own edge) and lends its
texture: the borrowed values less their median, added to the lung's level where the tumour
was.

The borrowed texture is kept fainter than a lesion (``BELOW_LESION_HU`` below the density
floor every follow-up's lesion is measured with; ``change_region`` applies it): a small
vessel borrowed from elsewhere must not be measured as a residual tumour, so vessels show as
faint branches, not as dense dots.

Arrays are (X, Y, Z) crop voxels (``spacing_mm`` in the same order), in HU.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, signal

AERATED_HU = (-950.0, -550.0)  # the smoothed baseline of parenchyma worth borrowing
SOURCE_SMOOTHING_MM = 4.0  # Gaussian sigma deciding what is parenchyma (vessels within it)
CLEAR_OF_LESION_MM = 6.0  # borrowed lung lies this far from the tumour (its halo, its edge)
MIN_COVERED = 0.6  # share of the tumour the best patch must cover, else nothing is borrowed
NEAR_ENOUGH = 0.97  # patches covering this share of the best one's cover: the nearest wins
BELOW_LESION_HU = 50.0  # the texture stays this far below the lesion's density floor


def borrowed_lung(baseline_hu: np.ndarray, lesion: np.ndarray, spacing_mm,
                  covered: np.ndarray | None = None) -> np.ndarray:
    """(X, Y, Z) float32: for each voxel of ``lesion`` (X, Y, Z) bool, the texture of the
    baseline's parenchyma (HU less the patch's median) at the nearest in-plane shift that
    puts the lesion's outline on aerated lung; NaN where nothing is borrowed (outside the
    lesion, a patch that misses the voxel, or no patch covering ``MIN_COVERED`` of it)."""
    baseline = np.asarray(baseline_hu, np.float32)
    lesion = np.asarray(lesion, bool)
    texture = np.full(baseline.shape, np.nan, np.float32)
    if not lesion.any():
        return texture
    spacing = np.asarray([float(s) for s in spacing_mm])
    smoothed = ndimage.gaussian_filter(baseline, SOURCE_SMOOTHING_MM / spacing)
    far = ndimage.distance_transform_edt(~lesion, sampling=spacing) > CLEAR_OF_LESION_MM
    source = far & (smoothed >= AERATED_HU[0]) & (smoothed < AERATED_HU[1])
    if covered is not None:
        source &= np.asarray(covered, bool)
    shift = _nearest_covering_shift(lesion, source, spacing)
    if shift is None:
        return texture
    targets = np.argwhere(lesion)
    sources = targets + np.array([shift[0], shift[1], 0])
    inside = np.all((sources >= 0) & (sources < np.array(lesion.shape)), axis=1)
    targets, sources = targets[inside], sources[inside]
    usable = source[tuple(sources.T)]
    targets, sources = targets[usable], sources[usable]
    values = baseline[tuple(sources.T)]
    texture[tuple(targets.T)] = values - np.median(values)
    return texture


def _nearest_covering_shift(lesion: np.ndarray, source: np.ndarray,
                            spacing: np.ndarray) -> tuple[int, int] | None:
    """The in-plane shift (voxels along X, Y) that lays the most of ``lesion`` on
    ``source`` (each slice onto the same slice), the nearest in mm among those within
    ``NEAR_ENOUGH`` of the most; None if it covers less than ``MIN_COVERED``."""
    # cover[dx, dy] = sum over x, y, z of lesion[x, y, z] * source[x + dx, y + dy, z]
    cover = sum(signal.correlate(source[:, :, z].astype(np.float32),
                                 lesion[:, :, z].astype(np.float32), mode="full",
                                 method="fft")
                for z in range(lesion.shape[2]) if lesion[:, :, z].any())
    share = np.asarray(cover) / lesion.sum()
    if share.max() < MIN_COVERED:
        return None
    lags_x = np.arange(share.shape[0]) - (lesion.shape[0] - 1)
    lags_y = np.arange(share.shape[1]) - (lesion.shape[1] - 1)
    distance = np.hypot(lags_x[:, None] * spacing[0], lags_y[None, :] * spacing[1])
    candidates = share >= NEAR_ENOUGH * share.max() - 1e-6
    best = np.unravel_index(np.argmin(np.where(candidates, distance, np.inf)), share.shape)
    return int(lags_x[best[0]]), int(lags_y[best[1]])
