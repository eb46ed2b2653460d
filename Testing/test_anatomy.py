"""Anatomy on real CT: classic backend accuracy, lungmask end to end with weight files made
here, TotalSegmentator's offline behaviour and call, cancel and cache."""

import inspect
import json
import sys
import threading
import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ImmunoDiffLib.anatomy import (
    lungmask_backend,
    resolve_backends,
    segment_anatomy,
    totalseg_backend,
)
from ImmunoDiffLib.anatomy.classic import segment_vessels
from ImmunoDiffLib.anatomy.classic_lungs import segment_lungs
from ImmunoDiffLib.anatomy.labels import LEFT_LOBES, RIGHT_LOBES
from ImmunoDiffLib.errors import BackendUnavailableError
from ImmunoDiffLib.progress import Cancelled


def _dice(a, b):
    a, b = a > 0, b > 0
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def cip(cip_dir):
    ct = sitk.ReadImage(str(cip_dir / "ct-64.nrrd"))
    whole = sitk.GetArrayFromImage(sitk.ReadImage(str(cip_dir / "wholeLung-64.nrrd")))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(cip_dir / "lm-64.nrrd")))
    return ct, whole, (labels >> 8) == 3  # CIP encoding: type 3 = vessel


@pytest.fixture(scope="module")
def lung2_anatomy(lung2):
    return segment_anatomy(lung2, "classic", cache=False)


def test_classic_lungs_match_the_cip_whole_lung_mask(cip):
    ct, whole, _ = cip
    assert _dice(sitk.GetArrayFromImage(segment_lungs(ct)), whole) >= 0.90  # measured 0.975


def test_classic_vessels_against_cip_vessel_labels(cip):
    """CIP's vessel labels at 4 mm are partial-volume (median -800 HU); measured sensitivity
    0.63 and precision 0.67. The floors leave room for platform rounding, not for regressions
    of the method (a HU-only rule scores precision 0.25)."""
    ct, _, reference = cip
    predicted = sitk.GetArrayFromImage(segment_vessels(ct, segment_lungs(ct))) > 0
    hits = np.logical_and(predicted, reference).sum()
    assert hits / reference.sum() >= 0.55
    assert hits / predicted.sum() >= 0.60


def test_classic_lobes_on_lung2_are_five_inside_the_lungs_and_on_the_right_side(lung2,
                                                                                 lung2_anatomy):
    lobes = sitk.GetArrayFromImage(lung2_anatomy.lobes)
    lungs = sitk.GetArrayFromImage(lung2_anatomy.lungs)
    assert set(np.unique(lobes)) == {0, 1, 2, 3, 4, 5}
    assert np.all(lungs[lobes > 0] == 1)
    volume_ml = np.prod(lung2.GetSpacing()) / 1000
    assert 2500 < lungs.sum() * volume_ml < 7000  # adult lungs at inspiration
    x_index = np.argwhere(lobes > 0)[:, 2]
    values = lobes[lobes > 0]
    left_x = np.array([lung2.TransformIndexToPhysicalPoint((int(x), 0, 0))[0]
                       for x in x_index[np.isin(values, LEFT_LOBES)][::500]])
    right_x = np.array([lung2.TransformIndexToPhysicalPoint((int(x), 0, 0))[0]
                        for x in x_index[np.isin(values, RIGHT_LOBES)][::500]])
    assert left_x.min() > right_x.max() - 60  # lungs do not interleave
    assert left_x.mean() > 0 > right_x.mean()  # LPS: +x is the patient's left
    upper, lower = [np.argwhere(lobes == v)[:, 0].mean() for v in (1, 2)]
    assert upper > lower  # z grows towards the head: upper lobe above the lower lobe
    assert lung2_anatomy.lobes_approximate
    assert lung2_anatomy.lobes_method == "vessel tree"
    assert any("vessel trees" in w and "not a segmentation of the fissures" in w
               for w in lung2_anatomy.warnings)
    for image in lung2_anatomy.maps().values():
        assert image.GetSize() == lung2.GetSize() and image.GetOrigin() == lung2.GetOrigin()
        assert image.GetPixelID() == sitk.sitkUInt8


def _lungmask_weight_files(folder):
    """Random-initialised lungmask UNets (its own class), saved as lungmask saves them."""
    from lungmask.resunet import UNet

    torch.manual_seed(0)
    paths = []
    for name, classes in (("lobes.pth", 6), ("r231.pth", 3)):
        model = UNet(n_classes=classes, padding=True, depth=5, up_mode="upsample",
                     batch_norm=True, residual=False)
        torch.save(model.state_dict(), folder / name)
        paths.append(folder / name)
    return paths


def test_lungmask_backend_runs_end_to_end_with_local_weights(lung2, tmp_path):
    lobes_path, fill_path = _lungmask_weight_files(tmp_path)
    slab = lung2[:, :, 28:34]
    reports = []
    from ImmunoDiffLib.progress import Task

    lobes = lungmask_backend.segment_lobes(slab, lobes_path, fill_path,
                                           Task(lambda f, m: reports.append(f)))
    assert lobes.GetSize() == slab.GetSize() and lobes.GetPixelID() == sitk.sitkUInt8
    assert lobes.GetOrigin() == slab.GetOrigin() and lobes.GetSpacing() == slab.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(lobes))) <= {0, 1, 2, 3, 4, 5}
    assert len(reports) == 2 * 2 + 1 and reports[-1] == 1.0  # 2 batches per model, then done


def test_lungmask_refuses_pickled_objects_in_weight_files(tmp_path):
    evil = tmp_path / "unet_ltrclobes-3a07043d.pth"
    torch.save({"weights": torch.zeros(2), "extra": threading.Lock}, evil)
    with pytest.raises(BackendUnavailableError, match="cannot be loaded as plain weights"):
        lungmask_backend.check_weight_file(evil)


def test_lungmask_without_weights_says_where_to_put_them(tmp_path, monkeypatch, lung2):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(lungmask_backend.WEIGHTS_ENV, raising=False)
    with pytest.raises(BackendUnavailableError) as error:
        segment_anatomy(lung2, "lungmask", cache=False)
    message = str(error.value)
    for fragment in ("unet_ltrclobes-3a07043d.pth", "unet_r231-d5d2fc3d.pth",
                     str(tmp_path / "hub" / "checkpoints"), "IMMUNODIFF_LUNGMASK_WEIGHTS",
                     "--lungmask-weights", "'classic'"):
        assert fragment in message


def test_lungmask_weights_found_through_the_setting(tmp_path, monkeypatch):
    lobes_path, fill_path = _lungmask_weight_files(tmp_path)
    lobes_path.rename(tmp_path / lungmask_backend.WEIGHT_FILES["LTRCLobes"])
    fill_path.rename(tmp_path / lungmask_backend.WEIGHT_FILES["R231"])
    monkeypatch.setenv(lungmask_backend.WEIGHTS_ENV, str(tmp_path))
    found = lungmask_backend.find_weights()
    assert [p.name for p in found] == ["unet_ltrclobes-3a07043d.pth", "unet_r231-d5d2fc3d.pth"]


@pytest.fixture
def totalseg_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "weights"))
    return tmp_path


def test_totalsegmentator_without_weights_names_the_missing_models(totalseg_home, lung2):
    with pytest.raises(BackendUnavailableError) as error:
        segment_anatomy(lung2, "totalsegmentator", cache=False)
    message = str(error.value)
    for fragment in ("'total'", "Dataset291", "Dataset295", "totalseg_import_weights",
                     "TOTALSEG_WEIGHTS_PATH",
                     "'classic'"):
        assert fragment in message
    with pytest.raises(BackendUnavailableError, match="Dataset117.*Dataset297"):
        totalseg_backend.check_weights("lung_vessels")
    assert not (totalseg_home / "weights").exists()  # nothing created, nothing downloaded


def test_totalsegmentator_weights_present_pass_the_check(totalseg_home):
    for folder in totalseg_backend.required_weights("lung_vessels").values():
        folder.mkdir(parents=True)
    totalseg_backend.check_weights("lung_vessels")


def test_totalsegmentator_usage_statistics_are_switched_off(totalseg_home):
    from totalsegmentator.config import get_config

    config_path = totalseg_backend.disable_usage_statistics()
    assert config_path == totalseg_home / "home" / "config.json"
    assert json.loads(config_path.read_text(encoding="utf-8"))["send_usage_stats"] is False
    assert get_config()["send_usage_stats"] is False


@pytest.mark.parametrize("task", ["lung_vessels", "total"])
def test_totalsegmentator_call_matches_its_real_api(task, tmp_path):
    from totalsegmentator.map_to_binary import class_map
    from totalsegmentator.python_api import totalsegmentator

    call = totalseg_backend.build_call(tmp_path / "ct.nii.gz", task, fast=True, device="cpu")
    bound = inspect.signature(totalsegmentator).bind(**call)  # TypeError if not accepted
    assert bound.arguments["task"] == task and bound.arguments["ml"] is True
    assert bound.arguments["device"] == "cpu" and bound.arguments["fast"] is True
    assert bound.arguments["quiet"] is True and bound.arguments["output"] is None
    if task == "total":
        assert set(bound.arguments["roi_subset"]) <= set(class_map["total"].values())
        assert len(bound.arguments["roi_subset"]) == 5
    else:
        assert {"lung_arteries", "lung_veins"} <= set(class_map["lung_vessels"].values())


def test_auto_falls_back_to_classic_and_says_why(totalseg_home, monkeypatch, tmp_path, cip):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    anatomy = segment_anatomy(cip[0], "auto", cache=False)
    assert (anatomy.lobes_backend, anatomy.vessels_backend) == ("classic", "classic")
    text = " ".join(anatomy.warnings)
    assert "lungmask unavailable" in text and "TotalSegmentator unavailable" in text


def test_cancel_stops_within_seconds_and_caches_nothing(lung2, tmp_path):
    stop = threading.Event()
    set_at = []

    def progress(fraction, message):
        if fraction > 0.4 and not stop.is_set():  # during the vessel filter
            set_at.append(time.perf_counter())
            stop.set()

    with pytest.raises(Cancelled):
        segment_anatomy(lung2, "classic", cache=tmp_path, progress=progress, cancel=stop)
    assert time.perf_counter() - set_at[0] < 5.0
    assert list(tmp_path.iterdir()) == []


def test_second_call_is_served_from_the_cache(cip, tmp_path):
    first = segment_anatomy(cip[0], "classic", cache=tmp_path)
    started = time.perf_counter()
    second = segment_anatomy(cip[0], "classic", cache=tmp_path)
    assert second.from_cache and not first.from_cache
    assert time.perf_counter() - started < 0.5
    for name, image in first.maps().items():
        assert np.array_equal(sitk.GetArrayFromImage(image),
                              sitk.GetArrayFromImage(second.maps()[name]))
        assert second.maps()[name].GetOrigin() == image.GetOrigin()
    shifted = sitk.Image(cip[0])
    shifted.SetOrigin([v + 1.0 for v in cip[0].GetOrigin()])
    assert not segment_anatomy(shifted, "classic", cache=tmp_path).from_cache


def test_unknown_backend_is_named(cip):
    with pytest.raises(ValueError, match="Unknown anatomy backend 'nnunet'"):
        segment_anatomy(cip[0], "nnunet")


def test_segment_command_writes_label_maps_and_overlay(cip_dir, tmp_path, capsys):
    from ImmunoDiffLib.cli import main

    assert main(["segment", str(cip_dir / "ct-64.nrrd"), "-o", str(tmp_path), "--backend",
                 "classic", "--no-cache", "--format", "nrrd"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lobes_approximate"] is True
    # 4.2 mm voxels cannot follow segmental vessels: the geometric lobes, and why
    assert summary["lobes_method"] == "geometric"
    assert any("geometric approximation" in w and "4.2 mm in plane are too coarse" in w
               for w in summary["warnings"]), summary["warnings"]
    lobes = sitk.ReadImage(str(tmp_path / "lobes.nrrd"))
    assert lobes.GetSize() == (64, 64, 79)
    assert set(np.unique(sitk.GetArrayFromImage(lobes))) == {0, 1, 2, 3, 4, 5}
    assert sitk.ReadImage(str(tmp_path / "anatomy.png")).GetSize()[0] > 1000


def test_auto_takes_each_structure_from_the_totalsegmentator_models_installed(totalseg_home,
                                                                               monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(totalseg_home / "torch"))  # no lungmask weights
    assert resolve_backends("auto")[:2] == ("classic", "classic")
    for folder in totalseg_backend.required_weights("lung_vessels").values():
        folder.mkdir(parents=True, exist_ok=True)
    assert resolve_backends("auto")[:2] == ("classic", "totalsegmentator")
    for folder in totalseg_backend.required_weights("total").values():
        folder.mkdir(parents=True, exist_ok=True)
    lobes, vessels, warnings = resolve_backends("auto")
    assert (lobes, vessels) == ("totalsegmentator", "totalsegmentator")
    assert len(warnings) == 1 and "lungmask unavailable, used TotalSegmentator" in warnings[0]
    assert resolve_backends("classic") == ("classic", "classic", [])


def test_auto_without_the_totalsegmentator_package_falls_back_and_says_so(monkeypatch,
                                                                           tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "totalsegmentator.config", None)  # import fails
    with pytest.raises(BackendUnavailableError, match="TotalSegmentator package is not"):
        totalseg_backend.check_weights("lung_vessels")
    lobes, vessels, warnings = resolve_backends("auto")
    assert (lobes, vessels) == ("classic", "classic")
    assert "install the TotalSegmentator extension in 3D Slicer" in " ".join(warnings)
    with pytest.raises(ValueError, match="Unknown anatomy backend 'lungs'"):
        resolve_backends("lungs")
