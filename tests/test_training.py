"""`compacter train`: train → select → test, your own files, resume after kill -9, 2 processes = 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file
from training_fixtures import make_workspace, write_csv

import compacter
from compacter.cli import main
from compacter.data import load_task
from compacter.data.files import load_files
from compacter.data.loading import DataFileError
from compacter.saving import file_name
from compacter.training import TrainConfig, train
from compacter.training.checkpoint import read_state

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("workspace"))


def csv_config(workspace, output, **settings):
    values = dict(model=str(workspace["bert"]), task=str(workspace["csv"]), method="compacter++", text_column="review",
                  label_column="sentiment", epochs=3, batch_size=16, warmup_steps=0, eval_steps=5,
                  output_dir=str(output))
    return TrainConfig(**{**values, **settings})


def adapter_tensors(output):
    return load_file(str(Path(output) / "adapter" / "compacter_model.safetensors"))


def test_glue_fixture_run_selects_on_validation_and_scores_test_with_the_best(workspace, tmp_path, capsys):
    output = tmp_path / "rte"
    code = main(["train", "--model", str(workspace["t5"]), "--task", "rte", "--data-dir", str(workspace["glue"]),
                 "--method", "compacter", "--epochs", "4", "--batch-size", "8", "--lr", "3e-2", "--warmup-steps", "0",
                 "--output-dir", str(output)])
    assert code == 0 and json.loads(capsys.readouterr().out)["task"] == "rte"
    results = json.loads((output / "results.json").read_text())
    history = results["history"]
    assert [h["step"] for h in history] == [5, 10, 15, 20]  # 40 examples / 8 per batch: every epoch
    best = max(history, key=lambda h: h["validation"]["score"])
    assert results["best_step"] == best["step"] and results["validation"] == best["validation"]
    assert results["config"]["learning_rate"] == 3e-2 and results["parameters"]["method"] == "compacter"
    assert {"compacter", "torch", "transformers"} <= set(results["versions"]) and results["train_time_s"] > 0
    assert (output / "train.log").read_text().count("validation score") == 4

    # the test metrics are those of the saved best adapter, recomputed here independently
    model = compacter.load(transformers.AutoModelForSeq2SeqLM.from_pretrained(workspace["t5"]), output / "adapter")
    tokenizer = transformers.AutoTokenizer.from_pretrained(workspace["t5"])
    data = load_task("rte", workspace["glue"])
    sources = [source for source, _ in data.text_to_text("test")]
    encoded = tokenizer(sources, return_tensors="pt", padding=True, truncation=True, max_length=128)
    with torch.no_grad():
        generated = model.eval().generate(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                                          max_new_tokens=16, do_sample=False)
    predictions = tokenizer.batch_decode(generated, skip_special_tokens=True)
    assert data.score("test", predictions) == results["test"]


@pytest.mark.parametrize("kind,head,method,settings", [
    ("bert", "classifier.", "compacter++", {}),
    ("llama", "score.", "compacter++", {}),
    # 100 prompt vectors would drown these ~10-token reviews in a random 2-layer model
    ("llama", "score.", "prompt-r", {"method_overrides": {"num_tokens": 4}}),
])
def test_user_csv_trains_a_classifier_that_learns(kind, head, method, settings, workspace, tmp_path):
    """An encoder under a new classifier, and a decoder-only model under its last-token head."""
    results = train(csv_config(workspace, tmp_path / "csv", model=str(workspace[kind]), method=method, **settings))
    assert results["test"]["accuracy"] >= 90.0 and set(results["test"]) >= {"accuracy", "f1_macro", "score"}
    assert results["train_examples"] == 128  # 160 rows: 20% held out, then halved into validation and test
    saved = adapter_tensors(tmp_path / "csv")
    assert any(name.startswith(f"base.{head}") for name in saved)  # the new head trains and is saved (its own copy)
    assert sum(t.numel() for t in saved.values()) == results["parameters"]["trainable"]


def test_finished_run_is_not_run_again(workspace, tmp_path):
    config = csv_config(workspace, tmp_path / "done", epochs=1)
    first = train(config)
    stamp = (tmp_path / "done" / "results.json").stat().st_mtime_ns
    assert train(config) == first and (tmp_path / "done" / "results.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"holds a finished run that differs from this one:\n  epochs: 1 there, 2 now\n"
                                         r"Its results are kept as they are"):
        train(csv_config(workspace, tmp_path / "done", epochs=2))


def test_resume_after_kill_ends_like_an_uninterrupted_run(workspace, tmp_path):
    uninterrupted = train(csv_config(workspace, tmp_path / "straight", method="compacter"))
    killed = tmp_path / "killed"
    settings = json.dumps(json.dumps(csv_config(workspace, killed, method="compacter").to_dict()))
    script = (
        "import json, os, signal\n"
        "from compacter.training import TrainConfig, train\n"
        f"config = TrainConfig(**json.loads({settings}))\n"
        "train(config, on_step=lambda step: os.kill(os.getpid(), signal.SIGKILL) if step == 12 else None)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True)
    assert run.returncode == -9, run.stderr[-2000:]
    assert not (killed / "results.json").exists()
    assert read_state(killed).step == 10  # the last checkpoint
    resumed = train(csv_config(workspace, killed, method="compacter"))
    assert "resumed at step 10" in (killed / "train.log").read_text()
    assert resumed["test"] == uninterrupted["test"] and resumed["history"] == uninterrupted["history"]
    for name, tensor in adapter_tensors(tmp_path / "straight").items():
        assert torch.equal(tensor, adapter_tensors(killed)[name]), name


def test_two_processes_equal_one_with_the_same_global_batch(workspace, tmp_path):
    arguments = ["train", "--model", str(workspace["bert"]), "--task", str(workspace["csv"]), "--text-column", "review",
                 "--label-column", "sentiment", "--epochs", "1", "--batch-size", "16", "--warmup-steps", "0",
                 "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "compacter.cli", *arguments, "--output-dir", str(tmp_path / "one"),
                          "--gradient-accumulation", "2"], env=ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "compacter.cli", *arguments, "--output-dir", str(tmp_path / "two")],
                         env=ENV, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["processes"] == 2
    single, double = adapter_tensors(tmp_path / "one"), adapter_tensors(tmp_path / "two")
    assert set(single) == set(double)
    for name in single:
        torch.testing.assert_close(double[name], single[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_fsdp_over_two_processes_equals_one_process(kind, workspace, tmp_path):
    if kind == "bert":
        data = ["--task", str(workspace["csv"]), "--text-column", "review", "--label-column", "sentiment"]
    else:
        data = ["--task", "rte", "--data-dir", str(workspace["glue"]), "--method", "compacter", "--lr", "3e-2"]
    arguments = ["train", "--model", str(workspace[kind]), *data, "--epochs", "2", "--batch-size", "16",
                 "--warmup-steps", "0", "--device", "cpu", "--eval-batch-size", "5"]
    one = subprocess.run([sys.executable, "-m", "compacter.cli", *arguments, "--output-dir", str(tmp_path / "one")],
                         env=ENV, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "compacter.cli", *arguments, "--fsdp", "--output-dir", str(tmp_path / "two")],
                         env=ENV, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    single, sharded = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert sharded["processes"] == 2 and sharded["test"]["n"] == single["test"]["n"]
    assert [h["validation"]["score"] for h in sharded["history"]] == [h["validation"]["score"] for h in single["history"]]
    for name, tensor in adapter_tensors(tmp_path / "one").items():  # whole tensors, gathered from the shards
        torch.testing.assert_close(adapter_tensors(tmp_path / "two")[name], tensor, rtol=1e-4, atol=1e-5)
    # the test split is scored with the best step's adapters everywhere (encoder ones included, which generate()
    # calls outside the model's own forward)
    assert sharded["test"]["score"] == single["test"]["score"]
    state = read_state(tmp_path / "two")  # whole tensors, as one process has them
    whole = {name: tensor.shape for name, tensor in adapter_tensors(tmp_path / "one").items()}
    assert {file_name(name, "default"): tensor.shape for name, tensor in state.trained.items()} == whole
    if kind == "bert":  # resuming loads the whole checkpoint back into shards, optimiser state included
        (tmp_path / "two" / "results.json").unlink()
        again = subprocess.run(two.args, env=ENV, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads((tmp_path / "two" / "results.json").read_text())["test"] == sharded["test"]
        assert "resumed at step" in (tmp_path / "two" / "train.log").read_text()


def test_user_data_errors_name_the_file_and_the_fix(tmp_path):
    path = write_csv(tmp_path / "data.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}] * 5)
    advice = r"data.csv: no text column 'sentence'; its columns are \['text', 'label'\]\. Name the column with --text-column"
    with pytest.raises(DataFileError, match=advice):
        load_files(path, text_column="sentence", label_column="label")
    (tmp_path / "holes.csv").write_text("text,label\na,x\nb,\nc,y\n")
    with pytest.raises(DataFileError, match=r"holes.csv: column 'label' is empty in 1 row\(s\), the first being data row 2"):
        load_files(tmp_path / "holes.csv", text_column="text", label_column="label")
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(DataFileError, match="empty.csv is empty"):
        load_files(tmp_path / "empty.csv", text_column="text", label_column="label")
    with pytest.raises(ValueError, match="--text-column and --label-column"):
        load_files(path)
    with pytest.raises(FileNotFoundError, match="'reviews.cvs' is not an existing CSV"):
        TrainConfig(model="t5-small", task="reviews.cvs")
    with pytest.raises(ValueError, match="Unknown task 'rtee'"):
        TrainConfig(model="t5-small", task="rtee")
    (tmp_path / "no_train").mkdir()
    with pytest.raises(FileNotFoundError, match="has no train file: name it train.csv"):
        load_files(tmp_path / "no_train", text_column="text", label_column="label")


def test_user_splits_follow_the_paper_and_text_to_text_is_verbatim(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(50)]
    write_csv(tmp_path / "qa" / "train.csv", rows[:40])
    write_csv(tmp_path / "qa" / "validation.csv", rows[40:])
    task, splits = load_files(tmp_path / "qa", source_column="question", target_column="answer")
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [40, 5, 5]  # small: validation halved
    assert task.template(splits["test"][0]) == (splits["test"][0]["source"], splits["test"][0]["target"])
    from compacter.data import compute_metrics
    metrics = compute_metrics(task, [e["target"] for e in splits["test"]], splits["test"])
    assert metrics["exact_match"] == 100.0 and metrics["f1"] == 100.0


def test_bf16_autocast_and_gradient_checkpointing_train_text_to_text(workspace, tmp_path):
    config = TrainConfig(model=str(workspace["t5"]), task="rte", data_dir=str(workspace["glue"]), method="compacter",
                         epochs=2, batch_size=8, warmup_steps=0, learning_rate=3e-2, precision="bf16",
                         gradient_checkpointing=True, output_dir=str(tmp_path / "bf16"))
    results = train(config)
    losses = [h["loss"] for h in results["history"]]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # finite, no NaN
    assert results["config"]["precision"] == "bf16" and results["test"]["n"] == 6


def test_a_batch_that_cannot_be_split_is_refused(workspace, tmp_path):
    with pytest.raises(ValueError, match="need a batch size and a training set of at least 4 examples each"):
        train(csv_config(workspace, tmp_path / "tiny-batch", batch_size=2, gradient_accumulation=4))
