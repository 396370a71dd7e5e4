"""Saved adapters handed to compacter.load: every damaged or edited file is refused with a message, and the
model is left exactly as it was (so that a retry with the good file works)."""

import json
import shutil

import pytest
import torch
from conftest import tiny_t5
from safetensors.torch import load_file, save_file

import compacter
from compacter.integrity import seal
from compacter.saving import CONFIG_FILE, CONFIG_SEAL, FORMAT, WEIGHTS_FILE, _sha256


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("adapter")
    model = compacter.apply(tiny_t5(seed=1), "compacter")
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.add_(0.05)
    compacter.save(model, directory)
    return directory


def forge(target, description):
    """Write ``description`` into the adapter in ``target`` as compacter.save would: sealed, and named by the
    weights' header (what a careful forger does; the checks below the seal must still refuse what is wrong)."""
    sealed = seal(description)
    tensors = load_file(str(target / WEIGHTS_FILE))
    save_file(tensors, str(target / WEIGHTS_FILE), metadata={"format": FORMAT, CONFIG_SEAL: sealed["sha256"]})
    (target / CONFIG_FILE).write_text(json.dumps(sealed))


def edited(saved, tmp_path, config=None, weights=None, raw_config=None, raw_weights=None, resaved=None):
    """A copy of the saved adapter with one file changed (``resaved``: tensors changed as if saved that way,
    their checksums recorded)."""
    target = tmp_path / "edited"
    shutil.copytree(saved, target)
    if config is not None:  # edited, and its seal recomputed: what the checks below the seal must catch
        description = json.loads((target / CONFIG_FILE).read_text())
        config(description)
        forge(target, description)
    if raw_config is not None:
        (target / CONFIG_FILE).write_bytes(raw_config)
    if weights is not None:
        tensors = load_file(str(target / WEIGHTS_FILE))
        weights(tensors)
        save_file(tensors, str(target / WEIGHTS_FILE))
    if raw_weights is not None:
        (target / WEIGHTS_FILE).write_bytes(raw_weights((saved / WEIGHTS_FILE).read_bytes()))
    if resaved is not None:
        tensors = load_file(str(target / WEIGHTS_FILE))
        resaved(tensors)
        save_file(tensors, str(target / WEIGHTS_FILE))
        description = json.loads((target / CONFIG_FILE).read_text())
        for key, tensor in tensors.items():
            description["tensors"][key]["sha256"] = _sha256(tensor)
            description["tensors"][key]["dtype"] = str(tensor.dtype).removeprefix("torch.")
        forge(target, description)
    return target


def set_method(key, value):
    def edit(description):
        description["method"][key] = value
    return edit


def flip_a_byte(data: bytes) -> bytes:
    middle = len(data) - 100  # inside the last tensor's values
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


CASES = {
    "truncated safetensors": ({"raw_weights": lambda data: data[: len(data) // 2]},
                              r"could not be read as safetensors .*truncated or damaged"),
    "not safetensors at all": ({"raw_weights": lambda data: b"not a tensor file"}, r"could not be read as safetensors"),
    "a flipped byte": ({"raw_weights": flip_a_byte}, r"does not match the checksum recorded in compacter_config.json"),
    "NaN values (a diverged run)": ({"resaved": lambda t: t["down.s"].fill_(float("nan"))},
                                    r"down.s' holds NaN or infinite values"),
    "infinite values": ({"resaved": lambda t: t["up.bias"].fill_(float("inf"))}, r"holds NaN or infinite values"),
    "a tensor removed": ({"weights": lambda t: t.pop("up.bias")}, r"does not hold the tensors compacter_config.json lists"),
    "config not JSON": ({"raw_config": b"{not json"}, r"compacter_config.json is not valid JSON"),
    "config not UTF-8": ({"raw_config": b"\xff\xfe\x00garbage"}, r"is not UTF-8 text"),
    "config a list": ({"raw_config": b"[1, 2]"}, r"must hold a JSON object, not list"),
    "n: 0": ({"config": set_method("n", 0)}, r"its method config is not valid .*n"),
    "n: 3 (does not divide)": ({"config": set_method("n", 3)}, r"n=3 does not divide"),
    "an unknown kind": ({"config": set_method("kind", "dora")}, r"Unknown method kind 'dora'"),
    "an extra field": ({"config": set_method("dropout", 0.1)}, r"its method config is not valid .*dropout"),
    "a string where a number belongs": ({"config": set_method("rank", "one")}, r"method config is not valid .*rank"),
    "method missing": ({"config": lambda d: d.pop("method")}, r"'method' must be a JSON object, but it is missing"),
    "tensors missing": ({"config": lambda d: d.pop("tensors")}, r"'tensors' must be a JSON object"),
    "another format": ({"config": lambda d: d.update(format="peft")},
                       r"is of format 'peft', not a task saved by compacter \(format 'compacter-adapter/2'\)"),
    "another base model": ({"config": lambda d: d["base_model"].update(num_layers=3)},
                           r"trained on a different base model[\s\S]*num_layers: saved for 3, this model has 2"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_adapter_is_refused_and_the_model_is_unchanged(case, saved, tmp_path):
    edits, message = CASES[case]
    directory = edited(saved, tmp_path, **edits)
    model = tiny_t5(seed=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    with pytest.raises(ValueError, match=message):
        compacter.load(model, directory)
    assert not hasattr(model, "compacter") and dict(model.named_modules()).keys() == modules.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in vars(m) for m in model.modules())
    compacter.load(model, saved)  # the retry with the good file is not refused
    assert compacter.tasks(model) == ["default"]


def test_a_bad_second_task_leaves_the_first_in_place(saved, tmp_path):
    model = compacter.load(tiny_t5(seed=1), saved)
    batch = {"input_ids": torch.ones(1, 4, dtype=torch.long), "decoder_input_ids": torch.zeros(1, 2, dtype=torch.long)}
    with torch.no_grad():
        before = model(**batch).logits
    broken = edited(saved, tmp_path, raw_weights=flip_a_byte)
    with pytest.raises(ValueError, match="checksum"):
        compacter.load(model, broken, name="second")
    with pytest.raises(ValueError, match="has shape .* the file was not written for this model"):  # taken off again
        compacter.load(model, edited(saved, tmp_path / "n2", config=set_method("rank", 2),
                                     weights=None), name="third")
    assert compacter.tasks(model) == ["default"]
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)


def test_a_bad_in_place_task_is_taken_off_again(tmp_path):
    """Tasks that train the base in place (bitfit adds biases) are rolled back to the base's structure."""
    model = compacter.apply(tiny_t5(), "bitfit")
    compacter.save(model, tmp_path / "bitfit")
    description = json.loads((tmp_path / "bitfit" / CONFIG_FILE).read_text())
    description["method"]["train_layer_norms"] = True  # the file lacks the layer norms this config trains
    forge(tmp_path / "bitfit", description)
    base = tiny_t5()
    names = set(dict(base.named_parameters()))
    with pytest.raises(ValueError, match=r"do not match the method's: missing \['model.decoder.block.0.layer.0"):
        compacter.load(base, tmp_path / "bitfit")
    assert set(dict(base.named_parameters())) == names and not hasattr(base, "compacter")
    assert not any(p.requires_grad is False for p in base.parameters())  # the base's own flags, as they were
    assert all(not m._forward_hooks and not m._forward_pre_hooks and "forward" not in vars(m) for m in base.modules())
