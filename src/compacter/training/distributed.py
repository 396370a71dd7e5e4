"""One process or many: torchrun and `accelerate launch` both set RANK / WORLD_SIZE / LOCAL_RANK."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def start(device: str | None = None) -> Processes:
    """Join the process group when launched by torchrun / accelerate (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Processes(rank, world, chosen)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def total(value: float, processes: Processes) -> float:
    """The sum of ``value`` over all processes."""
    if processes.world == 1:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64,
                          device=processes.device if processes.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item())


def gather(items: list, processes: Processes) -> list[list]:
    """Every process's list, in rank order, on every process."""
    if processes.world == 1:
        return [items]
    gathered: list = [None] * processes.world
    dist.all_gather_object(gathered, items)
    return gathered


def barrier(processes: Processes) -> None:
    if processes.world > 1:
        dist.barrier()
