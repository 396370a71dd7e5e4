"""What every method config shares, and the module that holds one task's trained parameters."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..layers import ProjectionBank
from ..quantization import dequantized
from .settings import check_fields, setting


@dataclass(frozen=True)
class AdapterSlot:
    """The adapter at one site: slot ``index`` of a down and an up bank.

    A module that runs at several layer positions in one forward pass (ALBERT's shared block) has
    a slot per position: ``position`` of ``calls``.
    """

    down: ProjectionBank
    up: ProjectionBank
    index: int
    activation: str
    module: str  # the site module's name in the model
    position: int = 0
    calls: int = 1


def site_key(module: str, position: int = 0, calls: int = 1) -> str:
    """How tasks name an adapter site: the module's name, and its call position when it runs several times."""
    return module if calls == 1 else f"{module}@{position}"


class TaskModules(nn.Module):
    """One task's trained parameters, attached to a model under ``model.compacter.tasks[name]``.

    It holds the modules a method adds (banks, the shared A, a prompt ...), the adapter of each
    site (``adapters``, by site key), and under ``base`` its own copies of the base model's
    parameters that it trains (layer norms, a task head), named as in the base model. The base
    model itself is never changed by a task, except by the methods that train the base's own
    parameters in place (``MethodConfig.in_base``), which are therefore alone on their model.
    """

    def __init__(self, name: str, config: MethodConfig) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.adapters: dict[str, AdapterSlot] = {}
        self.hooks: list[RemovableHandle] = []  # what the method registered on the base model
        self._copy_slots: dict[str, tuple[nn.Module, str]] = {}  # base parameter name → where its copy is registered

    def add_adapter(self, module: str, down: ProjectionBank, up: ProjectionBank, index: int, activation: str,
                    position: int = 0, calls: int = 1) -> None:
        self.adapters[site_key(module, position, calls)] = AdapterSlot(down, up, index, activation, module, position, calls)

    def add_base_copy(self, key: str, value: torch.Tensor, device: torch.device | None = None) -> nn.Parameter:
        """This task's own trainable fp32 copy of base parameter ``key`` (on ``device``, default: ``value``'s),
        registered as ``base.<key>``."""
        *path, leaf = f"base.{key}".split(".")
        module: nn.Module = self
        for part in path:
            if part not in module._modules:
                module.add_module(part, nn.Module())
            module = module._modules[part]
        # a quantized head: the values it stands for; an offloaded one: its stored values, on its execution device
        copy = nn.Parameter(dequantized(value).to(device or value.device, torch.float32, copy=True))
        module.register_parameter(leaf, copy)
        self._copy_slots[key] = (module, leaf)
        return copy

    @property
    def base_copies(self) -> dict[str, torch.Tensor]:
        """Base parameter name → this task's copy, as registered now (FSDP and conversions swap the objects)."""
        return {key: module._parameters[leaf] for key, (module, leaf) in self._copy_slots.items()}

    def base_copy(self, key: str) -> torch.Tensor | None:
        slot = self._copy_slots.get(key)
        return None if slot is None else slot[0]._parameters[slot[1]]

    def banks(self) -> list[ProjectionBank]:
        return [module for module in self.modules() if isinstance(module, ProjectionBank)]

    def bank_inputs(self) -> list[torch.Tensor]:
        """Every tensor the task's adapter weights are built from."""
        return [tensor for bank in self.banks() for tensor in bank.inputs()]

    def build_banks(self) -> dict[ProjectionBank, tuple]:
        """Each bank's (weights, biases), keyed by the bank."""
        return {bank: bank.build() for bank in self.banks()}

    def remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()


@dataclass
class MethodConfig(abc.ABC):
    """Settings shared by all methods. Subclasses add their own fields and implement attach()."""

    kind: ClassVar[str] = ""
    # True for methods that train the base model's own parameters in place (full, bitfit, intrinsic-said):
    # such a task cannot share its model with other tasks, be disabled or be unloaded.
    in_base: ClassVar[bool] = False
    name: str = ""
    train_layer_norms: bool = True  # the paper trains the model's layer norms for every method
    train_output_layer: bool = False  # the pretrained output layer (lm_head) stays frozen
    train_head: bool = True  # a new task head (e.g. BERT's classifier) always has to train
    learning_rate: float = setting(3e-4, above=0)  # the paper's choice (T5, SPEC §2); other families: learning_rates.py

    def __post_init__(self) -> None:
        check_fields(self, owner=f"method {self.name or self.kind!r}")  # types and bounds of every field (settings.py)

    @abc.abstractmethod
    def attach(self, model: nn.Module, task: TaskModules) -> None:
        """Insert this method's modules into ``task`` (and, for in-base methods, change ``model``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
