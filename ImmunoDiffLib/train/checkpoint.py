"""Training checkpoints: model and optimizer tensors in safetensors, counters in JSON.

    checkpoint/
      model.safetensors      the whole model (every part), as in a bundle
      optimizer.safetensors  Adam's per-parameter tensors, named "<index>.<name>"
      ema.safetensors        the moving average of the trained weights (if kept)
      state.json             step, stage, configs, optimizer hyper-parameters, losses
Written to a temporary sibling and renamed, so the last good checkpoint survives any kill.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..outputs import atomic_folder, recover_folder

MODEL_NAME, OPTIMIZER_NAME, STATE_NAME = "model.safetensors", "optimizer.safetensors", "state.json"
EMA_NAME = "ema.safetensors"


def save_checkpoint(folder: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict,
                    ema: dict[str, torch.Tensor] | None = None) -> Path:
    folder = Path(folder)
    with atomic_folder(folder, overwrite=True) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  str(staging / MODEL_NAME))
        if ema is not None:
            save_file(ema, str(staging / EMA_NAME))
        record = dict(state)
        if optimizer is not None:
            packed = optimizer.state_dict()
            tensors = {}
            for index, values in packed["state"].items():
                for name, value in values.items():
                    tensors[f"{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
            save_file(tensors, str(staging / OPTIMIZER_NAME))
            record["optimizer_param_groups"] = packed["param_groups"]
        (staging / STATE_NAME).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return folder


def load_model_weights(folder: str | os.PathLike, model: torch.nn.Module) -> None:
    """Load a checkpoint's (or bundle's) model tensors into ``model`` (all must match)."""
    folder = Path(folder)
    path = folder / MODEL_NAME
    if not path.is_file():
        path = folder / "weights.safetensors"  # a bundle folder
    if not path.is_file():
        raise FileNotFoundError(f"No model weights in '{folder}' (expected {MODEL_NAME}).")
    model.load_state_dict(load_file(str(path)), strict=True)


def load_checkpoint(folder: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore model and optimizer from ``folder``; return the saved state."""
    folder = recover_folder(folder)
    state = json.loads((folder / STATE_NAME).read_text(encoding="utf-8"))
    load_model_weights(folder, model)
    if optimizer is not None and (folder / OPTIMIZER_NAME).is_file():
        tensors = load_file(str(folder / OPTIMIZER_NAME))
        packed: dict = {"state": {}, "param_groups": state["optimizer_param_groups"]}
        for key, value in tensors.items():
            index, name = key.split(".", 1)
            packed["state"].setdefault(int(index), {})[name] = value
        optimizer.load_state_dict(packed)
    return state


def load_ema(folder: str | os.PathLike) -> dict[str, torch.Tensor] | None:
    """The checkpoint's weight average, or None when it kept none."""
    path = recover_folder(folder) / EMA_NAME
    return load_file(str(path)) if path.is_file() else None
