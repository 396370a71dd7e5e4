"""`--report-to`: loss, learning rate, validation metrics and throughput in the trackers' own files."""

import importlib.util
import json

import pytest
from conftest import write_tiny_pretrained
from training_fixtures import corpus, write_splits

from compacter.cli import main
from compacter.training import TrainConfig


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    data = write_splits(root / "reviews", train=40, validation=10, test=10)
    return {"data": data, "bert": write_tiny_pretrained(root / "bert", "bert", corpus())}


def train(workspace, output, *flags) -> int:
    return main(["train", "--model", str(workspace["bert"]), "--task", str(workspace["data"]), "--text-column",
                 "review", "--label-column", "sentiment", "--epochs", "2", "--batch-size", "8", "--lr", "3e-3",
                 "--eval-steps", "2", "--output-dir", str(output), *flags])


def test_tensorboard_event_files_hold_every_step_and_evaluation(workspace, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "run"
    assert train(workspace, output, "--report-to", "tensorboard") == 0
    results = json.loads((output / "results.json").read_text())
    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/examples_per_second", "validation/accuracy",
            "validation/f1_macro", "validation/score", "test/accuracy"} <= scalars
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))  # 2 epochs of 5 steps
    losses = [e.value for e in events.Scalars("train/loss")]
    for entry in results["history"]:  # the loss logged at each evaluation's step is the one the history holds
        assert losses[entry["step"] - 1] == pytest.approx(entry["loss"], rel=1e-6)
    validation = events.Scalars("validation/score")
    assert [e.step for e in validation] == [entry["step"] for entry in results["history"]] == [2, 4, 6, 8, 10]
    assert [e.value for e in validation] == pytest.approx([entry["validation"]["score"] for entry in results["history"]])
    assert events.Scalars("test/accuracy")[0].value == pytest.approx(results["test"]["accuracy"])
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    assert rates[0] == pytest.approx(3e-3) and rates[-1] == pytest.approx(0.0)  # 10 // 10 = 1 warm-up step, then decay
    assert all(e.value > 0 for e in events.Scalars("train/examples_per_second"))
    assert "report_to" not in results["identity"]["hyper_parameters"]  # where it logs is not what the run computes


@pytest.mark.parametrize("tracker,package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_wandb_and_mlflow_log_offline_when_installed(tracker, package, workspace, tmp_path, monkeypatch):
    pytest.importorskip(package)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # local files, as mlflow-skinny has
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks for a database otherwise
    monkeypatch.chdir(tmp_path)
    assert train(workspace, tmp_path / "run", "--report-to", tracker) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    if tracker == "wandb":
        import wandb

        wandb.teardown()  # the W&B service writes the run's records out
        logs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))  # W&B's own binary records
        assert len(logs) == 1 and results["test"]["n"] == 10
        records = logs[0].read_bytes()
        for key in (b"train/loss", b"train/learning_rate", b"validation/score", b"test/accuracy"):
            assert key in records
    else:
        import mlflow

        runs = mlflow.search_runs(search_all_experiments=True)
        assert len(runs) == 1 and runs["tags.mlflow.runName"][0] == "run"
        assert runs["metrics.test/accuracy"][0] == pytest.approx(results["test"]["accuracy"])
        history = mlflow.MlflowClient().get_metric_history(runs["run_id"][0], "validation/score")
        assert [m.step for m in history] == [entry["step"] for entry in results["history"]]
        assert [m.value for m in history] == pytest.approx([entry["validation"]["score"] for entry in results["history"]])


@pytest.mark.parametrize("flags,message", [
    (["--report-to", "comet"], "report_to must be a list of items from 'tensorboard', 'wandb', 'mlflow', 'none'"),
    (["--report-to", "none", "tensorboard"], "--report-to none means no tracker; it cannot be given with"),
    (["--report-to", "wandb"], "--report-to wandb: the wandb package is not installed. Install it (pip install wandb, "
                               "or pip install 'compacter-adapters[track]' for all trackers)"),
])
def test_bad_trackers_are_refused_before_anything_is_written(flags, message, workspace, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    output = tmp_path / "run"
    assert train(workspace, output, *flags) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_report_to_takes_commas_and_the_config_file(workspace, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from compacter.cli import build_parser
    from compacter.cli_train import train_arguments, train_config

    args = build_parser().parse_args(["train", "--model", "m", "--task", "rte", "--report-to", "tensorboard,none"])
    with pytest.raises(ValueError, match="--report-to none means no tracker"):
        train_config(train_arguments(args))
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {workspace['bert']}\ntask: {workspace['data']}\ntext_column: review\n"
                    "label_column: sentiment\nreport_to: tensorboard\n")
    args = train_arguments(build_parser().parse_args(["train", "--config", str(path)]))
    assert train_config(args).report_to == ["tensorboard"]
    assert TrainConfig(model="t5-small", task="rte").report_to == []
