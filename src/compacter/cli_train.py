"""`compacter train`: its options (flags, --config, --print-config) and the run."""

from __future__ import annotations

import argparse
import json
import sys

from .cli_options import add_method_options, method_overrides

TRAIN_OPTIONS = {  # CLI flag → (TrainConfig field, type, help)
    "--output-dir": ("output_dir", str, "where the run writes (default: runs/<model>-<task>-<method>-lr<lr>-seed<seed>)"),
    "--data-dir": ("data_dir", str, "GLUE/SuperGLUE original files or a hub export (default: the hub)"),
    "--lr": ("learning_rate", str, "a number, or auto: train a grid of 3 rates around the default and keep the best on "
             "validation (default: the method's rate for the model's family: the paper's for T5, measured for encoders)"),
    "--head-lr": ("head_learning_rate", float, "a new classification head's learning rate (default: a multiple of "
                  "--lr, the one measured for the method on the model's family, else 10×: methods/learning_rates.py)"),
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
    "--pooling": ("pooling", str, "a BERT-style classifier: cls (its [CLS] pooler) or mean (the mean of its tokens); "
                  "default: as the checkpoint was trained, mean for a sentence-transformers folder that says so "
                  "(1_Pooling/config.json), else cls (benchmarks/quality.py measures both)"),
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
    if config.pooling is None and config.pooling_choice() == "mean":
        print(f"Note: the classifier mean-pools the tokens, as {config.model} was trained to (1_Pooling/config.json); "
              "--pooling cls reads its [CLS] pooler instead, which a task must for export to PEFT or AdapterHub.",
              file=sys.stderr)
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
