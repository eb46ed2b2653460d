"""Cohort manifests: every kind of bad row is reported, naming the row; RTSTRUCT tumours."""

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from ImmunoDiffLib.cohort import load_cohort, load_pretraining_manifest
from ImmunoDiffLib.errors import CohortError, ImageError
from ImmunoDiffLib.imaging import read_ct, write_dicom_series
from ImmunoDiffLib.imaging.rtstruct import read_rtstruct_roi, roi_names, write_rtstruct

GOOD = {"patient_id": "P1", "baseline_ct": "ct.nrrd", "followup_ct": "ct.nrrd",
        "tumour_x": "52.6", "tumour_y": "-95.9", "tumour_z": "-256.5", "age": "64",
        "sex": "male", "race": "white", "cea": "3.2", "anc": "4.5", "alc": "1.5", "nlr": "",
        "aec": "0.2", "amc": "0.5", "pdl1": "60", "response": "1", "survival_months": "14.5",
        "event": "0"}


def _write(folder, rows, columns=None):
    (folder / "ct.nrrd").write_bytes(b"placeholder")  # existence is what the loader checks
    path = folder / "cohort.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or list(GOOD))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_good_manifest_loads_with_paths_relative_to_it(tmp_path):
    cases = load_cohort(_write(tmp_path, [GOOD, {**GOOD, "patient_id": "P2", "pdl1": "NA"}]),
                        require_followup=True, require_outcomes=True)
    assert [c.patient_id for c in cases] == ["P1", "P2"]
    assert cases[0].baseline_ct == tmp_path / "ct.nrrd"
    assert cases[0].tumour_point == (52.6, -95.9, -256.5)
    assert cases[0].clinical["nlr"] == pytest.approx(3.0) and cases[0].response == 1
    assert cases[1].clinical["pdl1"] is None


@pytest.mark.parametrize("change, fragment", [
    ({"patient_id": "P1"}, "row 3 (patient P1): duplicate patient_id, first on row 2"),
    ({"baseline_ct": "missing.nii.gz"}, "row 3 (patient P2): baseline_ct 'missing.nii.gz' "
                                        "does not exist"),
    ({"response": "2"}, "row 3 (patient P2): response = '2' must be 0 or 1"),
    ({"event": "yes"}, "row 3 (patient P2): event = 'yes' is not a number"),
    ({"survival_months": "-3"}, "row 3 (patient P2): survival_months = -3 is negative"),
    ({"age": "130"}, "row 3 (patient P2): Age (age) = 130 is outside the plausible range"),
    ({"anc": "4500"}, "row 3 (patient P2): ANC (anc) = 4500"),
    ({"tumour_x": ""}, "row 3 (patient P2): no tumour point (tumour_x/y/z) and no tumour_mask"),
    ({"response": ""}, "row 3 (patient P2): response is empty"),
])
def test_each_bad_row_kind_is_reported_with_its_row(tmp_path, change, fragment):
    path = _write(tmp_path, [GOOD, {**GOOD, "patient_id": "P2", **change}])
    with pytest.raises(CohortError) as error:
        load_cohort(path, require_outcomes=True)
    assert fragment in str(error.value)
    assert "row 2" not in str(error.value).replace("first on row 2", "")


def test_all_bad_rows_are_reported_at_once(tmp_path):
    rows = [{**GOOD, "patient_id": "P2", "response": "3"},
            {**GOOD, "patient_id": "P3", "survival_months": "-1", "age": "12"}]
    with pytest.raises(CohortError) as error:
        load_cohort(_write(tmp_path, [GOOD, *rows]))
    assert len(error.value.problems) == 3
    assert "3 problem(s)" in str(error.value)


def test_missing_columns_are_named(tmp_path):
    columns = [c for c in GOOD if c not in ("pdl1", "tumour_x")]
    path = _write(tmp_path, [{k: GOOD[k] for k in columns}], columns)
    with pytest.raises(CohortError, match="missing column.*pdl1.*tumour_x/tumour_y/tumour_z"):
        load_cohort(path)


@pytest.fixture(scope="module")
def series_with_rtstruct(lung2, lung2_label, tmp_path_factory):
    """A real CT slab as a DICOM series with the lung2 tumour as an RTSTRUCT ROI."""
    folder = tmp_path_factory.mktemp("rt")
    region = (slice(250, 450), slice(250, 450), slice(14, 28))
    series = write_dicom_series(lung2[region], folder / "series")
    rtstruct = write_rtstruct({"GTV-1": lung2_label[region], "Lung": lung2_label[region] * 0 + 1},
                              series, folder / "rtstruct.dcm")
    return series, rtstruct, lung2_label[region]


def test_rtstruct_roi_reads_back_the_tumour_exactly(series_with_rtstruct):
    series, rtstruct, label = series_with_rtstruct
    assert roi_names(rtstruct) == ["GTV-1", "Lung"]
    mask = read_rtstruct_roi(rtstruct, read_ct(series), "GTV-1")
    original = sitk.GetArrayFromImage(label) > 0
    read = sitk.GetArrayFromImage(mask) > 0
    dice = 2 * np.logical_and(original, read).sum() / (original.sum() + read.sum())
    assert dice > 0.99 and read.sum() > 20000
    with pytest.raises(ImageError, match="no ROI named 'GTV-2'; it has: 'GTV-1', 'Lung'"):
        read_rtstruct_roi(rtstruct, read_ct(series), "GTV-2")


def test_pretraining_manifest_with_rtstruct_and_random_rows(series_with_rtstruct, tmp_path):
    series, rtstruct, _ = series_with_rtstruct
    path = tmp_path / "public.csv"
    path.write_text(f"ct,rtstruct,roi_name\n{series},{rtstruct},GTV-1\n{series},,\n"
                    f"{tmp_path / 'nope'},{rtstruct},\n", encoding="utf-8")
    with pytest.raises(CohortError) as error:
        load_pretraining_manifest(path)
    assert "row 4: ct" in str(error.value) and "row 4: rtstruct given without roi_name" in str(
        error.value)
    path.write_text(f"ct,rtstruct,roi_name\n{series},{rtstruct},GTV-1\n{series},,\n",
                    encoding="utf-8")
    cases = load_pretraining_manifest(path)
    assert cases[0].roi_name == "GTV-1" and cases[1].rtstruct is None
