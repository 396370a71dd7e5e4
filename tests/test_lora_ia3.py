"""LoRA and (IA)³: the same outputs as PEFT for the same weights (PEFT's own folders and outputs, tests/fixtures/peft),
PEFT's parameter counts, and everything a compacter task does: save and load, named tasks, mixed batches."""

import pytest
import safetensors
import safetensors.torch
import torch
from conftest import tiny_bert, tiny_t5
from peft_fixtures import BUILDERS, GENERATE, METHODS, fixture_folder

import compacter
from compacter.interop.peft import read_peft_folder
from compacter.interop.peft_tasks import export_peft

FIXTURES = [(model, method) for model in BUILDERS for method in METHODS]
IDS = [f"{model}-{method}" for model, method in FIXTURES]


def recorded(model: str, method: str) -> dict[str, torch.Tensor]:
    with safetensors.safe_open(fixture_folder(model, method) / "outputs.safetensors", "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def inputs_of(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: outputs[key] for key in ("input_ids", "attention_mask", "decoder_input_ids") if key in outputs}


@pytest.mark.parametrize("model_name,method", FIXTURES, ids=IDS)
def test_a_peft_folder_loads_as_a_task_with_peft_outputs(model_name, method):
    expected = recorded(model_name, method)
    model = compacter.load(BUILDERS[model_name](), fixture_folder(model_name, method), name="peft").eval()
    assert compacter.attached_config(model).kind == method
    with torch.no_grad():
        logits = model(**inputs_of(expected)).logits
        torch.testing.assert_close(logits, expected["logits"], rtol=1e-5, atol=1e-5)
        with compacter.disabled(model):  # the adapter matters: the base alone is far from PEFT's outputs
            assert not torch.allclose(model(**inputs_of(expected)).logits, expected["logits"], atol=1e-2)
        if "generated" in expected:
            generated = model.generate(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"],
                                       **GENERATE)
            assert torch.equal(generated, expected["generated"])


@pytest.mark.parametrize("model_name,method", FIXTURES, ids=IDS)
def test_trained_parameters_are_peft_counts(model_name, method):
    """PEFT's count is the number of values in its saved file (adapter weights and the head it saves whole)."""
    saved = safetensors.torch.load_file(fixture_folder(model_name, method) / "adapter_model.safetensors")
    model = compacter.apply(BUILDERS[model_name](), method)
    assert compacter.count_parameters(model).trainable == sum(t.numel() for t in saved.values())


@pytest.mark.parametrize("model_name,method", FIXTURES, ids=IDS)
def test_export_to_peft_round_trips_bit_for_bit(model_name, method, tmp_path):
    folder = fixture_folder(model_name, method)
    model = compacter.load(BUILDERS[model_name](), folder, name="peft")
    export_peft(model, tmp_path / "out")
    original, exported = read_peft_folder(folder), read_peft_folder(tmp_path / "out")
    assert exported.weights.keys() == original.weights.keys() and exported.feedforward == original.feedforward
    for module, pair in original.weights.items():
        for kind, tensor in pair.items():
            assert torch.equal(exported.weights[module][kind].flatten(), tensor.flatten()), (module, kind)
    assert exported.modules_to_save.keys() == original.modules_to_save.keys()
    assert all(torch.equal(exported.modules_to_save[k], v) for k, v in original.modules_to_save.items())
    assert set(exported.scaling.values()) <= set(original.scaling.values())


def test_a_peft_lora_and_a_compacter_task_share_one_batch_row_by_row():
    expected = recorded("t5", "lora")
    model = compacter.load(tiny_t5(), fixture_folder("t5", "lora"), name="lora")
    compacter.apply(model, "compacter++", name="cpp")
    with torch.no_grad():
        for param in compacter.trainable_parameters(model, "cpp").values():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())))
    model.eval()
    ids, decoder_ids = expected["input_ids"], expected["decoder_input_ids"]
    rows = ["lora", "cpp"] * (ids.shape[0] // 2) + ["lora"] * (ids.shape[0] % 2)
    with torch.no_grad(), compacter.route(model, rows):
        mixed = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
    for i, task in enumerate(rows):
        compacter.set_active(model, task)
        with torch.no_grad():
            own = model(input_ids=ids[i: i + 1], decoder_input_ids=decoder_ids[i: i + 1]).logits
        torch.testing.assert_close(mixed[i: i + 1], own, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[0], expected["logits"][0], rtol=1e-5, atol=1e-5)  # PEFT's own row 0


@pytest.mark.parametrize("method", METHODS)
def test_a_trained_task_saves_loads_and_unloads_like_any_other(method, tmp_path):
    base = tiny_bert()
    reference = {k: v.clone() for k, v in base.state_dict().items()}
    model = compacter.apply(base, method)
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(1)))
    ids = torch.randint(2, 128, (3, 7), generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids).logits
    compacter.save(model, tmp_path)
    loaded = compacter.load(tiny_bert(), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, out)
    compacter.unload(model)
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def test_a_folder_of_a_peft_method_compacter_lacks_is_refused_and_nothing_attaches(tmp_path):
    folder = tmp_path / "prefix"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "PREFIX_TUNING", "task_type": "SEQ_2_SEQ_LM"}')
    model = compacter.apply(tiny_t5(), "compacter++", name="kept")
    with pytest.raises(ValueError, match="PREFIX_TUNING"):
        compacter.load(model, folder)
    assert compacter.tasks(model) == ["kept"]
    wrong = tiny_bert(num_labels=5)  # PEFT's BERT folder saved a 3-label classifier
    with pytest.raises(ValueError, match="num_labels"):
        compacter.load(wrong, fixture_folder("bert", "lora"))
    assert compacter.tasks(wrong) == []


def test_lora_settings_are_checked():
    with pytest.raises(ValueError, match="target_modules=\\['nope'\\] matches no module"):
        compacter.apply(tiny_t5(), "lora", target_modules=["nope"])
    with pytest.raises(ValueError, match="not both"):
        compacter.apply(tiny_t5(), "lora", target_modules=["q"], target_pattern=".*q")
    with pytest.raises(ValueError, match="only linear layers"):
        compacter.apply(tiny_t5(), "lora", target_modules=["SelfAttention"])
    model = compacter.apply(tiny_t5(), "lora", r=4, target_pattern=r".*SelfAttention\.(q|k)")
    sites = sorted(next(iter(model.compacter.task().sites.values())))
    assert sites and all(s.endswith(("SelfAttention.q", "SelfAttention.k")) for s in sites)
