"""Bases that accelerate dispatches or offloads (device_map, cpu_offload, disk_offload): the tasks compute as on the
undispatched model, train only their parameters, generate, route, save and come off again. (Several GPUs: the GPU
script benchmarks/gpu_real_bases.sh.)"""

import pytest
import torch
from accelerate import cpu_offload, disk_offload, dispatch_model
from conftest import tiny_bert, tiny_t5

import compacter
from compacter.devices import execution_device, is_offloaded, stored_value

IDS = torch.randint(2, 128, (3, 9), generator=torch.Generator().manual_seed(0))
LABELS = torch.randint(2, 128, (3, 4), generator=torch.Generator().manual_seed(1))


def with_task(model, method="compacter++", seed=1, name="default"):
    """``method`` on ``model`` with weights that change the outputs (fresh adapters add ~0), the same for every model."""
    torch.manual_seed(seed)
    compacter.apply(model, method, name=name)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in compacter.trainable_parameters(model, name).values():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


def offloaded(kind, build, tmp_path):
    model = build()
    if kind == "cpu":
        cpu_offload(model, execution_device=torch.device("cpu"))
    elif kind == "disk":
        disk_offload(model, str(tmp_path / "offload"), execution_device=torch.device("cpu"))
    else:  # a device map: blocks in place on the CPU (accelerate's main device) and one on disk
        if isinstance(model, type(tiny_t5())):
            device_map = {"shared": "cpu", "encoder": "cpu", "decoder.embed_tokens": "cpu", "decoder.block.0": "disk",
                          "decoder.block.1": "cpu", "decoder.final_layer_norm": "cpu", "lm_head": "cpu"}
        else:
            device_map = {"bert.embeddings": "cpu", "bert.encoder.layer.0": "disk", "bert.encoder.layer.1": "cpu",
                          "bert.pooler": "cpu", "dropout": "cpu", "classifier": "cpu"}
        model = dispatch_model(model, device_map, main_device="cpu", offload_dir=str(tmp_path / "map"))
    assert is_offloaded(model)
    return model


def grads(model):
    return {name: p.grad.clone() for name, p in compacter.trainable_parameters(model).items()}


KINDS = ["cpu", "disk", "map"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_offloaded_bert_computes_and_trains_as_the_undispatched_one(kind, tmp_path):
    reference = with_task(tiny_bert())
    model = with_task(offloaded(kind, tiny_bert, tmp_path))
    assert any(p.device.type == "meta" for p in model.bert.encoder.parameters())
    assert all(p.device.type == "cpu" for p in model.compacter.parameters())  # on the execution device
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS).logits, reference(input_ids=IDS).logits, atol=1e-6)

    labels = torch.tensor([0, 2, 1])
    for m in (model, reference):
        m.train()
        m(input_ids=IDS, labels=labels).loss.backward()
    expected, actual = grads(reference), grads(model)
    assert set(actual) == set(expected) and any("LayerNorm" in name for name in actual)
    for name in expected:  # the layer norms' task copies too: swapped in after accelerate loads the base's
        assert torch.allclose(actual[name], expected[name], atol=1e-6), name
        assert actual[name].abs().sum() > 0, name
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("compacter."))


@pytest.mark.parametrize("kind", KINDS)
def test_an_offloaded_t5_generates_and_trains_as_the_undispatched_one(kind, tmp_path):
    reference = with_task(tiny_t5())
    model = with_task(offloaded(kind, tiny_t5, tmp_path))
    with torch.no_grad():
        expected = reference.generate(input_ids=IDS, max_new_tokens=6, do_sample=False, num_beams=2)
        assert torch.equal(model.generate(input_ids=IDS, max_new_tokens=6, do_sample=False, num_beams=2), expected)
    for m in (model, reference):
        m.train()
        m(input_ids=IDS, labels=LABELS).loss.backward()
    expected_grads, actual = grads(reference), grads(model)
    assert set(actual) == set(expected_grads)
    assert all(torch.allclose(actual[n], expected_grads[n], atol=1e-5) for n in actual)


@pytest.mark.parametrize("method", ["prompt-t", "adapter", "bitfit"])
def test_other_methods_on_an_offloaded_t5(method, tmp_path):
    """A prompt copied from offloaded embeddings, a Houlsby adapter; methods that train the base in place: refused."""
    model = offloaded("cpu", tiny_t5, tmp_path)
    if method == "bitfit":
        with pytest.raises(ValueError, match=r"The method 'bitfit' trains the base model's own parameters in place, "
                                             r"and accelerate offloads some of them"):
            compacter.apply(model, method)
        return
    reference, model = with_task(tiny_t5(), method), with_task(model, method)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS, labels=LABELS).logits, reference(input_ids=IDS, labels=LABELS).logits,
                              atol=1e-5)
        assert torch.equal(model.generate(input_ids=IDS, max_new_tokens=4, do_sample=False),
                           reference.generate(input_ids=IDS, max_new_tokens=4, do_sample=False))


def test_an_adapter_moves_between_an_offloaded_base_and_a_plain_one(tmp_path):
    model = with_task(offloaded("cpu", tiny_t5, tmp_path))
    model.save_pretrained(tmp_path / "adapter")
    plain = compacter.load(tiny_t5(), tmp_path / "adapter")
    # and back, onto another offloaded base
    again = compacter.load(offloaded("disk", tiny_t5, tmp_path), tmp_path / "adapter")
    with torch.no_grad():
        outputs = [m(input_ids=IDS, labels=LABELS).logits for m in (model, plain, again)]
    assert torch.allclose(outputs[0], outputs[1], atol=1e-6) and torch.equal(outputs[0], outputs[2])


def test_routed_rows_on_an_offloaded_base_get_their_own_tasks_layer_norms(tmp_path):
    model = offloaded("cpu", tiny_bert, tmp_path)
    with_task(model, seed=1, name="a")
    with_task(model, seed=2, name="b")
    with torch.no_grad():
        own = {}
        for name in ("a", "b"):
            compacter.set_active(model, name)
            own[name] = model(input_ids=IDS).logits
        with compacter.route(model, ["b", "a", "b"]):
            routed = model(input_ids=IDS).logits
    assert torch.allclose(routed, torch.stack([own["b"][0], own["a"][1], own["b"][2]]), atol=1e-6)


def test_unload_leaves_the_offloaded_base_as_it_was(tmp_path):
    model, fresh = offloaded("cpu", tiny_bert, tmp_path), offloaded("cpu", tiny_bert, tmp_path)
    layer_norm = model.bert.encoder.layer[0].output.LayerNorm
    forward = layer_norm._old_forward
    with_task(model)
    assert layer_norm._old_forward is not forward  # compacter's swap runs inside accelerate's hook
    compacter.unload(model)
    assert layer_norm._old_forward is forward
    assert all(p.device.type == "meta" for p in layer_norm.parameters())
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, fresh(input_ids=IDS).logits)


def test_devices_and_values_of_offloaded_parameters(tmp_path):
    reference, model = tiny_bert(), offloaded("disk", tiny_bert, tmp_path)
    name = "bert.encoder.layer.1.output.LayerNorm.weight"
    assert model.get_submodule(name.rpartition(".")[0]).weight.device.type == "meta"
    assert torch.equal(stored_value(model, name), reference.get_submodule(name.rpartition(".")[0]).weight)
    assert execution_device(model, "bert.encoder.layer.1.output.dense") == torch.device("cpu")
    assert not is_offloaded(reference)




def test_from_pretrained_with_a_device_map_that_offloads_to_disk(tmp_path):
    """The user's path: compacter.from_pretrained(base, adapter, device_map=..., offload_folder=...)."""
    tiny_t5().save_pretrained(tmp_path / "t5")
    plain = with_task(tiny_t5())
    plain.save_pretrained(tmp_path / "adapter")
    # (a tied embedding on disk fails in transformers itself: the encoder's blocks go there, not its embed_tokens)
    device_map = {"shared": "cpu", "encoder.embed_tokens": "cpu", "encoder.block": "disk",
                  "encoder.final_layer_norm": "cpu", "decoder": "cpu", "lm_head": "cpu"}
    model = compacter.from_pretrained(str(tmp_path / "t5"), tmp_path / "adapter", device_map=device_map,
                                      offload_folder=str(tmp_path / "offload"))
    assert is_offloaded(model) and model.lm_head.weight is model.shared.weight
    with torch.no_grad():
        assert torch.equal(model.generate(input_ids=IDS, max_new_tokens=5, do_sample=False),
                           plain.generate(input_ids=IDS, max_new_tokens=5, do_sample=False))
