"""Real nodule shapes (:mod:`.lesion_library`) rendered into a CT, at baseline and follow-up.

A template is placed at a centre, scaled isotropically so that its longest axial diameter is
the target, turned about z by any angle, tilted a little about x and y, and perhaps
mirrored. Its signed distance field (smoothed over the 1 mm staircase) is resampled
linearly onto the CT grid, and the occupancy ramps over one voxel at the surface (partial
volume, as in :mod:`.lesions`). The lesion is rendered wherever it reaches: a lesion abutting
the mediastinum or the chest wall replaces part of that tissue.

Density follows the reader's texture rating: 1-2 ground glass (-620..-450 HU, the lung's
vessels showing through), 3-4 part-solid (a solid core inside a ground-glass rim, the core
40-60 % of the lesion's depth for 3, 65-85 % for 4), 5 solid (about +30 HU with texture).
Calcification follows LIDC's codes, as bright foci (+300..+900 HU): 1 popcorn (several small
foci), 2 laminated (a ring and a central focus), 3 solid (the inner part), 4 non-central (one
eccentric focus), 5 central (one central focus), 6 absent. The readers outlined the nodule's
body, not its spicules, so spicules are added by the spiculation rating (2: 3-5, 3: 6-11,
4: 12-19, 5: 20-29): thin soft-tissue strands (0.5-1 mm in radius, tapering) running 4-20 mm
out of the surface into the lung, mostly in the axial plane; they are not part of the mask
(RECIST leaves them out).

At follow-up the same lesion (shape, orientation, calcification) is rendered at another
scale with a density shift, or as one of two responder patterns: "cavitation" (an air
cavity, -1000..-900 HU, inside the shrunk lesion behind an irregular wall of 2-4 mm) and
"scar" (the remnant flattened across its longest axis into a thin, irregular band of lower
density, -300..-100 HU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.measure import find_contours

from .lesion_library import LesionTemplate
from .lesions import GROUND_GLASS_HU, SOLID_HU, local_grid
from .lidc_outlines import caliper_diameter

PAD = 4  # template voxels of outside kept around the mask for the distance field
PATTERNS = (None, "cavitation", "scar")
CAVITY_WALL_MM = (2.0, 4.0)
CAVITY_HU = (-950.0, 20.0)
SCAR_HU = (-300.0, -100.0)
CALCIUM_HU = (300.0, 900.0)
SPICULES = {2: (3, 6), 3: (6, 12), 4: (12, 20), 5: (20, 30)}  # by spiculation rating: [low, high)


@dataclass(frozen=True, eq=False)
class TemplateLesion:
    """Everything needed to render a library shape again (same shape, orientation, foci)."""

    template: LesionTemplate
    centre_lps: tuple[float, float, float]
    diameter_mm: float  # longest axial diameter at scale 1
    rotation: np.ndarray  # (3, 3) the lesion's frame (x, y, z) to LPS
    mirror: bool  # the template flipped left-right first
    core_fraction: float  # part-solid: the solid core's share of the depth; else 0
    glass_hu: float  # ground-glass level (texture 1-4)
    calcium_hu: float
    seed: int  # the template-space noise and calcified foci
    template_diameter: float  # longest axial diameter of the rendered surface, template voxels

    @property
    def texture(self) -> int:
        return self.template.ratings["texture"]

    @property
    def kind(self) -> str:
        """"ground-glass", "part-solid" or "solid" (the texture rating's class)."""
        return ("ground-glass", "ground-glass", "part-solid", "part-solid",
                "solid")[self.texture - 1]

    @property
    def mm_per_voxel(self) -> float:
        """Millimetres one template voxel becomes at scale 1."""
        return self.diameter_mm / self.template_diameter


def _rotation(z_deg: float, x_deg: float, y_deg: float) -> np.ndarray:
    """(3, 3) rotation about z after small tilts about x and y."""
    a, b, c = np.deg2rad([z_deg, x_deg, y_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ ry @ rx


def draw_lesion(rng: np.random.Generator, template: LesionTemplate, centre_lps,
                diameter_mm: float, max_tilt_deg: float = 10.0) -> TemplateLesion:
    """A lesion of ``template`` at ``centre_lps`` with longest axial diameter ``diameter_mm``:
    random orientation, mirroring, and the densities its texture rating implies."""
    texture = template.ratings["texture"]
    rotation = _rotation(rng.uniform(0, 360), *rng.uniform(-max_tilt_deg, max_tilt_deg, 2))
    glass = {1: (-620, -540), 2: (-560, -450)}.get(texture, (-600, -450))
    core = {3: (0.40, 0.60), 4: (0.65, 0.85)}.get(texture, (0.0, 0.0))
    return TemplateLesion(template, tuple(float(c) for c in centre_lps), float(diameter_mm),
                          rotation, bool(rng.random() < 0.5), float(rng.uniform(*core)),
                          float(rng.uniform(*glass)), float(rng.uniform(*CALCIUM_HU)),
                          int(rng.integers(2**31)),
                          _surface_diameter(_distance_field(template.mask)))


def _distance_field(mask: np.ndarray) -> np.ndarray:
    """Signed distance (template voxels; negative inside) of the padded mask, smoothed."""
    padded = np.pad(mask, PAD)
    inside = ndimage.distance_transform_edt(padded)
    outside = ndimage.distance_transform_edt(~padded)
    return ndimage.gaussian_filter(np.where(padded, 0.5 - inside, outside - 0.5), 0.7)


def _surface_diameter(distance: np.ndarray) -> float:
    """Longest axial diameter (voxels) of the zero level of a (z, y, x) distance field: the
    widest caliper across one slice's sub-voxel contour."""
    return max((caliper_diameter(np.concatenate(find_contours(plane, 0.0)))
                for plane in distance if plane.min() < 0), default=1.0)


def _calcification(code: int, depth: np.ndarray, centre: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """(z, y, x) 0..1 calcified fraction in template space for LIDC's calcification code."""
    deepest = max(float(depth.max()), 1.0)
    grid = np.indices(depth.shape).transpose(1, 2, 3, 0)

    def ball(point, radius):
        return np.linalg.norm(grid - point, axis=-1) <= max(radius, 0.6)

    def inner_points(low, high, count):
        points = np.argwhere((depth >= low * deepest) & (depth <= high * deepest))
        if not len(points):
            points = np.argwhere(depth >= depth.max())
        return points[rng.integers(len(points), size=count)]

    foci = np.zeros(depth.shape, bool)
    if code == 1:  # popcorn
        for point in inner_points(0.3, 1.0, int(rng.integers(3, 8))):
            foci |= ball(point, rng.uniform(0.12, 0.2) * deepest)
    elif code == 2:  # laminated
        foci = (np.abs(depth - 0.55 * deepest) < max(0.08 * deepest, 0.5)) | ball(
            centre, 0.15 * deepest)
    elif code == 3:  # solid: the inner part
        foci = depth >= 0.35 * deepest
    elif code == 4:  # non-central
        foci = ball(inner_points(0.3, 0.6, 1)[0], 0.2 * deepest)
    elif code == 5:  # central
        foci = ball(centre, 0.25 * deepest)
    return ndimage.gaussian_filter(foci.astype(np.float32) * (depth > 0), 0.5)


def _fields(lesion: TemplateLesion) -> dict[str, np.ndarray]:
    """The lesion's template-space fields (z, y, x, padded): signed distance, smooth noise in
    -1..1, calcified fraction; and the deepest inside point's depth (voxels)."""
    template = lesion.template
    rng = np.random.default_rng(lesion.seed)
    distance = _distance_field(template.mask)
    noise = ndimage.gaussian_filter(rng.standard_normal(distance.shape), 1.5)
    noise /= max(float(np.abs(noise).max()), 1e-6)
    centre = template.centroid + PAD
    calcium = _calcification(template.ratings["calcification"], -distance, centre, rng)
    return {"distance": distance, "noise": noise, "calcium": calcium,
            "deepest": np.array(max(float(-distance.min()), 0.5))}


def _spicules(lesion: TemplateLesion, fields: dict) -> list[tuple[np.ndarray, ...]]:
    """[(root (3,) x, y, z template voxels from the centroid, unit direction (3,), length mm
    at scale 1, radius mm)]: outward from random surface points, by the spiculation rating."""
    low_high = SPICULES.get(lesion.template.ratings["spiculation"])
    if low_high is None or lesion.kind == "ground-glass":
        return []
    rng = np.random.default_rng([lesion.seed, 1])
    distance = fields["distance"]
    surface = np.argwhere(np.abs(distance) < 0.6)
    if not len(surface):
        return []
    normals = np.stack(np.gradient(distance), axis=-1)[tuple(surface.T)][:, ::-1]  # x, y, z
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-6)
    # mostly sideways, as seen radiating on axial slices, not from the top or bottom
    weights = np.hypot(normals[:, 0], normals[:, 1]) ** 2 + 1e-3
    picks = rng.choice(len(surface), size=int(rng.integers(*low_high)), p=weights / weights.sum())
    spicules = []
    for zyx, normal in zip(surface[picks], normals[picks], strict=True):
        direction = normal * np.array([1.0, 1.0, 0.2]) + rng.normal(0, [0.3, 0.3, 0.1])
        root = (zyx - lesion.template.centroid - PAD)[::-1].astype(float)
        length = float(np.clip(rng.uniform(0.2, 0.45) * lesion.diameter_mm, 4.0, 20.0))
        spicules.append((root, direction / np.linalg.norm(direction), length,
                         float(rng.uniform(0.5, 1.0))))
    return spicules


def _spicule_occupancy(lesion: TemplateLesion, spicules, points: np.ndarray, scale: float,
                       voxel: float) -> np.ndarray:
    """(z, y, x) 0..1 partial-volume occupancy of the spicules at ``points`` (..., 3) LPS."""
    flip = np.array([-1.0 if lesion.mirror else 1.0, 1.0, 1.0])
    occupancy = np.zeros(points.shape[:3], np.float32)
    for root, direction, length, radius in spicules:
        start = np.array(lesion.centre_lps) + lesion.rotation @ (
            flip * root * lesion.mm_per_voxel * scale)
        way = lesion.rotation @ (flip * direction)
        offset = points - start
        along = np.clip(offset @ way / (length * scale), 0.0, 1.0)
        gap = np.linalg.norm(offset - along[..., None] * (length * scale) * way, axis=-1)
        thick = radius * (1.0 - 0.5 * along)
        strand = min(1.0, 2.0 * radius / voxel) * np.clip(1.0 - gap / (thick + voxel / 2),
                                                          0.0, 1.0)
        occupancy = np.maximum(occupancy, strand)
    return occupancy


def _minor_axis(mask: np.ndarray) -> np.ndarray:
    """(3,) unit vector (x, y, 0) across the mask's axial footprint (its least spread)."""
    yx = np.argwhere(mask.any(axis=0)).astype(float)
    if len(yx) < 3:
        return np.array([1.0, 0.0, 0.0])
    _, vectors = np.linalg.eigh(np.cov((yx - yx.mean(0)).T))
    y, x = vectors[:, 0]
    return np.array([x, y, 0.0])


def _template_index(lesion: TemplateLesion, points: np.ndarray, scale: float,
                    squash: tuple[float, float] | None) -> np.ndarray:
    """(3, ...) template (z, y, x) indices of LPS ``points`` (..., 3). ``squash``: (across,
    z) factors flattening the shape across its footprint's minor axis and in z."""
    q = (points - np.array(lesion.centre_lps)) @ lesion.rotation / (lesion.mm_per_voxel * scale)
    if lesion.mirror:
        q[..., 0] *= -1
    if squash is not None:
        axis = _minor_axis(lesion.template.mask)
        q = q + (1.0 / squash[0] - 1.0) * (q @ axis)[..., None] * axis
        q[..., 2] /= squash[1]
    centre = lesion.template.centroid + PAD
    return np.moveaxis(q[..., ::-1] + centre, -1, 0)


def _extent_mm(lesion: TemplateLesion, scale: float, spicules) -> float:
    """The farthest the lesion and its spicules reach from its centre (mm), with a margin."""
    points = np.argwhere(lesion.template.mask) - lesion.template.centroid
    reach = (float(np.linalg.norm(points, axis=1).max()) + 2.0) * lesion.mm_per_voxel
    for root, _, length, _ in spicules:
        reach = max(reach, float(np.linalg.norm(root)) * lesion.mm_per_voxel + length + 2.0)
    return reach * scale


def lesion_mask(lesion: TemplateLesion, image: sitk.Image, scale: float = 1.0) -> np.ndarray:
    """(z, y, x) bool on ``image``'s grid: where :func:`render` would put the lesion's mask
    (occupancy >= 0.5), drawing nothing."""
    mask = np.zeros(image.GetSize()[::-1], bool)
    box, points = local_grid(image, lesion.centre_lps, _extent_mm(lesion, scale, []))
    if box is None or scale <= 0:
        return mask
    index = _template_index(lesion, points, scale, None).reshape(3, -1)
    distance = ndimage.map_coordinates(_distance_field(lesion.template.mask), index, order=1,
                                       mode="nearest")
    mask[box] = distance.reshape(points.shape[:3]) <= 0.0
    return mask


def cavity_possible(lesion: TemplateLesion, scale: float) -> bool:
    """Whether the lesion at ``scale`` is thick enough for a cavity behind a 4 mm wall."""
    depth = -_distance_field(lesion.template.mask).min() * lesion.mm_per_voxel * scale
    return bool(depth >= CAVITY_WALL_MM[1] + 2.0)


def render(values: np.ndarray, image: sitk.Image, lesion: TemplateLesion, scale: float,
           rng: np.random.Generator, density_shift: float = 0.0, halo_hu: float | None = None,
           pattern: str | None = None) -> np.ndarray:
    """Blend the lesion at ``scale`` into ``values`` (HU, (z, y, x) of ``image``'s grid) in
    place; return its (z, y, x) uint8 mask (occupancy >= 0.5). ``density_shift`` moves the
    lesion's density (negative: lower); ``halo_hu`` adds a ground-glass halo two voxels
    thick around it; ``pattern`` is None, "cavitation" or "scar" (follow-up)."""
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    mask = np.zeros(values.shape, np.uint8)
    if scale <= 0:
        return mask
    fields = _fields(lesion)
    spicules = _spicules(lesion, fields) if pattern != "scar" else []
    box, points = local_grid(image, lesion.centre_lps, _extent_mm(lesion, scale, spicules))
    if box is None:
        return mask
    squash = (rng.uniform(0.3, 0.5), rng.uniform(0.5, 0.7)) if pattern == "scar" else None
    index = _template_index(lesion, points, scale, squash).reshape(3, -1)

    def sample(name):
        return ndimage.map_coordinates(fields[name], index, order=1, mode="nearest").reshape(
            points.shape[:3])

    voxel = float(min(image.GetSpacing()))
    to_mm = lesion.mm_per_voxel * scale * (min(squash) if squash else 1.0)
    distance, noise = sample("distance") * to_mm, sample("noise")
    if pattern == "scar":  # irregular edges
        distance = distance + noise * 0.3 * float(fields["deepest"]) * to_mm
    occupancy = np.clip(0.5 - distance / voxel, 0.0, 1.0)
    region = values[box].astype(np.float32)
    texture = ndimage.gaussian_filter(rng.standard_normal(occupancy.shape), 0.8)
    texture /= max(float(texture.std()), 1e-6)
    solid = SOLID_HU[0] + density_shift + SOLID_HU[1] * texture
    glass = np.maximum(region, lesion.glass_hu + density_shift
                       + GROUND_GLASS_HU[1] * 0.7 * texture)
    if lesion.kind == "solid":
        lesion_hu = solid
    elif lesion.kind == "ground-glass":
        lesion_hu = glass
    else:  # the core: deeper than (1 - core fraction) of the deepest point, irregular
        depth = (1 - lesion.core_fraction) * float(fields["deepest"]) * to_mm
        core = np.clip(0.5 - (distance + depth + noise * 0.15 * depth) / voxel, 0.0, 1.0)
        lesion_hu = glass * (1 - core) + solid * core
    if pattern == "scar":
        lesion_hu = rng.uniform(*SCAR_HU) + 40.0 * texture
    calcium = sample("calcium")
    lesion_hu = lesion_hu * (1 - calcium) + (lesion.calcium_hu + 60.0 * texture) * calcium
    if pattern == "cavitation":
        wall = rng.uniform(*CAVITY_WALL_MM)
        cavity = np.clip(0.5 - (distance + wall + 1.5 * noise) / voxel, 0.0, 1.0)
        air = np.maximum(CAVITY_HU[0] + CAVITY_HU[1] * texture, -1024.0)
        lesion_hu = lesion_hu * (1 - cavity) + air * cavity
    if halo_hu is not None:
        outer = ndimage.binary_dilation(occupancy >= 0.5, iterations=2) & (occupancy < 0.5)
        region[outer] = 0.5 * region[outer] + 0.5 * halo_hu
    if spicules:  # into the lung only, outside the body
        strands = _spicule_occupancy(lesion, spicules, points, scale, voxel)
        strands *= (1 - occupancy) * (region < -300)
        region = region * (1 - strands) + (SOLID_HU[0] + density_shift) * strands
    values[box] = region * (1 - occupancy) + lesion_hu * occupancy
    mask[box] = occupancy >= 0.5
    return mask
