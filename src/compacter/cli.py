"""The `compacter` command line: one subcommand per job, each a thin layer over the library."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from .cli_bench import add_bench_options, run_bench
from .cli_options import add_column_options, add_method_options, data_columns, method_overrides, whole_number
from .cli_train import add_train_options, run_train


def run_params(args: argparse.Namespace) -> int:
    from . import apply, count_parameters
    from .models import build_model

    model = build_model(args.model, pretrained=False, meta=True)
    apply(model, args.method, **method_overrides(args))
    report = count_parameters(model)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


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


def run_score(args: argparse.Namespace) -> int:
    from .data.scoring import score_files
    from .evaluation import file_columns
    from .runs import finished_run, is_run, named_task

    task = named_task(args.task, data_columns(args))
    config = finished_run(args.task)["config"] if is_run(args.task) else {}
    columns = file_columns(task, data_columns(args), config)
    print(json.dumps(score_files(task, args.predictions, args.references, columns), indent=2))
    return 0


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


def run_sweep_command(args: argparse.Namespace) -> int:
    from .experiments import read_sweep, run_sweep, write_report

    sweep = read_sweep(args.config)
    results = run_sweep(sweep, progress=lambda line: print(line, file=sys.stderr))
    output = write_report(sweep.output_dir)
    print(f"{len(results)} runs finished; tables (Markdown, CSV) and plots (PNG) in {output}/")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .experiments import write_report

    output = write_report(args.runs_dir, args.output)
    print((output / "scores.md").read_text(), end="")
    print(f"\nTables (Markdown, CSV) and plots (PNG) in {output}/")
    return 0


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
    add_bench_options(p)
    verbose = {"action": "store_true", "help": "show other libraries' messages that compacter hides by default "
               "(torchao's kernel loading, transformers' load report of a new task head; quiet.py)"}
    parser.add_argument("-v", "--verbose", **verbose)
    for command_parser in [*sub.choices.values(), *data_sub.choices.values()]:
        command_parser.add_argument("-v", "--verbose", **{**verbose, "default": argparse.SUPPRESS})
    return parser


COMMANDS = {"demo": run_demo, "train": run_train, "predict": run_predict, "sweep": run_sweep_command,
            "report": run_report, "params": run_params, "data": run_data, "score": run_score, "evaluate": run_evaluate,
            "bench": run_bench}


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
