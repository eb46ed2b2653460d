"""``train_stage``: one training stage with checkpoints, exact resume, progress and cancel,
unchanged under ``torchrun --nproc_per_node N`` (DDP).

Determinism: the batch of step s is drawn from a permutation seeded by (seed, epoch), and all
noise from a generator seeded by (seed, step, rank); so a run resumed from the checkpoint of
step k continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, default_collate

from ..progress import CancelFlag, Cancelled, ProgressCallback, Task, is_cancelled
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .distributed import World, gather, init_world
from .heads import train_heads
from .stages import StageLoss

CHECKPOINT_DIR = "checkpoint"
LOSSES_NAME = "losses.csv"
SUMMARY_NAME = "training.json"


@dataclass
class TrainResult:
    stage: str
    steps: int
    losses: list[float]
    output: Path
    weight_digests: list[str]


def batch_indices(n_items: int, batch_size: int, step: int, seed: int, world: World):
    """This rank's dataset indices for ``step``: consecutive slices of per-epoch permutations."""
    global_size = batch_size * world.size
    start = step * global_size
    indices = []
    for position in range(start + world.rank * batch_size,
                          start + (world.rank + 1) * batch_size):
        epoch, offset = divmod(position, n_items)
        order = np.random.default_rng([seed, epoch]).permutation(n_items)
        indices.append(int(order[offset]))
    return indices


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    seed_sequence = np.random.SeedSequence([seed, step, rank])
    return torch.Generator().manual_seed(int(seed_sequence.generate_state(1)[0]))


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device).float() if value.dtype == torch.uint8 else value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value


def weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_stage(model, dataset: Dataset, config: TrainConfig, output: str | os.PathLike,
                progress: ProgressCallback | None = None, cancel: CancelFlag = None,
                world: World | None = None) -> TrainResult:
    """Train ``config.stage`` of ``model`` on ``dataset``, writing checkpoints and losses into
    ``output``; resume from ``output/checkpoint`` when it exists."""
    world = world or init_world()
    output = Path(output)
    task = Task(progress, cancel)
    if config.stage == "heads":
        return train_heads(model, dataset, config, output, task, world)
    model.to(world.device)
    parameters = model.set_trainable(config.stage)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    checkpoint = output / CHECKPOINT_DIR
    start, losses = 0, []
    last_saved = None
    if checkpoint.is_dir():
        state = load_checkpoint(checkpoint, model, optimizer)
        if state.get("stage") != config.stage:
            raise ValueError(f"'{checkpoint}' belongs to stage {state.get('stage')}, not "
                             f"{config.stage}; use another output folder.")
        start, losses = int(state["step"]), list(state["losses"])
        last_saved = start
    elif config.stage == "1C":
        model.init_controlnet_from_unet()
    loss_module = StageLoss(model, config.stage, config.lesion_loss_weight)
    runner = loss_module
    if world.size > 1:
        runner = DistributedDataParallel(loss_module, find_unused_parameters=True)
    model.train()
    for step in range(start, config.steps):
        if is_cancelled(cancel):
            kept = f"the checkpoint of step {last_saved} is kept" if last_saved else \
                "no checkpoint was written yet"
            raise Cancelled(f"Training cancelled at step {step}; {kept}.")
        items = [dataset[i] for i in batch_indices(len(dataset), config.batch_size, step,
                                                   config.seed, world)]
        batch = _to_device(default_collate(items), world.device)
        loss = runner(batch, step_generator(config.seed, step, world.rank))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if world.size > 1:
            value = float(np.mean(gather(value, world)))
        losses.append(value)
        done = step + 1
        task.report(done / config.steps, f"stage {config.stage} step {done}/{config.steps} "
                                         f"loss {value:.4f}")
        if done % config.checkpoint_every == 0 or done == config.steps:
            last_saved = done
            if world.is_main:
                save_checkpoint(checkpoint, model, optimizer,
                                {"stage": config.stage, "step": done, "losses": losses,
                                 "config": config.to_dict(),
                                 "model_config": model.config.to_dict()})
    digests = gather(weights_digest(model), world)
    if world.is_main:
        _write_losses(output / LOSSES_NAME, losses)
        (output / SUMMARY_NAME).write_text(json.dumps(
            {"stage": config.stage, "steps": config.steps, "world_size": world.size,
             "final_loss": losses[-1] if losses else None, "rank_weight_digests": digests,
             "config": config.to_dict()}, indent=2), encoding="utf-8")
    model.eval()
    return TrainResult(config.stage, config.steps, losses, output, digests)


def _write_losses(path: Path, losses: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "loss"])
        writer.writerows((i + 1, f"{v:.6f}") for i, v in enumerate(losses))
