"""(IA)³'s settings, PEFT's names and defaults: keys, values and the feed-forward output projection's input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ...devices import execution_device
from ...model_anatomy import linear_widths
from ...placement import find_targets
from ..base import MethodConfig, TaskModules
from ..settings import setting
from .site import IA3_INPUT, IA3_OUTPUT, ScaleBank, ScaleSlot

# PEFT's defaults per model type (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and ..._FEEDFORWARD_MODULES_...)
DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": ["k", "v", "wo"], "mt5": ["k", "v", "wi_1"],
    "bart": ["k_proj", "v_proj", "fc2"], "mbart": ["k_proj", "v_proj", "fc2"],
    "bert": ["key", "value", "output.dense"], "roberta": ["key", "value", "output.dense"],
    "xlm-roberta": ["key", "value", "output.dense"], "distilbert": ["k_lin", "v_lin", "lin2"],
    "deberta-v2": ["key_proj", "value_proj", "output.dense"], "gpt2": ["c_attn", "mlp.c_proj"],
    "opt": ["k_proj", "v_proj", "fc2"], "gpt_neox": ["query_key_value", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense_4h_to_h"],
    "llama": ["k_proj", "v_proj", "down_proj"], "mistral": ["k_proj", "v_proj", "down_proj"],
    "qwen2": ["k_proj", "v_proj", "down_proj"], "qwen3": ["k_proj", "v_proj", "down_proj"],
    "gemma": ["k_proj", "v_proj", "down_proj"], "gemma2": ["k_proj", "v_proj", "down_proj"],
}
DEFAULT_FEEDFORWARD: dict[str, list[str]] = {
    "t5": ["wo"], "mt5": ["wi_1"], "bart": ["fc2"], "mbart": ["fc2"], "bert": ["output.dense"],
    "roberta": ["output.dense"], "xlm-roberta": ["output.dense"], "distilbert": ["lin2"],
    "deberta-v2": ["output.dense"], "gpt2": ["mlp.c_proj"], "opt": ["fc2"], "gpt_neox": ["dense_4h_to_h"],
    "falcon": ["dense_4h_to_h"], "llama": ["down_proj"], "mistral": ["down_proj"], "qwen2": ["down_proj"],
    "qwen3": ["down_proj"], "gemma": ["down_proj"], "gemma2": ["down_proj"],
}


@dataclass
class IA3Config(MethodConfig):
    kind: ClassVar[str] = "ia3"
    target_modules: list[str] | None = setting(None, non_empty=True)  # names or their last parts; None: PEFT's
    feedforward_modules: list[str] | None = setting(None)  # of the targets, those whose input is scaled; None: PEFT's
    train_layer_norms: bool = False  # PEFT's (IA)³ trains nothing of the base but a new task head

    def attach(self, model: nn.Module, task: TaskModules) -> None:
        targets = find_targets(model, self.target_modules, None, DEFAULT_TARGETS, "(IA)³")
        feedforward = self.feedforward_modules
        if feedforward is None:
            feedforward = DEFAULT_FEEDFORWARD.get(model.config.model_type, []) if self.target_modules is None else []
        groups: dict[tuple[bool, int], list[str]] = {}  # (scales the input, width) → module names
        for name, module in targets:
            scales_input = any(name == part or name.endswith("." + part) for part in feedforward)
            width_in, width_out = linear_widths(module)
            groups.setdefault((scales_input, width_in if scales_input else width_out), []).append(name)
        for number, ((scales_input, width), names) in enumerate(groups.items()):
            bank = ScaleBank(len(names), width, device=execution_device(model, names[0]), dtype=torch.float32)
            task.add_module("ia3" if len(groups) == 1 else f"ia3_{number}", bank)
            kind = IA3_INPUT if scales_input else IA3_OUTPUT
            for index, name in enumerate(names):
                task.add_site(kind, name, ScaleSlot(bank, index))
