"""Pictures for people: PNG overviews of a crop in its CT, drawn with matplotlib (no display)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..anatomy.labels import LOBES
from ..imaging.crop import CropSpec, physical_extent
from ..imaging.resample import resample_like
from ..outputs import atomic_output

LUNG_WINDOW = (-1350.0, 150.0)  # HU shown black..white (level -600, width 1500)


def subplots(rows: int = 1, columns: int = 1, figsize=None, **kwargs):
    """(figure, axes) like pyplot.subplots, without pyplot: no global figure state and no
    backend switch, so drawing inside an application (3D Slicer) leaves its matplotlib
    settings alone; PNGs are written by matplotlib's Agg renderer."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, columns, **kwargs)


def save_figure(figure, path: str | os.PathLike, overwrite: bool = True, dpi: int = 100,
                rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay out (within ``rect``) and write a figure atomically as PNG."""
    figure.tight_layout(rect=rect)
    with atomic_output(path, overwrite, suffix=".png") as temporary:
        figure.savefig(temporary, dpi=dpi, format="png")
    return Path(path)


def axial_slice_through(image: sitk.Image, point_lps, in_plane_mm: float | None = None):
    """The axial (LPS-aligned) plane of ``image`` through ``point_lps``, resampled in physical
    space so any direction matrix displays correctly. Returns (array (y, x), extent for imshow)."""
    low, high = physical_extent(image)
    step = in_plane_mm or float(min(image.GetSpacing()[:2]))
    size = [max(1, int(np.ceil((high[i] - low[i]) / step))) for i in range(2)] + [1]
    plane = sitk.Image(size, sitk.sitkFloat32)
    plane.SetSpacing((step, step, 1.0))
    plane.SetOrigin((low[0] + step / 2, low[1] + step / 2, float(point_lps[2])))
    values = sitk.GetArrayFromImage(
        resample_like(image, plane, sitk.sitkLinear, LUNG_WINDOW[0], sitk.sitkFloat32)
    )[0]
    extent = (low[0], low[0] + size[0] * step, low[1] + size[1] * step, low[1])
    return values, extent


def crop_views(crop: sitk.Image):
    """Middle axial, coronal and sagittal planes of a crop with imshow extents in mm."""
    values = sitk.GetArrayFromImage(crop)  # (z, y, x)
    (ox, oy, oz), (sx, sy, sz) = crop.GetOrigin(), crop.GetSpacing()
    nz, ny, nx = values.shape
    x0, x1 = ox - sx / 2, ox + (nx - 0.5) * sx
    y0, y1 = oy - sy / 2, oy + (ny - 0.5) * sy
    z0, z1 = oz - sz / 2, oz + (nz - 0.5) * sz
    return [
        ("axial", values[nz // 2], (x0, x1, y1, y0), "x (mm, L)", "y (mm, P)"),
        ("coronal", values[:, ny // 2, :][::-1], (x0, x1, z0, z1), "x (mm, L)", "z (mm, S)"),
        ("sagittal", values[:, :, nx // 2][::-1], (y0, y1, z0, z1), "y (mm, P)", "z (mm, S)"),
    ]


def save_crop_overview(
    ct: sitk.Image,
    crop: sitk.Image,
    centre_lps,
    path: str | os.PathLike,
    tumour_crop: sitk.Image | None = None,
    spec: CropSpec = CropSpec(),
    title: str = "",
    overwrite: bool = True,
) -> Path:
    """PNG: the CT's axial slice through the point with the crop box, then the crop's three
    middle planes (tumour outlined in red when a label crop is given)."""
    figure, axes = subplots(1, 4, figsize=(17, 4.6))
    plane, extent = axial_slice_through(ct, centre_lps)
    axes[0].imshow(plane, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], extent=extent)
    half = np.array(spec.extent_mm) / 2
    box_x = [centre_lps[0] - half[0], centre_lps[0] + half[0]]
    box_y = [centre_lps[1] - half[1], centre_lps[1] + half[1]]
    axes[0].plot([box_x[0], box_x[1], box_x[1], box_x[0], box_x[0]],
                 [box_y[0], box_y[0], box_y[1], box_y[1], box_y[0]], color="yellow", lw=1.2)
    axes[0].plot(centre_lps[0], centre_lps[1], "+", color="red", ms=12, mew=2)
    axes[0].set_title(f"CT axial at z = {centre_lps[2]:.1f} mm, crop box")
    axes[0].set_xlabel("x (mm, L)")
    axes[0].set_ylabel("y (mm, P)")
    label_views = crop_views(tumour_crop) if tumour_crop is not None else [None] * 3
    for axis, view, label_view in zip(axes[1:], crop_views(crop), label_views, strict=True):
        name, values, view_extent, xlabel, ylabel = view
        width = abs(view_extent[1] - view_extent[0])
        height = abs(view_extent[3] - view_extent[2])
        stretch = max(1.0, width / height / 2.0) if name != "axial" else 1.0
        axis.imshow(values, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1],
                    extent=view_extent, interpolation="nearest", aspect=stretch)
        if label_view is not None and label_view[1].max() > 0:
            axis.contour(label_view[1] > 0.5, levels=[0.5], colors="red", linewidths=1.0,
                         extent=view_extent, origin="upper")
        axis.set_title(f"crop {name} (middle plane)"
                       + (f", z stretched x{stretch:.0f}" if stretch > 1 else ""))
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
    figure.suptitle(title or "ImmunoDiff crop (research use only)")
    return save_figure(figure, path, overwrite, dpi=110)


def _plane(image: sitk.Image, axis: str, point_lps, reference_step: float,
           interpolator=sitk.sitkLinear, default=LUNG_WINDOW[0]):
    """An LPS-aligned axial or coronal plane of ``image`` through ``point_lps``, resampled in
    physical space. Returns (array, imshow extent)."""
    low, high = physical_extent(image)
    step = reference_step
    if axis == "axial":
        size = [int(np.ceil((high[0] - low[0]) / step)), int(np.ceil((high[1] - low[1]) / step)), 1]
        origin = (low[0] + step / 2, low[1] + step / 2, float(point_lps[2]))
        direction = np.eye(3)
    else:  # coronal: rows run S->I, columns L; a plane at fixed y
        size = [int(np.ceil((high[0] - low[0]) / step)), int(np.ceil((high[2] - low[2]) / step)), 1]
        origin = (low[0] + step / 2, float(point_lps[1]), high[2] - step / 2)
        direction = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)
    plane = sitk.Image([max(s, 1) for s in size], sitk.sitkFloat32)
    plane.SetSpacing((step, step, 1.0))
    plane.SetOrigin(origin)
    plane.SetDirection(direction.ravel().tolist())
    values = sitk.GetArrayFromImage(
        resample_like(image, plane, interpolator, default, sitk.sitkFloat32))[0]
    if axis == "axial":
        extent = (low[0], low[0] + size[0] * step, low[1] + size[1] * step, low[1])
    else:
        extent = (low[0], low[0] + size[0] * step, high[2] - size[1] * step, high[2])
    return values, extent


def save_anatomy_overview(ct: sitk.Image, anatomy, path: str | os.PathLike,
                          point_lps=None, title: str = "", overwrite: bool = True) -> Path:
    """PNG: axial and coronal planes with lobes in colour and vessels outlined (arteries red,
    veins blue where the backend separates them). ``anatomy`` is an
    :class:`~ImmunoDiffLib.anatomy.Anatomy`."""
    if point_lps is None:
        lungs = sitk.GetArrayViewFromImage(anatomy.lungs)
        z, y, x = (int(np.median(i)) for i in np.nonzero(lungs))
        point_lps = anatomy.lungs.TransformIndexToPhysicalPoint((x, y, z))
    step = float(min(ct.GetSpacing()))
    colours = ListedColormap([(0, 0, 0, 0)] + [(*s.colour, 0.45) for s in LOBES])
    figure, axes = subplots(1, 2, figsize=(13, 6.2))
    for axis, view in zip(axes, ("axial", "coronal"), strict=True):
        image, extent = _plane(ct, view, point_lps, step)
        lobes, _ = _plane(anatomy.lobes, view, point_lps, step, sitk.sitkNearestNeighbor, 0)
        axis.imshow(image, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], extent=extent)
        axis.imshow(lobes, cmap=colours, vmin=0, vmax=len(LOBES), extent=extent,
                    interpolation="nearest")
        vessel_maps = ([(anatomy.arteries, "red"), (anatomy.veins, "royalblue")]
                       if anatomy.arteries is not None else [(anatomy.vessels, "red")])
        for vessel_map, colour in vessel_maps:
            vessels, _ = _plane(vessel_map, view, point_lps, step, sitk.sitkNearestNeighbor, 0)
            if vessels.max() > 0:
                axis.contour(vessels > 0.5, levels=[0.5], colors=colour, linewidths=0.5,
                             extent=extent, origin="upper")
        axis.set_title(f"{view} through ({point_lps[0]:.0f}, {point_lps[1]:.0f}, "
                       f"{point_lps[2]:.0f}) mm LPS")
        axis.set_xlabel("x (mm, patient left ->)")
    legend = [Patch(color=s.colour, label=s.name) for s in LOBES]
    legend.append(Patch(color="red", label="vessels" if anatomy.arteries is None
                        else "arteries"))
    if anatomy.veins is not None:
        legend.append(Patch(color="royalblue", label="veins"))
    axes[1].legend(handles=legend, loc="lower right", fontsize=8)
    approximate = " — lobes APPROXIMATE (geometric, no weights)" if getattr(
        anatomy, "lobes_approximate", False) else ""
    figure.suptitle(title or f"Lobes: {anatomy.lobes_backend}, vessels: "
                             f"{anatomy.vessels_backend}{approximate}")
    return save_figure(figure, path, overwrite)
