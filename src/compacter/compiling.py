"""`--compile`: torch.compile a model's forward, falling back to eager where compiling fails.

Compiling can fail for reasons that have nothing to do with the model (no C++ compiler for the
CPU backend, an unsupported GPU, an old Triton). A run must not die of it: the first call that
fails to compile prints one warning and the model runs eagerly from then on.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class CompiledForward:
    """Calls ``torch.compile(module)``; on a compile error, warns once and calls ``module`` itself.

    ``backend``: torch.compile's (``aot_eager`` checks the graphs without building kernels: the CPU smoke runs).
    """

    def __init__(self, module: nn.Module, backend: str = "inductor"):
        self.module = module
        self._compiled = torch.compile(module, backend=backend)
        self.failed: str | None = None

    def __call__(self, *args, **kwargs):
        if self.failed is None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 — any compiler failure; a genuine model error re-raises below
                self.failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                warnings.warn(f"torch.compile failed ({self.failed}); running eagerly instead.", stacklevel=2)
        return self.module(*args, **kwargs)


def compile_model(module: nn.Module, backend: str = "inductor") -> CompiledForward:
    return CompiledForward(module, backend)
