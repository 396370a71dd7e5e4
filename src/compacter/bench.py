"""Training-step time and memory of each method, relative to full fine-tuning in the same run.

Every method gets its own copy of the same random model. Steps are interleaved round-robin over
the methods so that machine noise (other processes, clock changes) hits all of them alike. A
method's time ratio is the median over rounds of its step time divided by full fine-tuning's in
the same round, given with the interquartile range of those per-round ratios, which shows how
much the machine moved it; its step time is the median of its steps.

Memory is the CUDA allocator's peak during a method's step on a GPU, less what the other methods'
models hold there between their steps (weights, optimizer state, batch: counted tensor by tensor),
so that each method's figure is its own as if it were alone; on the CPU, where there is no such
counter, it is what training holds at the peak of a step: parameters, gradients, optimizer state
and the tensors autograd saved for the backward pass. ``MEMORY_MEASURES`` says which, in the JSON.

Kernels per step (``kernels_per_step``) come from one profiled step after the timed ones: CUDA
kernels launched on a GPU, where an eager step is bound by launching them; aten operator calls on
the CPU. ``compile="both"`` measures every method eager and compiled in the same run, each mode's
ratios to full fine-tuning in that same mode.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .attach import attach_task
from .bench_peers import PEERS
from .compiling import compile_model
from .inventory import count_unique
from .methods import METHODS, AdapterConfig, MethodConfig, get_config
from .model_anatomy import model_family
from .models import build_model
from .params import count_parameters

MNLI_TRAIN_EXAMPLES = 392_702 - 1_000  # the paper's MNLI training split (SPEC §4)
COMPILED = " (compiled)"
MEMORY_MEASURES = {
    "cuda": "the CUDA allocator's peak during the method's step, less the tensors the other methods' models hold on "
            "the GPU (weights, optimizer state, batch): each method as if alone on the device",
    "cpu": "parameters, gradients, optimizer state and the tensors autograd saved, at the peak of a step",
}
KERNEL_COUNTS = {"cuda": "CUDA kernels launched in one training step (torch.profiler)",
                 "cpu": "aten operator calls in one training step, nested ones included (torch.profiler)"}


@dataclass
class BenchResult:
    method: str
    percent_trained: float
    step_time_s: float
    peak_memory_bytes: int
    step_time_ratio: float = 1.0  # relative to full fine-tuning, per example
    step_time_ratio_iqr: tuple[float, float] = (1.0, 1.0)  # its 25th and 75th percentile over rounds
    memory_ratio: float = 1.0
    epoch_time_h: float = 0.0  # projected time of one MNLI epoch at this batch size
    batch_size: int = 0
    compiled: bool = False
    kernels_per_step: int = 0  # KERNEL_COUNTS

    def to_dict(self) -> dict:
        return asdict(self)


def _batch(model: nn.Module, batch_size: int, source_length: int, target_length: int, device) -> dict:
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(2, vocab, (batch_size, source_length), generator=generator).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if model_family(model) == "seq2seq":
        batch["labels"] = torch.randint(2, vocab, (batch_size, target_length), generator=generator).to(device)
    else:
        batch["labels"] = ids
    return batch


class SavedTensorMeter:
    """Bytes autograd saves for the backward pass, each storage counted once."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter) and not tensor.is_meta:
            storage = tensor.untyped_storage()
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def _state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    params = list(model.parameters())  # each tensor once: tied weights are one
    total = sum(p.numel() * p.element_size() for p in params)
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    total += sum(p.numel() * p.element_size() for p in params if p.requires_grad)  # gradients
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def fit_hypercomplex_dimension(config: MethodConfig, model: nn.Module) -> MethodConfig:
    """The largest n up to the paper's that divides this model's sizes (T5-small's 512 has no 12)."""
    if not isinstance(config, AdapterConfig) or config.projection != "phm":
        return config
    width = getattr(model.config, "d_model", None) or model.config.hidden_size
    common = math.gcd(width, config.bottleneck(width))
    n = max(m for m in range(1, config.n + 1) if common % m == 0)
    return config if n == config.n else get_config(config, n=n)


class MethodRunner:
    """One method's model, optimizer and batch, stepping on demand."""

    def __init__(self, model_name: str, method: str, batch_size: int, source_length: int, target_length: int,
                 device: torch.device, dtype: str, seed: int = 0, compile: bool = False,
                 overrides: dict | None = None, compile_backend: str = "inductor") -> None:
        torch.manual_seed(seed)
        model = build_model(model_name, pretrained=False)
        base_count = count_unique(model.parameters())
        if method in PEERS:
            model = PEERS[method][1](model)
            self.method = method
            trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.percent = 100.0 * trained / base_count
        else:
            paper = get_config(method).to_dict()
            overrides = (overrides or {}) if method != "full" else {}
            config = get_config(method, **overrides)
            if "n" not in overrides:  # the paper's n=12 does not divide T5-small's sizes; a chosen n stays
                config = fit_hypercomplex_dimension(config, model)
            changed = [f"{key}={value}" for key, value in config.to_dict().items() if value != paper[key]]
            self.method = f"{method} ({', '.join(changed)})" if changed else method
            attach_task(model, config)
            self.percent = count_parameters(model).percent
        self.compiled = compile
        if compile:
            self.method += COMPILED
        self.model = model.to(device)
        self.model.train()
        self.forward = compile_model(self.model, compile_backend) if compile else self.model
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-5)
        self.batch = _batch(self.model, batch_size, source_length, target_length, device)
        self.device = device
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16"
                         else nullcontext())
        self.times: list[float] = []
        self.peak_memory = 0
        self.kernels_per_step = 0

    def resident_bytes(self) -> int:
        """Bytes this runner's tensors hold between steps: weights, buffers, optimizer state, batch (each storage once)."""
        tensors = [*self.model.parameters(), *self.model.buffers(), *self.batch.values()]
        tensors += [v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if not t.is_meta}
        return sum(storages.values())

    def count_kernels(self) -> None:
        """One profiled step: CUDA kernels on a GPU, aten operator calls on the CPU (KERNEL_COUNTS)."""
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile

        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        with profile(activities=activities) as profiler:
            self.step(record=False)
        events = profiler.events()
        self.kernels_per_step = (sum(e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
                                     for e in events) if cuda
                                 else sum(e.name.startswith("aten::") for e in events))

    def step(self, record: bool = True, others_bytes: int = 0) -> None:
        """One training step; ``others_bytes``: what the other runners hold on the GPU, left out of this one's peak."""
        meter = SavedTensorMeter()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with self.autocast, meter.hooks():
            loss = self.forward(**self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if record:
            self.times.append(elapsed)
            memory = (torch.cuda.max_memory_allocated() - others_bytes if self.device.type == "cuda"
                      else _state_bytes(self.model, self.optimizer) + meter.bytes)
            self.peak_memory = max(self.peak_memory, memory)

    def release(self) -> None:
        del self.model, self.forward, self.optimizer, self.batch
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def paired_ratio(times: list[float], reference: list[float], scale: float = 1.0) -> tuple[float, tuple[float, float]]:
    """Median and interquartile range of ``scale · times[r] / reference[r]`` over rounds r.

    Pairing each step with the reference's step of the same round cancels the slow drifts of a
    shared machine that a ratio of two medians would keep.
    """
    ratios = [scale * mine / theirs for mine, theirs in zip(times, reference, strict=True)]
    if len(ratios) == 1:
        return ratios[0], (ratios[0], ratios[0])
    low, median, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, (low, high)


def run_benchmark(model_name: str = "t5-small", methods: list[str] | None = None, *, batch_size: int = 8,
                  source_length: int = 128, target_length: int = 8, steps: int = 5, warmup: int = 2,
                  dtype: str = "fp32", device: str | None = None, batch_sizes: dict[str, int] | None = None,
                  compile: bool | str = False, compile_backend: str = "inductor", overrides: dict | None = None,
                  progress=None) -> list[BenchResult]:
    """Time ``steps`` training steps of each method (and of full fine-tuning, the reference).

    ``batch_sizes`` gives a method its own batch (the memory-budget set-up); others use ``batch_size``.
    ``overrides`` change config fields of every method but full (e.g. ``train_layer_norms=False``, to
    compare with libraries that train the adapters alone); the table names them beside the method.
    ``compile``: True compiles every model, ``"both"`` measures each method eager and compiled (rows
    named "... (compiled)", their ratios to compiled full fine-tuning).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    methods = list(methods or METHODS)
    for method in methods:
        if method not in METHODS and method not in PEERS:
            raise ValueError(f"Unknown method {method!r}; known: {', '.join([*METHODS, *PEERS])}.")
    if compile not in (False, True, "both"):
        raise ValueError(f"compile must be False, True or 'both', got {compile!r}.")
    modes = (False, True) if compile == "both" else (bool(compile),)
    methods = ["full", *(m for m in methods if m != "full")]  # the reference, stepped first in every round
    batch_sizes = batch_sizes or {}
    runners = [MethodRunner(model_name, m, batch_sizes.get(m, batch_size), source_length, target_length, device, dtype,
                            compile=mode, overrides=overrides, compile_backend=compile_backend)
               for mode in modes for m in methods]
    for runner in runners:
        for _ in range(warmup):
            runner.step(record=False)
    resident = [runner.resident_bytes() for runner in runners] if device.type == "cuda" else [0] * len(runners)
    for _ in range(steps):  # round-robin: noise hits every method alike
        for runner, own in zip(runners, resident):
            runner.step(others_bytes=sum(resident) - own)
            if progress:
                progress(runner.method)
    for runner in runners:
        runner.count_kernels()
    results = []
    for runner in runners:
        full = next(r for r in runners if r.compiled == runner.compiled)  # full fine-tuning in the same mode
        seconds = statistics.median(runner.times)
        size = runner.batch["input_ids"].shape[0]
        # per example, so that methods with their own (memory-budget) batch sizes compare fairly
        ratio, spread = paired_ratio(runner.times, full.times, full.batch["input_ids"].shape[0] / size)
        results.append(BenchResult(runner.method, runner.percent, seconds, runner.peak_memory,
                                   step_time_ratio=ratio, step_time_ratio_iqr=spread,
                                   memory_ratio=runner.peak_memory / full.peak_memory,
                                   epoch_time_h=seconds * MNLI_TRAIN_EXAMPLES / size / 3600, batch_size=size,
                                   compiled=runner.compiled, kernels_per_step=runner.kernels_per_step))
    for runner in runners:
        runner.release()
    return results
