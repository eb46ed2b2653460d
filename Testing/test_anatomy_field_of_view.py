"""Lungs found whatever the field of view: real chest CTs (lung2, LIDC-IDRI-0001) cut so that
a lung touches one or two image borders, a one-lung crop, and a circular field of view padded
with -2048 HU; each compared with the lungs found on the whole scan. And the lobes of a one-lung
field of view: that lung's only."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.anatomy import segment_anatomy
from ImmunoDiffLib.anatomy.classic import _mediastinal_gap
from ImmunoDiffLib.anatomy.classic_lungs import segment_lungs
from ImmunoDiffLib.imaging import read_ct


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def whole_scans(sample_paths, lidc_ct_and_lungs):
    """{name: (CT, lungs (z, y, x) bool found on the whole scan)}."""
    lung2 = read_ct(sample_paths["lung2_image"])
    lidc, lidc_lungs = lidc_ct_and_lungs
    return {"lung2": (lung2, sitk.GetArrayFromImage(segment_lungs(lung2)) > 0),
            "lidc": (lidc, sitk.GetArrayFromImage(lidc_lungs) > 0)}


def _box(lungs: np.ndarray, cut: str, size) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) of a reduced field of view cutting through the lungs' extent."""
    _, ys, xs = np.nonzero(lungs)
    x_lo, x_hi, y_lo, y_hi = xs.min(), xs.max(), ys.min(), ys.max()
    nx, ny = size[:2]
    if cut == "lateral":  # one lung cut at the side: it touches the left image border
        return x_lo + (x_hi - x_lo) // 8, nx, 0, ny
    if cut == "lateral and anterior":  # ... and the top border
        return x_lo + (x_hi - x_lo) // 8, nx, y_lo + (y_hi - y_lo) // 8, ny
    return 0, (x_lo + x_hi) // 2, 0, ny  # one lung, cut at the midline


@pytest.mark.parametrize("name,cut", [("lung2", "lateral"), ("lung2", "lateral and anterior"),
                                      ("lidc", "one lung"), ("lidc", "lateral and anterior")])
def test_lungs_cut_by_a_reduced_field_of_view_are_found(whole_scans, name, cut):
    ct, lungs = whole_scans[name]
    x0, x1, y0, y1 = (int(v) for v in _box(lungs, cut, ct.GetSize()))
    reduced = ct[x0:x1, y0:y1, :]
    expected = lungs[:, y0:y1, x0:x1]
    found = sitk.GetArrayFromImage(segment_lungs(reduced)) > 0
    touching = expected[:, :, 0].any() or expected[:, 0, :].any() or expected[:, :, -1].any()
    assert touching, "the crop must cut through a lung"
    assert _dice(found, expected) >= 0.95


def test_padding_outside_a_circular_field_of_view_is_not_lung(whole_scans):
    ct, lungs = whole_scans["lung2"]
    values = sitk.GetArrayFromImage(ct)
    _, ys, xs = np.nonzero(lungs)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    radius = 0.45 * (xs.max() - xs.min())  # the circle cuts through both lungs
    yy, xx = np.indices(values.shape[1:])
    outside = (yy - cy) ** 2 + (xx - cx) ** 2 > radius ** 2
    padded = values.copy()
    padded[:, outside] = -2048
    image = sitk.GetImageFromArray(padded)
    image.CopyInformation(ct)
    found = sitk.GetArrayFromImage(segment_lungs(image)) > 0
    assert not found[:, outside].any()
    expected = lungs & ~outside[None]
    assert _dice(found, expected) >= 0.95


@pytest.mark.parametrize("half", ["patient's right", "patient's left"])
def test_a_one_lung_field_of_view_gets_the_lobes_of_that_lung_only(lidc_ct_and_lungs,
                                                                   lidc_labels, half):
    """A reconstruction of one lung: its lobes, all on its side, with the warning; before, the
    lung was split at its own middle into a 'left' and a 'right' lung."""
    ct, lungs = lidc_ct_and_lungs
    _, _, xs = np.nonzero(sitk.GetArrayViewFromImage(lungs))
    middle = int((xs.min() + xs.max()) // 2)
    x0, x1 = (0, middle) if half == "patient's right" else (middle, ct.GetSize()[0])
    anatomy = segment_anatomy(ct[x0:x1, :, :], "classic", cache=False)
    lobes = sitk.GetArrayFromImage(anatomy.lobes)
    reference = sitk.GetArrayFromImage(lidc_labels)[:, :, x0:x1]
    ours, theirs = ((3, 4, 5), (12, 13, 14)) if half == "patient's right" else ((1, 2), (10, 11))
    assert set(np.unique(lobes)) == {0, *ours}
    assert np.isin(reference[lobes > 0], theirs).mean() > 0.95
    side = "right" if half == "patient's right" else "left"
    assert any(f"taken as the {side} lung" in w for w in anatomy.warnings), anatomy.warnings
    for lower, reference_lower in ((5, 14), (2, 11)):
        if lower in ours:
            assert _dice(lobes == lower, reference == reference_lower) > 0.8


def test_the_mediastinal_gap_splits_joined_lungs_and_a_single_lung_has_none():
    rng = np.random.default_rng(0)
    right, left = rng.normal(-80, 30, 50_000), rng.normal(85, 28, 42_000)
    assert abs(_mediastinal_gap(np.concatenate([right, left])) - 2.0) < 20.0
    assert _mediastinal_gap(left) is None
    assert _mediastinal_gap(rng.uniform(20, 160, 40_000)) is None
