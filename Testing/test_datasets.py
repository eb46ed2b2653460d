"""Datasets over the simulated cohort: crop shapes, spacing, tumour centring, cache reuse."""

import numpy as np
import torch

import ImmunoDiffLib.datasets as datasets
from ImmunoDiffLib.cohort import PretrainingCase, load_cohort
from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig, PretrainingDataset
from ImmunoDiffLib.imaging import CropSpec


def test_items_have_model_shapes_ranges_and_centred_tumours(small_cohort, tmp_path):
    dataset = CohortDataset(load_cohort(small_cohort), cache_dir=tmp_path)
    for index in range(len(dataset)):
        item = dataset[index]
        for name in ("baseline", "followup"):
            assert item[name].shape == (1, 96, 96, 16) and item[name].dtype == torch.float32
            assert -1.0 <= item[name].min() and item[name].max() <= 1.0
        for name in ("lobes", "vessels", "tumour", "followup_tumour"):
            assert item[name].shape == (1, 96, 96, 16) and item[name].dtype == torch.float32
            assert torch.equal(item[name], item[name].round())  # labels, as model_batch has them
        assert set(item["lobes"].unique().tolist()) <= {0, 1, 2, 3, 4, 5}
        tumour = np.argwhere(item["tumour"][0].numpy() > 0)
        assert len(tumour) > 0
        assert np.all(np.abs(tumour[:, :2].mean(0) - 47.5) < 3.0)  # in-plane centre, voxels
        assert item["clinical"]["B"].shape == (6,) and item["clinical_mask"]["C"].shape == (6,)
        assert item["response"].item() in (0.0, 1.0)
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    assert batch["baseline"].shape == (2, 1, 96, 96, 16)


def test_crop_spacing_follows_the_configuration(small_cohort, tmp_path):
    config = PreprocessConfig(crop=CropSpec(size=(32, 24, 8), spacing=(2.0, 2.0, 2.0)))
    dataset = CohortDataset(load_cohort(small_cohort), config, cache_dir=tmp_path)
    item = dataset[0]
    assert item["baseline"].shape == (1, 32, 24, 8)
    extent = np.ptp(np.argwhere(item["tumour"][0].numpy() > 0)[:, 0]) + 1
    diameter_mm = float(dataset.cases[0].extra["baseline_diameter_mm"])
    assert abs(extent * 2.0 - diameter_mm) <= 2 * 2.0 + 0.35 * diameter_mm


def test_second_pass_reads_no_ct(small_cohort, tmp_path, monkeypatch):
    reads = []
    original = datasets.read_ct
    monkeypatch.setattr(datasets, "read_ct", lambda *a, **k: reads.append(a) or original(*a, **k))
    dataset = CohortDataset(load_cohort(small_cohort), cache_dir=tmp_path)
    dataset.prepare()
    assert len(reads) == 2 * len(dataset)  # baseline and follow-up, once each
    first = [dataset[i]["baseline"] for i in range(len(dataset))]
    again = CohortDataset(load_cohort(small_cohort), cache_dir=tmp_path)
    second = [again[i]["baseline"] for i in range(len(again))]
    assert len(reads) == 2 * len(dataset)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    changed = CohortDataset(load_cohort(small_cohort),
                            PreprocessConfig(crop=CropSpec(size=(16, 16, 4))), cache_dir=tmp_path)
    changed[0]
    assert len(reads) == 2 * len(dataset) + 2  # a new configuration is a new cache key


def test_pretraining_crops_random_lung_points_deterministically(sample_paths, tmp_path):
    cases = [PretrainingCase(sample_paths["totalseg_chest"])]
    a = PretrainingDataset(cases, cache_dir=tmp_path / "a", seed=3)[0]
    b = PretrainingDataset(cases, cache_dir=tmp_path / "b", seed=3)[0]
    c = PretrainingDataset(cases, cache_dir=tmp_path / "c", seed=4)[0]
    assert a["baseline"].shape == (1, 96, 96, 16)
    assert torch.equal(a["baseline"], b["baseline"]) and not torch.equal(a["baseline"],
                                                                        c["baseline"])
    assert a["lobes"][0, 48, 48, 8] > 0  # the centre is lung


def test_missing_vessel_masks_come_from_the_anatomy_backend(small_cohort, tmp_path):
    import csv

    with open(small_cohort, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    manifest = small_cohort.parent / "no_vessels.csv"
    columns = [c for c in rows[0] if c != "vessels_mask"]
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows[:1])
    given = CohortDataset(load_cohort(small_cohort), cache_dir=tmp_path / "a")[0]
    derived = CohortDataset(load_cohort(manifest), cache_dir=tmp_path / "b")[0]
    assert torch.equal(given["lobes"], derived["lobes"])  # the file's lobes are kept
    assert derived["vessels"].sum() > 0  # vessels segmented from the CT instead
