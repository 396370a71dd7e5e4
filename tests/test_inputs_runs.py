"""Run folders at their boundary (resume.py, identity.py, checkpoint.py): what a run may resume or return."""

import json
import math
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_pretrained
from safetensors.torch import save_file
from training_fixtures import corpus, make_workspace, sentiment_rows, write_csv

from compacter.cli import main
from compacter.training import TrainConfig, train
from compacter.training.checkpoint import LEGACY_STATE_FILE, STATE_FILE, read_state
from compacter.training.identity import differences


class Interrupt(Exception):
    """Stands for a crash in the middle of a run."""


def interrupt_at(step):
    def on_step(current):
        if current == step:
            raise Interrupt(f"stopped at step {current}")
    return on_step


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("runs-workspace"))


def config(workspace, output, data=None, **settings):
    values = dict(model=str(workspace["bert"]), task=str(data or workspace["csv"]), method="compacter++",
                  text_column="review", label_column="sentiment", epochs=1, batch_size=16, eval_steps=4,
                  output_dir=str(output))
    return TrainConfig(**{**values, **settings})


@pytest.fixture(scope="module")
def finished(workspace, tmp_path_factory):
    output = tmp_path_factory.mktemp("finished") / "run"
    return output, train(config(workspace, output))


@pytest.fixture(scope="module")
def interrupted(workspace, tmp_path_factory):
    output = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(Interrupt):
        train(config(workspace, output), on_step=interrupt_at(6))
    assert read_state(output).step == 4  # the last checkpoint
    return output


def snapshot(folder: Path) -> dict:
    """Every file below ``folder`` with its bytes: what must not change."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_run(source: Path, tmp_path: Path, name="copy") -> Path:
    return Path(shutil.copytree(source, tmp_path / name))


def test_the_schedule_of_a_short_run_warms_up_for_a_tenth_of_it(finished):
    _, results = finished
    assert results["schedule"] == {"total_steps": 8, "steps_per_epoch": 8, "warmup_steps": 0}  # 8 // 10


def test_the_same_run_spelled_differently_is_the_finished_run(finished, workspace, tmp_path, monkeypatch, capsys):
    output, results = finished
    before = snapshot(output)
    model_copy = shutil.copytree(workspace["bert"], tmp_path / "models" / "renamed-bert")
    data_copy = shutil.copy(workspace["csv"], tmp_path / "reviews.csv")
    moved = copy_run(output, tmp_path, "moved-run")
    monkeypatch.chdir(output.parent)
    spellings = [
        config(workspace, str(output) + "/"),  # a trailing slash
        config(workspace, output.name),  # relative to the working folder
        config(workspace, output, model=os.path.relpath(workspace["bert"])),  # ./-style relative model path
        config(workspace, output, model=str(model_copy)),  # the same model files elsewhere
        config(workspace, output, data=data_copy),  # the same data elsewhere (same file name: same task name)
        config(workspace, moved),  # the run folder copied and renamed
        config(workspace, output, device="cpu", eval_batch_size=3),  # where and how it runs is not what it is
    ]
    for spelling in spellings:
        assert train(spelling) == results
    arguments = ["train", "--model", str(workspace["bert"]) + "/", "--task", str(workspace["csv"]), "--text-column",
                 "review", "--label-column", "sentiment", "--epochs", "1", "--batch-size", "16", "--eval-steps", "4",
                 "--output-dir", str(output.resolve()) + "//"]
    assert main(arguments) == 0 and json.loads(capsys.readouterr().out)["test"]["accuracy"] == round(
        results["test"]["accuracy"], 2)
    assert snapshot(output) == before and snapshot(moved) == before  # nothing ran again, nothing was rewritten


@pytest.mark.parametrize("change,expected", [
    ("flip", ["data: the train split changed (as many examples, other content)",
              "data: the validation split changed (as many examples, other content)"]),
    ("add", ["data: the train split changed (128 examples there, 132 now)"]),
])
def test_a_finished_run_on_changed_data_is_refused_and_kept(change, expected, finished, workspace, tmp_path):
    output, _ = finished
    run = copy_run(output, tmp_path)
    rows = sentiment_rows(160)
    if change == "flip":
        rows = [{**row, "sentiment": {"positive": "negative", "negative": "positive"}[row["sentiment"]]} for row in rows]
    else:
        rows += sentiment_rows(5, offset=500)
    data = write_csv(tmp_path / "changed" / "reviews.csv", rows)
    before = snapshot(run)
    with pytest.raises(ValueError) as refused:
        train(config(workspace, run, data=data))
    message = str(refused.value)
    assert message.startswith(f"{run} holds a finished run that differs from this one:\n  ")
    assert all(f"\n  {line}" in message for line in expected), message
    assert message.endswith("Its results are kept as they are. To train with these settings and this data, give "
                            "another --output-dir.")
    assert "delete" not in message.lower() and snapshot(run) == before


def test_an_interrupted_run_resumes_only_onto_its_own_data_and_settings(interrupted, workspace, tmp_path):
    run = copy_run(interrupted, tmp_path)
    before = snapshot(run)
    data = write_csv(tmp_path / "more" / "reviews.csv", sentiment_rows(160) + sentiment_rows(5, offset=500))
    for changed, line in [({"data": data}, "data: the train split changed (128 examples there, 132 now)"),
                          ({"epochs": 2}, "epochs: 1 there, 2 now"),
                          ({"method_overrides": {"n": 2}}, "method setting n: 4 there, 2 now"),
                          ({"seed": 7}, "seed: 42 there, 7 now")]:
        with pytest.raises(ValueError) as refused:
            train(config(workspace, run, **changed))
        message = str(refused.value)
        assert message.startswith(f"{run} holds an unfinished run (checkpoint at step 4) that differs from this one:")
        assert f"\n  {line}\n" in message and message.endswith(
            "To resume it, run it again with its own settings and data; to train with these instead, give another "
            "--output-dir (this folder is left as it is).")
        assert snapshot(run) == before
    resumed = train(config(workspace, run))
    assert "resumed at step 4 of 8" in (run / "train.log").read_text()
    straight = train(config(workspace, tmp_path / "straight"))
    assert resumed["history"] == straight["history"] and resumed["test"] == straight["test"]


def test_another_base_model_is_refused(finished, workspace, tmp_path):
    output, _ = finished
    retrained = write_tiny_pretrained(tmp_path / "tiny-bert", "bert", corpus(), seed=1)  # same name, other weights
    with pytest.raises(ValueError, match=r"\n  base model: its file model.safetensors has other content\n"):
        train(config(workspace, copy_run(output, tmp_path), model=str(retrained)))


class Plant:
    """A pickle whose loading writes a marker file: proof that it ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("name", [LEGACY_STATE_FILE, STATE_FILE, "results.json"])
def test_a_planted_pickle_never_runs(name, workspace, tmp_path, capsys):
    marker = tmp_path / "it-ran"
    payload = pickle.dumps({"step": 4, "trained": Plant(marker)})
    pickle.loads(payload)  # the plant works: loading it runs code ...
    assert marker.exists()
    marker.unlink()
    run = tmp_path / "run"
    run.mkdir()
    if name == LEGACY_STATE_FILE:
        torch.save({"step": 4, "trained": Plant(marker)}, run / name)
    else:
        (run / name).write_bytes(payload)
    before = snapshot(run)
    code = main(["train", "--model", str(workspace["bert"]), "--task", str(workspace["csv"]), "--text-column", "review",
                 "--label-column", "sentiment", "--epochs", "1", "--output-dir", str(run)])
    error = capsys.readouterr().err
    assert code == 2 and not marker.exists() and snapshot(run) == before  # ... but compacter never loads it
    expected = {LEGACY_STATE_FILE: "training_state.pt is a checkpoint of an earlier compacter, a pickle, which this "
                                   "version never opens (loading one can run code)",
                STATE_FILE: "training_state.safetensors is not a training state this compacter can read",
                "results.json": "results.json is not valid JSON"}[name]
    assert expected in error and "delete" not in error.lower(), error


def test_a_damaged_or_foreign_state_is_refused(interrupted, workspace, tmp_path):
    run = copy_run(interrupted, tmp_path)
    state = run / STATE_FILE
    whole = state.read_bytes()
    for content, reason in [(whole[: len(whole) // 2], r"not a training state this compacter can read \(SafetensorError"),
                            (b"", "not a training state this compacter can read"),
                            (None, "not a compacter-training-state/1 file")]:
        if content is None:
            save_file({"x": torch.zeros(2)}, state)  # a valid safetensors file of something else
        else:
            state.write_bytes(content)
        before = snapshot(run)
        with pytest.raises(ValueError, match=reason):
            train(config(workspace, run))
        assert snapshot(run) == before


def test_a_damaged_results_file_is_refused(finished, workspace, tmp_path):
    run = copy_run(finished[0], tmp_path)
    for content, message in [("{oops", "results.json is not valid JSON"), ("[]", "is not a compacter results file")]:
        (run / "results.json").write_text(content)
        with pytest.raises(ValueError, match=message):
            train(config(workspace, run))


def test_results_of_older_versions_are_checked_by_their_settings(finished, workspace, tmp_path, capsys):
    run = copy_run(finished[0], tmp_path)
    results = json.loads((run / "results.json").read_text())
    for key in ("identity", "sha256", "adapter_sha256"):  # what earlier versions did not write
        del results[key]
    results["config"]["short_warmup"] = True  # as earlier versions said today's default warm-up (a tenth of the run)
    (run / "results.json").write_text(json.dumps(results))
    assert train(config(workspace, run)) == results
    assert "written by an earlier compacter, which did not record the run's data" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"holds a finished run that differs from this one:\n  epochs: 1 there, 2 now"):
        train(config(workspace, run, epochs=2))


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(workspace, tmp_path):
    deep = tmp_path / "a" / "b" / "run"
    with pytest.raises(ValueError, match="need a batch size and a training set of at least 4 examples each"):
        train(config(workspace, deep, batch_size=2, gradient_accumulation=4))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Interrupt):
        train(config(workspace, deep), on_step=interrupt_at(2))  # before the first evaluation, at step 4
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("my notes")
    with pytest.raises(Interrupt):
        train(config(workspace, kept), on_step=interrupt_at(2))
    assert snapshot(kept) == {"notes.txt": b"my notes"}


@pytest.mark.parametrize("setup,arguments,message", [
    (None, ["--tokenizer", "./missing-tokenizer"], "--tokenizer ./missing-tokenizer: no such folder. Give a local folder"),
    ("config-only", ["--tokenizer", "config-only"], "--tokenizer config-only: its tokenizer has no vocabulary beyond its"),
    ("broken-config", ["--model", "broken-config"], "broken-config/config.json is not valid JSON"),
    ("no-config", ["--model", "no-config"], "no-config has no config.json, so it is not a model folder"),
    (None, ["--model", "./missing-model"], "--model ./missing-model: no such folder"),
    ("big-vocabulary", ["--tokenizer", "big-vocabulary"], "more than the .* embeddings of"),
])
def test_model_and_tokenizer_folders_are_checked_before_anything_is_written(setup, arguments, message, workspace,
                                                                             tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if setup == "config-only":
        os.mkdir("config-only")
        shutil.copy(workspace["bert"] / "config.json", "config-only/config.json")
    elif setup == "broken-config":
        shutil.copytree(workspace["bert"], "broken-config")
        Path("broken-config/config.json").write_text("{not json")
    elif setup == "no-config":
        shutil.copytree(workspace["bert"], "no-config")
        os.remove("no-config/config.json")
    elif setup == "big-vocabulary":
        write_tiny_pretrained(tmp_path / "big-vocabulary", "bert", [f"word{i}" for i in range(5000)])
    before = sorted(tmp_path.rglob("*"))
    defaults = {"--model": str(workspace["bert"]), "--task": str(workspace["csv"])}
    given = dict(zip(arguments[::2], arguments[1::2]))
    code = main(["train", *[x for k, v in {**defaults, **given}.items() for x in (k, v)], "--text-column", "review",
                 "--label-column", "sentiment", "--output-dir", "out"])
    error = capsys.readouterr().err
    assert code == 2 and re.search(message, error), error
    assert sorted(tmp_path.rglob("*")) == before


def test_identity_differences_read_as_words():
    base = {"format": 1, "base_model": {"architecture": {"d_model": 128}, "weights": {"files": {"a": "1"},
                                                                                       "pretrained": True}},
            "tokenizer": "t", "task": {"name": "rte", "labels": ["x", "y"]},
            "data": {"train": {"examples": 3, "sha256": "s"}}, "method": {"n": 4}, "hyper_parameters": {"epochs": 1}}
    other = json.loads(json.dumps(base))
    other["base_model"]["architecture"]["d_model"] = 256
    other["base_model"]["weights"] = {"hub": "t5-base", "pretrained": True}
    other["tokenizer"] = "u"
    other["task"]["labels"] = ["x", "z"]
    other["data"]["test"] = {"examples": 1, "sha256": "q"}
    other["method"]["n"] = 8
    other["hyper_parameters"]["epochs"] = 3
    assert differences(base, other) == [
        "base model d_model: 128 there, 256 now", "base model: a local folder there, hub model 't5-base' now",
        "tokenizer: another vocabulary or tokenization", "task labels: ['x', 'y'] there, ['x', 'z'] now",
        "data: the test split is new", "method setting n: 4 there, 8 now",
        "epochs: 1 there, 3 now"]
    assert differences(base, base) == []


def test_a_resume_without_its_best_adapter_is_refused_at_once(interrupted, workspace, tmp_path):
    run = copy_run(interrupted, tmp_path)
    (run / "adapter" / "compacter_model.safetensors").write_bytes(b"truncated")
    before = snapshot(run)
    with pytest.raises(ValueError, match=r"The best adapter so far \(step 4\) cannot be read: .*compacter_model.safetensors "
                                         r"could not be read as safetensors .*give another --output-dir"):
        train(config(workspace, run))
    assert snapshot(run) == before


def test_an_output_dir_that_is_a_file_is_refused(workspace, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ValueError, match="--output-dir .*taken is a file; give a folder"):
        train(config(workspace, tmp_path / "taken"))
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_a_training_state_round_trips_through_its_file(tmp_path):
    """Tensors through safetensors, everything else through JSON: what is read is what was written."""
    import random

    import numpy as np

    from compacter.training.checkpoint import TrainingState, restore_rng, rng_state, save_state

    parameter = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    parameter.sum().backward()
    optimizer.step()
    rng = {**rng_state(), "cuda": [torch.get_rng_state()]}  # a CUDA generator's state is a byte tensor too
    state = TrainingState(identity={"format": 1, "task": {"labels": ["a", "b"]}}, step=7, best={"score": 50.5, "step": 4},
                          history=[{"step": 4, "loss": float("nan")}], elapsed=1.25, trained={"w": parameter.detach()},
                          optimizer=optimizer.state_dict(), scheduler={"last_epoch": 7, "_last_lr": [1e-4]},
                          scaler={}, rng=rng)
    save_state(tmp_path, state)
    again = read_state(tmp_path)
    assert (again.identity, again.step, again.best, again.elapsed, again.scheduler, again.scaler) == (
        state.identity, 7, state.best, 1.25, state.scheduler, {})
    assert again.history[0]["step"] == 4 and math.isnan(again.history[0]["loss"])
    assert torch.equal(again.trained["w"], parameter.detach())
    assert torch.equal(again.rng["cuda"][0], rng["cuda"][0])
    saved = optimizer.state_dict()
    assert again.optimizer["param_groups"] == json.loads(json.dumps(saved["param_groups"]))
    assert set(again.optimizer["state"]) == {0}
    for key, value in saved["state"][0].items():
        assert torch.equal(again.optimizer["state"][0][key], value)
    draws = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(again.rng)
    redrawn = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], redrawn[0]) and np.array_equal(draws[1], redrawn[1]) and draws[2] == redrawn[2]
