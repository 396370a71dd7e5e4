"""Settings of a run on your own data: the warm-up that fits the run, the default method, versions recorded,
--max-steps and early stopping, --config files."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import tiny_t5, write_tiny_pretrained
from training_fixtures import corpus, sentiment_rows, write_csv

import compacter
from compacter import provenance
from compacter.cli import build_parser, main
from compacter.integrity import seal
from compacter.methods import DEFAULT_METHOD, DESCRIPTIONS, METHODS, get_config
from compacter.training import TrainConfig, train


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return write_tiny_pretrained(tmp_path_factory.mktemp("tiny-bert"), "bert", corpus())


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """A folder of train (55 rows) / validation / test files: 55 steps an epoch at batch size 1."""
    folder = tmp_path_factory.mktemp("reviews")
    write_csv(folder / "train.csv", sentiment_rows(55))
    write_csv(folder / "validation.csv", sentiment_rows(10, offset=100))
    write_csv(folder / "test.csv", sentiment_rows(12, offset=200))
    return folder


def own_data(bert, reviews, output, **settings):
    values = dict(model=str(bert), task=str(reviews), text_column="review", label_column="sentiment",
                  learning_rate=1e-3, epochs=3, batch_size=1, output_dir=str(output))
    return TrainConfig(**{**values, **settings})


class Stop(Exception):
    """Ends a run after its first step: what it logs at its start is what these tests read."""


def first_step_log(config, capsys) -> str:
    def stop(step):
        raise Stop
    with pytest.raises(Stop):
        train(config, on_step=stop)
    return capsys.readouterr().err


def test_a_165_step_run_warms_up_for_a_tenth_and_a_long_warmup_warns(bert, reviews, tmp_path, capsys):
    log = first_step_log(own_data(bert, reviews, tmp_path / "default"), capsys)
    assert "165 steps (16 warm-up)" in log and "warning" not in log

    log = first_step_log(own_data(bert, reviews, tmp_path / "long", warmup_steps=200), capsys)
    assert "165 steps (164 warm-up)" in log  # ended before the last step
    assert ("warning: --warmup-steps 200 cover more than half of this run's 165 steps (the whole run): the learning "
            "rate reaches its peak only at step 164.") in log
    assert "give a smaller --warmup-steps (e.g. 16) or leave it out" in log


def test_runs_recorded_before_the_new_warmup_default_keep_their_identity(bert, reviews, tmp_path):
    config = own_data(bert, reviews, tmp_path / "run", epochs=1, batch_size=11)
    first = train(config)
    path = tmp_path / "run" / "results.json"
    saved = json.loads(path.read_text())
    # as an earlier compacter wrote it: short_warmup (--short-warmup) was a tenth of the run, today's default
    saved["identity"]["hyper_parameters"]["short_warmup"] = True
    path.write_text(json.dumps(seal(saved)))  # re-sealed: an edit compacter itself would not refuse
    assert train(config)["test"] == first["test"]  # the same run: returned, not trained again
    # without it, warmup_steps None meant the paper's 500 steps: another run
    saved["identity"]["hyper_parameters"]["short_warmup"] = False
    path.write_text(json.dumps(seal(saved)))
    message = re.escape("warmup_steps: 500 there, None (a tenth of the run, at most 500 steps) now")
    with pytest.raises(ValueError, match=message):
        train(config)
    assert train(own_data(bert, reviews, tmp_path / "run", epochs=1, batch_size=11, warmup_steps=500))["test"] == \
        first["test"]  # and --warmup-steps 500 names it


def test_short_warmup_is_still_accepted(bert, reviews, tmp_path, capsys):
    output = tmp_path / "alias"
    code = main(["train", "--model", str(bert), "--task", str(reviews), "--text-column", "review", "--label-column",
                 "sentiment", "--lr", "1e-3", "--epochs", "1", "--batch-size", "11", "--short-warmup",
                 "--output-dir", str(output)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((output / "results.json").read_text())
    assert results["schedule"]["warmup_steps"] == 0 and results["config"]["warmup_steps"] is None


def test_library_and_command_line_share_one_default_method(capsys):
    model = compacter.apply(tiny_t5())
    assert model.compacter.config.name == DEFAULT_METHOD == "compacter++"
    assert model.compacter.config == get_config("compacter++")
    assert TrainConfig(model="t5-small", task="rte").method == DEFAULT_METHOD
    assert arguments("--model", "t5-small", "--task", "rte").method == DEFAULT_METHOD
    assert build_parser().parse_args(["params"]).method == DEFAULT_METHOD


def test_train_help_shows_the_default_and_every_method_with_its_description(capsys):
    assert set(DESCRIPTIONS) == set(METHODS)  # a registered method without a line would show a blank
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    assert "the method to train (default: compacter++)" in text
    listed = text.split("methods (--method):")[1]
    for name, description in DESCRIPTIONS.items():
        assert f"{name} {description}" in listed


def git_head() -> str | None:
    root = Path(compacter.__file__).resolve().parent.parent.parent
    if shutil.which("git") is None or not (root / "pyproject.toml").is_file():
        return None
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_results_and_adapters_record_the_version_and_commit_of_the_code(bert, reviews, tmp_path):
    results = train(own_data(bert, reviews, tmp_path / "run", epochs=1, batch_size=11))
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    adapter = json.loads((tmp_path / "run" / "adapter" / "compacter_config.json").read_text())
    head = git_head()
    assert written["versions"] == results["versions"]
    assert written["versions"]["compacter"] == adapter["compacter_version"] == compacter.__version__
    assert written["versions"]["compacter_commit"] == adapter["compacter_commit"] == head
    assert (written["versions"]["compacter_dirty"] is None) == (head is None)


def test_an_installed_copy_outside_a_checkout_records_no_commit(tmp_path, monkeypatch):
    site = tmp_path / "site-packages" / "compacter"
    site.mkdir(parents=True)
    monkeypatch.setattr(provenance, "PACKAGE", site)
    provenance._checkout.cache_clear()
    try:
        assert provenance.code_version() == {"compacter": compacter.__version__, "commit": None, "dirty": None}
    finally:
        provenance._checkout.cache_clear()


def cli_train(bert, reviews, output, *flags) -> list[str]:
    return ["train", "--model", str(bert), "--task", str(reviews), "--text-column", "review", "--label-column",
            "sentiment", "--lr", "1e-3", "--batch-size", "11", "--output-dir", str(output), *flags]


def test_max_steps_trains_that_many_steps_whatever_the_epochs(bert, reviews, tmp_path, capsys):
    output = tmp_path / "ten"
    assert main(cli_train(bert, reviews, output, "--epochs", "1", "--max-steps", "10", "--eval-steps", "5")) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["schedule"] == {"total_steps": 10, "steps_per_epoch": 5, "warmup_steps": 1}
    assert results["steps_trained"] == 10 and not results["stopped_early"]
    assert [entry["step"] for entry in results["history"]] == [5, 10]
    assert results["identity"]["hyper_parameters"]["max_steps"] == 10
    capsys.readouterr()
    assert main(cli_train(bert, reviews, output, "--epochs", "1", "--max-steps", "12", "--eval-steps", "5")) == 2
    assert "max_steps: 10 there, 12 now" in capsys.readouterr().err


def test_patience_stops_a_flat_run_and_keeps_the_best_checkpoint(bert, reviews, tmp_path, capsys):
    output = tmp_path / "flat"
    # a learning rate far too small to change a prediction: the validation score is the same at every evaluation
    flags = ["--lr", "1e-12", "--epochs", "2", "--eval-steps", "1", "--warmup-steps", "0"]
    assert main(cli_train(bert, reviews, output, *flags, "--patience", "2")) == 0
    results = json.loads((output / "results.json").read_text())
    scores = [entry["validation"]["score"] for entry in results["history"]]
    assert len(set(scores)) == 1  # flat, as meant
    assert [entry["step"] for entry in results["history"]] == [1, 2, 3]  # 2 evaluations without a better score
    assert results["steps_trained"] == 3 and results["stopped_early"] and results["schedule"]["total_steps"] == 10
    assert results["best_step"] == 1
    adapter = json.loads((output / "adapter" / "compacter_config.json").read_text())
    assert adapter["metadata"]["step"] == 1  # the best checkpoint is the one kept, not the last
    assert "stopped early at step 3 of 10" in (output / "train.log").read_text()
    capsys.readouterr()
    assert main(cli_train(bert, reviews, output, *flags, "--patience", "3")) == 2
    assert "patience: 2 there, 3 now" in capsys.readouterr().err


def test_patience_0_is_refused_before_anything_is_written(bert, reviews, tmp_path, capsys):
    output = tmp_path / "never"
    assert main(cli_train(bert, reviews, output, "--patience", "0")) == 2
    err = capsys.readouterr().err
    assert "patience=0 (--patience 0) would stop the run at its first evaluation" in err and "e.g. --patience 3" in err
    assert not output.exists()


def test_print_config_then_config_is_the_same_run(bert, reviews, tmp_path, capsys):
    flags = cli_train(bert, reviews, tmp_path / "flags", "--epochs", "1", "--set", "n=2", "--warmup-steps", "1",
                      "--patience", "4")
    assert main(flags) == 0
    direct = json.loads((tmp_path / "flags" / "results.json").read_text())
    capsys.readouterr()
    assert main([*flags, "--print-config"]) == 0
    text = capsys.readouterr().out
    settings = yaml.safe_load(text)
    assert settings["set"] == {"n": 2} and settings["epochs"] == 1 and settings["patience"] == 4
    assert settings["max_steps"] is None and settings["fsdp"] is False  # every key, the unset ones as their default
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "from-file")]) == 0
    from_file = json.loads((tmp_path / "from-file" / "results.json").read_text())
    assert from_file["identity"] == direct["identity"]
    assert from_file["test"] == direct["test"]


def arguments(*argv):
    from compacter.cli_train import train_arguments, train_config

    return train_config(train_arguments(build_parser().parse_args(["train", *argv])))


def test_flags_on_the_command_line_win_over_the_file(bert, reviews, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {bert}\ntask: {reviews}\ntext_column: review\nlabel-column: sentiment\nepochs: 3\n"
                    "lr: 3e-4\nwarmup_steps: 7\nset: {n: 2, share_A: false}\ngradient_checkpointing: true\n")
    config = arguments("--config", str(path), "--epochs", "1", "--warmup-steps", "0", "--n", "4")
    assert (config.epochs, config.warmup_steps, config.learning_rate) == (1, 0, 3e-4)  # 0 on the command line wins
    assert config.method_overrides == {"share_A": False, "n": 4} and config.gradient_checkpointing
    assert config.method == DEFAULT_METHOD and config.text_column == "review" and config.label_column == "sentiment"


@pytest.mark.parametrize("text,message", [
    ("batchsize: 8\n", "unknown key 'batchsize'; did you mean 'batch_size'? The keys are the flags of `compacter "
                       "train` without their dashes: model, task, method, n,"),
    ("learning_rate: 0.001\n", "unknown key 'learning_rate'; in a config file it is 'lr', as the flag."),
    ("epochs: three\n", "epochs must be a whole number, got 'three'."),
    ("epochs: 2.5\n", "epochs must be a whole number, got 2.5."),
    ("head_lr: fast\n", "head_lr must be a number, got 'fast'."),
    ("fsdp: 1\n", "fsdp must be true or false, got 1."),
    ("set: [n, 8]\n", "set must be a mapping of method settings (e.g. set: {share_A: false, n: 8}), got ['n', 8]."),
    ("set: {share_A: maybe}\n", "share_A must be true or false, got 'maybe'."),
    ("- epochs\n", "must be a mapping of flags to values"),
    ("epochs: 1\nepochs: 2\n", "the key 'epochs' is given twice"),
    ("patience: 0\n", "patience=0 (--patience 0) would stop the run at its first evaluation."),
])
def test_a_bad_config_file_is_refused_before_anything_is_written(text, message, bert, reviews, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    output = tmp_path / "out"
    code = main(["train", "--config", str(path), "--model", str(bert), "--task", str(reviews), "--text-column",
                 "review", "--label-column", "sentiment", "--output-dir", str(output)])
    assert code == 2 and message in capsys.readouterr().err
    assert not output.exists()


def test_a_missing_config_file_or_model_is_said_as_such(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "--config " + str(tmp_path / "nope.yaml") + ": no such file" in capsys.readouterr().err
    (tmp_path / "run.yaml").write_text("task: rte\n")
    assert main(["train", "--config", str(tmp_path / "run.yaml")]) == 2
    assert "Say which model to train: --model on the command line (nor in --config), or model: in a --config file." \
        in capsys.readouterr().err
