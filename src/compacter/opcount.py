"""Counting what a call dispatches: the CPU-side proxy for speed on a GPU.

On a GPU an eager op costs ~35 µs of host time whatever its size, so a training step or a decoding
step of a small-batch or parameter-efficient model is as fast as the number of ops it dispatches.
:class:`OpCounter` counts, under a ``TorchDispatchMode``:

* ``dispatched``: every aten op that reaches the dispatcher (views and allocations included);
* ``compute``: the ops that launch work: not views (an output aliasing an input without writing
  it, or ``_unsafe_view``) and not bare allocations (``empty``);
* ``syncs``: the ops that make the host wait for the device (``.item()``, ``torch.equal``,
  ``bool(tensor)``, ``nonzero``).

Backward ops count too: autograd dispatches them on the calling thread for CPU tensors.

:func:`python_calls` counts the Python functions a call runs: the host's work around those ops,
which the op counts do not see (caches, wrappers, bookkeeping), without a clock's noise.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"_local_scalar_dense", "equal", "is_nonzero", "nonzero", "item"}
# no kernel: bare allocations, and views that autograd does not track as views
NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "lift_fresh", "_unsafe_view"}


def is_view(func: Any) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as ops: ...`` then ``ops.compute``, ``ops.dispatched``, ``ops.syncs``, ``ops.by_op``."""

    def __init__(self) -> None:
        super().__init__()
        self.dispatched = self.compute = self.syncs = 0
        self.by_op: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.dispatched += 1
        if name in SYNC_OPS:
            self.syncs += 1
        elif not is_view(func) and name not in NO_KERNEL:
            self.compute += 1
            self.by_op[name] += 1
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, int]:
        return {"dispatched": self.dispatched, "compute": self.compute, "syncs": self.syncs}


def count(function, *args: Any, **kwargs: Any) -> OpCounter:
    """The ops ``function(*args, **kwargs)`` dispatches."""
    with OpCounter() as counter:
        function(*args, **kwargs)
    return counter


def python_calls(function: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """How many Python functions ``function(*args, **kwargs)`` calls, itself and generator resumptions included: the
    host's own work around the ops, counted without a clock (calls into C are not counted)."""
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        function(*args, **kwargs)
    finally:
        sys.setprofile(previous)
    return calls


def training_step(model: torch.nn.Module, batch: dict, dtype: torch.dtype | None = torch.bfloat16) -> None:
    """Forward and backward of one batch (under CPU autocast to ``dtype`` unless None); gradients set to None first.
    The optimizer's step is left out: its kernels depend on the optimizer, not on the forward path."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = model(**batch).loss
    loss.backward()
