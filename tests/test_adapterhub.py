"""AdapterHub folders (written by adapters 1.3 + transformers 4.57: tests/fixtures/adapterhub/make_fixtures.py)
load with AdapterHub's own outputs, and our export loads back bit-identically. No `adapters` import here."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers

import compacter
from compacter.methods.adapters import BOTTLENECK

FIXTURES = Path(__file__).parent / "fixtures" / "adapterhub"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
INPUTS = {"input_ids": torch.tensor(EXPECTED["input_ids"]), "attention_mask": torch.tensor(EXPECTED["attention_mask"])}


def outputs(model, kind):
    with torch.no_grad():
        output = model.eval()(**INPUTS)
    return output.logits if kind == "logits" else output.last_hidden_state


ADAPTERHUB_FOLDERS = ["compacter", "compacter_shared_rule", "compacterpp", "phm", "houlsby", "pfeiffer",
                      "pfeiffer_both_sublayers", "houlsby_pooled_head", "houlsby_head"]
# AdapterHub's original_ln_before=True: the adapter reads LN(h + x)
READS_NORMED_SUM = {"compacterpp", "pfeiffer", "pfeiffer_both_sublayers"}


@pytest.mark.parametrize("folder", ADAPTERHUB_FOLDERS)
def test_adapterhub_folders_give_adapterhubs_outputs(folder):
    model = compacter.from_pretrained(FIXTURES / "base", FIXTURES / folder)
    recorded = EXPECTED["outputs"][folder]
    expected = torch.tensor(recorded["values"])
    actual = outputs(model, recorded["kind"])
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    base = transformers.AutoModel.from_pretrained(FIXTURES / "base")
    if recorded["kind"] == "last_hidden_state":  # the adapter is in the path: the base alone differs
        assert (outputs(base, "last_hidden_state") - expected).abs().max() > 1e-2
    assert compacter.tasks(model) == [folder]
    adapter_input = "layer_normed_sum" if folder in READS_NORMED_SUM else "sublayer_output"
    assert compacter.attached_config(model, folder).adapter_input == adapter_input


def test_the_mapping_is_the_one_the_module_docstring_states():
    """AdapterHub's PHM: y = x @ H + b, H = Σ rule_i ⊗ (W_left_i W_right_i); ours F.linear with W = Hᵀ."""
    tensors = torch.load(FIXTURES / "compacter" / "pytorch_adapter.bin", weights_only=True)
    stem = "bert.encoder.layer.1.output.adapters.compacter.adapter_down.0."
    rule, left, right, bias = (tensors[stem + k].double() for k in ("phm_rule", "W_left", "W_right", "b"))
    H = sum(torch.kron(rule[i], left[i] @ right[i]) for i in range(rule.shape[0]))
    model = compacter.from_pretrained(FIXTURES / "base", FIXTURES / "compacter")
    slot = model.compacter.tasks["compacter"].sites[BOTTLENECK]["encoder.layer.1.output.dense"]
    weights, biases = slot.down.build()
    assert torch.allclose(weights[slot.index].double(), H.T, atol=1e-6)
    assert torch.equal(biases[slot.index], bias.float())


def test_a_residual_after_the_layer_norm_is_refused_naming_the_option(tmp_path):
    """original_ln_before=True with residual_before_ln="post_add" (the residual is h + x): no counterpart."""
    folder = tmp_path / "post_add"
    shutil.copytree(FIXTURES / "pfeiffer", folder)
    description = json.loads((folder / "adapter_config.json").read_text())
    description["config"]["residual_before_ln"] = "post_add"
    (folder / "adapter_config.json").write_text(json.dumps(description))
    base = transformers.AutoModel.from_pretrained(FIXTURES / "base")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.raises(ValueError, match=r"option residual_before_ln='post_add' has no counterpart in compacter"):
        compacter.load(base, folder)
    assert not hasattr(base, "compacter") and all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in base.modules())


def test_a_shared_rule_folder_without_its_rule_is_refused(tmp_path):
    folder = tmp_path / "no_rule"
    shutil.copytree(FIXTURES / "compacter_shared_rule", folder)
    tensors = torch.load(folder / "pytorch_adapter.bin", weights_only=True)
    torch.save({k: v for k, v in tensors.items() if "shared_parameters" not in k}, folder / "pytorch_adapter.bin")
    with pytest.raises(ValueError, match=r"shared_phm_rule=True, but it does not hold the shared PHM rule"):
        compacter.load(transformers.AutoModel.from_pretrained(FIXTURES / "base"), folder)


def test_the_default_two_layer_head_runs_as_a_pooler_of_the_tasks_own():
    """AdapterHub's layers=2, use_pooler=False head: its first linear is the task's copy of pooler.dense (the base's
    stays as it was), its last the classifier; next to a layers=1 head on the base's pooler in one routed batch."""
    model = compacter.from_pretrained(FIXTURES / "base", FIXTURES / "houlsby_head")
    compacter.load(model, FIXTURES / "houlsby_pooled_head")
    head = torch.load(FIXTURES / "houlsby_head" / "pytorch_model_head.bin", weights_only=True)
    copies = model.compacter.tasks["houlsby_head"].base_copies
    assert torch.equal(copies["bert.pooler.dense.weight"], head["heads.houlsby_head.1.weight"])
    assert torch.equal(copies["classifier.weight"], head["heads.houlsby_head.4.weight"])
    assert "bert.pooler.dense.weight" not in model.compacter.tasks["houlsby_pooled_head"].base_copies
    base = transformers.AutoModel.from_pretrained(FIXTURES / "base")
    assert torch.equal(model.bert.pooler.dense.weight, base.pooler.dense.weight)
    rows = ["houlsby_head", "houlsby_pooled_head"]
    with compacter.route(model, rows):
        mixed = outputs(model, "logits")
    for i, folder in enumerate(rows):
        expected = torch.tensor(EXPECTED["outputs"][folder]["values"])[i]
        torch.testing.assert_close(mixed[i], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("option,value,named", [("layers", 3, "layers=3, use_pooler=False"),
                                                ("activation_function", "relu", "activation_function='relu'"),
                                                ("use_pooler", True, "layers=2, use_pooler=True"),
                                                ("head_type", "tagging", "head_type='tagging'")])
def test_a_head_option_without_counterpart_is_refused_naming_it(tmp_path, option, value, named):
    folder = tmp_path / "head"
    shutil.copytree(FIXTURES / "houlsby_head", folder)
    description = json.loads((folder / "head_config.json").read_text())
    description["config"][option] = value
    (folder / "head_config.json").write_text(json.dumps(description))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(FIXTURES / "base", num_labels=3)
    with pytest.raises(ValueError, match=rf"head option {re.escape(named)} has no counterpart .* without head_config"):
        compacter.load(model, folder)
    assert not hasattr(model, "compacter") and not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


def test_a_pickle_that_is_more_than_tensors_is_refused(tmp_path):
    folder = tmp_path / "evil"
    shutil.copytree(FIXTURES / "houlsby_pooled_head", folder)
    torch.save({"x": torch.zeros(1), "code": compacter.load}, folder / "pytorch_adapter.bin")
    with pytest.raises(ValueError, match="could not be read as tensors"):
        compacter.from_pretrained(FIXTURES / "base", folder)


def test_an_option_without_counterpart_is_refused(tmp_path):
    folder = tmp_path / "gated"
    shutil.copytree(FIXTURES / "houlsby", folder)
    description = json.loads((folder / "adapter_config.json").read_text())
    description["config"]["use_gating"] = True
    (folder / "adapter_config.json").write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"option use_gating=True has no counterpart in compacter"):
        compacter.load(transformers.AutoModel.from_pretrained(FIXTURES / "base"), folder)


@pytest.mark.parametrize("folder", ADAPTERHUB_FOLDERS)
def test_export_loads_back_bit_identically(folder, tmp_path):
    model = compacter.from_pretrained(FIXTURES / "base", FIXTURES / folder)
    kind = EXPECTED["outputs"][folder]["kind"]
    if kind == "logits":
        with pytest.raises(ValueError, match=r"trained its own (classifier|bert\.pooler\.dense)\.weight"):
            compacter.export(model, tmp_path / "out", format="adapterhub")
        return
    compacter.export(model, tmp_path / "out", format="adapterhub")
    written = json.loads((tmp_path / "out" / "adapter_config.json").read_text())["config"]
    assert written["original_ln_before"] is (folder in READS_NORMED_SUM)
    again = compacter.load(transformers.AutoModel.from_pretrained(FIXTURES / "base"), tmp_path / "out")
    assert torch.equal(outputs(again, kind), outputs(model, kind))


def test_export_of_a_task_with_trained_layer_norms_is_refused(tmp_path):
    model = compacter.apply(transformers.AutoModel.from_pretrained(FIXTURES / "base"), "compacter", bottleneck_size=8)
    with torch.no_grad():
        model.compacter.tasks["default"].base_copies["encoder.layer.0.output.LayerNorm.weight"].add_(0.1)
    with pytest.raises(ValueError, match=r"trained its own encoder.layer.0.output.LayerNorm.weight"):
        compacter.export(model, tmp_path / "out")


@pytest.mark.parametrize("folder", ["exported", "exported_normed_sum"])
def test_exported_tasks_are_the_ones_adapterhub_read(folder):
    """tests/fixtures/adapterhub/exported*: our exports (make_exported.py) of a compacter task (shared A) and of
    adapters that read LN(h + x) at both sublayers, their outputs recorded by us; check_export.py (run with adapters
    installed) loaded them in AdapterHub and wrote the same."""
    recorded = json.loads((FIXTURES / folder / "outputs.json").read_text())
    model = compacter.load(transformers.AutoModel.from_pretrained(FIXTURES / "base"), FIXTURES / folder)
    ours, theirs = torch.tensor(recorded["compacter"]), torch.tensor(recorded["adapterhub"])
    assert torch.equal(outputs(model, "last_hidden_state"), ours)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    base = transformers.AutoModel.from_pretrained(FIXTURES / "base")
    assert (outputs(base, "last_hidden_state") - theirs).abs().max() > 1e-2  # AdapterHub ran the adapter


def adapterhub_projection(tensors, stem):
    """x ↦ AdapterHub's projection at ``stem``: nn.Linear's, or its PHM layer's x @ Σ rule_i ⊗ W_left_i W_right_i + b."""
    if stem + "weight" in tensors:
        return lambda x: torch.nn.functional.linear(x, tensors[stem + "weight"], tensors[stem + "bias"])
    rule, left, right = tensors[stem + "phm_rule"], tensors[stem + "W_left"], tensors[stem + "W_right"]
    H = sum(torch.kron(rule[i], left[i] @ right[i]) for i in range(rule.shape[0]))
    return lambda x: x @ H + tensors[stem + "b"]


@pytest.mark.parametrize("folder", ["pfeiffer", "compacterpp"])
def test_the_normed_sum_placement_is_the_math_the_module_docstring_states(folder):
    """original_ln_before=True on a BERT sublayer with output h, input x and layer norm LN: a = LN(h + x),
    o = h + U(f(D(a))), y = LN(o + x). Written here by hand, it gives AdapterHub's recorded outputs: the spec of
    what adapter_input="layer_normed_sum" computes."""
    tensors = torch.load(FIXTURES / folder / "pytorch_adapter.bin", weights_only=True)
    options = json.loads((FIXTURES / folder / "adapter_config.json").read_text())["config"]
    assert options["original_ln_before"] and options["residual_before_ln"] is True and not options["mh_adapter"]
    activation = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}[options["non_linearity"]]
    model = transformers.AutoModel.from_pretrained(FIXTURES / "base").eval()

    def after_the_residual(layer):
        stem = f"bert.encoder.layer.{layer}.output.adapters.{folder}."
        down = adapterhub_projection(tensors, stem + "adapter_down.0.")
        up = adapterhub_projection(tensors, stem + "adapter_up.")

        def hook(module, args, output):
            hidden, x = args
            h = module.dense(hidden)
            a = module.LayerNorm(h + x)
            return module.LayerNorm(h + up(activation(down(a))) + x)
        return hook

    for layer, block in enumerate(model.encoder.layer):
        block.output.register_forward_hook(after_the_residual(layer))
    expected = torch.tensor(EXPECTED["outputs"][folder]["values"])
    torch.testing.assert_close(outputs(model, "last_hidden_state"), expected, rtol=0, atol=1e-5)


def test_adapterhub_tasks_share_a_base_and_a_mixed_batch():
    """Tasks whose adapters read h and tasks whose adapters read LN(h + x), at the same sites, in one batch."""
    model = transformers.AutoModel.from_pretrained(FIXTURES / "base")
    for folder in ("houlsby", "compacter", "phm", "pfeiffer", "pfeiffer_both_sublayers", "compacterpp"):
        compacter.load(model, FIXTURES / folder)
    for rows in (["phm", "houlsby"], ["pfeiffer_both_sublayers", "houlsby"], ["compacterpp", "pfeiffer"]):
        with compacter.route(model, rows):
            mixed = outputs(model, "last_hidden_state")
        for i, folder in enumerate(rows):
            expected = torch.tensor(EXPECTED["outputs"][folder]["values"])[i]
            torch.testing.assert_close(mixed[i], expected, rtol=0, atol=1e-5)


def test_a_folder_that_does_not_fit_leaves_the_model_as_it_was(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "cut"
    shutil.copytree(FIXTURES / "houlsby", folder)
    tensors = load_file(str(folder / "adapter.safetensors"))
    key = "bert.encoder.layer.1.output.adapters.houlsby.adapter_up.weight"
    tensors[key] = tensors[key][:, :4].contiguous()
    save_file(tensors, str(folder / "adapter.safetensors"))
    model = compacter.load(transformers.AutoModel.from_pretrained(FIXTURES / "base"), FIXTURES / "compacter")
    before = outputs(model, "last_hidden_state")
    with pytest.raises(ValueError, match=r"adapter_up.weight' of shape \(64, 4\) does not fit"):
        compacter.load(model, folder)
    assert compacter.tasks(model) == ["compacter"] and torch.equal(outputs(model, "last_hidden_state"), before)
