"""Tensors derived from parameters (built adapter weights, projected weights), rebuilt only when needed.

This module imports nothing else of compacter.

Rules, checked by :meth:`DerivedTensors.refresh` at the start of every call into the model:

* with gradients: always rebuild. A training forward needs a graph of its own (reusing one across
  backward passes fails, and a gradient step changes the parameters anyway);
* without gradients (evaluation, every step of ``generate``, serving): reuse the built tensors while
  the parameters are provably the same: the same tensors (identity, storage, version counter,
  shape, dtype, device) holding the same values. The values are compared against a snapshot taken
  at build time, because edits through ``p.data`` (``p.data.copy_``, an EMA, FSDP's all-gathers)
  change a parameter without touching its version counter;
* while ``torch.compile`` traces: build at the first use within a call and keep that build until the
  call ends (:meth:`end_trace`, at every call boundary). Reusing across calls would need guards on
  version counters, which break the graph; rebuilding at every use made dynamo trace the build once
  per site (Intrinsic-SAID: every projection once per projected tensor, minutes on a tiny T5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch

T = TypeVar("T")


def _identity(tensor: torch.Tensor) -> tuple:
    return (id(tensor), tensor.data_ptr(), tensor._version, tuple(tensor.shape), tensor.dtype, tensor.device)


class DerivedTensors(Generic[T]):
    """``build()`` computed from ``inputs()``, kept until one of them changes (see the module docstring).

    ``generation`` counts the builds: caches derived from this one compare it to know when to rebuild,
    and tests count builds with it.
    """

    def __init__(self, inputs: Callable[[], Sequence[torch.Tensor]], build: Callable[[], T]) -> None:
        self._inputs, self._build = inputs, build
        self._value: T | None = None
        self._key: tuple | None = None
        self._snapshot: torch.Tensor | None = None
        self._traced: T | None = None  # while compiling: this call's build
        self.generation = 0

    def refresh(self) -> None:
        """Make the value current for a call starting now (rebuilding only where the rules above say so)."""
        if torch.compiler.is_compiling():
            return
        self._traced = None
        if torch.is_grad_enabled():
            self._store(self._build(), key=None)
            return
        inputs = list(self._inputs())
        key = tuple(_identity(t) for t in inputs)
        if self._value is not None and key == self._key and torch.equal(_flat(inputs), self._snapshot):
            return
        self._store(self._build(), key=key, snapshot=_flat(inputs).clone())

    def _store(self, value: T, key: tuple | None, snapshot: torch.Tensor | None = None) -> None:
        self._value, self._key, self._snapshot = value, key, snapshot
        self.generation += 1

    @property
    def value(self) -> T:
        """The built tensors; built now if no call has refreshed them."""
        if torch.compiler.is_compiling():
            if self._traced is None:
                self._traced = self._build()
            return self._traced
        if self._value is None:
            self.refresh()
        return self._value

    def end_trace(self) -> None:
        """A compiled call starts or ends: a build from before is not used (the next use builds its own)."""
        self._traced = None

    def clear(self) -> None:
        self._value = self._key = self._snapshot = self._traced = None

    def __getstate__(self) -> dict:
        # a copy (copy.deepcopy of the model) builds its own: built tensors may be part of a graph, which cannot be copied
        return {**self.__dict__, "_value": None, "_key": None, "_snapshot": None, "_traced": None}


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """All values in one tensor (on the first one's device), so that the comparison is one kernel and one sync."""
    if not tensors:
        return torch.empty(0)
    device = tensors[0].device
    return torch.cat([t.detach().reshape(-1) if t.device == device and t.dtype == torch.float32
                      else t.detach().reshape(-1).to(device, torch.float32) for t in tensors])
