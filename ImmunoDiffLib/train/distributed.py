"""torchrun / DDP set-up: one process per device, gloo on CPU, NCCL on GPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank = int(os.environ["RANK"])
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return World(rank, size, device)


def gather(value, world: World) -> list:
    """Every rank's ``value`` (a picklable object of our own), on every rank."""
    if world.size == 1:
        return [value]
    out = [None] * world.size
    dist.all_gather_object(out, value)
    return out
