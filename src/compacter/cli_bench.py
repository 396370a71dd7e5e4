"""`compacter bench`: its options and its runs (training step time and memory, inference, serving)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_options import add_method_options, method_overrides, whole_number


def add_bench_options(p: argparse.ArgumentParser) -> None:
    """The options of `compacter bench`."""
    p.add_argument("--model", default="t5-small", help="t5-small|t5-base|..., a local folder or hub name (random weights)")
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list; full is always included")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch-size", type=whole_number(1), default=8)
    size.add_argument("--memory-budget", help="e.g. 24GB: each method runs at the largest batch that fits (paper)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: training runs under autocast; --inference / --serve use a bf16 base model")
    p.add_argument("--steps", type=whole_number(1), default=5, help="timed steps per method (after 2 warm-up steps)")
    p.add_argument("--source-length", type=whole_number(1), default=128)
    p.add_argument("--target-length", type=whole_number(1), default=8)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--peers", action="store_true", help="add PEFT's LoRA and AdapterHub's adapters when importable")
    p.add_argument("--compile", nargs="?", const=True, default=False, choices=["both"],
                   help="torch.compile each model (eager, with a warning, if it fails); --compile both: every method eager "
                        "and compiled in one run (compiled rows' ratios are to compiled full fine-tuning); with "
                        "--inference: compiled forward passes and decoding beside eager ones")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile's backend (aot_eager checks the graphs without building kernels: CPU smoke runs)")
    add_method_options(p)  # applied to every method but full, e.g. --set train_layer_norms=false
    p.add_argument("--inference", action="store_true",
                   help="inference instead of training: a forward pass and generate per method, relative to the base")
    p.add_argument("--serve", action="store_true",
                   help="many tasks on one base: a mixed batch vs a single-task batch vs one batch per task vs the base")
    p.add_argument("--new-tokens", type=whole_number(1),
                   help="tokens generate() makes (default 16 with --inference, 8 with --serve)")
    p.add_argument("--json", help="write results here (and a .md table and a .png plot beside it)")
    p.add_argument("--plot", help="write the plot here")


def run_inference_bench(args: argparse.Namespace) -> int:
    from .inference_bench import markdown, run_inference_benchmark, run_serving_benchmark

    if args.serve:
        from .bench_peers import available_peers

        peers = args.peers and "peft-lora" in available_peers()
        if args.peers and not peers:
            print("--peers: peft is not importable here; serving compacter's adapters only.", file=sys.stderr)
        results = run_serving_benchmark(args.model, rounds=args.steps, source_length=args.source_length,
                                        new_tokens=args.new_tokens or 8, device=args.device, peers=peers,
                                        dtype=args.dtype)
        table = markdown(results, "(b)")
        memory = results["memory"]
        table += (f"\n\n{memory['tasks']} tasks' adapters hold {memory['all_tasks_bytes'] / 1e3:.0f} kB in memory, "
                  f"{memory['ratio_to_one_file']:.2f}× one task's file ({memory['one_task_file_bytes'] / 1e3:.0f} kB).")
    else:
        methods = None if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
        results = run_inference_benchmark(args.model, methods, batch_size=args.batch_size, rounds=args.steps,
                                          source_length=args.source_length, target_length=args.target_length,
                                          new_tokens=args.new_tokens or 16, device=args.device, dtype=args.dtype,
                                          compile=bool(args.compile), compile_backend=args.compile_backend)
        table = markdown(results, "base")
        if args.compile:
            table += "\n\nRows marked (compiled) are relative to the base model (compiled), measured in the same rounds."
    print(table)
    if args.json:
        plain = {kind: {name: timing.to_dict() if hasattr(timing, "to_dict") else timing for name, timing in part.items()}
                 for kind, part in results.items()}
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": plain}, indent=2, default=str))
        Path(args.json).with_suffix(".md").write_text(table + "\n")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    if args.inference or args.serve:
        return run_inference_bench(args)
    import torch
    from tqdm import tqdm

    from . import __version__
    from .bench import KERNEL_COUNTS, MEMORY_MEASURES, run_benchmark
    from .bench_budget import largest_batch, parse_memory
    from .bench_peers import available_peers
    from .bench_report import device_name, markdown_table, plot
    from .methods import METHODS

    methods = ([m for m in METHODS if m != "linear-probe"] if args.methods == "all"  # no head on a seq2seq model
               else [m.strip() for m in args.methods.split(",") if m.strip()])
    if args.peers:
        peers = available_peers()
        if not peers:
            print("--peers: neither peft nor adapters is importable here; measuring compacter's methods only.",
                  file=sys.stderr)
        methods += peers
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    common = {"source_length": args.source_length, "target_length": args.target_length, "dtype": args.dtype,
              "device": device, "compile_backend": args.compile_backend, "overrides": method_overrides(args)}
    batch_sizes = None
    if args.memory_budget:
        if args.compile == "both":
            raise ValueError("--memory-budget finds one batch per method: give it --compile or no --compile, not both.")
        budget = parse_memory(args.memory_budget)
        batch_sizes = {m: largest_batch(args.model, m, budget, compile=args.compile, **common) for m in tqdm(
            dict.fromkeys(["full", *methods]), desc="largest batch in budget", file=sys.stderr)}
    total = args.steps * len(dict.fromkeys(["full", *methods])) * (2 if args.compile == "both" else 1)
    with tqdm(total=total, desc="training steps", file=sys.stderr) as bar:
        results = run_benchmark(args.model, methods, batch_size=args.batch_size, steps=args.steps,
                                batch_sizes=batch_sizes, compile=args.compile, progress=lambda method: bar.update(),
                                **common)
    table = markdown_table(results)
    print(table)
    settings = {"model": args.model, "batch_size": args.batch_size, "memory_budget": args.memory_budget,
                "dtype": args.dtype, "steps": args.steps, "source_length": args.source_length,
                "target_length": args.target_length, "device": device, "compile": args.compile,
                "compile_backend": args.compile_backend, "method_overrides": common["overrides"],
                "memory_measure": MEMORY_MEASURES[torch.device(device).type],
                "kernels_per_step": KERNEL_COUNTS[torch.device(device).type],
                "device_name": device_name(device), "cpu_threads": torch.get_num_threads(),
                "torch": torch.__version__, "compacter": __version__}
    if args.json:
        out = {"settings": settings, "methods": {r.method: r.to_dict() for r in results}}
        Path(args.json).write_text(json.dumps(out, indent=2))
        Path(args.json).with_suffix(".md").write_text(table + "\n")
    if args.plot or args.json:
        plot(results, args.plot or Path(args.json).with_suffix(".png"))
    return 0
