"""Process-group set-up for torchrun (DDP), and the single-process fallback.

torchrun exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; when they are
present we join the group (NCCL on CUDA, gloo on CPU), otherwise the run is one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> World:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    log.info("process %d of %d (local rank %d)", world.rank, world.world_size, world.local_rank)
    return world


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def all_gather_objects(world: World, value: object) -> list[object]:
    """Every process's ``value``, in rank order (a one-item list when single-process)."""
    if not world.distributed:
        return [value]
    gathered: list[object] = [None] * world.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def device_for(world: World, requested: str) -> torch.device:
    """CUDA device of this local rank when asked or available, else CPU."""
    from ..device import select

    if requested == "auto" and torch.cuda.is_available():
        return torch.device("cuda", world.local_rank)
    return select(requested, "fp32").device
