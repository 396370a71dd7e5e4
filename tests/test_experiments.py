"""`compacter sweep` (resumable, skips finished runs) and `compacter report` (tables and figures)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from training_fixtures import make_workspace

from compacter.cli import main
from compacter.experiments import expand, read_sweep, write_report


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("sweep-workspace"))


def test_sweep_runs_the_grid_then_skips_finished_runs(workspace, tmp_path, capsys):
    spec = {"output_dir": str(tmp_path / "runs"), "models": [str(workspace["bert"])], "tasks": [str(workspace["csv"])],
            "methods": ["compacter++", "linear-probe"], "learning_rates": [3e-3, 3e-2], "seeds": [1, 2],
            "settings": {"text_column": "review", "label_column": "sentiment", "epochs": 1, "batch_size": 32,
                         "warmup_steps": 0}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    runs = list(expand(read_sweep(path)))
    assert len(runs) == 8 and len({r.output_dir for r in runs}) == 8
    assert runs[0].output_dir.endswith("tiny-bert/reviews/compacter++/nall/lr0.003/seed1")
    assert main(["sweep", str(path)]) == 0
    results = sorted(Path(tmp_path / "runs").rglob("results.json"))
    assert len(results) == 8
    stamps = {p: p.stat().st_mtime_ns for p in results}
    results[0].unlink()  # as if that run had been killed after its last checkpoint
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 0
    log = capsys.readouterr().err
    assert log.count("(finished: skipped)") == 7
    assert all(p.stat().st_mtime_ns == stamps[p] for p in results[1:]) and results[0].is_file()
    assert (tmp_path / "runs" / "report" / "scores.md").is_file()


def fake_run(root: Path, method, task, lr, seed, validation, test, size=None, percent=0.1, memory=2e9):
    folder = root / f"{method}-{task}-{lr}-{seed}-{size}"
    folder.mkdir(parents=True)
    results = {"model": "/models/t5-base", "method": method, "task": task,
               "config": {"train_size": size, "learning_rate": lr, "seed": seed},
               "validation": {"score": validation}, "test": {"accuracy": test, "score": test, "invalid": 0, "n": 10},
               "parameters": {"percent": percent}, "peak_memory_bytes": memory}
    (folder / "results.json").write_text(json.dumps(results))


def test_report_selects_the_learning_rate_on_validation_and_reports_mean_and_std(tmp_path):
    runs = tmp_path / "runs"
    # compacter on rte: lr 3e-3 wins on validation (mean 80 vs 70) though its test is lower
    for seed, (val, test) in enumerate([(79, 60), (81, 64)]):
        fake_run(runs, "compacter", "rte", 3e-3, seed, val, test)
    for seed, (val, test) in enumerate([(70, 90), (70, 92)]):
        fake_run(runs, "compacter", "rte", 3e-4, seed, val, test)
    fake_run(runs, "compacter", "cola", 3e-3, 0, 50, 40)
    fake_run(runs, "adapter", "rte", 3e-4, 0, 75, 70, percent=0.8)
    fake_run(runs, "adapter", "cola", 3e-4, 0, 55, 50, percent=0.8)
    for size, score in ((100, 50), (1000, 65)):
        fake_run(runs, "compacter", "rte", 3e-3, 0, score, score, size=size)
    output = write_report(runs)
    scores = pd.read_csv(output / "scores.csv", dtype={"rte": str, "cola": str})
    row = scores[(scores["method"] == "compacter") & (scores["train_size"] == "all")].iloc[0]
    assert row["rte"] == "62.00 ± 2.83" and row["cola"] == "40.00" and row["average"] == 51.0
    assert scores[scores["method"] == "adapter"].iloc[0]["average"] == 60.0
    selection = pd.read_csv(output / "selection.csv")
    chosen = selection[selection["chosen"] & (selection["task"] == "rte") & (selection["method"] == "compacter")
                       & (selection["train_size"] == "all")]
    assert chosen["learning_rate"].tolist() == [3e-3] and chosen["validation"].tolist() == [80.0]
    assert "| compacter | all |" in (output / "scores.md").read_text()
    for image in ("score_vs_params.png", "score_vs_train_size.png"):
        assert (output / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = pd.read_csv(output / "metrics.csv")
    assert {"test_accuracy_mean", "test_accuracy_std"} <= set(metrics.columns)


def test_report_of_an_empty_folder_says_what_to_do(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "No results.json below" in capsys.readouterr().err
