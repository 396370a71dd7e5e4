"""adapter_input="layer_normed_sum": a bottleneck adapter that reads LN(h + x) of a BERT-style sublayer (AdapterHub's
original_ln_before=True), against a hand-written reference; with its task's own layer norms, routed next to tasks
that read h, through gradient checkpointing, saved and loaded; refused where a model has no such sublayer."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bert, tiny_gpt2, tiny_t5

import compacter
from compacter.methods.adapters import NORMED_SUM_BOTTLENECK
from compacter.models import enable_activation_checkpointing
from compacter.opcount import count

INPUTS = {"input_ids": torch.tensor([[2, 17, 45, 9, 60, 3], [2, 81, 5, 33, 3, 0], [2, 7, 7, 90, 4, 3]]),
          "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])}


def randomized(model, name, seed):
    """Every trained tensor of task ``name`` (adapters, its layer norm copies, its head) redrawn at a visible scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.compacter.tasks[name].parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    return model


def normed_sum_task(model, name="normed", seed=1, **settings):
    compacter.apply(model, "adapter", name=name, bottleneck_size=8, activation="relu",
                    adapter_input="layer_normed_sum", **settings)
    return randomized(model, name, seed)


def reference(base, model, name):
    """The base with task ``name``'s layer norms and head put in, and at each sublayer output module (h = dense(·),
    input x, layer norm LN) by hand: a = LN(h + x), y = LN(h + U(relu(D(a))) + x)."""
    reference = copy.deepcopy(base)
    task = model.compacter.tasks[name]
    with torch.no_grad():
        for key, value in task.base_copies.items():
            reference.get_parameter(key).copy_(value)
    for key, slot in task.sites[NORMED_SUM_BOTTLENECK].items():
        (down, down_bias), (up, up_bias) = ((w[slot.index], b[slot.index]) for w, b in (slot.down.build(), slot.up.build()))

        def hook(module, args, output, down=down, down_bias=down_bias, up=up, up_bias=up_bias):
            hidden, x = args
            h = module.dense(hidden)
            a = module.LayerNorm(h + x)
            return module.LayerNorm(h + F.linear(torch.relu(F.linear(a, down, down_bias)), up, up_bias) + x)
        reference.get_submodule(key.rpartition(".")[0]).register_forward_hook(hook)
    return reference


def logits(model):
    with torch.no_grad():
        return model.eval()(**INPUTS).logits


def test_the_adapter_reads_the_layer_normed_sum_with_the_tasks_own_layer_norms():
    base = tiny_bert()
    model = normed_sum_task(copy.deepcopy(base))
    sites = model.compacter.tasks["normed"].sites[NORMED_SUM_BOTTLENECK]
    assert len(sites) == 4 and any(key.endswith("attention.output.dense") for key in sites)
    expected = logits(reference(base, model, "normed"))
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=1e-5)
    with compacter.disabled(model):
        assert (logits(model) - expected).abs().max() > 1e-2  # the adapters and the task's layer norms matter


def test_tasks_reading_h_and_reading_the_normed_sum_share_one_batch():
    model = normed_sum_task(tiny_bert())
    randomized(compacter.apply(model, "adapter", name="plain", bottleneck_size=8), "plain", seed=2)
    rows = ["normed", "plain", "normed"]
    with compacter.route(model, rows):
        mixed = logits(model)
    for i, name in enumerate(rows):
        compacter.set_active(model, name)
        torch.testing.assert_close(mixed[i], logits(model)[i], rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    def gradients(checkpointing):
        model = normed_sum_task(tiny_bert())
        if checkpointing:
            enable_activation_checkpointing(model)
        model.train()(**INPUTS, labels=torch.tensor([0, 2, 1])).loss.backward()
        return {name: p.grad.clone() for name, p in model.compacter.tasks["normed"].named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert all(g.abs().sum() > 0 for g in plain.values())
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, rtol=1e-5, atol=1e-6)


def test_saved_and_loaded_the_task_reads_the_normed_sum_again(tmp_path):
    model = normed_sum_task(tiny_bert())
    compacter.save(model, tmp_path / "task")
    again = compacter.load(tiny_bert(), tmp_path / "task")
    assert compacter.attached_config(again).adapter_input == "layer_normed_sum"
    assert torch.equal(logits(again), logits(model))


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_t5])
def test_a_model_without_bert_style_sublayers_is_refused_naming_the_setting(factory):
    model = factory()
    with pytest.raises(ValueError, match=r"adapter_input='layer_normed_sum' reads LN\(h \+ x\) of a BERT-style "
                                         r"sublayer output .* Use adapter_input='sublayer_output'"):
        compacter.apply(model, "adapter", adapter_input="layer_normed_sum")
    assert not hasattr(model, "compacter")
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())  # nothing half-attached


def test_an_unknown_adapter_input_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"adapter_input.*sublayer_output.*layer_normed_sum"):
        compacter.apply(tiny_bert(), "adapter", adapter_input="after_the_residual")


def test_reading_the_normed_sum_costs_its_sum_and_layer_norm_per_site_and_no_sync():
    """Per site and call: the adapter's 4 ops (down addmm, activation, up addmm, residual add), and h + x and LN."""
    def forward(model):
        with torch.no_grad():
            model(**INPUTS)

    counts = {}
    for adapter_input in ("sublayer_output", "layer_normed_sum"):
        model = compacter.apply(tiny_bert(), "adapter", adapter_input=adapter_input, train_layer_norms=False,
                                train_head=False)
        forward(model)  # prepared once
        counts[adapter_input] = count(forward, model)
    with compacter.disabled(model):
        forward(model)
        base = count(forward, model)
    sites = 4
    assert counts["sublayer_output"].compute - base.compute == 4 * sites
    assert counts["layer_normed_sum"].compute - base.compute == 6 * sites
    assert counts["layer_normed_sum"].syncs == base.syncs
