"""Sharing tasks: our own file names (old ones still read), transformers' adapter methods, the Hub (offline cache,
mocked upload), the model card, selected_adapters and loading for serving (is_trainable=False, as PEFT)."""

import importlib.metadata
import json
import shutil

import pytest
import torch
import yaml
from conftest import tiny_bert

import compacter
from compacter import hub
from compacter.saving import CONFIG_FILE, LEGACY_CONFIG_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE, record_test_metrics

IDS = torch.randint(2, 128, (3, 7), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def trained_task(seed=1, name="default"):
    model = compacter.apply(tiny_bert(seed=0), "compacter", name=name)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in compacter.trainable_parameters(model, name).values():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return model


def test_the_installed_distribution_is_this_version():
    try:
        installed = importlib.metadata.version("compacter-adapters")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("installed before the distribution was renamed to compacter-adapters: run pip install -e . again")
    assert installed == compacter.__version__


def test_folders_use_our_own_file_names_and_old_folders_still_load(tmp_path):
    model = trained_task()
    compacter.save(model, tmp_path / "new")
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, "README.md"])
    assert CONFIG_FILE == "compacter_config.json" and WEIGHTS_FILE == "compacter_model.safetensors"
    old = tmp_path / "old"  # as compacter 0.2 wrote it: PEFT's names, format compacter-adapter/2
    shutil.copytree(tmp_path / "new", old)
    (old / CONFIG_FILE).rename(old / LEGACY_CONFIG_FILE)
    (old / WEIGHTS_FILE).rename(old / LEGACY_WEIGHTS_FILE)
    assert json.loads((old / LEGACY_CONFIG_FILE).read_text())["format"] == "compacter-adapter/2"
    assert torch.equal(logits(compacter.load(tiny_bert(seed=0), old)), logits(model))
    (old / LEGACY_WEIGHTS_FILE).write_bytes(b"damaged")
    with pytest.raises(ValueError, match="adapter_model.safetensors could not be read as safetensors"):
        compacter.load(tiny_bert(seed=0), old)


def test_a_peft_folder_is_read_as_one_and_named_as_one(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(FileNotFoundError, match="holds no adapter_model.safetensors"):
        compacter.load(tiny_bert(), tmp_path)  # read as PEFT's (interop/peft.py), which says what is missing
    with pytest.raises(ValueError, match="is a PEFT LORA adapter, not a task saved by compacter"):
        compacter.saving.load_folder(tiny_bert(), tmp_path)  # compacter's own reader names it


def test_transformers_adapter_methods_act_on_the_tasks(tmp_path):
    compacter.save(trained_task(seed=2), tmp_path / "b")
    model = trained_task(seed=1, name="a")
    a = logits(model)
    model.load_adapter(tmp_path / "b", adapter_name="b")
    assert model.active_adapters() == ["b"] and compacter.tasks(model) == ["a", "b"]
    b = logits(model)
    model.set_adapter("a")
    assert model.active_adapters() == ["a"] and torch.equal(logits(model), a)
    model.set_adapter(["b"])
    assert torch.equal(logits(model), b)
    with pytest.raises(ValueError, match="one task at a time.*compacter.route"):
        model.set_adapter(["a", "b"])
    with pytest.raises(ValueError, match="compacter.apply"):
        model.add_adapter(object(), adapter_name="c")
    with pytest.raises(ValueError, match="compacter.disabled"):
        model.disable_adapters()
    with pytest.raises(ValueError, match="has no adapter_state_dict"):
        model.load_adapter(tmp_path / "b", adapter_name="c", adapter_state_dict={})
    model.delete_adapter("b")
    assert compacter.tasks(model) == ["a"]


def test_save_pretrained_honours_selected_adapters(tmp_path):
    model = trained_task(name="default")
    compacter.apply(model, "adapter", name="other")
    model.save_pretrained(tmp_path / "one", selected_adapters=["other"])
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["other"]
    with pytest.raises(ValueError, match=r"selected_adapters names \['nope'\]"):
        model.save_pretrained(tmp_path / "two", selected_adapters=["nope"])


def test_loaded_tasks_stay_trainable_unlike_peft_and_serve_without_a_graph(tmp_path):
    """PEFT's PeftModel.from_pretrained freezes a loaded adapter unless is_trainable=True (peft 0.21.2: 0 of 4
    LoRA tensors require grad); a compacter task's parameters are what it trains and saves, so they stay trainable
    (compacter.load has no is_trainable), and serving under inference_mode builds no graph."""
    saved = trained_task()
    compacter.save(saved, tmp_path)
    loaded = compacter.load(tiny_bert(seed=0), tmp_path)
    trained = compacter.trainable_parameters(loaded)
    assert len(trained) == len(compacter.trainable_parameters(saved)) > 0 and all(p.requires_grad for p in trained.values())
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if not n.startswith("compacter."))
    with torch.inference_mode():
        assert not loaded.eval()(input_ids=IDS).logits.requires_grad
    with pytest.raises(ValueError, match=r"is_trainable=False.*never frozen.*inference_mode"):
        loaded.load_adapter(tmp_path, adapter_name="again", is_trainable=False)
    assert compacter.tasks(loaded) == ["default"]


def place_in_cache(monkeypatch, tmp_path, repo_id, folder):
    """A Hub download as huggingface_hub lays it out in its cache (HF_HUB_CACHE), then offline."""
    from huggingface_hub import constants

    commit = "0" * 40
    repo = tmp_path / "cache" / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_hub_ids_resolve_through_the_cache_offline(monkeypatch, tmp_path):
    model = trained_task()
    compacter.apply(model, "adapter", name="second")
    model.save_pretrained(tmp_path / "saved")
    place_in_cache(monkeypatch, tmp_path, "someone/tasks", tmp_path / "saved")
    loaded = compacter.load(tiny_bert(seed=0), "someone/tasks")
    compacter.set_active(model, "default")
    assert torch.equal(logits(loaded), logits(model))
    compacter.load(loaded, "someone/tasks/second")
    compacter.set_active(model, "second")
    assert compacter.tasks(loaded) == ["default", "second"] and torch.equal(logits(loaded), logits(model))
    with pytest.raises(FileNotFoundError, match=r"'someone/missing' is neither a local folder nor in the Hugging "
                                                r"Face cache.*HF_HUB_OFFLINE.*hf download someone/missing"):
        compacter.load(tiny_bert(seed=0), "someone/missing")


def test_push_to_hub_uploads_our_files_with_our_card(monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, repo_id, folder_path, **kwargs):
        shutil.copytree(folder_path, tmp_path / "uploaded")
        uploaded.update(repo_id=repo_id, **kwargs)
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = trained_task()
    model.config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    assert model.push_to_hub("me/sentiment") == "https://huggingface.co/me/sentiment/commit/1"  # transformers' name
    files = sorted(p.name for p in (tmp_path / "uploaded").iterdir())
    assert files == sorted([CONFIG_FILE, WEIGHTS_FILE, "README.md"]) and uploaded["repo_id"] == "me/sentiment"
    card = (tmp_path / "uploaded" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "compacter" and front["pipeline_tag"] == "text-classification"
    assert front["license"] == "apache-2.0" and front["compacter"]["labels"] == ["neg", "neu", "pos"]
    assert 'compacter.load(base_model, "me/sentiment")' in card and "pypi.org/project/compacter-adapters" in card
    shutil.rmtree(tmp_path / "uploaded")
    model.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="me/other")
    assert uploaded["repo_id"] == "me/other" and (tmp_path / "local" / CONFIG_FILE).is_file()


def test_the_card_names_the_task_its_hub_base_and_the_split_of_its_metrics(tmp_path):
    model = trained_task()
    base = tmp_path / "base"
    tiny_bert(seed=0).save_pretrained(base)
    model.name_or_path = str(base)  # a local folder: no Hub id to give
    compacter.save(model, tmp_path / "a", metadata={"validation": {"accuracy": 80.0, "n": 9}, "task": {"name": "sst2"}})
    front = yaml.safe_load((tmp_path / "a" / "README.md").read_text().split("---")[1])
    assert "base_model" not in front and front["compacter"]["task"] == "sst2"
    [result] = front["model-index"][0]["results"]
    assert result["dataset"]["split"] == "validation" and result["metrics"] == [
        {"type": "accuracy", "value": 80.0, "name": "accuracy (validation)"}]
    record_test_metrics(model, tmp_path / "a", {"accuracy": 75.5, "n": 9})
    front = yaml.safe_load((tmp_path / "a" / "README.md").read_text().split("---")[1])
    [result] = front["model-index"][0]["results"]
    assert result["dataset"]["split"] == "test" and result["metrics"][0]["value"] == 75.5
    # only the card: the sealed description keeps what was saved (results.json records the test scores)
    assert "test" not in json.loads((tmp_path / "a" / CONFIG_FILE).read_text())["metadata"]
    model.name_or_path = "google-bert/bert-base-uncased"
    compacter.save(model, tmp_path / "b")
    front = yaml.safe_load((tmp_path / "b" / "README.md").read_text().split("---")[1])
    assert front["base_model"] == "google-bert/bert-base-uncased" and "model-index" not in front


def test_hub_resolve_leaves_local_paths_alone(tmp_path):
    assert hub.resolve(tmp_path) == tmp_path
    assert hub.resolve(str(tmp_path / "missing")) == tmp_path / "missing"


def test_once_every_task_is_off_transformers_own_methods_answer():
    model = trained_task()
    assert model.active_adapters() == ["default"]
    compacter.unload(model)
    with pytest.raises((ValueError, ImportError)) as refused:  # transformers' own answer, as on any model
        model.active_adapters()
    assert "compacter" not in str(refused.value) and "PEFT" in str(refused.value) or "adapter" in str(refused.value)
