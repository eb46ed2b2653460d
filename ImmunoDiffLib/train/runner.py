"""``train_stage``: one training stage with checkpoints, exact resume, progress and cancel,
unchanged under ``torchrun --nproc_per_node N`` (DDP).

Determinism: the batch of step s is drawn from a permutation seeded by (seed, epoch), and all
noise from a generator seeded by (seed, step, rank); so a run resumed from the checkpoint of
step k continues exactly as an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, default_collate

from ..errors import SettingError
from ..inference.precision import resolve_bf16, resolve_channels_last
from ..models.config import Stage
from ..models.diffusion import fit_target_scale
from ..progress import CancelFlag, Cancelled, ProgressCallback, Task, is_cancelled
from ..seeds import numpy_generator, torch_generator
from .checkpoint import load_checkpoint, load_ema, save_checkpoint
from .config import TrainConfig
from .distributed import World, gather, init_world
from .ema import WeightAverage
from .heads import train_heads
from .records import CHECKPOINT_DIR, TrainResult, weights_digest, write_records
from .stages import StageLoss

# the diffusion stages: their samples use the averaged weights
EMA_STAGES = (Stage.DIFFUSION, Stage.CONTROLNET, Stage.CONDITIONED)


def dataset_fingerprint(dataset: Dataset) -> str:
    """What a checkpoint records of the data it was trained on, so that a run is never resumed
    on other data (a changed cohort written to the same folder): the dataset's own
    ``fingerprint()`` where it has one (CohortDataset: its cases and preprocessing), else its
    item count."""
    own = getattr(dataset, "fingerprint", None)
    return own() if callable(own) else f"{len(dataset)} items"


def batch_indices(n_items: int, batch_size: int, step: int, seed: int, world: World):
    """This rank's dataset indices for ``step``: consecutive slices of per-epoch permutations."""
    global_size = batch_size * world.size
    start = step * global_size
    indices = []
    for position in range(start + world.rank * batch_size,
                          start + (world.rank + 1) * batch_size):
        epoch, offset = divmod(position, n_items)
        order = numpy_generator(seed, "item order", epoch).permutation(n_items)
        indices.append(int(order[offset]))
    return indices


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The noise and timesteps of one training step on one rank."""
    return torch_generator(seed, "training step", step, rank)


def _to_device(value, device, layout=torch.contiguous_format):
    """Tensors to ``device`` (labels as float); 5-D ones in ``layout``."""
    if isinstance(value, torch.Tensor):
        value = value.to(device).float() if value.dtype == torch.uint8 else value.to(device)
        return value.contiguous(memory_format=layout) if value.ndim == 5 else value
    if isinstance(value, dict):
        return {k: _to_device(v, device, layout) for k, v in value.items()}
    return value


def dataset_target_scale(model, dataset: Dataset) -> float:
    """1 / SD of the model's unscaled stage-2 target over every item of ``dataset``."""
    targets = []
    for index in range(len(dataset)):
        item = dataset[index]
        targets.append(model.unscaled_target(item["followup"].float(),
                                             item["baseline"].float()).numpy())
    return fit_target_scale(targets)


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
    bf16 = resolve_bf16(config.bf16, world.device)
    layout = (torch.channels_last_3d
              if resolve_channels_last(config.channels_last, bf16, world.device)
              else torch.contiguous_format)
    model.to(world.device, memory_format=layout)
    parameters = model.set_trainable(config.stage)
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    average = None
    if config.ema_decay > 0 and config.stage in EMA_STAGES:
        trained = {id(p) for p in parameters}
        average = WeightAverage(model, [n for n, p in model.named_parameters()
                                        if id(p) in trained], config.ema_decay)
    checkpoint = output / CHECKPOINT_DIR
    data = dataset_fingerprint(dataset)
    start, losses = 0, []
    last_saved = None
    if checkpoint.is_dir():
        state = load_checkpoint(checkpoint, model, optimizer)
        if state.get("stage") != config.stage:
            raise SettingError(f"'{checkpoint}' belongs to stage {state.get('stage')}, not "
                             f"{config.stage}; use another output folder.")
        if state.get("data", data) != data:
            raise SettingError(f"'{checkpoint}' was trained on other data ({state['data']}), "
                               f"not on this dataset ({data}); use another output folder.")
        start, losses = int(state["step"]), list(state["losses"])
        last_saved = start
        model.config = replace(model.config,
                               target_scale=state["model_config"]["target_scale"])
        stored = load_ema(checkpoint)
        if average is not None and stored is not None:
            average.load_state_tensors(stored, start)
    elif config.stage == "1C":
        model.init_controlnet_from_unet()
    elif config.stage == "2" and config.fit_target_scale:
        model.config = replace(model.config, target_scale=dataset_target_scale(model, dataset))
    loss_module = StageLoss(model, config.stage, config.lesion_loss_weight,
                            config.response_loss_weight)
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
        batch = _to_device(default_collate(items), world.device, layout)
        with (torch.autocast(world.device.type, dtype=torch.bfloat16) if bf16
              else contextlib.nullcontext()):
            loss = runner(batch, step_generator(config.seed, step, world.rank))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update()
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
                                 "data": data,
                                 "config": config.to_dict(),
                                 "model_config": model.config.to_dict()},
                                None if average is None else average.state_tensors())
    if average is not None:
        average.copy_to_model()
    model.to(memory_format=torch.contiguous_format)
    digests = gather(weights_digest(model), world)
    if world.is_main:
        write_records(output, losses, {
            "stage": config.stage, "steps": config.steps, "world_size": world.size,
            "final_loss": losses[-1] if losses else None, "rank_weight_digests": digests,
            "config": config.to_dict()})
    model.eval()
    return TrainResult(config.stage, config.steps, losses, output, digests)

