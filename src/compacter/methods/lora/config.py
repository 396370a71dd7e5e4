"""LoRA's settings, PEFT's names and defaults: r=8, lora_alpha=16 on the attention's query and value projections."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...devices import execution_device
from ...model_anatomy import linear_widths
from ...placement import find_targets
from ..base import MethodConfig, TaskModules
from ..settings import setting
from .site import LORA, LoraBank, LoraSlot

# PEFT's defaults per model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["q", "v"], "mt5": ["q", "v"], "umt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"], "mbart": ["q_proj", "v_proj"], "marian": ["q_proj", "v_proj"],
    "bert": ["query", "value"], "roberta": ["query", "value"], "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"], "albert": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"], "deberta-v2": ["query_proj", "value_proj"], "modernbert": ["Wqkv"],
    "gpt2": ["c_attn"], "opt": ["q_proj", "v_proj"], "gpt_neox": ["query_key_value"], "falcon": ["query_key_value"],
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"], "qwen2_moe": ["q_proj", "v_proj"],
    "qwen3_moe": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"], "gemma3": ["q_proj", "v_proj"],
}


@dataclass
class LoraConfig(MethodConfig):
    kind: ClassVar[str] = "lora"
    builds_weights: ClassVar[bool] = True  # B is scaled and cast at each call
    r: int = setting(8, at_least=1)
    lora_alpha: float = setting(16.0, above=0)
    lora_dropout: float = setting(0.0, at_least=0, at_most=1)
    use_rslora: bool = False  # scale alpha / sqrt(r) instead of alpha / r (Kalajdzievski, 2023)
    target_modules: list[str] | None = setting(None, non_empty=True)  # module names or their last parts; None: PEFT's
    target_pattern: str | None = None  # or: a regular expression the whole module name matches
    train_layer_norms: bool = False  # PEFT's LoRA trains nothing of the base but a new task head

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_modules is not None and self.target_pattern is not None:
            raise ValueError("Give LoRA's targets once: target_modules (names) or target_pattern (a regex), not both.")
        if self.target_pattern is not None:
            try:
                re.compile(self.target_pattern)
            except re.error as error:
                raise ValueError(f"target_pattern must be a regular expression, got {self.target_pattern!r} "
                                 f"({error}).") from None

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        targets = find_targets(model, self.target_modules, self.target_pattern, DEFAULT_TARGETS, "LoRA")
        groups: dict[tuple[int, int], list[str]] = {}  # (in, out) → module names
        for name, module in targets:
            groups.setdefault(linear_widths(module), []).append(name)
        for number, ((width_in, width_out), names) in enumerate(groups.items()):
            # trained parameters are fp32 on the (execution) device of the group's first module, whatever the base's
            bank = LoraBank(len(names), width_in, width_out, self.r, device=execution_device(model, names[0]),
                            dtype=torch.float32)
            task.add_module("lora" if len(groups) == 1 else f"lora_{number}", bank)
            for index, name in enumerate(names):
                task.add_site(LORA, name, LoraSlot(bank, index, self.scaling, self.lora_dropout))
