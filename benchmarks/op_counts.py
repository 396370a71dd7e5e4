"""Ops per training step and per generate of each method, against the plain model: the CPU proxy for GPU speed.

    python benchmarks/op_counts.py            # T5-base's 12+12 layers shrunk to d_model 128, 7 timing rounds
    python benchmarks/op_counts.py --quick    # 2+2 layers, 3 rounds (CI-sized)

* training step (forward + backward, bf16 autocast, batch 1): compute and dispatched ops (opcount.py)
  of full fine-tuning, the *plain layer-norm-only model* (the base model with only its layer norms
  trainable: no compacter code at all, the floor of every method that trains inside the model) and
  each method; per adapter site, the ops above the plain model;
* in both, the Python functions called (opcount.python_calls): the host's work around the ops,
  counted without a clock;
* ``generate`` of 16 new tokens (greedy, batch 1) on a bf16 base: compute ops and device syncs of the
  base model and of each method (after one warm-up call, so what is counted is a steady-state call);
* in both, *the bottleneck math alone*: the reference model with compacter++'s bottleneck written into
  the forward of each of its sites' modules (no compacter code: no hooks, no caches, no built
  weights), the floor of what an adapter at those sites costs per call;
* overhead time on this shrunk config, where the compute is small and the host's work dominates:
  steps taken round-robin over the models in one process, the median over rounds of each one's time
  over the reference's in the same round, with the interquartile range of those ratios. Wall-clock
  time, or with ``--cpu-time`` the calling thread's CPU time (one thread does all the work here), which
  other processes' load on a shared machine does not enter.

Writes benchmarks/results/op_counts.json and .md (or --output DIR).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

import compacter
from compacter.io import atomic_write
from compacter.layers import bottleneck_transposed
from compacter.model_anatomy import is_norm
from compacter.opcount import count, python_calls, training_step

HERE = Path(__file__).parent
METHODS = ["layer-norms", "compacter++", "compacter", "adapter", "lora", "ia3"]
TRAIN_REFERENCE, GENERATE_REFERENCE = "plain LN-only", "base"
MATH_ONLY = "bottleneck math alone"


def shrunk_t5(layers: int) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=512, d_model=128, d_kv=32, d_ff=512, num_layers=layers,
                                   num_decoder_layers=layers, num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=1)
    return transformers.T5ForConditionalGeneration(config)


def plain_layer_norm_model(layers: int) -> transformers.T5ForConditionalGeneration:
    plain = shrunk_t5(layers).requires_grad_(False)
    for module in plain.modules():
        if is_norm(module):
            module.requires_grad_(True)
    return plain


def with_bottleneck_math(model: torch.nn.Module, dtype: torch.dtype, trainable: bool) -> torch.nn.Module:
    """``model`` with compacter++'s bottleneck (its sites, its sizes, weights in ``dtype``) written into each site
    module's forward: the adapters' math with nothing of compacter around it."""
    like = compacter.apply(shrunk_t5(model.config.num_layers), "compacter++")
    generator = torch.Generator().manual_seed(0)
    for name, _ in like.compacter.task().site_modules.values():
        module = model.get_submodule(name)
        width, size = module.out_features, like.compacter.config.bottleneck(module.out_features)
        # weights stored (out, in) as built, used transposed: the layout (and so the kernels) of compacter's sites
        shapes = {"down_weight": (size, width), "down_bias": (size,), "up_weight": (width, size), "up_bias": (width,)}
        for key, shape in shapes.items():
            value = (torch.randn(*shape, generator=generator) * 0.02).to(dtype)
            module.register_parameter(f"adapter_{key}", torch.nn.Parameter(value, requires_grad=trainable))
        weights = [module.get_parameter(f"adapter_{key}") for key in shapes]
        weights = [weight.t() if weight.dim() == 2 else weight for weight in weights]

        def forward(hidden, inner=module.forward, weights=weights):
            return bottleneck_transposed(inner(hidden), *weights, "gelu")

        module.forward = forward
    return model


def training_models(layers: int) -> dict[str, torch.nn.Module]:
    full = shrunk_t5(layers)
    models = {"full": full, TRAIN_REFERENCE: plain_layer_norm_model(layers),
              # bf16 weights: autocast casts none of them (compacter casts each bank once per step)
              MATH_ONLY: with_bottleneck_math(plain_layer_norm_model(layers), torch.bfloat16, trainable=True)}
    for method in [m for m in METHODS if m in compacter.METHODS]:  # (an older compacter may lack some)
        models[method] = compacter.apply(shrunk_t5(layers), method)
    return {name: model.train() for name, model in models.items()}


def generation_models(layers: int) -> dict[str, torch.nn.Module]:
    models = {GENERATE_REFERENCE: shrunk_t5(layers).to(torch.bfloat16),
              MATH_ONLY: with_bottleneck_math(shrunk_t5(layers).to(torch.bfloat16), torch.bfloat16, trainable=False)}
    for method in [m for m in METHODS if m != "layer-norms" and m in compacter.METHODS]:
        models[method] = compacter.apply(shrunk_t5(layers).to(torch.bfloat16), method)
    return {name: model.eval() for name, model in models.items()}


def sites(model: torch.nn.Module) -> int:
    container = getattr(model, "compacter", None)
    if container is None:
        return 0
    task = container.task()
    sites = getattr(task, "site_modules", None)
    return len(sites if sites is not None else task.adapters)  # (an older compacter names them adapters)


def generate(model: torch.nn.Module, ids: torch.Tensor, tokens: int = 16) -> None:
    with torch.no_grad():
        model.generate(input_ids=ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)


def paired(times: dict[str, list[float]], reference: str) -> dict[str, dict]:
    rows = {}
    for name, values in times.items():
        ratios = sorted(t / r for t, r in zip(values, times[reference]))
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        rows[name] = {"median_s": statistics.median(values), "ratio": statistics.median(ratios),
                      "ratio_iqr": [quartiles[0], quartiles[2]]}
    return rows


def timed(function, *args, clock=time.perf_counter) -> float:
    start = clock()
    function(*args)
    return clock() - start


def measure(layers: int, rounds: int, clock=time.perf_counter) -> dict:
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(2, 512, (1, 32), generator=generator),
             "labels": torch.randint(2, 512, (1, 8), generator=generator)}
    trainers = training_models(layers)
    for model in trainers.values():
        training_step(model, batch)  # warm-up: first-call work is not per-step work
    train_counts = {name: count(training_step, model, batch) for name, model in trainers.items()}
    train_calls = {name: python_calls(training_step, model, batch) for name, model in trainers.items()}
    train_times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):  # round-robin: the machine's noise hits every model alike
        for name, model in trainers.items():
            train_times[name].append(timed(training_step, model, batch, clock=clock))
    generators = generation_models(layers)
    ids = batch["input_ids"]
    for model in generators.values():
        generate(model, ids)
    generate_counts = {name: count(generate, model, ids) for name, model in generators.items()}
    generate_calls = {name: python_calls(generate, model, ids) for name, model in generators.items()}
    generate_times: dict[str, list[float]] = {name: [] for name in generators}
    for _ in range(rounds):
        for name, model in generators.items():
            generate_times[name].append(timed(generate, model, ids, clock=clock))
    train_time, generate_time = paired(train_times, TRAIN_REFERENCE), paired(generate_times, GENERATE_REFERENCE)
    reference, base = train_counts[TRAIN_REFERENCE], generate_counts[GENERATE_REFERENCE]
    training = {}
    for name, counter in train_counts.items():
        site_count = sites(trainers[name])
        training[name] = {**counter.summary(), "compute_ratio": counter.compute / reference.compute,
                          "sites": site_count, "time": train_time[name], "python_calls": train_calls[name],
                          "compute_per_site": ((counter.compute - reference.compute) / site_count) if site_count else None}
    generation = {name: {**counter.summary(), "compute_ratio": counter.compute / base.compute,
                         "extra_syncs": counter.syncs - base.syncs, "time": generate_time[name],
                         "python_calls": generate_calls[name]}
                  for name, counter in generate_counts.items()}
    return {"config": {"model": f"T5 shrunk: {layers}+{layers} layers, d_model 128, vocab 512", "batch": 1,
                       "source_tokens": 32, "target_tokens": 8, "generated_tokens": 16, "rounds": rounds,
                       "clock": "thread CPU time" if clock is time.thread_time else "wall-clock time",
                       "training_precision": "bf16 autocast", "generation_base": "bf16"},
            "machine": {"platform": platform.platform(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "threads": torch.get_num_threads()},
            "training": training, "generate": generation}


def markdown(results: dict) -> str:
    config = results["config"]
    lines = [f"Training step ({config['model']}, {config['training_precision']}, batch 1), ops of forward + backward; "
             f"time ({config.get('clock', 'wall-clock time')}): median ratio to the {TRAIN_REFERENCE} model over "
             f"{config['rounds']} round-robin rounds (IQR):", "",
             "| model | compute ops | dispatched | compute vs plain | per site above plain | Python calls | "
             "time vs plain (IQR) |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, row in results["training"].items():
        per_site = f"{row['compute_per_site']:.1f}" if row["compute_per_site"] is not None else ""
        iqr = row["time"]["ratio_iqr"]
        lines.append(f"| {name} | {row['compute']:,} | {row['dispatched']:,} | {row['compute_ratio']:.3f} | {per_site} | "
                     f"{row['python_calls']:,} | {row['time']['ratio']:.3f} ({iqr[0]:.2f}-{iqr[1]:.2f}) |")
    lines += ["", f"generate, {config['generated_tokens']} new tokens on a {config['generation_base']} base (greedy, "
              "batch 1), after one warm-up call:", "",
              "| model | compute ops | vs base | device syncs | syncs above base | Python calls | time vs base (IQR) |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for name, row in results["generate"].items():
        iqr = row["time"]["ratio_iqr"]
        lines.append(f"| {name} | {row['compute']:,} | {row['compute_ratio']:.3f} | {row['syncs']} | "
                     f"{row['extra_syncs']:+d} | {row['python_calls']:,} | {row['time']['ratio']:.3f} "
                     f"({iqr[0]:.2f}-{iqr[1]:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2+2 layers, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7, quick 3)")
    parser.add_argument("--output", default=str(HERE / "results"), help="where op_counts.json and .md go")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the thread's CPU time, not the wall clock (a shared machine's load stays out)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    torch.set_num_threads(1)  # one thread: the host's per-op work, not the machine's parallelism, is measured
    results = measure(2 if args.quick else 12, rounds, clock=time.thread_time if args.cpu_time else time.perf_counter)
    name = "op_counts_quick" if args.quick else "op_counts"
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    atomic_write(output / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
    atomic_write(output / f"{name}.md", lambda tmp: Path(tmp).write_text(table))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
