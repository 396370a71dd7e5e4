"""Built adapter weights are right however the model is called, and built no more often than needed;
trained parameters are fp32 whatever the base's dtype."""

import copy

import pytest
import torch
from conftest import tiny_bert, tiny_llama, tiny_t5
from safetensors.torch import load_file

import compacter
from compacter.models import enable_activation_checkpointing
from compacter.saving import WEIGHTS_FILE


def batch():
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(2, 128, (3, 8), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(2, 128, (3, 4),
                                                                                                generator=generator)}


def call_paths(model, inputs):
    """The same inputs through every door: the model, its encoder and decoder alone, generate (greedy, beams)."""
    with torch.no_grad():
        encoded = model.get_encoder()(input_ids=inputs["input_ids"]).last_hidden_state
        start = torch.zeros(3, 1, dtype=torch.long)
        return {
            "model": model(**inputs).logits,
            "encoder": encoded,
            "decoder": model.get_decoder()(input_ids=start, encoder_hidden_states=encoded).last_hidden_state,
            "greedy": model.generate(input_ids=inputs["input_ids"], max_new_tokens=4, do_sample=False),
            "beams": model.generate(input_ids=inputs["input_ids"], max_new_tokens=4, num_beams=2, do_sample=False),
        }


def assert_same(got, expected):
    for path in expected:
        assert torch.equal(got[path], expected[path]), path


def trained_values(model):
    return torch.nn.utils.parameters_to_vector(compacter.trainable_parameters(model).values()).detach()


EDITS = {
    # each changes the trained values without autograd; the .data ones bypass version counters too, and are followed
    # by compacter.refresh(model), as the README says they must be
    "data.copy_": lambda params, new: [p.data.copy_(v) for p, v in zip(params, new)],
    "vector_to_parameters": lambda params, new: torch.nn.utils.vector_to_parameters(
        torch.nn.utils.parameters_to_vector(new), params),
    "ema": lambda params, new: [p.data.mul_(0.5).add_(v, alpha=0.5) for p, v in zip(params, new)],
    "no_grad copy_": lambda params, new: [p.copy_(v) for p, v in zip(params, new)],
}
BYPASS_VERSION_COUNTERS = {"data.copy_", "ema"}


@pytest.mark.parametrize("edit", EDITS)
def test_every_call_path_sees_an_in_place_edit(edit, tmp_path):
    model = compacter.apply(tiny_t5(seed=1), "compacter").eval()
    inputs = batch()
    call_paths(model, inputs)  # builds and keeps the weights
    params = list(compacter.trainable_parameters(model).values())
    new = [p.detach() + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
           for i, p in enumerate(params)]
    with torch.no_grad():
        EDITS[edit](params, new)
    if edit in BYPASS_VERSION_COUNTERS:
        compacter.refresh(model)
    compacter.save(model, tmp_path)  # a fresh model with the edited values: the reference
    reference = call_paths(compacter.load(tiny_t5(seed=1), tmp_path).eval(), inputs)
    assert_same(call_paths(model, inputs), reference)


def test_weights_are_built_once_across_decoding_steps_and_again_after_a_change(tmp_path):
    model = compacter.apply(tiny_t5(seed=2), "compacter").eval()
    inputs = batch()
    def builds():
        return model.compacter.task().prepared.builds
    with torch.no_grad():
        model.generate(input_ids=inputs["input_ids"], max_new_tokens=6, min_new_tokens=6, do_sample=False)
        assert builds() == 1  # one build for the encoder and all 6 decoding steps
        model.generate(input_ids=inputs["input_ids"], max_new_tokens=6, do_sample=False, num_beams=2)
        model(**inputs)
        assert builds() == 1  # and none for later requests while nothing changed
    optimizer = torch.optim.AdamW(compacter.trainable_parameters(model).values(), lr=1e-2)
    model.train()
    model(**inputs).loss.backward()  # a forward with gradients builds a graph of its own
    assert builds() == 2
    optimizer.step()
    model.eval()
    with torch.no_grad():
        model(**inputs)
        assert builds() == 3  # a training step changed the parameters
        model(**inputs)
        assert builds() == 3
    compacter.save(model, tmp_path)
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.zero_()
        model(**inputs)
        assert builds() == 4
        compacter.saving.load_tensors(model, compacter.saving.read_tensors(tmp_path))  # a load
        model(**inputs)
        assert builds() == 5


def test_the_encoder_can_run_and_backpropagate_after_a_model_backward():
    """A cached graph would have been freed by the first backward ("backward through the graph a second time")."""
    model = compacter.apply(tiny_t5(), "compacter").train()
    inputs = batch()
    model(**inputs).loss.backward()
    first = {n: p.grad.clone() for n, p in compacter.trainable_parameters(model).items() if p.grad is not None}
    model.get_encoder()(input_ids=inputs["input_ids"]).last_hidden_state.square().mean().backward()
    second = compacter.trainable_parameters(model)["compacter.tasks.default.down.s"].grad
    assert not torch.equal(second, first["compacter.tasks.default.down.s"])  # the encoder's gradient was added


def test_gradient_accumulation_over_separate_encoder_and_decoder_calls_matches_the_model_call():
    inputs = batch()
    grads = []
    for split in (False, True):
        model = compacter.apply(tiny_t5(seed=4), "compacter++").train()
        if split:
            encoded = model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            loss = model(encoder_outputs=encoded, attention_mask=inputs["attention_mask"], labels=inputs["labels"]).loss
        else:
            loss = model(**inputs).loss
        loss.backward()
        grads.append({n: p.grad for n, p in compacter.trainable_parameters(model).items()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7)


def test_gradient_checkpointing_recomputes_with_the_forwards_weights_in_generate_too():
    model = compacter.apply(tiny_t5(seed=5), "compacter")
    enable_activation_checkpointing(model)
    model.train()
    inputs = batch()
    model(**inputs).loss.backward()
    model.eval()
    with torch.no_grad():
        checkpointed = model.generate(input_ids=inputs["input_ids"], max_new_tokens=4, do_sample=False)
    plain = compacter.apply(tiny_t5(seed=5), "compacter").eval()
    with torch.no_grad():
        for name, param in compacter.trainable_parameters(plain).items():
            param.copy_(compacter.trainable_parameters(model)[name])
        assert torch.equal(plain.generate(input_ids=inputs["input_ids"], max_new_tokens=4, do_sample=False),
                           checkpointed)


def test_a_bf16_base_trains_fp32_master_weights_that_one_step_moves(tmp_path):
    """bf16's spacing near 1.0 is 0.0078: a bf16 layer norm weight would not move at lr 3e-4."""
    model = tiny_llama().to(torch.bfloat16)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    compacter.apply(model, "compacter++")
    trained = compacter.trainable_parameters(model)
    assert {p.dtype for p in trained.values()} == {torch.float32}
    before = {n: p.detach().clone() for n, p in trained.items()}
    optimizer = torch.optim.AdamW(trained.values(), lr=3e-4)
    ids = torch.randint(2, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    model.train()
    out = model(input_ids=ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16  # the computation stays in the base's dtype
    out.loss.backward()
    optimizer.step()
    norm = "compacter.tasks.default.base.model.norm.weight"
    assert (trained[norm] - before[norm]).abs().max() > 1e-4  # moved, by about the learning rate
    assert all(not torch.equal(trained[n], before[n]) for n in trained if n.endswith((".s", ".t", "norm.weight")))
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)  # the base: untouched
    compacter.save(model, tmp_path)
    assert {t.dtype for t in load_file(str(tmp_path / WEIGHTS_FILE)).values()} == {torch.float32}
    loaded = compacter.load(tiny_llama().to(torch.bfloat16), tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_what_invalidates_prepared_weights_without_comparing_values(tmp_path):
    """Every documented change is seen at the next call (cache.py), with no value compared on the device."""
    from compacter.opcount import count

    model = compacter.apply(tiny_t5(seed=6), "compacter").eval()
    inputs = batch()
    task = model.compacter.task()
    trained = compacter.trainable_parameters(model)

    def logits():
        with torch.no_grad():
            return model(**inputs).logits

    before = logits()
    with compacter.disabled(model):
        base_syncs = count(logits).syncs  # what T5's own forward waits for
    assert count(logits).syncs == base_syncs  # the cache check waits for no device
    # a fused optimizer step writes without bumping version counters: the step hook counts it
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-2, fused=True)
    model.train()
    model(**inputs).loss.backward()
    model.eval()
    builds = task.prepared.builds
    optimizer.step()
    stepped = logits()
    assert task.prepared.builds == builds + 1 and not torch.equal(stepped, before)
    # compacter.load of other values into the same task
    compacter.save(model, tmp_path / "stepped")
    compacter.refresh(model)
    with torch.no_grad():
        for param in trained.values():
            param.data.mul_(0.5)  # through .data: seen only after compacter.refresh
    compacter.refresh(model)
    halved = logits()
    assert not torch.equal(halved, stepped)
    compacter.saving.load_tensors(model, compacter.saving.read_tensors(tmp_path / "stepped"))
    assert torch.equal(logits(), stepped)
    # set_active back and forth, and a dtype change of the whole model
    compacter.apply(model, "adapter", name="other")
    compacter.set_active(model, "default")
    assert torch.equal(logits(), stepped)
    model.to(torch.float64)
    with torch.no_grad():
        as_double = model(**inputs).logits
    assert as_double.dtype == torch.float64
    torch.testing.assert_close(as_double.float(), stepped, rtol=1e-4, atol=1e-5)


def test_layer_norm_copies_are_in_for_the_whole_call_and_the_base_s_own_after_it_even_after_an_error():
    """The running task's layer-norm copies are swapped in once per call (not at each norm's forward): every norm
    holds its copy from the call's first module to its last, and the base model's own parameters are back after the
    call, also when it raised. A norm called on its own, outside any call of the model, still runs the task's copy."""
    model = compacter.apply(tiny_t5(seed=6), "compacter++")
    task = model.compacter.task()
    norms = {key: model.get_submodule(key.rsplit(".", 1)[0]) for key in task.base_copies}
    own = {key: norm.weight for key, norm in norms.items()}
    with torch.no_grad():
        for number, copy in enumerate(task.base_copies.values()):
            copy.fill_(1.0 + number / 10)  # each copy differs from the base's ones and from the others
    seen = []
    model.encoder.block[0].register_forward_pre_hook(  # the first module the call runs after the boundary
        lambda module, args: seen.append({key: norm.weight for key, norm in norms.items()}))
    inputs = batch()
    with torch.no_grad():
        expected = model(**inputs).logits
    assert len(seen) == 1 and all(seen[0][key] is task.base_copy(key) for key in norms)  # all of them, up front
    assert all(norm.weight is own[key] for key, norm in norms.items())  # and the base's own after the call

    failing = model.decoder.block[1].register_forward_hook(lambda module, args, output: 1 / 0)
    with torch.no_grad(), pytest.raises(ZeroDivisionError):
        model(**inputs)
    assert all(norm.weight is own[key] for key, norm in norms.items())
    failing.remove()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, expected)

    norm = model.encoder.final_layer_norm
    hidden = torch.randn(1, 3, 128)
    with torch.no_grad():
        alone = norm(hidden)
        with compacter.disabled(model):
            base = norm(hidden)
    assert torch.allclose(alone, base * task.base_copy("encoder.final_layer_norm.weight"))  # the base's weight is 1


@pytest.mark.parametrize("make, method", [(tiny_bert, "compacter++"), (tiny_t5, "compacter"), (tiny_bert, "lora")])
def test_a_deep_copy_runs_its_own_weights_and_unloads_without_touching_the_original(make, method):
    """Sites and layer-norm holders wrap their module's forward: a copy must carry wrappers of its own modules."""
    base = make(0).eval()
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    inputs = {"input_ids": ids} if make is tiny_bert else {"input_ids": ids, "decoder_input_ids": ids}
    with torch.no_grad():
        base_logits = base(**inputs).logits
        model = compacter.apply(copy.deepcopy(base), method).eval()
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.1 * torch.randn_like(parameter))  # a task that changes the outputs
        before = model(**inputs).logits
        clone = copy.deepcopy(model)
        assert torch.equal(clone(**inputs).logits, before)
        for parameter in clone.parameters():
            if parameter.requires_grad:
                parameter.add_(0.5)
        assert not torch.allclose(clone(**inputs).logits, before)  # the copy's sites read the copy's weights
        assert torch.equal(model(**inputs).logits, before)
        compacter.unload(clone)
        assert torch.equal(clone(**inputs).logits, base_logits)  # the copy's own base, unwrapped
        assert torch.equal(model(**inputs).logits, before)  # the original keeps its task
