"""What a task computes from its parameters for a call, kept while those parameters are unchanged.

This module imports nothing else of compacter.

A task's *prepared* tensors are what its forward uses that is derived from its parameters: built
adapter weights, those cast to the activations' dtype (once per bank, not per site) and moved to a
site's device, its copies of base layer norms cast to the base's dtype, Intrinsic-SAID's projected
weights. :class:`PreparedTensors` memoizes them by key; :meth:`PreparedTensors.refresh`, run once
at the start of every call into the model, decides whether the memo still holds:

* with gradients: never. A training forward builds a graph of its own (reusing one across backward
  passes fails); within the call (gradient checkpointing's recomputation included) it is reused;
* without gradients (evaluation, every step of ``generate``, serving): while no parameter changed,
  judged by what the host knows without asking the device: each parameter's identity, storage and
  version counter (bumped by in-place ops outside ``.data``: ``p.copy_`` under no_grad, for-each and
  single-tensor optimizer steps), a count of optimizer steps (torch's fused optimizers write without
  bumping version counters: a post-step hook on every torch optimizer counts them), and an explicit
  :meth:`invalidate` (``compacter.load``, ``set_active``, ``compacter.refresh(model)``). Edits through
  ``p.data`` bypass all of these: call ``compacter.refresh(model)`` after them. No value is ever
  compared on the device: such a comparison waits for the device at every decoding step;
* while ``torch.compile`` traces: the memo lives for one traced call (cleared at every call boundary)
  and nothing is checked (guards on version counters would break the graph). Without it dynamo would
  trace a bank's build once per site that uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import torch
from torch.distributed.tensor import DTensor
from torch.optim.optimizer import register_optimizer_step_post_hook

_optimizer_steps = 0


def _count_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


register_optimizer_step_post_hook(_count_optimizer_step)


def _identities(tensors: Iterable[torch.Tensor]) -> list[tuple]:
    """What the host knows of each tensor without asking the device: its identity, version counter and storage (a
    DTensor's, FSDP2's shards: its local shard's too). One comprehension, no call per tensor: it runs at every call."""
    return [(id(t), t._version, t.data_ptr()) if not isinstance(t, DTensor) else
            (id(t), t._version, t._local_tensor._version, t._local_tensor.data_ptr()) for t in tensors]


class PreparedTensors:
    """A memo of tensors derived from ``parameters()``, valid while they are unchanged (module docstring).

    ``builds`` counts how often a key marked ``counted`` was computed (tests and benchmarks count
    weight builds with it).
    """

    def __init__(self, parameters: Callable[[], Iterable[torch.Tensor]]) -> None:
        self._parameters = parameters
        self._memo: dict[Hashable, Any] = {}
        self._traced: dict[Hashable, Any] = {}
        self._key: tuple | None = None
        self.builds = 0

    def refresh(self) -> None:
        """Called as a call into the model starts: drop the memo unless it provably still holds."""
        if torch.compiler.is_compiling():
            self._traced = {}
            return
        if torch.is_grad_enabled():
            self.invalidate()
            return
        key = (_optimizer_steps, *_identities(self._parameters()))
        if key != self._key:
            self._memo.clear()
            self._key = key

    def invalidate(self) -> None:
        self._memo.clear()
        self._key = None

    def get(self, key: Hashable, build: Callable[[], Any], counted: bool = False) -> Any:
        memo = self._traced if torch.compiler.is_compiling() else self._memo
        value = memo.get(key)
        if value is None:
            value = memo[key] = build()
            if counted and not torch.compiler.is_compiling():
                self.builds += 1
        return value

    def __getstate__(self) -> dict:
        # copy.deepcopy(model): the copy builds its own (built tensors may be part of a graph, which cannot be copied)
        return {**self.__dict__, "_memo": {}, "_traced": {}, "_key": None}
