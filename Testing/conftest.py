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
