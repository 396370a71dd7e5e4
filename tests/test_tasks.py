"""Many tasks on one frozen base: named tasks, switching, mixed-task batches, unload, Hugging Face-native saving."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
import transformers
import yaml
from conftest import tiny_bert, tiny_llama, tiny_t5

import compacter
from compacter.saving import CONFIG_FILE, WEIGHTS_FILE

T5_TASKS = {"rte": "compacter++", "mrpc": "compacter", "cola": "adapter-lowrank", "sst2": "lora", "qnli": "ia3"}
BERT_TASKS = {"rte": "compacter++", "mrpc": "pfeiffer", "cola": "linear-probe", "sst2": "lora", "qnli": "ia3"}
ROWS = ["rte", "mrpc", "cola", "sst2", "cola", "rte", "qnli", "mrpc", "sst2", "qnli"]
ROW_COUNT = len(ROWS)


def perturb(model, name, scale=0.05):
    """As if trained: every parameter of task ``name`` moved away from its initial value (up projections start at 0)."""
    generator = torch.Generator().manual_seed(sum(map(ord, name)))
    with torch.no_grad():
        for param in compacter.trainable_parameters(model, name).values():
            param.add_(scale * torch.randn(param.shape, generator=generator))


def multi_task(factory, methods):
    model = factory()
    for name, method in methods.items():
        compacter.apply(model, method, name=name)
        perturb(model, name)
    return model.eval()


def single_task_models(model, methods, factory, tmp_path):
    """Each task saved and loaded onto its own fresh copy of the base model."""
    singles = {}
    for name in methods:
        compacter.save(model, tmp_path / name, name=name)
        singles[name] = compacter.load(factory(), tmp_path / name).eval()
    return singles


def t5_batch(rows=ROW_COUNT):
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(2, 128, (rows, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(2, 128, (rows, 4), generator=generator)}


def bert_batch(rows=ROW_COUNT):
    generator = torch.Generator().manual_seed(4)
    ids = torch.randint(2, 128, (rows, 8), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.arange(rows) % 3}


def row(batch, i):
    return {k: v[i: i + 1] for k, v in batch.items()}


@pytest.mark.parametrize("factory,methods,make_batch", [(tiny_t5, T5_TASKS, t5_batch), (tiny_bert, BERT_TASKS, bert_batch)])
def test_a_mixed_batch_equals_each_tasks_own_model_row_by_row(factory, methods, make_batch, tmp_path):
    model = multi_task(factory, methods)
    singles = single_task_models(model, methods, factory, tmp_path)
    batch = make_batch()
    with torch.no_grad(), compacter.route(model, ROWS):
        mixed = model(**batch).logits
    for i, name in enumerate(ROWS):
        with torch.no_grad():
            own = singles[name](**row(batch, i)).logits
        torch.testing.assert_close(mixed[i: i + 1], own, rtol=1e-5, atol=1e-5)
    # the tasks really differ, so a routing mistake could not pass the check above
    with torch.no_grad():
        first, second = (singles[n](**row(batch, 0)).logits for n in ("rte", "mrpc"))
    assert not torch.allclose(first, second, atol=1e-3)


@pytest.mark.parametrize("factory,methods,make_batch", [(tiny_t5, T5_TASKS, t5_batch), (tiny_bert, BERT_TASKS, bert_batch)])
def test_each_rows_gradient_reaches_only_its_own_task(factory, methods, make_batch):
    model = multi_task(factory, methods)
    batch = make_batch()

    def summed_loss(logits, labels):
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction="sum")

    with compacter.route(model, ROWS):
        summed_loss(model(**batch).logits, batch["labels"]).backward()
    mixed = {name: {n: p.grad.clone() for n, p in compacter.trainable_parameters(model, name).items()}
             for name in methods}
    model.zero_grad(set_to_none=True)
    for name in methods:
        compacter.set_active(model, name)
        rows = [i for i, r in enumerate(ROWS) if r == name]
        part = {k: v[rows] for k, v in batch.items()}
        summed_loss(model(**part).logits, part["labels"]).backward()
        for param_name, param in compacter.trainable_parameters(model, name).items():
            torch.testing.assert_close(mixed[name][param_name], param.grad, rtol=1e-4, atol=1e-5)
        # and another task's rows left no trace on this task: only its own rows' gradients were summed
        assert any(g.abs().sum() > 0 for g in mixed[name].values())
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("options", [{"num_beams": 1}, {"num_beams": 3}, {"num_beams": 2, "num_return_sequences": 2}])
def test_generate_follows_the_routing_with_expanded_rows(options, tmp_path):
    model = multi_task(tiny_t5, T5_TASKS)
    singles = single_task_models(model, T5_TASKS, tiny_t5, tmp_path)
    batch = t5_batch()
    settings = {"max_new_tokens": 5, "do_sample": False, **options}
    copies = options.get("num_return_sequences", 1)
    with torch.no_grad(), compacter.route(model, ROWS):
        mixed = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **settings)
    for i, name in enumerate(ROWS):
        with torch.no_grad():
            own = singles[name].generate(input_ids=batch["input_ids"][i: i + 1],
                                         attention_mask=batch["attention_mask"][i: i + 1], **settings)
        assert torch.equal(mixed[i * copies: (i + 1) * copies, : own.shape[1]], own), name


def test_a_decoder_only_model_routes_rows_with_its_padding():
    model = multi_task(tiny_llama, {"a": "compacter++", "b": "adapter"})
    ids = torch.randint(2, 128, (4, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), compacter.route(model, ["a", "b", "b", "a"]):
        mixed = model(input_ids=ids).logits
    for i, name in enumerate(["a", "b", "b", "a"]):
        compacter.set_active(model, name)
        with torch.no_grad():
            torch.testing.assert_close(mixed[i: i + 1], model(input_ids=ids[i: i + 1]).logits, rtol=1e-5, atol=1e-5)


def test_switching_disabling_and_deleting_tasks():
    base = tiny_t5()
    model = multi_task(lambda: copy.deepcopy(base), T5_TASKS)
    batch = t5_batch()
    with torch.no_grad():
        reference = base(**batch).logits
        outputs = {}
        for name in T5_TASKS:
            compacter.set_active(model, name)
            outputs[name] = model(**batch).logits
        last = list(T5_TASKS)[-1]
        assert compacter.active_task(model) == last and compacter.tasks(model) == list(T5_TASKS)
        with compacter.disabled(model):
            assert torch.equal(model(**batch).logits, reference)
        assert torch.equal(model(**batch).logits, outputs[last])  # enabled again on leaving the block
        compacter.set_active(model, None)
        assert torch.equal(model(**batch).logits, reference)
        compacter.delete(model, "mrpc")
        assert compacter.tasks(model) == [name for name in T5_TASKS if name != "mrpc"]
        compacter.set_active(model, "rte")
        assert torch.equal(model(**batch).logits, outputs["rte"])
    with pytest.raises(ValueError, match=r"No task named 'mrpc' is attached to this model \(attached: 'rte', 'cola', "):
        compacter.set_active(model, "mrpc")


def test_unload_gives_back_the_base_bit_for_bit():
    base = tiny_bert()
    base.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # the user's own choice survives too
    state = {k: v.clone() for k, v in base.state_dict().items()}
    flags = {n: p.requires_grad for n, p in base.named_parameters()}
    model = multi_task(lambda: base, BERT_TASKS)
    model.train()
    with compacter.route(model, ROWS):
        model(**bert_batch()).loss.backward()
    assert compacter.unload(model) is base and not hasattr(base, "compacter")
    assert base.state_dict().keys() == state.keys()
    assert all(torch.equal(base.state_dict()[k], v) for k, v in state.items())
    assert {n: p.requires_grad for n, p in base.named_parameters()} == flags
    assert "save_pretrained" not in base.__dict__
    with torch.no_grad():
        torch.testing.assert_close(base(**bert_batch()).logits, tiny_bert()(**bert_batch()).logits, rtol=0, atol=0)


def test_bad_routing_and_peft_arguments_are_refused():
    model = multi_task(tiny_t5, T5_TASKS)
    batch = t5_batch()
    with pytest.raises(ValueError, match=r"No task named 'boolq' is attached"), compacter.route(model, ["rte", "boolq"]):
        pass
    with pytest.raises(ValueError, match=f"names the tasks of 2 rows, but the model was called with {ROW_COUNT} rows"):
        with compacter.route(model, ["rte", "mrpc"]):
            model(**batch)
    with pytest.raises(ValueError, match=r"does not read adapter_names=.*compacter.route\(model, tasks\)"):
        model(**batch, adapter_names=["rte"] * 6)
    with pytest.raises(ValueError, match="one task name per row"), compacter.route(model, "rte"):
        pass
    compacter.apply(model, "prompt-r", name="prompted", num_tokens=2)
    with pytest.raises(ValueError, match="'prompted' \\(prompt-r\\): its prompt changes the length of the input"), \
            compacter.route(model, ["prompted"]):
        pass
    with pytest.raises(ValueError, match=r"'bitfit' trains the base model's own parameters in place, so it cannot "
                                         "share a model"):
        compacter.apply(model, "bitfit", name="biases")
    alone = compacter.apply(tiny_t5(), "bitfit")
    with pytest.raises(ValueError, match="cannot be unloaded: reload the base model instead"):
        compacter.unload(alone)


def test_loading_many_saved_tasks_onto_one_base(tmp_path):
    model = multi_task(tiny_t5, T5_TASKS)
    for name in T5_TASKS:
        compacter.save(model, tmp_path / name, name=name)
    served = tiny_t5()
    for name in T5_TASKS:
        compacter.load(served, tmp_path / name)  # each under the name it was saved with
    assert compacter.tasks(served) == list(T5_TASKS)
    compacter.load(served, tmp_path / "rte", name="rte-copy")
    batch = t5_batch()
    with torch.no_grad():
        for name in T5_TASKS:
            compacter.set_active(model, name)
            compacter.set_active(served, name)
            assert torch.equal(model(**batch).logits, served(**batch).logits)
    # one frozen base: the tasks share its weights, each holds only what it trained
    base_count = sum(p.numel() for n, p in served.named_parameters() if not n.startswith("compacter."))
    assert base_count == sum(p.numel() for p in tiny_t5().parameters())


def test_save_pretrained_writes_only_the_task_files_and_from_pretrained_reads_them(tmp_path):
    base_dir = tmp_path / "base"
    tiny_t5(seed=2).save_pretrained(base_dir)
    model = transformers.T5ForConditionalGeneration.from_pretrained(base_dir)
    compacter.apply(model, "compacter++")
    perturb(model, "default")
    compacter.apply(model, "adapter", name="mrpc")
    perturb(model, "mrpc")
    model.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE, "mrpc"]
    assert sorted(p.name for p in (tmp_path / "out" / "mrpc").iterdir()) == ["README.md", CONFIG_FILE, WEIGHTS_FILE]
    description = json.loads((tmp_path / "out" / CONFIG_FILE).read_text())
    assert description["base_model_name_or_path"] == str(base_dir) and description["name"] == "default"
    front = yaml.safe_load((tmp_path / "out" / "README.md").read_text().split("---")[1])
    assert front["library_name"] == "compacter" and "base_model" not in front  # a local path is no Hub id
    assert front["compacter"]["method"] == "compacter++" and front["compacter"]["trained_percent"] > 0
    with pytest.raises(OSError):  # the whole model was not written: transformers cannot mistake it for one
        transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out")

    loaded = compacter.from_pretrained(tmp_path / "out")  # the base recorded in the adapter folder
    assert isinstance(loaded, transformers.T5ForConditionalGeneration)
    compacter.load(loaded, tmp_path / "out" / "mrpc")
    batch = t5_batch()
    with torch.no_grad():
        for name in ("default", "mrpc"):
            compacter.set_active(model, name)
            compacter.set_active(loaded, name)
            assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    explicit = compacter.from_pretrained(base_dir, tmp_path / "out" / "mrpc", torch_dtype=torch.float32)
    assert compacter.tasks(explicit) == ["mrpc"]


def test_a_classifier_reloads_with_its_label_count(tmp_path):
    base_dir = tmp_path / "bert"
    tiny_bert(num_labels=5).save_pretrained(base_dir)
    model = transformers.BertForSequenceClassification.from_pretrained(base_dir)
    compacter.apply(model, "compacter++")
    perturb(model, "default")
    compacter.save(model, tmp_path / "task")
    loaded = compacter.from_pretrained(tmp_path / "task")
    assert loaded.config.num_labels == 5
    with torch.no_grad():
        assert torch.equal(loaded(**bert_batch()).logits, model.eval()(**bert_batch()).logits)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, count=16):
        generator = torch.Generator().manual_seed(11)
        self.ids = torch.randint(2, 128, (count, 8), generator=generator)
        self.labels = torch.randint(2, 128, (count, 4), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[index]}


class _StopAt(transformers.TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_trainer_checkpoints_hold_only_the_tasks_and_resume(tmp_path):
    from compacter.integrations import Seq2SeqTrainer

    def run(output, callbacks=(), resume=False):
        model = compacter.apply(tiny_t5(seed=6), "compacter++")
        args = transformers.Seq2SeqTrainingArguments(
            output_dir=str(output), max_steps=4, save_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
            report_to=[], use_cpu=True, seed=0, logging_steps=100, disable_tqdm=True)
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=_Rows(), callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return model

    straight = run(tmp_path / "straight")
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    files = {p.name for p in checkpoint.iterdir()}
    assert {CONFIG_FILE, WEIGHTS_FILE, "README.md", "optimizer.pt", "trainer_state.json"} <= files
    assert not files & {"model.safetensors", "pytorch_model.bin", "config.json"}  # no copy of the base model
    assert (checkpoint / WEIGHTS_FILE).stat().st_size < 50_000

    run(tmp_path / "stopped", callbacks=[_StopAt(2)])
    assert {p.name for p in (tmp_path / "stopped").iterdir()} == {"checkpoint-2"}
    resumed = run(tmp_path / "stopped", resume=True)
    expected = compacter.trainable_parameters(straight)
    for name, param in compacter.trainable_parameters(resumed).items():
        torch.testing.assert_close(param, expected[name], rtol=0, atol=0)
    assert not torch.equal(param, compacter.trainable_parameters(compacter.apply(tiny_t5(seed=6), "compacter++"))[name])


def test_a_deep_copy_has_tasks_of_its_own():
    model = multi_task(tiny_t5, T5_TASKS)
    batch = t5_batch()
    model.train()
    model(**batch).loss.backward()  # weights built with a graph: a copy must build its own
    copied = copy.deepcopy(model).eval()
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
        assert torch.equal(copied(**batch).logits, before)
        perturb(copied, compacter.active_task(copied))
        assert not torch.equal(copied(**batch).logits, before)
        assert torch.equal(model(**batch).logits, before)
    compacter.unload(copied)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)  # the original's hooks are its own


def test_a_routed_batch_whose_other_inputs_have_other_row_counts_is_refused():
    model = multi_task(tiny_t5, {"a": "compacter++", "b": "lora"})
    batch = t5_batch(rows=4)
    with pytest.raises(ValueError, match="but decoder_input_ids has 3 rows"), compacter.route(model, ["a", "b"] * 2):
        model(input_ids=batch["input_ids"], decoder_input_ids=batch["labels"][:3])
    with pytest.raises(ValueError, match="but attention_mask has 2 rows"), compacter.route(model, ["a", "b"] * 2):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:2], labels=batch["labels"])
