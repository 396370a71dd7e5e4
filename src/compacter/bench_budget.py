"""`compacter bench --memory-budget`: the largest batch whose training step fits a memory budget (the paper's
Table 3 set-up), found by doubling and then bisecting, and the budget's parser."""

from __future__ import annotations

import gc

import torch

from .bench import MethodRunner


def largest_batch(model_name: str, method: str, budget_bytes: int, *, source_length: int, target_length: int,
                  dtype: str, device: str | None = None, limit: int = 4096, compile: bool = False,
                  compile_backend: str = "inductor", overrides: dict | None = None) -> int:
    """The largest batch whose training step fits ``budget_bytes`` (the paper's Table 3 set-up)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def fits(batch_size: int) -> bool:
        try:
            runner = MethodRunner(model_name, method, batch_size, source_length, target_length, device, dtype,
                                  compile=compile, overrides=overrides, compile_backend=compile_backend)
            runner.step()
            fitted = runner.peak_memory <= budget_bytes
            runner.release()
            return fitted
        except torch.OutOfMemoryError:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return False

    low, high = 0, 1
    while high <= limit and fits(high):  # double until it no longer fits ...
        low, high = high, high * 2
    high = min(high, limit + 1)
    while high - low > 1:  # ... then bisect between the last fit and the first miss
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    if low == 0:
        raise ValueError(f"Not even a batch of 1 fits {budget_bytes / 2**30:.1f} GiB for {method}.")
    return low


def parse_memory(text: str) -> int:
    """'24GB', '24GiB', '512MB' → bytes (GB read as GiB, as GPU memory is quoted)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    if value and value[-1] in units:
        return int(float(value[:-1]) * units[value[-1]])
    try:
        return int(float(value))
    except ValueError:
        raise ValueError(f"Cannot read the memory budget {text!r}; write it like 24GB or 512MB.") from None
