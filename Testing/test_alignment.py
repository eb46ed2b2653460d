"""Follow-up -> baseline alignment (elastix) on real CT with a known transform, the simulated
second scan, the quality measures and every refusal."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib import cli
from ImmunoDiffLib.alignment import align_followup, elastix_maps, elastix_worker
from ImmunoDiffLib.alignment.quality import jacobian_determinant
from ImmunoDiffLib.anatomy import segment_anatomy
from ImmunoDiffLib.errors import AlignmentError, SettingError
from ImmunoDiffLib.imaging.labels import label_centroid
from ImmunoDiffLib.progress import Cancelled
from ImmunoDiffLib.simulation import lesions
from ImmunoDiffLib.simulation.acquisition import AcquisitionConfig, acquire_second_scan


def _volume_ml(mask: sitk.Image) -> float:
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(mask)) *
                 np.prod(mask.GetSpacing()) / 1000.0)


@pytest.fixture(scope="module")
def lung2_pair(lung2, lung2_label):
    """lung2 as the baseline; its follow-up with the tumour shrunk to 60 % of its diameter,
    scanned again (repositioned, another breathing state, grid and noise); landmarks."""
    ct = sitk.Clamp(lung2, sitk.sitkFloat32, lowerBound=-1024)
    tumour = sitk.Cast(lung2_label > 0, sitk.sitkUInt8)
    lungs = segment_anatomy(lung2, "classic").lungs
    rng = np.random.default_rng(11)
    centre = label_centroid(tumour)
    values = sitk.GetArrayFromImage(ct)
    lesions.erase(values, sitk.GetArrayViewFromImage(tumour) > 0, rng)
    shrunk = lesions.scale_mask(tumour, centre, 0.6)
    scaled = sitk.GetArrayFromImage(lesions.scale_content(ct, centre, 0.6))
    inside = sitk.GetArrayViewFromImage(shrunk) > 0
    values[inside] = scaled[inside]
    follow = sitk.GetImageFromArray(values)
    follow.CopyInformation(ct)
    scan = acquire_second_scan(follow, lungs, rng, AcquisitionConfig(),
                               labels={"tumour": shrunk})
    landmarks = scan.landmarks(lungs, 300, rng)
    return {"baseline": lung2, "tumour": tumour, "lungs": lungs, "scan": scan,
            "landmarks": landmarks, "shrunk_ml": _volume_ml(shrunk)}


def _tre(alignment, landmarks) -> np.ndarray:
    return np.linalg.norm(alignment.map_points(landmarks[:, 0]) - landmarks[:, 1], axis=1)


def test_second_scan_truth_matches_its_image(lung2_pair):
    """The stored true mapping points at the same anatomy: the follow-up's intensity at the
    mapped point equals the baseline's at the landmark (up to noise and interpolation)."""
    scan, landmarks = lung2_pair["scan"], lung2_pair["landmarks"]
    baseline = sitk.Clamp(lung2_pair["baseline"], sitk.sitkFloat32, lowerBound=-1024)
    smooth_base = sitk.SmoothingRecursiveGaussian(baseline, 4.0)
    smooth_follow = sitk.SmoothingRecursiveGaussian(sitk.Cast(scan.image, sitk.sitkFloat32),
                                                    4.0)
    linear = sitk.sitkLinear
    base = [smooth_base.EvaluateAtPhysicalPoint(tuple(p), linear) for p in landmarks[:, 0]]
    matched = [smooth_follow.EvaluateAtPhysicalPoint(tuple(p), linear) for p in landmarks[:, 1]]
    unmatched = [smooth_follow.EvaluateAtPhysicalPoint(tuple(p), linear)
                 for p in landmarks[:, 0]]
    error = np.median(np.abs(np.subtract(base, matched)))
    assert error < 15.0
    assert error < 0.5 * np.median(np.abs(np.subtract(base, unmatched)))
    moved = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
    assert moved.mean() > 5.0  # the second scan really is displaced
    parameters = scan.parameters
    assert 5.0 <= abs(parameters["breathing_cc_mm"]) <= 20.0
    assert 1.0 <= parameters["spacing_mm"][2] <= 5.0


def test_deformable_alignment_recovers_the_known_transform(lung2_pair):
    pair, steps = lung2_pair, []
    alignment = align_followup(pair["baseline"], pair["scan"].image, "deformable",
                               lungs=pair["lungs"], tumour_mask=pair["tumour"],
                               followup_tumour_mask=pair["scan"].labels["tumour"],
                               progress=lambda f, m: steps.append(f))
    tre = _tre(alignment, pair["landmarks"])
    before = np.linalg.norm(pair["landmarks"][:, 1] - pair["landmarks"][:, 0], axis=1)
    assert before.mean() > 5.0
    assert tre.mean() <= 1.5 and np.percentile(tre, 95) <= 3.0, (tre.mean(), tre.max())
    # the shrunk tumour stays shrunk: its warped mask keeps the volume it has in the follow-up
    # scan (measured on the follow-up's own grid, as a reader of that scan would)
    aligned_ml = _volume_ml(alignment.followup_tumour)
    assert aligned_ml == pytest.approx(_volume_ml(pair["scan"].labels["tumour"]), rel=0.05)
    assert aligned_ml == pytest.approx(pair["shrunk_ml"], rel=0.15)
    assert aligned_ml < 0.5 * _volume_ml(pair["tumour"])
    # and the aligned image agrees: where the baseline tumour was, most of it is lung now
    old = sitk.GetArrayViewFromImage(pair["tumour"]) > 0
    dense = sitk.GetArrayViewFromImage(alignment.followup)[old] > -500
    assert dense.mean() < 0.5
    quality = alignment.quality
    assert quality.folded_fraction == 0.0 and 0.5 < quality.jacobian_min <= 1.0
    assert quality.metric_after < quality.metric_before
    assert quality.lung_overlap > 0.9
    assert abs(quality.tumour_volume_change) < 0.05
    assert alignment.followup.GetSize() == pair["baseline"].GetSize()
    assert steps == sorted(steps) and steps[-1] == 1.0
    field = alignment.displacement_on(pair["baseline"])
    assert field.GetSize() == pair["baseline"].GetSize()
    assert field.GetNumberOfComponentsPerPixel() == 3


def test_rigid_alone_leaves_the_breathing(lung2_pair):
    pair = lung2_pair
    rigid = align_followup(pair["baseline"], pair["scan"].image, "rigid", lungs=pair["lungs"])
    tre = _tre(rigid, pair["landmarks"])
    before = np.linalg.norm(pair["landmarks"][:, 1] - pair["landmarks"][:, 0], axis=1)
    assert tre.mean() < 0.5 * before.mean()  # the repositioning is undone ...
    assert tre.max() > 2.0  # ... but not the lung bases' motion
    assert rigid.quality.jacobian_min == pytest.approx(1.0, abs=1e-6)


def test_a_scan_of_too_little_is_refused(lung2):
    """A 'follow-up' of a 30 mm slab holds too little of the baseline's lungs."""
    slab = sitk.Shrink(lung2[:, :, 50:56], [4, 4, 1])
    with pytest.raises(AlignmentError, match="does not overlap the baseline|could not align"):
        align_followup(lung2, slab, "rigid")


def test_a_scan_without_lungs_is_refused(lung2):
    """A water cylinder in air covers the chest but has no lungs to match."""
    small = sitk.Shrink(lung2, [4, 4, 1])
    yy, xx = np.mgrid[:small.GetSize()[1], :small.GetSize()[0]]
    disc = (xx - xx.mean()) ** 2 + (yy - yy.mean()) ** 2 < (0.4 * xx.shape[1]) ** 2
    values = np.where(disc, 0, -1000).astype(np.int16)[None].repeat(small.GetSize()[2], 0)
    phantom = sitk.GetImageFromArray(values)
    phantom.CopyInformation(small)
    with pytest.raises(AlignmentError, match="lungs do not overlap"):
        align_followup(lung2, phantom, "rigid")


def test_unknown_mode_is_refused(lung2):
    with pytest.raises(SettingError, match="mode must be one of rigid, affine, deformable"):
        align_followup(lung2, lung2, "elastic")


def _blob_parts(shift_mm: float) -> elastix_worker.ImageParts:
    zz, yy, xx = np.mgrid[:24, :40, :40].astype(np.float32)
    values = -1000 + 1000 * np.exp(-((xx - 20 - shift_mm / 2) ** 2 + (yy - 20) ** 2
                                     + (zz - 12) ** 2) / 40.0)
    return values.astype(np.float32), (0.0, 0.0, 0.0), (2.0, 2.0, 2.0), (1, 0, 0, 0, 1, 0, 0,
                                                                         0, 1)


def test_elastix_stage_runs_apart_and_a_crash_is_an_error():
    """Our B-spline map runs in the child; the default map with the bending-energy penalty
    (which crashes elastix here) ends as an AlignmentError, never in this process."""
    fixed, moving = _blob_parts(0.0), _blob_parts(4.0)
    result = elastix_worker.run_stage_isolated(fixed, moving, None,
                                               elastix_maps.linear_map("rigid", 100, 1), 1,
                                               False)
    assert result["parameters"][3] == pytest.approx(4.0, abs=0.5)  # x translation, mm
    field = elastix_worker.run_stage_isolated(fixed, moving, None,
                                              elastix_maps.bspline_map(20.0, 50, 1), 1, True)
    assert field["field"].shape == (24, 40, 40, 3)
    try:
        elastix_worker.run_stage_isolated(fixed, moving, None,
                                          elastix_maps.bending_energy_map(20.0), 1, True)
    except AlignmentError as error:
        assert "bspline-default stage" in str(error)


def test_a_started_worker_serves_the_stages_without_a_new_import():
    """start() launches the child ahead (ITK's import overlaps the caller's preparation);
    the stages then run in that same child."""
    worker = elastix_worker.ElastixWorker()
    try:
        worker.start()
        child = worker._child
        worker.start()  # a running child is kept
        assert worker._child is child and child.poll() is None
        result = worker.run(_blob_parts(0.0), _blob_parts(3.0), None,
                            elastix_maps.linear_map("rigid", 100, 1), 1, False)
        assert result["parameters"][3] == pytest.approx(3.0, abs=0.5)
        assert worker._child is child
    finally:
        worker.close()


def test_cancel_stops_the_running_stage():
    fixed, moving = _blob_parts(0.0), _blob_parts(4.0)
    started = time.perf_counter()
    with pytest.raises(Cancelled):
        elastix_worker.run_stage_isolated(fixed, moving, None,
                                          elastix_maps.bspline_map(20.0, 5000, 3), 1, True,
                                          cancel=lambda: time.perf_counter() - started > 1.0)
    assert time.perf_counter() - started < 5.0


def test_jacobian_of_a_known_field_with_flipped_rows():
    """x -> 1.1 x has Jacobian 1.1^3 everywhere, whatever the direction matrix."""
    grid = sitk.Image([12, 10, 8], sitk.sitkUInt8)
    grid.SetSpacing((1.5, 2.0, 2.5))
    grid.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    index = np.stack(np.meshgrid(*(np.arange(n) for n in grid.GetSize()), indexing="ij"), -1)
    points = (index * np.array(grid.GetSpacing())) @ np.array(grid.GetDirection()).reshape(
        3, 3).T
    field = sitk.GetImageFromArray((0.1 * points).transpose(2, 1, 0, 3), isVector=True)
    field.CopyInformation(grid)
    assert np.allclose(jacobian_determinant(field), 1.1**3)


def test_align_command_writes_the_folder_and_refuses_a_non_ct(lung2_pair, sample_paths,
                                                              tmp_path, capsys):
    followup = tmp_path / "followup.nii.gz"
    sitk.WriteImage(lung2_pair["scan"].image, str(followup))
    output = tmp_path / "aligned"
    status = cli.main(["align", str(sample_paths["lung2_image"]), str(followup), "-o",
                       str(output), "--mode", "rigid"])
    assert status == 0, capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == [
        "alignment.json", "alignment.png", "displacement.nii.gz", "followup_aligned.nii.gz"]
    summary = json.loads((output / "alignment.json").read_text())
    assert summary["mode"] == "rigid" and summary["quality"]["lung_overlap"] > 0.8
    aligned = sitk.ReadImage(str(output / "followup_aligned.nii.gz"))
    assert aligned.GetSize() == lung2_pair["baseline"].GetSize()
    field = sitk.ReadImage(str(output / "displacement.nii.gz"))
    assert field.GetNumberOfComponentsPerPixel() == 3
    assert list(field.GetSize()) == summary["displacement_grid"]["size"]
    # the follow-up point of a landmark, read from the written field, is the true one
    landmarks = lung2_pair["landmarks"]
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in landmarks[:, 0]])
    assert np.median(np.linalg.norm(mapped - landmarks[:, 1], axis=1)) < 5.0

    refused = tmp_path / "refused"
    status = cli.main(["align", str(sample_paths["lung2_image"]),
                       str(sample_paths["lung2_tumour"]), "-o", str(refused)])
    err = capsys.readouterr().err
    assert status == 2 and ("not a CT" in err or "8-bit" in err), err
    assert not refused.exists()
