"""A run's model and optimiser: the base built (and quantized), the method attached, placed on the run's device
(sharded under FSDP); AdamW over the trained parameters, a new task head at its own learning rate."""

from __future__ import annotations

import torch
from torch import nn

from ..attach import attach_task
from ..inventory import parameter_groups
from ..models import build_model, enable_activation_checkpointing
from ..quantization import BITSANDBYTES_KINDS, quantize_base
from . import distributed
from .config import TrainConfig


def build_run_model(config: TrainConfig, tokenizer, num_labels: int | None,
                    processes: distributed.Processes) -> nn.Module:
    """The base model with the run's method attached; ``num_labels`` None: text-to-text (no new head)."""
    model = build_model(config.model, pretrained=config.pretrained, num_labels=num_labels, pooling=config.pooling)
    if getattr(model.config, "pad_token_id", None) is None:  # GPT-style models have no padding token
        model.config.pad_token_id = (tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                     else tokenizer.eos_token_id)
    if config.quantize is not None:  # before apply: the adapters attach to the quantized modules
        quantize_base(model, config.quantize, device=processes.device if config.quantize in BITSANDBYTES_KINDS
                      else None)
    attach_task(model, config.method, **config.method_overrides)
    if config.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model.to(processes.device)
    if config.fsdp:
        if processes.world == 1:
            raise ValueError("--fsdp shards the model over several processes: launch with torchrun "
                             "--nproc_per_node N (or accelerate launch); with one process leave --fsdp out.")
        distributed.shard_model(model)
    return model


def build_optimizer(model: nn.Module, trained: dict[str, nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``trained``; a new task head's parameters at the head learning rate."""
    groups = parameter_groups(model)
    heads = [p for n, p in trained.items() if groups[n] == "head"]
    rest = [p for n, p in trained.items() if groups[n] != "head"]
    return torch.optim.AdamW(
        [g for g in ({"params": rest}, {"params": heads, "lr": config.head_learning_rate}) if g["params"]],
        lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)
