"""What every method declares, how its adapters run at a site, and the module that holds one task.

A method is a :class:`MethodConfig` subclass (its settings, and what the rest of compacter must
know of it, declared as class variables) plus, for methods that add computation at modules of the
base model, a :class:`SiteKind`: how the weights of every site of a task are prepared together and
how one site computes, for one task or for a batch whose rows run different tasks. Registering the
config (``methods/__init__.py``) is all the rest of compacter needs.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..cache import PreparedTensors
from ..quantization import dequantized
from .settings import check_fields


def site_key(module: str, position: int = 0, calls: int = 1) -> str:
    """How tasks name a site: the module's name, and its call position when it runs several times per forward
    (ALBERT's shared block)."""
    return module if calls == 1 else f"{module}@{position}"


class SiteKind(abc.ABC):
    """One kind of computation that tasks add at modules of the base model (a bottleneck adapter, LoRA ...).

    The container hooks each module once per kind, whatever the number of tasks there. At a call, the
    hook asks the kind for the task's weights at that site (:meth:`prepare` builds every site's at once,
    cast to the activations' dtype, memoized per call in the task's :class:`PreparedTensors`) and calls
    :meth:`forward`. For a routed batch it stacks the routed tasks' weights (:meth:`stack`) and
    :meth:`forward` gets each row's task index.
    """

    name: ClassVar[str]
    # "output": forward(output, ...) returns the module's new output; "input": forward(first input, ...) returns the
    # module's new first input (e.g. (IA)³'s scaling of a feed-forward output projection's input)
    where: ClassVar[str] = "output"

    def build(self, task: TaskModules) -> None:  # noqa: B027 (optional: most kinds build nothing)
        """The work of :meth:`prepare` that saves tensors for the backward pass (e.g. building weights from factors),
        memoized in ``task.prepared``. It runs as a call with gradients starts, outside any block that gradient
        checkpointing recomputes: a build inside the first such block would not be redone by its recomputation,
        which must save the same tensors as the forward did. Casts and moves save none and stay in prepare."""

    @abc.abstractmethod
    def prepare(self, task: TaskModules, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
        """Each site of ``task``'s weights (by site key), in ``dtype`` on ``device``, built together."""

    @abc.abstractmethod
    def forward(self, value: torch.Tensor, inputs: tuple, weights: Any, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The site's new output (or input). ``weights`` are one task's, or, with ``rows`` (each row's index into
        the routed tasks), the routed tasks' stacked by :meth:`stack`."""

    @abc.abstractmethod
    def stack(self, parts: list[Any]) -> Any:
        """The routed tasks' weights at one site (None for a task without it there) as one set of weights."""

    def __deepcopy__(self, memo: dict) -> SiteKind:
        return self  # one instance per kind: tasks of a copied model still name the kind their hooks run

    def __repr__(self) -> str:
        return f"<site kind {self.name!r}>"


@dataclass
class MethodConfig(abc.ABC):
    """Settings shared by all methods. Subclasses add their own fields, declarations and attach()."""

    kind: ClassVar[str] = ""
    # trains the base model's own parameters in place (full, bitfit, intrinsic-said): such a task cannot share its
    # model with other tasks, be disabled or be unloaded
    trains_base_in_place: ClassVar[bool] = False
    # its weights are built from the trained parameters at each call (not used as they are): gradient checkpointing
    # under torch.compile cannot recompute such a build
    builds_weights: ClassVar[bool] = False
    # its rows can share a batch with other tasks' rows (compacter.route)
    routable: ClassVar[bool] = True
    unroutable_reason: ClassVar[str] = ""  # why not, when routable is False
    # the parameter group (params.GROUPS) of each top-level module the method adds to a task; others: "adapters"
    param_groups: ClassVar[dict[str, str]] = {}
    # said when the method leaves nothing to train on a model
    nothing_to_train_hint: ClassVar[str] = ""

    name: str = ""
    train_layer_norms: bool = True  # the paper trains the model's layer norms for every method
    train_output_layer: bool = False  # the pretrained output layer (lm_head) stays frozen
    train_head: bool = True  # a new task head (e.g. BERT's classifier) always has to train
    # the base's [CLS] pooler (BERT's dense + tanh) trains too, as part of the task's head (AdapterHub's default head)
    train_pooler: bool = False

    def __post_init__(self) -> None:
        check_fields(self, owner=f"method {self.name or self.kind!r}")  # types and bounds of every field (settings.py)

    @abc.abstractmethod
    def attach(self, model: nn.Module, task: TaskModules) -> None:
        """Insert this method's modules into ``task`` (and, for in-place methods, change ``model``)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_declarations(cls) -> None:
        """Refuse a method whose declarations contradict each other (at registration), naming the field."""
        for flag in ("trains_base_in_place", "builds_weights", "routable"):
            if not isinstance(getattr(cls, flag), bool):
                raise TypeError(f"{cls.__name__}.{flag} must be True or False, got {getattr(cls, flag)!r}.")
        if not cls.kind:
            raise ValueError(f"{cls.__name__}.kind must name the method's kind (the 'kind' of its saved configs).")
        if cls.routable and cls.trains_base_in_place:
            raise ValueError(f"{cls.__name__} declares routable=True and trains_base_in_place=True: a method that "
                             "changes the base model's own parameters cannot run only on some rows of a batch. Set "
                             "routable = False (with an unroutable_reason).")
        if not cls.routable and not cls.unroutable_reason and not cls.trains_base_in_place:
            raise ValueError(f"{cls.__name__} declares routable=False without an unroutable_reason; say why its rows "
                             "cannot share a batch (it is shown to users who route them).")
        reserved = {"base"} & set(cls.param_groups)
        if reserved:
            raise ValueError(f"{cls.__name__}.param_groups names 'base', which holds a task's copies of base "
                             "parameters; name the method's own modules only.")


class TaskModules(nn.Module):
    """One task's trained parameters, attached to a model under ``model.compacter.tasks[name]``.

    It holds the modules a method adds (banks, the shared A, a prompt ...), its sites (``sites``: per
    site kind, site key → what the kind needs to find the site's weights), and under ``base`` its own
    copies of the base model's parameters that it trains (layer norms, a task head), named as in the
    base model. The base model itself is never changed by a task, except by the methods that train the
    base's own parameters in place, which are therefore alone on their model.
    """

    def __init__(self, name: str, config: MethodConfig) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.sites: dict[SiteKind, dict[str, Any]] = {}
        self.site_modules: dict[str, tuple[str, int]] = {}  # site key → (module name, calls per forward)
        self.hooks: list[RemovableHandle] = []  # what the method registered on the base model
        self.on_switch: list[Callable[[bool], None]] = []  # told whether the task now runs alone (prompts)
        self.labels: dict[str, Any] | None = None  # a classifier's id2label, label2id, problem_type (heads.py)
        self._copy_slots: dict[str, tuple[nn.Module, str]] = {}  # base parameter name → where its copy is registered
        self._parameter_slots: list[tuple[nn.Module, str]] | None = None
        self.prepared = PreparedTensors(self.trained_tensors)

    def add_site(self, kind: SiteKind, module: str, slot: Any, position: int = 0, calls: int = 1) -> None:
        key = site_key(module, position, calls)
        self.sites.setdefault(kind, {})[key] = slot
        self.site_modules[key] = (module, calls)

    def site_weights(self, kind: SiteKind, key: str, like: torch.Tensor) -> Any:
        """This task's weights at site ``key`` in ``like``'s dtype and on its device (None: no such site)."""
        slots = self.sites.get(kind)
        if slots is None or key not in slots:
            return None
        dtype, device = like.dtype, like.device
        return self.prepared.get((kind, dtype, device), lambda: kind.prepare(self, dtype, device))[key]

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
        self._parameter_slots = None
        return copy

    @property
    def base_copies(self) -> dict[str, torch.Tensor]:
        """Base parameter name → this task's copy, as registered now (FSDP and conversions swap the objects)."""
        return {key: module._parameters[leaf] for key, (module, leaf) in self._copy_slots.items()}

    def base_copy(self, key: str) -> torch.Tensor | None:
        slot = self._copy_slots.get(key)
        return None if slot is None else slot[0]._parameters[slot[1]]

    def base_value(self, key: str, like: torch.Tensor) -> torch.Tensor | None:
        """This task's copy of base parameter ``key`` in ``like``'s dtype, on its device (cast once per change)."""
        copy = self.base_copy(key)
        if copy is None or (copy.dtype == like.dtype and copy.device == like.device):
            return copy
        return self.prepared.get(("copy", key, like.dtype, like.device), lambda: copy.to(like.device, like.dtype))

    def trained_tensors(self) -> list[torch.Tensor]:
        """Every parameter of the task, read from where it is registered now (no walk over modules per call)."""
        if self._parameter_slots is None:
            self._parameter_slots = [(module, leaf) for module in self.modules()
                                     for leaf, param in module._parameters.items() if param is not None]
        return [module._parameters[leaf] for module, leaf in self._parameter_slots]

    def switched(self, running: bool) -> None:
        for listener in self.on_switch:
            listener(running)

    def remove_hooks(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()
