"""Shared fixtures: the real sample chest CTs (fetched, or from IMMUNODIFF_SAMPLE_DATA) and the
CIP fixtures from ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import SimpleITK as sitk

from ImmunoDiffLib.imaging import label_centroid
from ImmunoDiffLib.sample_data import fetch_sample_data
from ImmunoDiffLib.settings import CACHE_ENV, SAMPLE_DATA_ENV

REPO = Path(__file__).resolve().parents[1]
CIP_DIR = REPO.parent / "shared" / "data" / "cip"
LIDC_LABELS = REPO.parent / "shared" / "data" / "lidc" / "LIDC-IDRI-0001_totalseg_labels.nii.gz"


@pytest.fixture(scope="session", autouse=True)
def cores_shared_between_workers():
    """Run in parallel (scripts/test.sh: pytest-xdist), each worker's torch takes its share
    of the cores, so that two workers do not oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch  # deferred: only when the suite runs in parallel workers

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Fetch (or find) the sample CTs once, then run the suite with the project cache in a
    temporary folder so tests never write into the user's cache."""
    paths = fetch_sample_data()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SAMPLE_DATA_ENV, os.pathsep.join(sorted({str(p.parent)
                                                              for p in paths.values()})))
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("immunodiff-cache")))
        yield paths


@pytest.fixture(scope="session")
def sample_paths(isolated_cache) -> dict[str, Path]:
    return isolated_cache


@pytest.fixture(scope="session")
def lung2(sample_paths) -> sitk.Image:
    return sitk.ReadImage(str(sample_paths["lung2_image"]))


@pytest.fixture(scope="session")
def lung2_label(sample_paths) -> sitk.Image:
    return sitk.ReadImage(str(sample_paths["lung2_tumour"]))


@pytest.fixture(scope="session")
def lung2_tumour_point(lung2_label):
    return label_centroid(lung2_label)


@pytest.fixture(scope="session")
def cip_dir() -> Path:
    if not (CIP_DIR / "ct-64.nrrd").is_file():
        pytest.skip("CIP fixtures (../shared/data/cip) are not beside this checkout")
    return CIP_DIR


@pytest.fixture(scope="session")
def lidc_labels() -> sitk.Image:
    """TotalSegmentator-style labels of LIDC-IDRI-0001 (10-14 lobes, 51 heart, 52 aorta, 5
    liver...), from ../shared/data/lidc."""
    if not LIDC_LABELS.is_file():
        pytest.skip("LIDC-IDRI-0001 labels (../shared/data/lidc) are not beside this checkout")
    return sitk.ReadImage(str(LIDC_LABELS))


@pytest.fixture(scope="session")
def lidc_ct_and_lungs(sample_paths):
    """(LIDC-IDRI-0001 CT, its classic lung mask)."""
    from ImmunoDiffLib.anatomy.classic_lungs import segment_lungs
    from ImmunoDiffLib.imaging import read_ct

    ct = read_ct(sample_paths["lidc_ct"])
    return ct, segment_lungs(ct)


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A 6-patient simulated cohort (half responders on average) for simulator and dataset
    tests; written once per test session."""
    from ImmunoDiffLib.simulation import SimulationConfig, simulate_cohort

    # blob lesions with follow-ups on the baseline grid: the training and evaluation tests
    # rest on this cohort's known properties (every true responder's follow-up measured as
    # shrunk; a residual scar of a LIDC-shaped lesion is not) and stay fast; the LIDC shapes,
    # the realistic second scan and its alignment are tested in test_lesion_library.py and
    # test_cohort_alignment.py
    config = SimulationConfig(n_patients=6, seed=11, responder_rate=0.5, lesion_source="blob",
                              second_scan="same-grid")
    return simulate_cohort(tmp_path_factory.mktemp("cohort") / "sim", config)


@pytest.fixture(scope="session")
def dicom_bundle(tmp_path_factory):
    """The tiny model bundle the DICOM tests predict with."""
    from test_pipeline import _bundle  # deferred: torch, only for the tests that predict

    return _bundle(tmp_path_factory.mktemp("dicom-bundle") / "bundle")


@pytest.fixture(scope="session")
def dicom_input(tmp_path_factory, lung2) -> Path:
    """lung2 written as a scanner writes a DICOM CT series, with a patient (dicom_helpers.PATIENT)
    and a study: the folder."""
    from dicom_helpers import write_ct_series  # deferred: pydicom, only for the DICOM tests

    return write_ct_series(lung2, tmp_path_factory.mktemp("dicom-input") / "lung2")[0]


@pytest.fixture(scope="session")
def dicom_case(tmp_path_factory, dicom_bundle, dicom_input, lung2_tumour_point):
    """One prediction from the DICOM series with --dicom: (case folder, its Result). Tests
    that need a prediction on lung2 answer with this Result instead of running another."""
    from test_pipeline import CLINICAL, FAST  # deferred: torch, only for the tests that predict

    from ImmunoDiffLib.inference.cases import predict_case  # deferred: as above
    from ImmunoDiffLib.inference.pipeline import ImmunoDiffPipeline  # deferred: as above

    pipeline = ImmunoDiffPipeline(dicom_bundle, anatomy_backend="classic")
    results, run = [], pipeline.run
    pipeline.run = lambda *a, **k: results.append(run(*a, **k)) or results[-1]
    folder = tmp_path_factory.mktemp("dicom-case") / "lung2"
    predict_case(pipeline, dicom_input, CLINICAL, folder, point=lung2_tumour_point,
                 options=FAST, case_id="lung2", dicom=True)
    return folder, results[0]


@pytest.fixture(scope="session")
def recist_case(tmp_path_factory, dicom_case):
    """dicom_case's prediction with the four RECIST scenario follow-ups ``predict
    --recist-scenarios`` adds (its follow-up crop made 10, 20, 30, 40 HU darker; PD not
    reached: the closest drawn is SD), written as that command writes it: (case folder,
    Result). Tests of what shows and saves the scenarios answer with it; no model runs."""
    import dataclasses

    from ImmunoDiffLib.inference.cases import write_case  # deferred: torch, as above
    from ImmunoDiffLib.inference.scenarios import ScenarioResult  # deferred: as above

    result = dicom_case[1]
    drawn = {"CR": ("CR", True, 1.0), "PR": ("PR", True, 1.5), "SD": ("SD", True, 1.0),
             "PD": ("SD", False, 3.5)}
    scenarios = {name: ScenarioResult(result.followup_crop - 10 * (index + 1), 0.5 + index,
                                      8.0 + index, recist, obeyed, guidance)
                 for index, (name, (recist, obeyed, guidance)) in enumerate(drawn.items())}
    result = dataclasses.replace(result, scenarios=scenarios)
    folder = write_case(result, tmp_path_factory.mktemp("recist-case") / "lung2", "lung2")
    return folder, result
