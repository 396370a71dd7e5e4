"""`compacter predict`: many tasks' requests through one base, mixed batches, answers in the requests' order."""

import json
import logging

import pytest
import torch
import transformers
from training_fixtures import make_workspace

import compacter
from compacter.cli import main
from compacter.data.files import load_files
from compacter.data.tasks import TASKS
from compacter.training import TrainConfig, train


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("predict"))


def write_lines(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_mixed_task_requests_are_answered_as_each_tasks_own_model_would(workspace, tmp_path):
    base = transformers.T5ForConditionalGeneration.from_pretrained(workspace["t5"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(workspace["t5"])
    for name, method in (("rte", "compacter++"), ("mrpc", "compacter")):
        compacter.apply(base, method, name=name)
        with torch.no_grad():
            for param in compacter.trainable_parameters(base, name).values():
                param.add_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))
        compacter.save(base, tmp_path / name, name=name, metadata={"task": TASKS[name].to_dict()})
    requests = [{"task": "rte", "sentence1": "alpha beta gamma", "sentence2": "delta", "id": "a"},
                {"task": "mrpc", "sentence1": "zeta eta", "sentence2": "theta iota kappa"},
                {"task": "rte", "text": "rte sentence1: mu lambda sentence2: kappa"},
                {"task": "mrpc", "sentence1": "beta", "sentence2": "beta gamma", "id": 7},
                {"task": "rte", "sentence1": "iota", "sentence2": "alpha alpha"}]
    code = main(["predict", "--model", str(workspace["t5"]), "--adapter", f"rte={tmp_path / 'rte'}", "--adapter",
                 f"mrpc={tmp_path / 'mrpc'}", "--input", str(write_lines(tmp_path / "in.jsonl", requests)),
                 "--output", str(tmp_path / "out.jsonl"), "--batch-size", "3"])
    assert code == 0
    answers = read_lines(tmp_path / "out.jsonl")
    assert [a["task"] for a in answers] == [r["task"] for r in requests]
    assert answers[0]["id"] == "a" and answers[3]["id"] == 7 and "id" not in answers[1]
    for request, answer in zip(requests, answers):  # each alone, on its own task's model
        single = compacter.load(transformers.T5ForConditionalGeneration.from_pretrained(workspace["t5"]),
                                tmp_path / request["task"]).eval()
        source = request.get("text") or TASKS[request["task"]].source(request)
        with torch.no_grad():
            generated = single.generate(**tokenizer([source], return_tensors="pt"), max_new_tokens=16, do_sample=False)
        assert answer["prediction"] == tokenizer.decode(generated[0], skip_special_tokens=True)


def test_a_finished_run_answers_its_test_split_with_its_test_score(workspace, tmp_path, caplog):
    run = tmp_path / "run"
    results = train(TrainConfig(model=str(workspace["bert"]), task=str(workspace["csv"]), method="compacter++",
                                text_column="review", label_column="sentiment", epochs=2, batch_size=16,
                                warmup_steps=0, output_dir=str(run)))
    _, splits = load_files(workspace["csv"], text_column="review", label_column="sentiment")
    test = splits["test"]
    labels = sorted({"positive", "negative"})
    requests = write_lines(tmp_path / "test.jsonl", [{"text": row["review"]} for row in test])
    assert main(["predict", "--run", str(run), "--input", str(requests), "--output", str(tmp_path / "p.jsonl")]) == 0
    predictions = [a["prediction"] for a in read_lines(tmp_path / "p.jsonl")]
    assert set(predictions) <= set(labels)
    accuracy = 100 * sum(p == labels[row["label"]] for p, row in zip(predictions, test)) / len(test)
    assert accuracy == pytest.approx(results["test"]["accuracy"])

    # a classifier does not decode: --compile answers the same, saying so in one line
    with caplog.at_level(logging.WARNING, logger="compacter"):
        assert main(["predict", "--run", str(run), "--input", str(requests), "--output", str(tmp_path / "c.jsonl"),
                     "--compile"]) == 0
    assert read_lines(tmp_path / "c.jsonl") == read_lines(tmp_path / "p.jsonl")
    assert [r.getMessage() for r in caplog.records if r.name == "compacter"] == [
        "--compile: BertForSequenceClassification does not generate (a classifier answers in one forward pass)"]


def test_bad_requests_and_options_say_what_to_fix(workspace, tmp_path, capsys):
    model = compacter.apply(transformers.T5ForConditionalGeneration.from_pretrained(workspace["t5"]), "compacter++",
                            name="rte")
    compacter.save(model, tmp_path / "rte")
    common = ["predict", "--model", str(workspace["t5"]), "--adapter", f"rte={tmp_path / 'rte'}",
              "--output", str(tmp_path / "out.jsonl")]
    cases = [
        ('{"task": "cola", "text": "x"}\n', r"request 1: task 'cola' is not one of the adapters given \(rte\)"),
        ('{"task": "rte", "text": "x"}\nnot json\n', r"line 2: not valid JSON"),
        ('{"task": "rte", "sentence1": "x"}\n', r"request 1: task 'rte' needs the field\(s\) \['sentence2'\]"),
        ('["rte", "x"]\n', r"line 1: expected a JSON object, got list"),
        ('{"task": "rte", "text": 3}\n', r"\"text\" \(and \"text_pair\"\) must be strings"),
    ]
    for text, message in cases:
        (tmp_path / "in.jsonl").write_text(text)
        assert main([*common, "--input", str(tmp_path / "in.jsonl")]) == 2
        assert message.replace("\\", "") in capsys.readouterr().err.replace("\\", "") or pytest.fail(message)
    assert not (tmp_path / "out.jsonl").exists()  # nothing written for a refused input
    assert main(["predict", "--model", str(workspace["t5"]), "--adapter", "rte", "--input", "x", "--output", "y"]) == 2
    assert "--adapter expects NAME=DIR" in capsys.readouterr().err
    assert main(["predict", "--run", str(tmp_path), "--input", "x", "--output", "y"]) == 2
    assert "is not a finished run" in capsys.readouterr().err


def test_a_quantized_base_serves_adapters_trained_on_the_full_precision_one(workspace, tmp_path, capsys):
    from compacter.predict import load_model
    from compacter.quantization import is_quantized, quantize_base

    pytest.importorskip("torchao")
    model = compacter.apply(transformers.T5ForConditionalGeneration.from_pretrained(workspace["t5"]), "compacter++",
                            name="rte")
    with torch.no_grad():
        for param in compacter.trainable_parameters(model, "rte").values():
            param.add_(0.3 * torch.randn(param.shape, generator=torch.Generator().manual_seed(3)))
    compacter.save(model, tmp_path / "rte", name="rte", metadata={"task": TASKS["rte"].to_dict()})
    served, _, _ = load_model(str(workspace["t5"]), {"rte": tmp_path / "rte"}, device="cpu", quantize="int8")
    assert is_quantized(served.encoder.block[0].layer[1].DenseReluDense.wi.weight)
    requests = [{"task": "rte", "sentence1": "alpha beta", "sentence2": "gamma"}, {"task": "rte", "text": "zeta eta"}]
    common = ["predict", "--model", str(workspace["t5"]), "--adapter", f"rte={tmp_path / 'rte'}",
              "--input", str(write_lines(tmp_path / "in.jsonl", requests))]
    assert main([*common, "--output", str(tmp_path / "out.jsonl"), "--quantize", "int8"]) == 0
    # the same answers as a base quantized by hand with the adapter loaded onto it
    by_hand = quantize_base(transformers.T5ForConditionalGeneration.from_pretrained(workspace["t5"]), "int8")
    by_hand = compacter.load(by_hand, tmp_path / "rte").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(workspace["t5"])
    for request, answer in zip(requests, read_lines(tmp_path / "out.jsonl")):
        source = request.get("text") or TASKS["rte"].source(request)
        with torch.no_grad():
            generated = by_hand.generate(**tokenizer([source], return_tensors="pt"), max_new_tokens=16, do_sample=False)
        assert answer["prediction"] == tokenizer.decode(generated[0], skip_special_tokens=True)
    capsys.readouterr()
    for kind, message in (("nf4", "--quantize nf4 uses bitsandbytes' CUDA kernels and needs a CUDA GPU"),
                          ("int3", "Unknown quantization 'int3'; choose one of int8, int4, nf4, bnb-int8")):
        if kind == "nf4" and torch.cuda.is_available():
            continue
        assert main([*common, "--output", str(tmp_path / f"{kind}.jsonl"), "--quantize", kind]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"{kind}.jsonl").exists()


def test_compiled_decoding_answers_as_eager_decoding_in_mixed_batches(workspace, tmp_path, caplog):
    from compacter.predict import load_model, predict, read_requests

    base = transformers.T5ForConditionalGeneration.from_pretrained(workspace["t5"])
    for name in ("rte", "mrpc"):
        compacter.apply(base, "compacter++", name=name)
        with torch.no_grad():
            for param in compacter.trainable_parameters(base, name).values():
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))))
        compacter.save(base, tmp_path / name, name=name, metadata={"task": TASKS[name].to_dict()})
    model, tokenizer, served = load_model(str(workspace["t5"]), {n: tmp_path / n for n in ("rte", "mrpc")}, device="cpu")
    rows = [{"task": "rte", "text": "alpha beta gamma delta"}, {"task": "mrpc", "text": "zeta eta theta"},
            {"task": "mrpc", "text": "beta"}]
    requests = read_requests(write_lines(tmp_path / "in.jsonl", rows), served)
    eager = predict(model, tokenizer, requests, served, batch_size=3, target_length=3)
    torch._dynamo.reset()
    compiled = predict(model, tokenizer, requests, served, batch_size=3, target_length=3, compile=True,
                       compile_backend="aot_eager")
    assert compiled == eager and len({a["prediction"] for a in eager}) > 1
    assert not [r for r in caplog.records if r.name == "compacter"]  # it compiled: no fallback was said
