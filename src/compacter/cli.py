"""The `compacter` command line: one subcommand per job, each a thin layer over the library."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(function):
        COMMANDS[name] = function
        return function
    return register


def method_overrides(args: argparse.Namespace) -> dict:
    """The method settings of ``--set KEY=VALUE`` and the shortcut flags, each parsed into its type (methods/settings.py)."""
    from .config_file import METHOD_FLAGS
    from .methods import CONFIG_KINDS, refuse_reserved
    from .methods.settings import parse_assignments

    overrides = parse_assignments(getattr(args, "set", None) or [], CONFIG_KINDS.values())
    refuse_reserved(overrides)  # (compacter.apply's own name= names the task)
    for key in METHOD_FLAGS:
        value = getattr(args, key, None)
        if value is not None:
            if key in overrides:
                raise ValueError(f"{key} is given twice, by --{key.replace('_', '-')} and by --set; give it once.")
            overrides[key] = value
    return overrides


def whole_number(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum], or argparse's usage error that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f"≥ {minimum}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {text!r}")
        return value
    return parse


def add_method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, help="hypercomplex dimension (phm-adapter, compacter, compacter++)")
    parser.add_argument("--rank", type=int, help="rank of the low-rank / LPHM factors")
    parser.add_argument("--reduction-factor", type=float, help="bottleneck = hidden size / reduction factor")
    parser.add_argument("--bottleneck-size", type=int, help="bottleneck size (overrides --reduction-factor)")
    parser.add_argument("--num-tokens", type=int, help="prompt vectors (prompt-r, prompt-t)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any other field of the method's config, e.g. --set share_A=false, --set layers=0,1 "
                             "(true/false, numbers, none, lists as [a, b] or a,b)")


@command("params")
def run_params(args: argparse.Namespace) -> int:
    from . import apply, count_parameters
    from .models import build_model

    model = build_model(args.model, pretrained=False, meta=True)
    apply(model, args.method, **method_overrides(args))
    report = count_parameters(model)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


def run_inference_bench(args: argparse.Namespace) -> int:
    from .inference_bench import markdown, run_inference_benchmark, run_serving_benchmark

    if args.serve:
        from .bench import available_peers

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


@command("bench")
def run_bench(args: argparse.Namespace) -> int:
    if args.inference or args.serve:
        return run_inference_bench(args)
    import torch
    from tqdm import tqdm

    from . import __version__
    from .bench import KERNEL_COUNTS, MEMORY_MEASURES, available_peers, largest_batch, parse_memory, run_benchmark
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


@command("data")
def run_data(args: argparse.Namespace) -> int:
    from .io import atomic_write
    from .runs import is_run, task_data

    data = task_data(args.task, data_dir=args.data_dir, seed=args.seed, train_size=args.train_size,
                     columns=data_columns(args))
    source = (f"the run {args.task}'s own data" if is_run(args.task) else args.task if data.task.benchmark == "custom"
              else args.data_dir or "the Hugging Face hub")
    print(f"{data.task.name} ({data.task.benchmark}), source: {source}, seed {args.seed}")
    for split, rows in data.splits.items():
        print(f"  {split:<10} {len(rows):>8,} examples")
    for split in ("train", "validation", "test"):
        for source, target in data.text_to_text(split)[: args.examples]:
            print(f"\n[{split}] input:  {source[:300]}\n[{split}] target: {target}")
    if args.export:
        lines = "".join(json.dumps(row) + "\n" for row in data.splits[args.split])
        atomic_write(Path(args.export), lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
        print(f"\nwrote the {args.split} split ({len(data.splits[args.split])} examples) to {args.export}")
    return 0


def data_columns(args: argparse.Namespace) -> dict[str, str | None]:
    """--text-column, --label-column, ... of `data show` and `score`: the columns of your own data file."""
    return {key: getattr(args, key) for key in COLUMN_KEYS if getattr(args, key, None) is not None}


COLUMN_KEYS = ("text_column", "text_pair_column", "label_column", "source_column", "target_column")


def add_column_options(parser: argparse.ArgumentParser) -> None:
    for key in COLUMN_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}", help="your own data: the column of the "
                            f"{key.removesuffix('_column').replace('_', ' ')} (default: as the run trained)")


@command("score")
def run_score(args: argparse.Namespace) -> int:
    from .data.scoring import score_files
    from .evaluation import file_columns
    from .runs import finished_run, is_run, named_task

    task = named_task(args.task, data_columns(args))
    config = finished_run(args.task)["config"] if is_run(args.task) else {}
    columns = file_columns(task, data_columns(args), config)
    print(json.dumps(score_files(task, args.predictions, args.references, columns), indent=2))
    return 0


@command("evaluate")
def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import Request, run_evaluation

    evaluation, output = run_evaluation(Request(
        run=args.run, adapter=args.adapter, model=args.model, input=args.input, split=args.split,
        columns=data_columns(args), output=args.output, device=args.device, batch_size=args.batch_size,
        tokenizer=args.tokenizer))
    summary = {"task": evaluation.task.name, **{k: round(v, 2) if isinstance(v, float) else v
                                                for k, v in evaluation.metrics.items()}, "output": str(output)}
    print(json.dumps(summary, indent=2))
    return 0


@command("predict")
def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .predict import DEFAULT_SOURCE_LENGTH, DEFAULT_TARGET_LENGTH, load_model, predict, read_requests, write_answers
    from .runs import finished_run

    base, tokenizer, adapters, quantize = args.model, args.tokenizer, {}, args.quantize
    lengths = {"source_length": DEFAULT_SOURCE_LENGTH, "target_length": DEFAULT_TARGET_LENGTH}
    if args.run:
        run = finished_run(args.run)
        config = run["config"]
        if not config.get("pretrained", True):
            raise ValueError(f"{args.run} trained on a randomly initialised base (--random-init): there is no base model "
                             "to predict with.")
        base, tokenizer = base or config["model"], tokenizer or config.get("tokenizer")
        adapters[run["task"]] = str(Path(args.run) / "adapter")
        lengths = {"source_length": config["max_source_length"], "target_length": config["max_target_length"]}
        quantize = quantize or config.get("quantize")  # the base the run was scored on
    for pair in args.adapter or []:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise ValueError(f"--adapter expects NAME=DIR (e.g. rte=runs/rte/adapter), got {pair!r}.")
        if name in adapters:
            raise ValueError(f"--adapter names the task {name!r} twice; give each task one adapter.")
        adapters[name] = directory
    if not base:
        raise ValueError("Say which base model serves the adapters: --model NAME_OR_PATH (or --run RUN_DIR).")
    quantize = None if quantize in (None, "none") else quantize
    model, tokenizer, served = load_model(base, adapters, device=args.device, tokenizer=tokenizer, quantize=quantize)
    requests = read_requests(args.input, served, default_task=next(iter(adapters)) if len(adapters) == 1 else None)
    answers = predict(model, tokenizer, requests, served, batch_size=args.batch_size, **lengths, compile=args.compile,
                      progress=lambda batches: tqdm(batches, desc="predicting", file=sys.stderr))
    write_answers(args.output, answers)
    counts = {name: sum(a["task"] == name for a in answers) for name in served}
    print(json.dumps({"output": args.output, "requests": len(answers), "by_task": counts}, indent=2))
    return 0


TRAIN_OPTIONS = {  # CLI flag → (TrainConfig field, type, help)
    "--output-dir": ("output_dir", str, "where the run writes (default: runs/<model>-<task>-<method>-lr<lr>-seed<seed>)"),
    "--data-dir": ("data_dir", str, "GLUE/SuperGLUE original files or a hub export (default: the hub)"),
    "--lr": ("learning_rate", str, "a number, or auto: train a grid of 3 rates around the default and keep the best on "
             "validation (default: the method's rate for the model's family: the paper's for T5, measured for encoders)"),
    "--head-lr": ("head_learning_rate", float, "a new classification head's learning rate (default: 10 × --lr)"),
    "--epochs": ("epochs", int, "default: 20 for small tasks, 3 for large ones; low resource as in §5.6"),
    "--max-steps": ("max_steps", int, "train this many optimiser steps (instead of --epochs; the data repeats as "
                    "needed)"),
    "--patience": ("patience", int, "early stopping: stop after N evaluations in a row without a better validation "
                   "score; the best checkpoint is kept"),
    "--batch-size": ("batch_size", int, "global batch, over all processes (default: 100 GLUE, 32 SuperGLUE, 16 ReCoRD)"),
    "--gradient-accumulation": ("gradient_accumulation", int, "split each batch into this many steps"),
    "--max-source-length": ("max_source_length", int, "default: 128 GLUE, 256 SuperGLUE, 512 ReCoRD"),
    "--max-target-length": ("max_target_length", int, "default: 16 (ReCoRD 32)"),
    "--warmup-steps": ("warmup_steps", int, "linear warm-up steps (default: a tenth of the run, at most 500; a "
                       "GLUE/SuperGLUE task on T5 follows the paper: 500 GLUE, 0 SuperGLUE and T5-small); ended before "
                       "the last step, warned about when over half the run"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay (default 0)"),
    "--seed": ("seed", int, "default 42"),
    "--train-size": ("train_size", int, "low resource: train on the first N examples of one seeded order"),
    "--eval-steps": ("eval_steps", int, "evaluate and checkpoint every N steps (default: every epoch)"),
    "--eval-batch-size": ("eval_batch_size", int, "default: the batch size"),
    "--precision": ("precision", str, "fp32, bf16 or fp16 (autocast)"),
    "--quantize": ("quantize", str, "store the frozen base's Linear weights in 8 or 4 bits: int8 or int4 (torchao; "
                   "CPU and GPU), nf4 or bnb-int8 (bitsandbytes; CUDA GPU)"),
    "--tokenizer": ("tokenizer", str, "default: the model's"),
    "--text-column": ("text_column", str, "your data: the text to classify"),
    "--text-pair-column": ("text_pair_column", str, "your data: a second text (pairs)"),
    "--label-column": ("label_column", str, "your data: the label"),
    "--source-column": ("source_column", str, "your data, text-to-text: the input"),
    "--target-column": ("target_column", str, "your data, text-to-text: the output"),
    "--device": ("device", str, "cpu, cuda, cuda:1 (default: this process's GPU when there is one)"),
}


def add_train_options(parser: argparse.ArgumentParser) -> None:
    from .methods import DEFAULT_METHOD

    parser.add_argument("--config", metavar="FILE", help="a YAML file of settings: every flag a key (lr: 3e-4, "
                        "batch_size: 32, set: {n: 8}); flags given here win")
    parser.add_argument("--print-config", action="store_true",
                        help="print the settings as such a YAML file (with every key) and train nothing")
    parser.add_argument("--model", help="a hub name or a local folder (model and tokenizer); required, here or in --config")
    parser.add_argument("--task", help="a GLUE/SuperGLUE task, or your CSV/JSON-lines/parquet file or folder; required, "
                        "here or in --config")
    parser.add_argument("--method", metavar="METHOD",
                        help=f"the method to train (default: {DEFAULT_METHOD}); the methods are listed below")
    add_method_options(parser)
    for flag, (field, kind, help_text) in TRAIN_OPTIONS.items():
        parser.add_argument(flag, dest=field, type=kind, help=help_text)
    parser.add_argument("--report-to", dest="report_to", nargs="+", metavar="TRACKER",
                        help="log loss, learning rate, validation metrics and throughput to tensorboard, wandb and/or "
                             "mlflow (several allowed; pip install 'compacter-adapters[track]'); default none")
    parser.add_argument("--short-warmup", action="store_true",
                        help="deprecated: a tenth of the run at most 500 steps, now the default (on a GLUE/SuperGLUE "
                             "task with T5 it replaces the paper's protocol)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--random-init", action="store_true", help="random weights from the model's config (smoke tests)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the training forward (eager, with a warning, if it fails): on a GPU, use it; "
                             "eager steps there are bound by launching kernels. Every adapter method compiles to one "
                             "graph with no recompiles; on a CPU compiling costs minutes and gains little")
    parser.add_argument("--fsdp", action="store_true", help="under torchrun: shard the model (FSDP2) instead of DDP")


def train_config(args: argparse.Namespace):
    from .training import TrainConfig

    values = {field: getattr(args, field) for field, _, _ in TRAIN_OPTIONS.values() if getattr(args, field) is not None}
    if "learning_rate" in values:
        values["learning_rate"] = learning_rate_option(values["learning_rate"])
        if values["learning_rate"] == "auto":
            del values["learning_rate"]  # a search (training/search.py) chooses it; run_train tells the two apart
    return TrainConfig(model=args.model, task=args.task, method=args.method, method_overrides=method_overrides(args),
                       gradient_checkpointing=args.gradient_checkpointing, short_warmup=args.short_warmup,
                       report_to=[name.strip() for item in args.report_to or [] for name in item.split(",") if name.strip()],
                       pretrained=not args.random_init,
                       compile=args.compile, fsdp=args.fsdp, **values)


def learning_rate_option(text: str) -> float | str:
    """``--lr``: a number (checked by TrainConfig like every setting) or ``auto``; anything else is refused here."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--lr must be a finite number > 0 (e.g. 3e-4) or auto (a search on validation), got "
                         f"{text!r}.") from None


def train_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """The command line's flags over --config's, the method's default, and --model / --task checked as given."""
    from .config_file import merge, read_config_file
    from .methods import DEFAULT_METHOD

    parser = argparse.ArgumentParser(prog="compacter train")
    add_train_options(parser)
    if args.config:
        args = merge(args, read_config_file(args.config, parser))
    args.method = args.method or DEFAULT_METHOD
    missing = [name for name in ("model", "task") if not getattr(args, name)]
    if missing and not args.print_config:
        where = " (nor in --config)" if args.config else ""
        raise ValueError(f"Say which {' and '.join(missing)} to train: --{missing[0]} on the command line{where}, or "
                         f"{missing[0]}: in a --config file.")
    return args


@command("train")
def run_train(args: argparse.Namespace) -> int:
    from .training import train
    from .training.expectations import expectation_for_run
    from .training.search import train_with_lr_search

    args = train_arguments(args)
    if args.print_config:
        from .config_file import config_text

        if args.model and args.task:
            train_config(args)  # the settings are checked (and refused) as for training
        parser = argparse.ArgumentParser()
        add_train_options(parser)
        print(config_text(args, parser), end="")
        return 0
    config = train_config(args)
    auto = args.learning_rate is not None and learning_rate_option(args.learning_rate) == "auto"
    expected = expectation_for_run(config, auto)
    if expected:
        print(expected, file=sys.stderr)
    if auto:
        results = train_with_lr_search(config)
        output_dir = results["config"]["output_dir"]
    else:
        # unresolved: train() records whether the learning rate was given or is the family default
        results, output_dir = train(config), config.resolved().output_dir
    test = {k: round(v, 2) for k, v in results["test"].items() if isinstance(v, float)}
    summary = {"task": results["task"], "method": results["method"], "best_step": results["best_step"],
               "validation_score": round(results["validation"]["score"], 2), "test": test, "output_dir": output_dir}
    if results.get("learning_rate") == "auto":
        summary["learning_rate"] = results["chosen"]["learning_rate"]
        summary["grid"] = {f"{run['learning_rate']:g}": round(run["validation"], 2) for run in results["grid"]}
    print(json.dumps(summary, indent=2))
    return 0


@command("sweep")
def run_sweep_command(args: argparse.Namespace) -> int:
    from .experiments import read_sweep, run_sweep, write_report

    sweep = read_sweep(args.config)
    results = run_sweep(sweep, progress=lambda line: print(line, file=sys.stderr))
    output = write_report(sweep.output_dir)
    print(f"{len(results)} runs finished; tables (Markdown, CSV) and plots (PNG) in {output}/")
    return 0


@command("report")
def run_report(args: argparse.Namespace) -> int:
    from .experiments import write_report

    output = write_report(args.runs_dir, args.output)
    print((output / "scores.md").read_text(), end="")
    print(f"\nTables (Markdown, CSV) and plots (PNG) in {output}/")
    return 0


@command("demo")
def run_demo(args: argparse.Namespace) -> int:
    from .demo import markdown, run_demo

    rows = run_demo(args.output_dir, methods=tuple(m.strip() for m in args.methods.split(",")), epochs=args.epochs)
    print(markdown(rows))
    print(f"\nResults, adapters and logs: {args.output_dir}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .methods import DEFAULT_METHOD, METHODS, method_list

    parser = argparse.ArgumentParser(prog="compacter", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="offline: MiniLM on BBC News, Compacter++ vs full fine-tuning vs a linear probe")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--methods", default="compacter++,full,linear-probe")
    p.add_argument("--epochs", type=int, default=3)

    p = sub.add_parser("train", help="fine-tune a model on a task with a method; resumable; torchrun-ready",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"methods (--method):\n{method_list()}")
    add_train_options(p)

    p = sub.add_parser("predict", help="answer requests (JSON lines) for many tasks' adapters on one base, in mixed "
                       "batches")
    p.add_argument("--model", help="the base model (a hub name or local folder); default: the run's (--run)")
    p.add_argument("--adapter", action="append", metavar="NAME=DIR",
                   help="a task's adapter folder, as named in the requests' \"task\" (repeat for more tasks)")
    p.add_argument("--run", help="a finished `compacter train` folder: its base model, tokenizer and best adapter")
    p.add_argument("--input", required=True, help='JSON lines: {"task": NAME, "text": ...} or the task\'s own fields')
    p.add_argument("--output", required=True, help='JSON lines written: {"task": NAME, "prediction": ...} per request')
    p.add_argument("--batch-size", type=whole_number(1), default=32)
    p.add_argument("--tokenizer", help="default: the base model's")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    p.add_argument("--quantize", help="the frozen base in 8 or 4 bits: int8 or int4 (torchao; CPU and GPU), nf4 or "
                   "bnb-int8 (bitsandbytes; CUDA GPU), none; default: the run's (--run), else none")
    p.add_argument("--compile", action="store_true",
                   help="decode with a static KV cache and a compiled step (the fast path on a GPU; T5, BART, GPT-2, "
                        "Llama-style models); eager, with one log line, where transformers cannot")

    p = sub.add_parser("sweep", help="run a grid of models × tasks × methods × lrs × seeds (× sizes); resumable")
    p.add_argument("config", help="a YAML file; see compacter.experiments.sweep for its keys")

    p = sub.add_parser("report", help="the paper's tables (Markdown, CSV) and figures (PNG) from a runs folder")
    p.add_argument("runs_dir")
    p.add_argument("--output", help="default: RUNS_DIR/report")

    p = sub.add_parser("params", help="count the parameters a method trains (offline, in seconds)")
    p.add_argument("--model", default="t5-base", help="t5-small|base|large|3b|11b, a local folder or a hub name")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"one of: {', '.join(METHODS)} (default: {DEFAULT_METHOD})")
    add_method_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("data", help="split sizes and formatted examples of a task (GLUE/SuperGLUE, a run's, your files)")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("show", help="print split sizes and a few input/target pairs")
    p.add_argument("--task", required=True, help="a GLUE/SuperGLUE task, a finished run's folder (its own data), or "
                   "your file or folder with --text-column and --label-column (or --source-column, --target-column)")
    add_column_options(p)
    p.add_argument("--data-dir", help="original GLUE/SuperGLUE files or a hub export (default: the hub)")
    p.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=42)
    p.add_argument("--train-size", type=whole_number(1), help="low-resource subset of the training split")
    p.add_argument("--examples", type=whole_number(0), default=2, help="examples to print per split")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--export", help="write --split's examples as JSON lines (references for `compacter score`)")

    p = sub.add_parser("score", help="score a predictions file against references (prints JSON)")
    p.add_argument("--task", required=True, help="a GLUE/SuperGLUE task, a finished run's folder, or your data file "
                   "with its columns")
    p.add_argument("--predictions", required=True, help='JSON lines: "text" or {"prediction": "text"}')
    p.add_argument("--references", required=True,
                   help='JSON lines: the examples (from data show --export) or {"target": "label text"}; your own '
                        "data: also its labelled CSV / TSV / parquet file")
    add_column_options(p)

    p = sub.add_parser("evaluate", help="score a finished run or a saved adapter on a labelled file: metrics (JSON, "
                       "Markdown) and a confusion matrix (PNG)")
    p.add_argument("--run", help="a finished `compacter train` folder: its base model, best adapter and settings")
    p.add_argument("--adapter", help="a saved adapter folder (with --model)")
    p.add_argument("--model", help="the base model (default with --run: the run's)")
    p.add_argument("--input", help="a labelled CSV / JSON-lines / parquet file, or a folder of split files (default "
                   "with --run: the run's own data)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="which split of the run's data (or of an --input folder); default test")
    add_column_options(p)
    p.add_argument("--output", help="the reports' folder (default: RUN_DIR/evaluation-<input>, or "
                   "evaluation-<task>-<input>)")
    p.add_argument("--batch-size", type=whole_number(1), help="default: the run's evaluation batch size, else 32")
    p.add_argument("--tokenizer", help="default: the run's, else the base model's")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: a GPU when there is one)")

    p = sub.add_parser("bench", help="step time and memory of each method relative to full fine-tuning (Table 3)")
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
    verbose = {"action": "store_true", "help": "show other libraries' messages that compacter hides by default "
               "(torchao's kernel loading, transformers' load report of a new task head; quiet.py)"}
    parser.add_argument("-v", "--verbose", **verbose)
    for command_parser in [*sub.choices.values(), *data_sub.choices.values()]:
        command_parser.add_argument("-v", "--verbose", **{**verbose, "default": argparse.SUPPRESS})
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .quiet import quiet

    try:
        with contextlib.nullcontext() if args.verbose else quiet():
            return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as error:
        print(f"compacter {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
