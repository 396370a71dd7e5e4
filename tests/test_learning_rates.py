"""Learning rates that fit the model: family defaults, `--lr auto` (a search on validation), one selection rule."""

import json
import math
import shutil

import pandas as pd
import pytest
import transformers
from training_fixtures import make_workspace

from compacter.cli import main
from compacter.experiments.report import collect, select
from compacter.methods.learning_rates import DECODER_RATES, ENCODER_RATES, PAPER_RATES, lr_grid, model_family
from compacter.training import TrainConfig, train
from compacter.training.checkpoint import read_state
from compacter.training.inputs import read_inputs
from compacter.training.search import grid_folder, train_with_lr_search
from compacter.training.selection import choose_learning_rate

GOOD, SLOW, DIVERGING = 3e-2, 1e-6, 1e3  # on the tiny sentiment task: learns, barely moves, blows up


class Interrupt(Exception):
    """Stands for a crash in the middle of a run."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("lr-workspace"))


def config(workspace, output=None, **settings):
    values = dict(model=str(workspace["bert"]), task=str(workspace["csv"]), method="compacter++", text_column="review",
                  label_column="sentiment", epochs=2, batch_size=16, eval_steps=4, warmup_steps=0,
                  output_dir=str(output) if output else None)
    return TrainConfig(**{**values, **settings})


@pytest.fixture(scope="module")
def search(workspace, tmp_path_factory):
    """An uninterrupted search over a grid where one rate learns, one barely moves and one diverges."""
    output = tmp_path_factory.mktemp("search") / "auto"
    return output, train_with_lr_search(config(workspace, output), grid=[DIVERGING, SLOW, GOOD])


# --- family defaults -------------------------------------------------------------------------------------------

def test_t5_keeps_the_papers_rates_so_reproducing_the_paper_needs_no_flag(workspace):
    for method in ("full", "compacter", "compacter++", "adapter", "prompt-t"):
        paper = PAPER_RATES[method]
        for model in ("t5-base", str(workspace["t5"])):  # a shipped config and a local seq2seq folder
            choice = TrainConfig(model=model, task="rte", method=method).learning_rate_choice()
            assert (choice.value, choice.family) == (paper, "seq2seq") and "paper" in choice.source
            assert TrainConfig(model=model, task="rte", method=method).resolved().learning_rate == paper


def test_an_encoder_gets_the_encoder_table_and_a_decoder_the_decoder_table(workspace):
    bert = TrainConfig(model=str(workspace["bert"]), task="rte", method="full")
    assert bert.learning_rate_choice().family == "encoder"
    assert bert.resolved().learning_rate == ENCODER_RATES["full"].value != PAPER_RATES["full"]
    resolved = bert.resolved()
    assert resolved.output_dir.endswith(f"-full-lr{ENCODER_RATES['full'].value:g}-seed42")
    llama = TrainConfig(model=str(workspace["llama"]), task="rte", method="full")
    assert (llama.learning_rate_choice().family, llama.resolved().learning_rate) == ("decoder", DECODER_RATES["full"].value)
    assert "not measured here" in llama.learning_rate_choice().source
    # a method without an entry in the family's table keeps the paper's rate, and says so
    bitfit = TrainConfig(model=str(workspace["bert"]), task="rte", method="bitfit").learning_rate_choice()
    assert bitfit.value == PAPER_RATES["bitfit"] and "no encoder entry" in bitfit.source


def test_a_new_head_learns_at_the_multiple_measured_for_the_method_on_the_family(workspace, tmp_path):
    def head_rate(**settings):  # as a run reads it: once the model's config is read
        return read_inputs(config(workspace, **settings).resolved()).config.head_learning_rate

    # measured on encoders (the quality benchmark): Compacter++'s head at 3× its rate, full fine-tuning's at 10×
    assert head_rate(learning_rate=2e-3) == pytest.approx(3 * 2e-3)
    assert head_rate(method="full", learning_rate=2e-4) == pytest.approx(2e-3)
    # not measured on decoder-only models: 10×; given, it wins; the model's config is read only by the run
    assert head_rate(model=str(workspace["llama"]), learning_rate=2e-3) == pytest.approx(2e-2)
    assert head_rate(learning_rate=2e-3, head_learning_rate=5e-4) == 5e-4
    assert config(workspace, learning_rate=2e-3).resolved().head_learning_rate is None
    # the optimiser's head group starts there (AdamW's groups: the method's weights, then the head's)
    output = tmp_path / "run"
    train(config(workspace, output, learning_rate=2e-3, max_steps=1, eval_steps=1))
    groups = read_state(output).optimizer["param_groups"]
    assert [group["initial_lr"] for group in groups] == pytest.approx([2e-3, 6e-3])


def test_the_family_comes_from_the_config_even_without_its_architecture():
    assert model_family(transformers.T5Config()) == "seq2seq"
    assert model_family(transformers.BertConfig()) == "encoder"
    assert model_family(transformers.RobertaConfig()) == "encoder"  # has a causal-LM class too, but is an encoder
    assert model_family(transformers.LlamaConfig()) == "decoder"
    assert model_family(transformers.GPT2Config()) == "decoder"
    assert model_family(transformers.LlamaConfig(architectures=["LlamaForSequenceClassification"])) == "decoder"
    assert model_family(transformers.BertConfig(architectures=["BertForSequenceClassification"])) == "encoder"
    assert model_family(transformers.BertConfig(architectures=["BertLMHeadModel"])) == "decoder"


def test_a_given_learning_rate_always_wins(workspace):
    for model in ("t5-base", str(workspace["bert"]), str(workspace["llama"])):
        given = TrainConfig(model=model, task="rte", method="full", learning_rate=7e-5)
        assert given.resolved().learning_rate == 7e-5 and given.learning_rate_choice().family is None
    with pytest.raises(ValueError, match=r"Method 'full' has no setting\(s\) \['learning_rate'\]"):
        TrainConfig(model="t5-base", task="rte", method="full", method_overrides={"learning_rate": 6e-5})


def test_a_model_whose_config_cannot_be_read_needs_a_given_rate(tmp_path):
    (tmp_path / "broken").mkdir()
    with pytest.raises(ValueError, match=r"default learning rate depends on the model's family .* has no config.json"):
        TrainConfig(model=str(tmp_path / "broken"), task="rte").resolved()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"default learning rate depends on the model's family .* is not valid JSON "
                                         r".* Give the learning rate \(--lr\)"):
        TrainConfig(model=str(tmp_path / "broken"), task="rte").resolved()
    assert TrainConfig(model=str(tmp_path / "broken"), task="rte", learning_rate=1e-3).resolved().learning_rate == 1e-3


def test_the_grid_is_the_default_times_a_third_one_and_three_on_the_ladder():
    assert lr_grid(3e-4) == [1e-4, 3e-4, 1e-3]  # 9e-4 → 1e-3: neighbouring defaults share their runs
    assert lr_grid(1e-4) == [3e-5, 1e-4, 3e-4]
    assert lr_grid(3e-3) == [1e-3, 3e-3, 1e-2]
    assert lr_grid(2e-5) == [7e-6, 2e-5, 6e-5]
    for bad in (0, -1e-3, math.nan, math.inf, "fast", True):
        with pytest.raises(ValueError, match="finite center > 0"):
            lr_grid(bad)


# --- the selection rule ----------------------------------------------------------------------------------------

def test_the_rule_takes_the_best_validation_and_on_a_tie_the_smaller_rate():
    assert choose_learning_rate([(1e-4, 80.0), (3e-4, 85.0), (1e-3, 84.0)]) == 3e-4
    assert choose_learning_rate([(1e-3, 85.0), (3e-4, 85.0), (1e-4, 70.0)]) == 3e-4
    assert choose_learning_rate([(1e-2, math.nan), (1e-3, 10.0)]) == 1e-3
    with pytest.raises(ValueError, match="No runs to choose"):
        choose_learning_rate([])
    with pytest.raises(ValueError, match="one validation score"):
        choose_learning_rate([(1e-3, 1.0), (1e-3, 2.0)])


def test_report_and_sweep_choose_by_the_same_rule_on_a_tie():
    """`compacter sweep` writes its tables with the report's select: both must pick what the rule picks."""
    rows = []
    for lr, scores in ((1e-3, [80.0, 70.0]), (3e-3, [75.0, 75.0]), (3e-4, [60.0, 62.0])):  # 1e-3 and 3e-3 tie at 75
        for seed, score in enumerate(scores):
            rows.append({"model": "m", "method": "compacter", "task": "rte", "train_size": "all", "learning_rate": lr,
                         "seed": seed, "validation": score, "test": score + 1, "percent": 0.1, "peak_memory_bytes": 1})
    chosen, selection = select(pd.DataFrame(rows))
    means = selection.set_index("learning_rate")["validation"]
    assert means[1e-3] == means[3e-3] == 75.0
    rule = choose_learning_rate(means.items())
    assert rule == 1e-3 and set(chosen["learning_rate"]) == {rule}
    assert selection.set_index("learning_rate")["chosen"].to_dict() == {3e-4: False, 1e-3: True, 3e-3: False}
    # the reverse listing order gives the same pick: the rule, not the order, breaks the tie
    chosen_reversed, _ = select(pd.DataFrame(rows[::-1]))
    assert set(chosen_reversed["learning_rate"]) == {rule}


# --- `--lr auto` -------------------------------------------------------------------------------------------------

def test_auto_picks_the_best_validation_run_and_reports_only_its_test_score(search):
    output, results = search
    grid = {run["learning_rate"]: run for run in results["grid"]}
    assert list(grid) == [SLOW, GOOD, DIVERGING]  # smallest first, every run recorded
    assert grid[DIVERGING]["validation"] is None and "diverged" in grid[DIVERGING]["diverged"]
    assert grid[GOOD]["validation"] > grid[SLOW]["validation"]
    assert results["chosen"]["learning_rate"] == GOOD and results["learning_rate"] == "auto"
    # each grid run is an ordinary run in its own folder; the search reports the pick's test score only
    for rate in (SLOW, GOOD):
        run = json.loads((grid_folder(output, rate) / "results.json").read_text())
        assert run["validation"]["score"] == grid[rate]["validation"] and run["config"]["learning_rate"] == rate
        assert "--lr auto" in run["learning_rate_source"]["source"]
    picked = json.loads((grid_folder(output, GOOD) / "results.json").read_text())
    assert results["test"] == picked["test"] and results["validation"] == picked["validation"]
    assert all("test" not in run for run in results["grid"])
    assert json.loads((output / "results.json").read_text()) == results
    log = (output / "search.log").read_text()
    assert f"lr {SLOW:g}: validation score" in log and f"lr {DIVERGING:g}: diverged" in log
    assert f"chosen: lr {GOOD:g}" in log
    # a report over the search's folder reads the grid runs (not the summary) and chooses as the search did
    chosen, _ = select(collect(output))
    assert set(chosen["learning_rate"]) == {GOOD}


def test_a_killed_search_resumes_where_it_stopped(search, workspace, tmp_path):
    done_output, done = search
    output = tmp_path / "auto"
    steps = []

    def crash_in_the_second_run(step):
        steps.append(step)
        if len(steps) == 16 + 6:  # the first run's 16 steps, then step 6 of the second (checkpoint at step 4)
            raise Interrupt("killed")

    with pytest.raises(Interrupt):
        train_with_lr_search(config(workspace, output), grid=[DIVERGING, SLOW, GOOD], on_step=crash_in_the_second_run)
    assert (grid_folder(output, SLOW) / "results.json").is_file()
    assert read_state(grid_folder(output, GOOD)).step == 4 and not (output / "results.json").exists()
    first = (grid_folder(output, SLOW) / "results.json").read_bytes()
    steps.clear()
    results = train_with_lr_search(config(workspace, output), grid=[DIVERGING, SLOW, GOOD], on_step=steps.append)
    assert steps[:12] == list(range(5, 17))  # the second run resumed after its checkpoint; the first was not retrained
    assert (grid_folder(output, SLOW) / "results.json").read_bytes() == first
    assert "resumed at step 4" in (grid_folder(output, GOOD) / "train.log").read_text()
    assert [(r["learning_rate"], r["validation"]) for r in results["grid"]] == \
        [(r["learning_rate"], r["validation"]) for r in done["grid"]]
    assert results["chosen"]["learning_rate"] == GOOD and results["test"] == done["test"]
    # once finished, the same search returns every run as it is
    again = train_with_lr_search(config(workspace, output), grid=[DIVERGING, SLOW, GOOD], on_step=steps.append)
    assert again["grid"] == results["grid"] and again["test"] == results["test"]


def test_a_diverging_single_run_stops_with_a_clear_message(workspace, tmp_path):
    with pytest.raises(ValueError, match=r"Training diverged at step \d+ of 16 .* with learning rate 1000: lower the "
                                         r"learning rate \(--lr\), or let --lr auto choose one"):
        train(config(workspace, tmp_path / "run", learning_rate=DIVERGING))


def test_cli_lr_auto_searches_around_the_family_default_and_records_why(workspace, tmp_path, capsys):
    output = tmp_path / "auto"
    code = main(["train", "--model", str(workspace["bert"]), "--task", str(workspace["csv"]), "--method", "linear-probe",
                 "--text-column", "review", "--label-column", "sentiment", "--epochs", "1", "--batch-size", "32",
                 "--lr", "auto", "--output-dir", str(output)])
    printed = json.loads(capsys.readouterr().out)
    default = ENCODER_RATES["linear-probe"].value  # the encoder default is the center, not the paper's rate
    assert default != PAPER_RATES["linear-probe"]
    assert code == 0 and list(printed["grid"]) == [f"{rate:g}" for rate in lr_grid(default)]
    results = json.loads((output / "results.json").read_text())
    assert printed["learning_rate"] == results["chosen"]["learning_rate"] and printed["output_dir"] == str(output)
    assert results["learning_rate_source"]["family"] == "encoder" and results["config"]["learning_rate"] == "auto"
    assert sorted(p.name for p in output.iterdir()) == sorted(["results.json", "search.log"] +
                                                             [grid_folder(output, r).name for r in lr_grid(default)])


def test_a_default_run_records_its_family_default_in_results_and_log(workspace, tmp_path):
    output = tmp_path / "run"
    results = train(config(workspace, output, method="full", epochs=1, batch_size=32))
    assert results["config"]["learning_rate"] == ENCODER_RATES["full"].value
    assert results["learning_rate_source"]["family"] == "encoder"
    assert results["learning_rate_source"]["source"].startswith("encoder default for full")
    assert f"learning rate {ENCODER_RATES['full'].value:g} (encoder default for full" in (output / "train.log").read_text()


@pytest.mark.parametrize("arguments,message", [
    (["--lr", "fast"], "--lr must be a finite number > 0 (e.g. 3e-4) or auto (a search on validation), got 'fast'."),
    (["--lr", ""], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "learning_rate must be a finite number > 0 or none, got nan."),
    (["--lr", "auto", "--set", "learning_rate=1e-3"], "the learning rate is a setting of the run, not of the method"),
])
def test_bad_learning_rates_are_refused_before_anything_is_written(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--model", "t5-small", "--task", "rte", "--output-dir", "out/run", *arguments])
    error = capsys.readouterr().err
    assert code == 2 and message in error, error
    assert list(tmp_path.iterdir()) == []


def test_a_run_config_says_where_auto_belongs_and_refuses_garbage(workspace):
    with pytest.raises(ValueError, match=r"learning_rate='auto' is a search over several runs.*train_with_lr_search"):
        config(workspace, learning_rate="auto")
    with pytest.raises(ValueError, match=r"learning_rate must be a finite number > 0 or none, got 'fast'"):
        config(workspace, learning_rate="fast")


def test_a_search_refuses_a_given_rate_a_bad_grid_and_a_single_runs_folder(workspace, search, tmp_path):
    with pytest.raises(ValueError, match=r"The learning rate is given \(0.001\) and --lr auto would choose it"):
        train_with_lr_search(config(workspace, tmp_path / "a", learning_rate=1e-3))
    for grid in ([], [1e-3, -1.0], [1e-3, math.nan], [1e-3, 1e-3]):
        with pytest.raises(ValueError, match="learning-rate grid"):
            train_with_lr_search(config(workspace, tmp_path / "a"), grid=grid)
    assert not (tmp_path / "a").exists()
    single = tmp_path / "single"
    shutil.copytree(grid_folder(search[0], GOOD), single)  # a finished single run
    with pytest.raises(ValueError, match="holds a finished single run .* not a learning-rate search"):
        train_with_lr_search(config(workspace, single), grid=[GOOD])
    # and a single run is not written into a search's folder
    with pytest.raises(ValueError, match=r"holds a learning-rate search \(--lr auto\)"):
        train(config(workspace, search[0], learning_rate=GOOD))


def test_a_search_that_fails_on_its_first_run_leaves_nothing_behind(workspace, tmp_path):
    output = tmp_path / "deep" / "auto"
    with pytest.raises(ValueError, match="no text column"):
        train_with_lr_search(config(workspace, output, text_column="no-such-column"), grid=[GOOD])
    assert list(tmp_path.iterdir()) == []

