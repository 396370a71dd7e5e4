"""Tiny per-task files: round trips, and refusal of a base model they do not fit."""

import json

import pytest
import torch
from conftest import tiny_bert, tiny_t5
from test_methods import SMALL_MODEL_OVERRIDES, train_steps

import compacter
from compacter.saving import CONFIG_FILE, WEIGHTS_FILE


@pytest.mark.parametrize("method", ["compacter", "compacter++", "phm-adapter", "adapter-lowrank", "bitfit"])
def test_round_trip_gives_bit_identical_outputs(method, seq2seq_batch, tmp_path):
    model = compacter.apply(tiny_t5(seed=3), method, **SMALL_MODEL_OVERRIDES.get(method, {}))
    train_steps(model, seq2seq_batch, steps=3)
    model.eval()
    compacter.save(model, tmp_path / "task")
    loaded = compacter.load(tiny_t5(seed=3), tmp_path / "task")
    with torch.no_grad():
        assert torch.equal(model(**seq2seq_batch).logits, loaded(**seq2seq_batch).logits)
    assert torch.equal(model.generate(input_ids=seq2seq_batch["input_ids"], max_new_tokens=4),
                       loaded.generate(input_ids=seq2seq_batch["input_ids"], max_new_tokens=4))
    saved = json.loads((tmp_path / "task" / CONFIG_FILE).read_text())
    assert saved["method"]["name"] == method


def test_file_holds_only_trained_parameters(tmp_path):
    model = compacter.apply(tiny_t5(), "compacter++")
    compacter.save(model, tmp_path)
    from safetensors.torch import load_file
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert sum(t.numel() for t in tensors.values()) == compacter.count_parameters(model).trainable
    assert set(tensors) == {name.removeprefix("compacter.tasks.default.") for name in compacter.trainable_parameters(model)}
    assert {"down.s", "up.t", "shared.A", "base.encoder.final_layer_norm.weight"} <= set(tensors)


def test_classifier_round_trip(tmp_path):
    model = compacter.apply(tiny_bert(seed=1), "compacter")
    with torch.no_grad():
        model.classifier.weight.normal_()
    compacter.save(model, tmp_path)
    loaded = compacter.load(tiny_bert(seed=1), tmp_path)
    ids = torch.randint(2, 128, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_mismatched_base_model_is_refused_with_the_difference(tmp_path):
    compacter.save(compacter.apply(tiny_t5(), "compacter"), tmp_path)
    with pytest.raises(ValueError, match=r"different base model[\s\S]*num_layers: saved for 2, this model has 3"):
        compacter.load(tiny_t5(num_layers=3, num_decoder_layers=3), tmp_path)
    with pytest.raises(ValueError, match=r"model_type: saved for 't5', this model has 'bert'"):
        compacter.load(tiny_bert(), tmp_path)
    with pytest.raises(ValueError, match="already has a task named 'default'"):
        compacter.load(compacter.apply(tiny_t5(), "adapter"), tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder written by compacter.save"):
        compacter.load(tiny_t5(), tmp_path / "missing")


def test_save_replaces_files_atomically(tmp_path):
    model = compacter.apply(tiny_t5(), "compacter")
    compacter.save(model, tmp_path)
    compacter.save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE, "README.md"])


def test_saved_files_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os
    compacter.save(compacter.apply(tiny_t5(), "compacter"), tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / WEIGHTS_FILE).stat().st_mode & 0o777 == 0o666 & ~mask
