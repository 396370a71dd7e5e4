"""What every method config shares, and the container that holds a method's new modules."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from .settings import check_fields, setting


class CompacterModules(nn.Module):
    """Holds every module a method adds to a model (banks, shared A, prompts, ...).

    It is attached to the model as ``model.compacter`` so that its parameters move, save and
    train with the model, and each new parameter is registered exactly once.
    """

    def start_forward(self) -> None:
        """Tell every module that caches per-forward results (banks, projections) that a new forward began."""
        for module in self.modules():
            if module is not self and hasattr(module, "start_forward"):
                module.start_forward()

    def invalidate(self) -> None:
        """Drop weights cached across forwards (after parameters were loaded behind autograd's back)."""
        for module in self.modules():
            if module is not self and hasattr(module, "invalidate"):
                module.invalidate()


@dataclass
class MethodConfig(abc.ABC):
    """Settings shared by all methods. Subclasses add their own fields and implement attach()."""

    kind: ClassVar[str] = ""
    name: str = ""
    train_layer_norms: bool = True  # the paper trains the model's layer norms for every method
    train_output_layer: bool = False  # the pretrained output layer (lm_head) stays frozen
    train_head: bool = True  # a new task head (e.g. BERT's classifier) always has to train
    learning_rate: float = setting(3e-4, above=0)  # the paper's choice for this method (SPEC §2)

    def __post_init__(self) -> None:
        check_fields(self, owner=f"method {self.name or self.kind!r}")  # types and bounds of every field (settings.py)

    @abc.abstractmethod
    def attach(self, model: nn.Module, modules: CompacterModules) -> None:
        """Insert this method's modules into ``model`` and mark what it trains."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
