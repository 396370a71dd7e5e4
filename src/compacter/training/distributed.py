"""One process or many: joining the process group, collectives, and FSDP sharding with whole-tensor saves.

torchrun and `accelerate launch` both set RANK / WORLD_SIZE / LOCAL_RANK; without them a run is
one process and the collectives here return at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


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
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu (or leave --device out).")
        if chosen.index is not None and chosen.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}.")
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


def shard_model(model: nn.Module) -> None:
    """FSDP (fully_shard): each transformer block is one unit, the rest of the model (embeddings, the
    method's modules) the root unit. Call after compacter.apply and before making the optimiser."""
    from torch.distributed.fsdp import fully_shard

    lists = [name for name, module in model.named_modules() if isinstance(module, nn.ModuleList) and name
             and not name.startswith("compacter")]
    outermost = [name for name in lists if not any(name.startswith(other + ".") for other in lists)]
    for name in outermost:
        for block in model.get_submodule(name):
            if any(True for _ in block.parameters()):
                fully_shard(block)
    fully_shard(model)  # its pre-forward hook runs first (prepended): tasks build their weights from whole tensors


def full_tensors(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whole CPU copies of (possibly sharded) tensors; a collective call when any is sharded."""
    return {name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().cpu() for name, p in parameters.items()}


def copy_into(parameter: torch.Tensor, value: torch.Tensor) -> None:
    """Load a whole tensor into a parameter, sharding it first where the parameter is sharded."""
    value = value.to(parameter.device, parameter.dtype)
    if isinstance(parameter, DTensor):
        value = distribute_tensor(value, parameter.device_mesh, parameter.placements)
    parameter.copy_(value)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser's state with whole CPU tensors (gathered from shards: a collective call under FSDP)."""
    state = optimizer.state_dict()
    state["state"] = {index: {key: (value.full_tensor() if isinstance(value, DTensor) else value).cpu()
                              if torch.is_tensor(value) else value for key, value in values.items()}
                      for index, values in sorted(state["state"].items())}
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a state written by full_optimizer_state, sharding each tensor like its parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in state["state"].items():
        param = params[index]
        for key, value in values.items():
            if isinstance(param, DTensor) and torch.is_tensor(value) and value.shape == param.shape:
                values[key] = distribute_tensor(value.to(param.device), param.device_mesh, param.placements)
    optimizer.load_state_dict(state)
