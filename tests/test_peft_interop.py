"""PEFT's LoRA and (IA)^3 folders read and written without peft, checked against folders and outputs PEFT itself wrote
(tests/fixtures/peft, made by make_fixtures.py there)."""

import json
import shutil

import pytest
import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from conftest import tiny_bert, tiny_t5
from peft_fixtures import BUILDERS, METHODS, fixture_folder, state_dict_sha256

from compacter.interop.peft import PeftAdapter, read_peft_folder, write_peft_folder

FIXTURES = [(model, method) for model in BUILDERS for method in METHODS]
FIXTURE_IDS = [f"{model}-{method}" for model, method in FIXTURES]
# PEFT's default targets per model type, as the last parts of module names (feed-forward: input scaled).
DEFAULT_TARGETS = {
    ("t5", "lora"): ({"q", "v"}, set()), ("t5", "ia3"): ({"k", "v", "wo"}, {"wo"}),
    ("bert", "lora"): ({"query", "value"}, set()),
    ("bert", "ia3"): ({"key", "value", "output.dense"}, {"output.dense"}),  # attention.output.dense as well
    ("llama", "lora"): ({"q_proj", "v_proj"}, set()),
    ("llama", "ia3"): ({"k_proj", "v_proj", "down_proj"}, {"down_proj"}),
}


def recorded(model: str, method: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = fixture_folder(model, method) / "outputs.safetensors"
    with safetensors.safe_open(path, "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()


def ends_with_any(name: str, suffixes: set[str]) -> bool:
    return any(name == suffix or name.endswith(f".{suffix}") for suffix in suffixes)


def attach_with_hooks(model: torch.nn.Module, adapter: PeftAdapter) -> None:
    """The adapter's math as plain hooks on the base, independent of compacter's forward path."""
    modules = dict(model.named_modules())
    for name in adapter.targets:
        weights = adapter.weights[name]
        if adapter.method == "lora":
            def lora(module, args, output, a=weights["lora_A"], b=weights["lora_B"], scaling=adapter.scaling[name]):
                return output + F.linear(F.linear(args[0], a), b) * scaling
            modules[name].register_forward_hook(lora)
        elif name in adapter.feedforward:
            modules[name].register_forward_pre_hook(lambda module, args, scale=weights["ia3_l"]: (args[0] * scale,))
        else:
            modules[name].register_forward_hook(lambda module, args, output, scale=weights["ia3_l"]: output * scale)
    with torch.no_grad():
        for name, tensor in adapter.modules_to_save.items():
            model.get_parameter(name).copy_(tensor)


@pytest.mark.parametrize("model_name", list(BUILDERS))
def test_conftest_rebuilds_the_base_peft_wrapped(model_name):
    for method in METHODS:
        assert state_dict_sha256(BUILDERS[model_name]()) == recorded(model_name, method)[1]["base_sha256"]


@pytest.mark.parametrize(("model_name", "method"), FIXTURES, ids=FIXTURE_IDS)
def test_reads_names_and_shapes(model_name, method):
    model = BUILDERS[model_name]()
    adapter = read_peft_folder(fixture_folder(model_name, method), model=model)
    targets, feedforward = DEFAULT_TARGETS[model_name, method]
    linears = {name: module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    assert adapter.method == method
    assert adapter.targets == sorted(name for name in linears if ends_with_any(name, targets))
    for name in adapter.targets:
        layer = linears[name]
        if method == "lora":
            assert adapter.weights[name]["lora_A"].shape == (8, layer.in_features)
            assert adapter.weights[name]["lora_B"].shape == (layer.out_features, 8)
            assert adapter.scaling[name] == 16 / 8
        else:
            scaled_input = name.endswith(tuple(feedforward))  # PEFT's own rule: no dot needed
            assert (name in adapter.feedforward) == scaled_input
            size = layer.in_features if scaled_input else layer.out_features
            assert adapter.weights[name]["ia3_l"].shape == (size,)
    if model_name == "bert":
        assert {name: tuple(t.shape) for name, t in adapter.modules_to_save.items()} == {
            "classifier.weight": (3, 128), "classifier.bias": (3,)}
        assert adapter.task_type == "SEQ_CLS"
    else:
        assert adapter.modules_to_save == {}


@pytest.mark.parametrize(("model_name", "method"), FIXTURES, ids=FIXTURE_IDS)
def test_plain_hooks_with_the_read_weights_give_peft_outputs(model_name, method):
    expected, metadata = recorded(model_name, method)
    inputs = {key: expected[key] for key in ("input_ids", "attention_mask", "decoder_input_ids") if key in expected}
    model = BUILDERS[model_name]()
    with torch.no_grad():
        base_logits = model(**inputs).logits
    attach_with_hooks(model, read_peft_folder(fixture_folder(model_name, method)))
    with torch.no_grad():
        logits = model(**inputs).logits
        assert (base_logits - expected["logits"]).abs().max() > 1e-2  # the adapter matters: this test can fail
        torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-5)
        if "generated" in expected:
            prompt = {key: inputs[key] for key in ("input_ids", "attention_mask")}
            generated = model.generate(**prompt, **json.loads(metadata["generate"]))
            assert torch.equal(generated, expected["generated"])


def assert_same_adapter(first: PeftAdapter, second: PeftAdapter) -> None:
    assert (first.method, first.targets, first.alpha, first.use_rslora, first.feedforward, first.task_type,
            first.base_model_name_or_path) == (second.method, second.targets, second.alpha, second.use_rslora,
                                               second.feedforward, second.task_type, second.base_model_name_or_path)
    for module in first.targets:
        assert first.weights[module].keys() == second.weights[module].keys()
        for kind, tensor in first.weights[module].items():
            assert tensor.dtype == second.weights[module][kind].dtype
            assert torch.equal(tensor, second.weights[module][kind])
    assert first.modules_to_save.keys() == second.modules_to_save.keys()
    assert all(torch.equal(t, second.modules_to_save[name]) for name, t in first.modules_to_save.items())


@pytest.mark.parametrize(("model_name", "method"), FIXTURES, ids=FIXTURE_IDS)
def test_round_trip_is_bit_identical_and_keeps_peft_layout(model_name, method, tmp_path):
    original = read_peft_folder(fixture_folder(model_name, method))
    written = write_peft_folder(tmp_path / "out", original)
    assert_same_adapter(read_peft_folder(written, model=BUILDERS[model_name]()), original)
    # Same keys, shapes and bytes as the file PEFT wrote.
    peft_file = safetensors.torch.load_file(fixture_folder(model_name, method) / "adapter_model.safetensors")
    ours = safetensors.torch.load_file(written / "adapter_model.safetensors")
    assert ours.keys() == peft_file.keys()
    assert all(torch.equal(ours[key], peft_file[key]) for key in ours)
    config = json.loads((written / "adapter_config.json").read_text())
    assert config["peft_type"] == method.upper() and config["task_type"] == original.task_type


def test_rank_and_alpha_patterns_and_rslora_round_trip(tmp_path):
    folder = copy_fixture("t5-lora", tmp_path, config={"rank_pattern": {"SelfAttention.q": 4},
                                                       "alpha_pattern": {"v": 4}, "use_rslora": True},
                          tensors=lambda t: {k: v[:4] if "SelfAttention.q.lora_A" in k else
                                             v[:, :4] if "SelfAttention.q.lora_B" in k else v for k, v in t.items()})
    adapter = read_peft_folder(folder, model=tiny_t5())
    query, value = "encoder.block.0.layer.0.SelfAttention.q", "encoder.block.0.layer.0.SelfAttention.v"
    cross_query = "decoder.block.0.layer.1.EncDecAttention.q"
    assert (adapter.rank[query], adapter.rank[value], adapter.rank[cross_query]) == (4, 8, 8)
    assert adapter.scaling[query] == 16 / 4 ** 0.5 and adapter.scaling[value] == 4 / 8 ** 0.5
    assert adapter.scaling[cross_query] == 16 / 8 ** 0.5
    assert_same_adapter(read_peft_folder(write_peft_folder(tmp_path / "out", adapter)), adapter)


def copy_fixture(name: str, tmp_path, config: dict | None = None, tensors=None, drop_weights: bool = False):
    """A fixture folder copied into tmp_path, with config entries replaced and tensors rewritten."""
    folder = tmp_path / name
    shutil.copytree(fixture_folder(*name.split("-")), folder)
    if config:
        settings = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**settings, **config}))
    if tensors:
        weights = tensors(safetensors.torch.load_file(folder / "adapter_model.safetensors"))
        safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()}, folder / "adapter_model.safetensors")
    if drop_weights:
        (folder / "adapter_model.safetensors").unlink()
    return folder


QUERY_A = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight"
QUERY_B = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_B.weight"


def renamed(old: str, new: str):
    return lambda t: {new if k == old else k: v for k, v in t.items()}


@pytest.mark.parametrize(("name", "changes", "message"), [
    ("t5-lora", {"config": {"peft_type": "PREFIX_TUNING"}}, "'PREFIX_TUNING' adapter; compacter reads PEFT's LORA and IA3"),
    ("t5-lora", {"config": {"peft_type": None}}, "no 'peft_type'.*compacter.load"),
    ("t5-lora", {"config": {"use_dora": True}}, "use_dora=True.*DoRA"),
    ("t5-lora", {"config": {"bias": "all"}}, "bias='all'.*biases"),
    ("t5-lora", {"config": {"layer_replication": [[0, 2]]}}, "layer_replication"),
    ("t5-lora", {"config": {"init_lora_weights": "pissa_niter_4"}}, "rewrites the base weights.*conversion"),
    ("t5-lora", {"config": {"r": 4}}, "SelfAttention.q'.*rank r=4"),
    ("t5-lora", {"config": {"target_modules": ["q"]}}, "SelfAttention.v', which target_modules"),
    ("t5-lora", {"config": {"target_modules": ".*SelfAttention\\.(q|v)"}}, "EncDecAttention.q', which target_modules"),
    ("t5-lora", {"tensors": lambda t: {k: v for k, v in t.items() if k != QUERY_B}}, "no lora_B for 'encoder.block.0"),
    ("t5-lora", {"tensors": renamed(QUERY_A, QUERY_A.replace("lora_A", "lora_embedding_A"))}, "does not read"),
    ("t5-lora", {"tensors": renamed(QUERY_A, QUERY_A.removeprefix("base_model.model."))}, "lacks PEFT's"),
    ("t5-lora", {"tensors": lambda t: {**t, "base_model.model.lm_head.weight": torch.zeros(128, 128)}},
     "neither a lora weight nor a parameter of modules_to_save"),
    ("t5-lora", {"tensors": lambda t: {**t, QUERY_A: t[QUERY_A][:, :, None, None]}}, "Linear layers only"),
    ("t5-ia3", {"config": {"feedforward_modules": []}}, "DenseReluDense.wo'.*an attention module"),
])
def test_refuses_folders_it_cannot_reproduce(tmp_path, name, changes, message):
    with pytest.raises(ValueError, match=message):
        read_peft_folder(copy_fixture(name, tmp_path, **changes))


def test_refuses_missing_folders_and_pickled_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder at"):
        read_peft_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json: it is not a PEFT adapter folder.$"):
        read_peft_folder(tmp_path / "empty")
    shutil.copytree(fixture_folder("t5", "lora"), tmp_path / "named" / "summaries")  # save_pretrained of a named adapter
    with pytest.raises(FileNotFoundError, match=r"sub-folders \['summaries'\]: pass one of those"):
        read_peft_folder(tmp_path / "named")
    folder = copy_fixture("t5-lora", tmp_path, drop_weights=True)
    with pytest.raises(FileNotFoundError, match="holds no adapter_model.safetensors"):
        read_peft_folder(folder)
    (folder / "adapter_model.bin").write_bytes(b"a pickle compacter must never unpickle")
    with pytest.raises(FileNotFoundError, match="safetensors only.*pickle.*save_pretrained"):
        read_peft_folder(folder)


def test_refuses_weights_that_do_not_fit_the_model(tmp_path):
    narrow = copy_fixture("t5-lora", tmp_path, tensors=lambda t: {**t, QUERY_A: t[QUERY_A][:, :64]})
    read_peft_folder(narrow)  # consistent in itself: only the model can tell
    with pytest.raises(ValueError, match=r"lora_A of 'encoder.block.0.layer.0.SelfAttention.q' has shape \(8, 64\)"):
        read_peft_folder(narrow, model=tiny_t5())
    absent = QUERY_A.replace("block.0", "block.7")
    move_query = renamed(QUERY_A, absent), renamed(QUERY_B, absent.replace("lora_A", "lora_B"))
    no_module = copy_fixture("t5-lora", tmp_path / "b", tensors=lambda t: move_query[1](move_query[0](t)))
    with pytest.raises(ValueError, match="adapts 'encoder.block.7.layer.0.SelfAttention.q', which this "
                                         "T5ForConditionalGeneration does not have"):
        read_peft_folder(no_module, model=tiny_t5())
    with pytest.raises(ValueError, match=r"'classifier.bias' has shape \(3,\), the model's \(2,\).*num_labels"):
        read_peft_folder(fixture_folder("bert", "lora"), model=tiny_bert(num_labels=2))


def test_write_refuses_an_unknown_task_type(tmp_path):
    adapter = read_peft_folder(fixture_folder("llama", "lora"))
    with pytest.raises(ValueError, match="task_type 'CLASSIFY' is not one of PEFT's task types"):
        write_peft_folder(tmp_path, adapter, task_type="CLASSIFY")
