"""Training on a tiny simulated cohort: every stage learns, resume is exact (cancel and
SIGKILL), and torchrun with two gloo processes keeps identical weights on both ranks."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

from ImmunoDiffLib.cohort import load_cohort
from ImmunoDiffLib.datasets import CohortDataset, PreprocessConfig
from ImmunoDiffLib.errors import SettingError
from ImmunoDiffLib.imaging import CropSpec
from ImmunoDiffLib.models import TINY, ImmunoDiffModel
from ImmunoDiffLib.progress import Cancelled
from ImmunoDiffLib.train import TrainConfig, train_stage
from ImmunoDiffLib.train.records import weights_digest
from ImmunoDiffLib.train.runner import step_generator
from ImmunoDiffLib.train.stages import StageLoss

SMALL_CROP = ["--crop-size", "32", "32", "8", "--crop-spacing", "6", "6", "2"]


@pytest.fixture(scope="module")
def dataset(small_cohort, tmp_path_factory):
    config = PreprocessConfig(crop=CropSpec(size=(32, 32, 8), spacing=(6.0, 6.0, 2.0)))
    return CohortDataset(load_cohort(small_cohort), config,
                         cache_dir=tmp_path_factory.mktemp("preprocessed"))


def _eval_loss(model, stage, dataset):
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    batch = {k: (v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.uint8 else v)
             for k, v in batch.items()}
    loss = StageLoss(model, stage)
    with torch.no_grad():
        return sum(float(loss(batch, step_generator(99, i, 0))) for i in range(4)) / 4


@pytest.mark.parametrize("stage", ["1A", "1B", "1C", "2"])
def test_each_stage_lowers_its_loss(stage, dataset, tmp_path):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY)
    if stage in ("1C", "2"):
        # MONAI zero-initialises the U-Net's output layer, so a ControlNet can only learn
        # through a U-Net trained first (stage 1B), as in the real pipeline.
        train_stage(model, dataset, TrainConfig(stage="1B", steps=12, learning_rate=3e-3),
                    tmp_path / "1B")
        model.init_controlnet_from_unet()
    before = _eval_loss(model, stage, dataset)
    # the target scale stays fixed, so that the losses before and after compare
    train_stage(model, dataset, TrainConfig(stage=stage, steps=12, learning_rate=3e-3,
                                            checkpoint_every=12, fit_target_scale=False),
                tmp_path / stage)
    after = _eval_loss(model, stage, dataset)
    assert after < before, (before, after)
    state = json.loads((tmp_path / stage / "checkpoint" / "state.json").read_text(encoding="utf-8"))
    assert state["stage"] == stage and state["step"] == 12


def test_lesion_weighted_loss_weights_exactly_the_dilated_tumour_region(dataset):
    batch = torch.utils.data.default_collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = ImmunoDiffModel(replace(TINY, prediction_type="epsilon", scenario=False,
                                    lesion_control=False))
    plain, weighted = StageLoss(model, "2"), StageLoss(model, "2", lesion_weight=5.0)
    captured = {}

    def record(x_t, steps, conditions):  # the real noise prediction, kept for the check
        captured["prediction"] = ImmunoDiffModel.predict_noise(model, x_t, steps, conditions)
        return captured["prediction"]

    model.predict_noise = record
    with torch.no_grad():
        value = float(weighted(batch, step_generator(5, 0, 0)))
        generator = step_generator(5, 0, 0)
        model.encode_conditions(batch, "2", dropout_generator=generator,
                                dropout_rate=model.config.condition_dropout)
        noise = torch.randn(batch["baseline"].shape, generator=generator)
        unweighted = float(plain(batch, step_generator(5, 0, 0)))
    tumour = (batch["tumour"] > 0) | (batch["followup_tumour"] > 0)
    region = torch.zeros_like(tumour)
    assert tumour.any(), "the simulated cases have a tumour in the crop"
    for b, i, j, k in torch.nonzero(tumour[:, 0]).tolist():  # one-voxel dilation, by hand
        region[b, 0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2] = True
    weights = 1.0 + 4.0 * region.float()
    error = (captured["prediction"] - noise) ** 2
    expected = float((weights * error).sum() / weights.sum())
    assert value == pytest.approx(expected, rel=1e-5)
    assert unweighted == pytest.approx(float(error.mean()), rel=1e-5)
    assert abs(value - unweighted) > 1e-6
    assert 0.001 < float(region.float().mean()) < 0.5
    without_masks = {k: v for k, v in batch.items() if k not in ("tumour", "followup_tumour")}
    with pytest.raises(ValueError, match="tumour masks"):
        weighted(without_masks, step_generator(5, 0, 0))
    with pytest.raises(ValueError, match="lesion_loss_weight"):
        TrainConfig(stage="2", lesion_loss_weight=0.5)


def test_only_the_stage_parts_change(dataset, tmp_path):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY)
    unet_before = weights_digest(model.unet)
    vl_before = weights_digest(model.vl)
    train_stage(model, dataset, TrainConfig(stage="1A", steps=2, learning_rate=1e-3), tmp_path)
    assert weights_digest(model.unet) == unet_before and weights_digest(model.vl) != vl_before


def test_heads_loss_falls(dataset, tmp_path):
    torch.manual_seed(0)
    model = ImmunoDiffModel(TINY)
    result = train_stage(model, dataset, TrainConfig(stage="heads", steps=60), tmp_path)
    assert result.losses[-1] < result.losses[0]
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file()


def test_linear_heads_are_fitted_with_the_choice_made_on_their_patients(dataset, tmp_path):
    """Standardised linear heads: the stage chooses their L2 and components by cross-
    validation (train/heads_selection.py), records the choice and fits with it."""
    from ImmunoDiffLib.train.heads_selection import L2_CANDIDATES

    torch.manual_seed(0)
    model = ImmunoDiffModel(replace(TINY, heads_input="lesion_and_clinical"))
    train_stage(model, dataset, TrainConfig(stage="heads", steps=30), tmp_path)
    choice = json.loads((tmp_path / "training.json").read_text())["heads_choice"]
    assert choice["l2"] in L2_CANDIDATES and choice["folds"] >= 2
    assert len(choice["scores"]) > 1
    assert min(choice["scores"].values()) == choice["scores"][
        f"l2={choice['l2']:g} components={choice['components']}"]
    read = torch.count_nonzero(model.response_head.basis.abs().sum(0))
    assert read == min(choice["components"], len(dataset))


def test_cancel_then_resume_equals_an_uninterrupted_run(dataset, tmp_path):
    config = TrainConfig(stage="1B", steps=6, learning_rate=1e-3, checkpoint_every=2)
    torch.manual_seed(0)
    straight = ImmunoDiffModel(TINY)
    train_stage(straight, dataset, config, tmp_path / "straight")

    stop = threading.Event()
    torch.manual_seed(0)
    interrupted = ImmunoDiffModel(TINY)
    with pytest.raises(Cancelled, match="checkpoint of step 2 is kept"):
        train_stage(interrupted, dataset, config, tmp_path / "resumed",
                    progress=lambda f, m: stop.set() if f >= 3 / 6 else None, cancel=stop)
    torch.manual_seed(123)  # a fresh process would start from other random weights
    resumed = ImmunoDiffModel(TINY)
    result = train_stage(resumed, dataset, config, tmp_path / "resumed")
    assert weights_digest(resumed) == weights_digest(straight)
    assert len(result.losses) == 6
    assert (tmp_path / "resumed" / "losses.csv").read_text(encoding="utf-8") == (
        tmp_path / "straight" / "losses.csv").read_text(encoding="utf-8")


def test_a_checkpoint_is_not_resumed_on_other_data(dataset, tmp_path):
    config = TrainConfig(stage="1B", steps=2, learning_rate=1e-3, checkpoint_every=2)
    train_stage(ImmunoDiffModel(TINY), dataset, config, tmp_path / "run")
    fewer = CohortDataset(dataset.cases[:-1], dataset.config, cache_dir=dataset.cache.folder)
    assert fewer.fingerprint() != dataset.fingerprint()
    assert fewer.fingerprint().startswith(f"{len(dataset) - 1} cases")
    longer = replace(config, steps=4)
    with pytest.raises(SettingError, match="trained on other data"):
        train_stage(ImmunoDiffModel(TINY), fewer, longer, tmp_path / "run")
    # the same cases (another object) resume: two more steps, four losses in all
    same = CohortDataset(list(dataset.cases), dataset.config, cache_dir=dataset.cache.folder)
    assert len(train_stage(ImmunoDiffModel(TINY), same, longer, tmp_path / "run").losses) == 4


def _train_command(cohort, output, steps=8):
    return [sys.executable, "-m", "ImmunoDiffLib.cli", "train", "1B", "--cohort", str(cohort),
            "-o", str(output), "--model-config", "tiny", "--steps", str(steps),
            "--checkpoint-every", "2", "--lr", "1e-3", *SMALL_CROP]


def test_killed_run_resumes_to_the_same_weights(small_cohort, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_command(small_cohort, tmp_path / "straight"), env=env, check=True,
                   capture_output=True)
    process = subprocess.Popen(_train_command(small_cohort, tmp_path / "killed", steps=40),
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text(encoding="utf-8"))["step"] >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(state.read_text(encoding="utf-8"))["step"]
    assert 4 <= killed_at < 40
    subprocess.run(_train_command(small_cohort, tmp_path / "killed"), env=env, check=True,
                   capture_output=True)
    # steps 1-8 of the killed run (same seed) must equal the uninterrupted 8-step run
    if killed_at <= 8:
        straight = json.loads((tmp_path / "straight" / "training.json").read_text(encoding="utf-8"))
        resumed = json.loads((tmp_path / "killed" / "training.json").read_text(encoding="utf-8"))
        assert resumed["rank_weight_digests"] == straight["rank_weight_digests"]
    else:
        pytest.fail(f"the run passed step 8 (reached {killed_at}) before it could be killed")


def test_torchrun_two_processes_hold_identical_weights(small_cohort, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "ImmunoDiffLib.cli", "train", "1B",
               "--cohort", str(small_cohort), "-o", str(tmp_path / "ddp"), "--model-config",
               "tiny", "--steps", "4", "--lr", "1e-3", *SMALL_CROP]
    done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace",
                          timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp" / "training.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


def test_shipped_configurations_load_and_match_the_paper():
    from pathlib import Path

    from ImmunoDiffLib.models import ModelConfig

    folder = Path(__file__).resolve().parents[1] / "Resources" / "configs"
    model = ModelConfig.from_json(folder / "model_paper.json")
    assert model == ModelConfig() and model.clinical_weight == 0.05 and model.temperature == 0.5
    assert ModelConfig.from_json(folder / "model_tiny.json") == TINY
    train = TrainConfig.from_json(folder / "train_paper.json", stage="2")
    assert (train.learning_rate, train.batch_size) == (2.5e-5, 2)
    with pytest.raises(ValueError, match="Unknown training setting"):
        TrainConfig.from_dict({"stage": "1B", "learning_rat": 1e-3})


def test_train_command_passes_the_lesion_loss_weight_and_checks_it():
    from ImmunoDiffLib.cli import build_parser
    from ImmunoDiffLib.commands.train import _train_config

    parse = build_parser().parse_args
    args = parse(["train", "2", "--cohort", "c.csv", "-o", "runs", "--lesion-loss-weight", "20"])
    assert _train_config(args, "2").lesion_loss_weight == 20.0
    plain = parse(["train", "2", "--cohort", "c.csv", "-o", "runs"])
    assert _train_config(plain, "2").lesion_loss_weight == 1.0
    with pytest.raises(ValueError, match="lesion_loss_weight must be at least 1, got 0.5"):
        _train_config(parse(["train", "2", "-o", "r", "--lesion-loss-weight", "0.5"]), "2")


def test_fitted_target_scale_gives_unit_variance_and_survives_resume(dataset, tmp_path):
    torch.manual_seed(0)
    model = ImmunoDiffModel(replace(TINY, target="change"))
    config = TrainConfig(stage="2", steps=2, checkpoint_every=1, fit_target_scale=True)
    train_stage(model, dataset, config, tmp_path)
    targets = torch.cat([model.target_from(dataset[i]["followup"], dataset[i]["baseline"])
                         .flatten() for i in range(len(dataset))])
    assert float(targets.std()) == pytest.approx(1.0, rel=1e-3)
    assert model.config.target_scale > 2.0  # the change is small before scaling
    fresh = ImmunoDiffModel(replace(TINY, target="change"))  # scale 1 until resumed
    train_stage(fresh, dataset, replace(config, steps=3), tmp_path)
    assert fresh.config.target_scale == model.config.target_scale
