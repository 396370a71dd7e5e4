"""Inference and serving speed, measured side by side: `compacter bench --inference` and `--serve`.

``--inference``: per method, one forward pass and ``generate`` relative to the bare base model, and a
second copy of the bare base model, whose ratio (1 on a quiet machine) shows the machine's noise.
``--serve``: many tasks on one base (T5-small, 8 tasks' compacter++ adapters, 64 requests spread
over them): (a) one mixed batch of 64, each row routed to its task; (b) one single-task batch of
64, the floor; (c) 8 batches of 8, one per task, switching the active task; (d) the base alone.

As in the training bench, every configuration runs once per round, round-robin, and a ratio is the
median over rounds of a configuration's time over the reference's time in the same round, with
the interquartile range of those per-round ratios (``bench.paired_ratio``).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from .api import apply
from .bench import COMPILED, fit_hypercomplex_dimension, paired_ratio
from .compiling import compile_model
from .decoding import compiled_generate
from .inventory import trainable_parameters
from .methods import get_config
from .model_anatomy import model_family
from .models import build_model
from .saving import file_tensors
from .switching import route, set_active


@dataclass
class Timing:
    name: str
    seconds: float  # median over rounds
    ratio: float  # to the reference, paired per round
    ratio_iqr: tuple[float, float]

    def to_dict(self) -> dict:
        return asdict(self)


def _requests(model: nn.Module, batch_size: int, source_length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, model.config.vocab_size, (batch_size, source_length), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _forward(model: nn.Module, inputs: dict, target_length: int, call: Callable | None = None,
             **extra) -> Callable[[], object]:
    """One forward pass of ``model`` (through ``call``, e.g. its compiled forward, when given)."""
    if model_family(model) == "seq2seq":
        extra["decoder_input_ids"] = torch.zeros(inputs["input_ids"].shape[0], target_length, dtype=torch.long,
                                                 device=inputs["input_ids"].device)
    call = call or model
    return lambda: call(**inputs, **extra)


def _generate(model: nn.Module, inputs: dict, new_tokens: int, compile_backend: str | None = None,
              **extra) -> Callable[[], object]:
    """``generate`` of ``new_tokens`` tokens; with ``compile_backend``, compiled decoding (a static KV cache)."""
    generate = model.generate if compile_backend is None else partial(compiled_generate, model, backend=compile_backend)
    return lambda: generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            num_beams=1, **extra)


def _peft_setups(base: nn.Module, names: list[str], row_tasks: list[str], inputs: dict, device: torch.device) -> dict:
    """PEFT's LoRA (r=8 on the attention's query and value, its usual set-up) with one adapter per task:
    its mixed batch (``adapter_names=``) and a single-adapter batch, in this same run."""
    import peft

    targets = ["q", "v"] if base.config.model_type in ("t5", "mt5") else ["query", "value"]
    model = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets),
                                adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA's B starts at zero: as if trained
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:  # drawn on the CPU (one stream of numbers everywhere), added where it lives
                param.add_(0.01 * torch.randn(param.shape, generator=generator).to(param.device, param.dtype))
    model.to(device).eval()

    def single(call):
        def run():
            model.set_adapter(names[0])
            return call(model, inputs)()
        return run
    return {"(e) PEFT LoRA mixed batch": lambda call: call(model, inputs, adapter_names=row_tasks),
            "(f) PEFT LoRA single-adapter batch": single}


@torch.no_grad()
def time_side_by_side(calls: dict[str, Callable[[], object]], reference: str, rounds: int, warmup: int = 1,
                      device: torch.device | None = None, scales: dict[str, float] | None = None,
                      references: dict[str, str] | None = None) -> list[Timing]:
    """Each call once per round, round-robin; ratios to ``reference`` paired per round (``scales``: per-call factors;
    ``references``: another reference for some calls, e.g. the compiled base for compiled calls)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + rounds):
        for name, call in calls.items():
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            call()
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    results = []
    for name, measured in times.items():
        mine = (references or {}).get(name, reference)
        ratio, spread = paired_ratio(measured, times[mine], (scales or {}).get(name, 1.0))
        results.append(Timing(name, statistics.median(measured), ratio, spread))
    return results


def _with_method(base: nn.Module, method: str, **overrides) -> nn.Module:
    model = copy.deepcopy(base)
    config = fit_hypercomplex_dimension(get_config(method, **overrides), model)
    apply(model, config)
    _as_if_trained(model)
    return model.eval()


def _as_if_trained(model: nn.Module, name: str | None = None, seed: int = 0) -> None:
    """Non-zero up projections (they start at zero), so that the adapters really change the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in trainable_parameters(model, name).values():
            param.add_(0.01 * torch.randn(param.shape, generator=generator).to(param.device))


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NOISE_FLOOR = "base model (a second copy)"


def _base(model_name: str, dtype: str) -> nn.Module:
    """The random base model in ``dtype`` (tasks attached to it keep fp32 trained parameters, cast at use)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}.")
    torch.manual_seed(0)
    return build_model(model_name, pretrained=False).to(DTYPES[dtype]).eval()


def run_inference_benchmark(model_name: str = "t5-small", methods: list[str] | None = None, *, batch_size: int = 8,
                            source_length: int = 128, target_length: int = 8, new_tokens: int = 16, rounds: int = 6,
                            device: str | None = None, dtype: str = "fp32", compile: bool = False,
                            compile_backend: str = "inductor") -> dict[str, dict[str, Timing]]:
    """{"forward": {method: Timing}, "generate": {...}}, every ratio relative to the bare base model.

    ``compile``: every model also compiled (forward: ``torch.compile``; generate: ``compiled_generate``), rows
    "... (compiled)" beside the eager ones, their ratios relative to the compiled base model.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = _base(model_name, dtype)
    # A second copy of the bare base shows how far this machine moves a ratio with no change at all.
    models = {"base model": base, NOISE_FLOOR: copy.deepcopy(base),
              **{m: _with_method(base, m) for m in methods or ["compacter++", "compacter"]}}
    for model in models.values():
        model.to(device)
    inputs = {k: v.to(device) for k, v in _requests(base, batch_size, source_length).items()}
    compiled = {name: compile_model(model, compile_backend) for name, model in models.items()} if compile else {}
    references = {name + COMPILED: "base model" + COMPILED for name in compiled}
    results = {}
    for kind in ("forward", "generate"):
        calls = {name: (_forward(model, inputs, target_length) if kind == "forward"
                        else _generate(model, inputs, new_tokens)) for name, model in models.items()}
        for name in compiled:  # the forward through its compiled wrapper; decoding compiles the model's own step
            calls[name + COMPILED] = (_forward(models[name], inputs, target_length, call=compiled[name])
                                      if kind == "forward" else _generate(models[name], inputs, new_tokens, compile_backend))
        timings = time_side_by_side(calls, "base model", rounds, device=device, references=references)
        results[kind] = {t.name: t for t in timings}
    return results


def run_serving_benchmark(model_name: str = "t5-small", *, tasks: int = 8, requests: int = 64, source_length: int = 128,
                          new_tokens: int = 8, rounds: int = 6, method: str = "compacter++", peers: bool = False,
                          device: str | None = None, dtype: str = "fp32") -> dict:
    """The four set-ups of the module docstring, forward and generate; ratios to (b), the single-task batch."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    base = _base(model_name, dtype)
    served = copy.deepcopy(base)
    names = [f"task{i}" for i in range(tasks)]
    for i, name in enumerate(names):
        apply(served, method, name=name)
        _as_if_trained(served, name, seed=i)
    served.to(device).eval()
    base.to(device)
    inputs = {k: v.to(device) for k, v in _requests(base, requests, source_length).items()}
    row_tasks = [names[i % tasks] for i in range(requests)]  # spread evenly, interleaved
    per_task = {name: {k: v[[i for i, t in enumerate(row_tasks) if t == name]] for k, v in inputs.items()}
                for name in names}

    def mixed(call):
        def run():
            with route(served, row_tasks):
                return call(served, inputs)()
        return run

    def single(call):
        def run():
            set_active(served, names[0])
            return call(served, inputs)()
        return run

    def switching(call):
        def run():
            for name in names:
                set_active(served, name)
                call(served, per_task[name])()
        return run

    setups = {"(a) mixed batch": mixed, "(b) single-task batch": single, "(c) one batch per task": switching,
              "(d) base model alone": lambda call: call(base, inputs)}
    if peers:
        setups.update(_peft_setups(base, names, row_tasks, inputs, device))
    calls = {"forward": lambda model, x, **kw: _forward(model, x, 1, **kw),
             "generate": lambda model, x, **kw: _generate(model, x, new_tokens, **kw)}
    results: dict = {}
    for kind, call in calls.items():
        timings = time_side_by_side({name: setup(call) for name, setup in setups.items()}, "(b) single-task batch",
                                    rounds, device=device)
        results[kind] = {t.name: t for t in timings}
    one_file = sum(t.numel() * t.element_size() for t in file_tensors(served, names[0]).values())
    all_tasks = sum(p.numel() * p.element_size() for p in served.compacter.parameters())
    results["memory"] = {"one_task_file_bytes": one_file, "all_tasks_bytes": all_tasks, "tasks": tasks,
                         "ratio_to_one_file": all_tasks / one_file}
    return results


def markdown(results: dict[str, dict[str, Timing]], reference: str) -> str:
    kinds = [k for k in results if k in ("forward", "generate")]
    lines = ["| " + " | ".join(["configuration", *(f"{k} (× {reference})" for k in kinds), *(f"{k} (s)" for k in kinds)])
             + " |", "|---|" + "---:|" * (2 * len(kinds))]
    for name in results[kinds[0]]:
        cells = [f"{results[k][name].ratio:.3f} ({results[k][name].ratio_iqr[0]:.3f}–{results[k][name].ratio_iqr[1]:.3f})"
                 for k in kinds]
        lines.append("| " + " | ".join([name, *cells, *(f"{results[k][name].seconds:.3f}" for k in kinds)]) + " |")
    return "\n".join(lines)
