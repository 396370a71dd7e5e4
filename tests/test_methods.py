"""Attaching the paper's methods to T5, BERT, GPT-2 and Llama."""

import pytest
import torch
from conftest import tiny_bert, tiny_gpt2, tiny_llama, tiny_t5

import compacter
from compacter.methods.adapters import BOTTLENECK
from compacter.models import enable_activation_checkpointing

ADAPTER_METHODS = ["adapter", "pfeiffer", "adapterdrop", "adapter-lowrank", "phm-adapter", "compacter", "compacter++"]

# The tiny test models have 2 blocks and width 128 (bottleneck 4): n=12 and "skip 5 blocks" do not fit them.
SMALL_MODEL_OVERRIDES = {"adapterdrop": {"skip_first_layers": 1}, "phm-adapter": {"n": 4}}


def adapter_sites(model, name=None):
    return sorted(model.compacter.task(name).site_modules)


def train_steps(model, batch, steps=8, lr=3e-2):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_t5_adapters_sit_on_self_attention_and_feed_forward_outputs():
    model = compacter.apply(tiny_t5(), "compacter")
    assert adapter_sites(model) == [
        f"{stack}.block.{i}.layer.{j}.{m}" for stack, ff in (("decoder", 2), ("encoder", 1)) for i in range(2)
        for j, m in ((0, "SelfAttention.o"), (ff, "DenseReluDense.wo"))]
    assert adapter_sites(compacter.apply(tiny_t5(), "compacter++")) == [
        f"{s}.block.{i}.layer.{ff}.DenseReluDense.wo" for s, ff in (("decoder", 2), ("encoder", 1)) for i in range(2)]
    assert adapter_sites(compacter.apply(tiny_t5(), "pfeiffer")) == [
        f"{s}.block.{i}.layer.0.SelfAttention.o" for s in ("decoder", "encoder") for i in range(2)]
    dropped = compacter.apply(tiny_t5(num_layers=7, num_decoder_layers=7), "adapterdrop")
    assert {int(name.split(".")[2]) for name in adapter_sites(dropped)} == {5, 6}


def test_adapter_output_is_applied_before_the_residual():
    model = tiny_t5()
    x = torch.randn(2, 3, 128)
    ff = model.encoder.block[0].layer[1]
    plain = ff.DenseReluDense(ff.layer_norm(x))
    compacter.apply(model, "adapter")
    slot = model.compacter.task().sites[BOTTLENECK]["encoder.block.0.layer.1.DenseReluDense.wo"]
    with torch.no_grad():
        slot.up.bias.normal_()  # zero at init: make the whole formula visible
        down = torch.nn.functional.linear(plain, slot.down.weight[slot.index], slot.down.bias[slot.index])
        adapted = plain + torch.nn.functional.linear(torch.nn.functional.gelu(down), slot.up.weight[slot.index],
                                                     slot.up.bias[slot.index])
        torch.testing.assert_close(ff(x), x + adapted)


@pytest.mark.parametrize("method", ADAPTER_METHODS + ["bitfit", "full"])
def test_every_method_trains_t5_and_still_generates(method, seq2seq_batch):
    model = compacter.apply(tiny_t5(), method, **SMALL_MODEL_OVERRIDES.get(method, {}))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = train_steps(model, seq2seq_batch)
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    model.eval()
    generated = model.generate(input_ids=seq2seq_batch["input_ids"][:2], max_new_tokens=4, do_sample=False)
    assert generated.shape[0] == 2 and generated.shape[1] > 1


def test_frozen_and_trained_groups_follow_the_paper():
    model = compacter.apply(tiny_t5(), "compacter")
    groups = compacter.parameter_groups(model)
    assert set(groups.values()) == {"adapters", "shared", "layer_norms"}
    assert not model.lm_head.weight.requires_grad
    assert all(("layer_norm" in n) == (g == "layer_norms") for n, g in groups.items())
    bitfit = compacter.apply(tiny_t5(), "bitfit")
    assert set(compacter.parameter_groups(bitfit).values()) == {"biases", "layer_norms", "output_layer"}
    assert bitfit.lm_head.bias.shape == (128,) and bitfit.encoder.block[0].layer[1].layer_norm.bias.requires_grad


def test_gradient_accumulation_and_eval_between_steps(seq2seq_batch):
    model = compacter.apply(tiny_t5(), "compacter")
    model.train()
    model(**seq2seq_batch).loss.backward()
    trained = compacter.trainable_parameters(model)
    once = {name: param.grad.clone() for name, param in trained.items()}
    assert all(g.abs().sum() > 0 for g in once.values())
    model(**seq2seq_batch).loss.backward()  # a second backward pass without a parameter update: the gradients add up
    with torch.no_grad():
        evaluated = model(**seq2seq_batch).loss  # an evaluation between them changes no gradient
    model(**seq2seq_batch).loss.backward()
    for name, param in trained.items():
        torch.testing.assert_close(param.grad, 3 * once[name], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(evaluated, model(**seq2seq_batch).loss.detach())


def test_bert_classification_head_trains_with_adapters():
    model = compacter.apply(tiny_bert(), "compacter++")
    groups = compacter.parameter_groups(model)
    assert {n for n, g in groups.items() if g == "head"} == {"compacter.tasks.default.base.classifier.weight",
                                                             "compacter.tasks.default.base.classifier.bias"}
    assert adapter_sites(model) == [f"bert.encoder.layer.{i}.output.dense" for i in range(2)]
    batch = {"input_ids": torch.randint(2, 128, (8, 6), generator=torch.Generator().manual_seed(0)),
             "labels": torch.arange(8) % 3}
    losses = train_steps(model, batch, steps=10)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("factory,attention,feed_forward", [
    (tiny_gpt2, "transformer.h.{}.attn.c_proj", "transformer.h.{}.mlp.c_proj"),
    (tiny_llama, "model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
])
def test_decoder_only_models(factory, attention, feed_forward):
    model = compacter.apply(factory(), "compacter")
    assert adapter_sites(model) == sorted(p.format(i) for i in range(2) for p in (attention, feed_forward))
    ids = torch.randint(2, 128, (2, 8), generator=torch.Generator().manual_seed(0))
    losses = train_steps(model, {"input_ids": ids, "labels": ids})
    assert losses[-1] < losses[0]
    assert compacter.count_parameters(model).groups.get("output_layer") is None
    model.eval()
    assert model.generate(ids[:, :3], max_new_tokens=3, do_sample=False).shape == (2, 6)


def test_unknown_architecture_names_what_to_pass():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_out, self.fc2 = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x):
            return x + self.fc2(x + self.attn_out(x))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    with pytest.raises(ValueError, match=r"does not know where the sublayer outputs of a 'Net'.*attention_output="
                                         r".*blocks\.0\.attn_out"):
        compacter.apply(Net(), "adapter")
    model = compacter.apply(Net(), "compacter", bottleneck_size=4, n=2, attention_output=r"attn_out$",
                            feed_forward_output=r"fc2$")
    assert adapter_sites(model) == ["blocks.0.attn_out", "blocks.0.fc2", "blocks.1.attn_out", "blocks.1.fc2"]
    model(torch.randn(3, 8)).sum().backward()


def test_bad_settings_are_refused_clearly():
    with pytest.raises(ValueError, match="Unknown method 'compactor'. Did you mean 'compacter'"):
        compacter.apply(tiny_t5(), "compactor")
    with pytest.raises(ValueError, match="n=5 does not divide"):
        compacter.apply(tiny_t5(), "compacter", n=5)
    with pytest.raises(ValueError, match=r"n=3 does not divide the projection's input size 128"):
        compacter.apply(tiny_t5(), "compacter", n=3, bottleneck_size=8)
    with pytest.raises(ValueError, match="no setting"):
        compacter.apply(tiny_t5(), "compacter", bogus=1)
    with pytest.raises(ValueError, match="leaves no block with an adapter"):
        compacter.apply(tiny_t5(), "adapterdrop")  # two blocks, the first five skipped
    with pytest.raises(ValueError, match="sublayers must be"):
        compacter.apply(tiny_t5(), "adapter", sublayers=["cross_attention"])
    model = compacter.apply(tiny_t5(), "adapter")
    with pytest.raises(ValueError, match="already has a task named 'default' \\(method 'adapter'\\). Choose another name="):
        compacter.apply(model, "compacter")


def test_overrides_change_the_counts():
    base = compacter.count_parameters(compacter.apply(tiny_t5(), "compacter", n=2, rank=2, bottleneck_size=8))
    # 8 adapters of (128→8, 8→128) LPHM with n=2, r=2: r·(k+d) per projection's factors, one shared A
    per_adapter = 2 * 2 * (8 + 128) + 8 + 128
    assert base.groups["adapters"] == 8 * per_adapter and base.groups["shared"] == 2 ** 3


def test_a_method_that_leaves_nothing_to_train_is_refused():
    with pytest.raises(ValueError, match="trains only a new task head, and this model has none"):
        compacter.apply(tiny_t5(), "linear-probe")
    probe = compacter.apply(tiny_bert(), "linear-probe")
    assert set(compacter.parameter_groups(probe).values()) == {"head"}


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch, seq2seq_batch):
    from compacter import compiling

    def broken_compile(module, **options):
        def fail(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nlong details")
        return fail

    monkeypatch.setattr(compiling.torch, "compile", broken_compile)
    model = compacter.apply(tiny_t5(), "compacter++")
    forward = compiling.compile_model(model)
    with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler found\); running eagerly"):
        out = forward(**seq2seq_batch)
    assert forward.failed and torch.equal(out.logits, model(**seq2seq_batch).logits)


@pytest.mark.parametrize("method,overrides", [("compacter++", {}), ("intrinsic-said", {"dimension": 1000})])
def test_torch_compile_traces_one_graph_and_matches_eager(method, overrides, seq2seq_batch):
    """The per-forward weight caches must not break the graph: a break there hit dynamo's recompile
    limit and silently ran most of the model eagerly. aot_eager runs dynamo and AOT autograd, the
    stages that see our code, without the minute-long C++ build of the inductor backend."""
    import torch._dynamo

    model = compacter.apply(tiny_t5(), method, **overrides).eval()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(**seq2seq_batch)
    assert explanation.graph_break_count == 0
    if method == "intrinsic-said":
        # the projections are traced once per call boundary (the encoder, the decoder, the tied output layer after
        # the decoder's call), not once per projected tensor: that took six minutes here (47 tensors, 3 size groups)
        groups = len(next(m for m in model.modules() if hasattr(m, "groups")).groups)
        traced = sum(1 for op in explanation.ops_per_graph[0] if "autograd_function_apply" in str(op))
        assert traced <= 3 * groups, traced
    results = []
    for forward in (model, torch.compile(model, backend="aot_eager")):
        for _ in range(2):  # the second call reuses the compiled graph
            loss = forward(**seq2seq_batch).loss
            loss.backward()
            results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
            model.zero_grad(set_to_none=True)
    (eager, eager_grads), *compiled = results
    for loss, grads in compiled:
        torch.testing.assert_close(loss, eager)
        assert grads.keys() == eager_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], eager_grads[name])


@pytest.mark.parametrize("method,overrides", [("compacter", {}), ("intrinsic-said", {"dimension": 1000}),
                                              ("prompt-r", {"num_tokens": 4}), ("adapter-lowrank", {})])
def test_gradient_checkpointing_gives_the_same_gradients(method, overrides, seq2seq_batch):
    gradients = []
    for checkpointing in (False, True):
        model = compacter.apply(tiny_t5(), method, **overrides)
        if checkpointing:
            enable_activation_checkpointing(model)
        model.train()
        model(**seq2seq_batch).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in compacter.trainable_parameters(model).items()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, rtol=1e-4, atol=1e-6)


def test_layers_beyond_the_model_are_refused():
    with pytest.raises(ValueError, match=r"layers lists \[99\], but this model's blocks are at layer positions 0-1"):
        compacter.apply(tiny_t5(), "compacter", layers=[0, 99])
    model = compacter.apply(tiny_t5(), "compacter", layers=[1])
    assert all(".block.1." in site for site in adapter_sites(model))


def test_a_plug_in_method_with_inconsistent_declarations_is_refused_naming_the_field():
    from dataclasses import dataclass
    from typing import ClassVar

    from compacter.methods import METHODS, MethodConfig, register_method

    @dataclass
    class InPlaceButRoutable(MethodConfig):
        kind: ClassVar[str] = "in-place-routable"
        trains_base_in_place: ClassVar[bool] = True

        def attach(self, model, task):
            model.requires_grad_(True)

    with pytest.raises(ValueError, match=r"InPlaceButRoutable declares routable=True and trains_base_in_place=True"):
        register_method("in-place-routable", InPlaceButRoutable)

    @dataclass
    class Silent(MethodConfig):
        kind: ClassVar[str] = "silent"
        routable: ClassVar[bool] = False

        def attach(self, model, task):
            pass

    with pytest.raises(ValueError, match=r"Silent declares routable=False without an unroutable_reason"):
        register_method("silent", Silent)

    @dataclass
    class Clash(MethodConfig):
        kind: ClassVar[str] = "adapter"  # another class's kind

        def attach(self, model, task):
            pass

    with pytest.raises(ValueError, match=r"The method kind 'adapter' is already AdapterConfig's"):
        register_method("clash", Clash)
    assert not {"in-place-routable", "silent", "clash"} & set(METHODS)  # nothing half-registered


def test_train_pooler_gives_the_task_a_pooler_of_its_own(tmp_path):
    model = compacter.apply(tiny_bert(), "compacter++", train_pooler=True)
    base_pooler = model.bert.pooler.dense.weight.clone()
    copies = model.compacter.task().base_copies
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight"} <= set(copies)
    assert all(copies[key].requires_grad for key in ("bert.pooler.dense.weight", "bert.pooler.dense.bias"))
    inputs = {"input_ids": torch.tensor([[2, 17, 45, 9, 60, 3]])}
    with torch.no_grad():
        before = model(**inputs).logits
        copies["bert.pooler.dense.weight"].add_(torch.randn(copies["bert.pooler.dense.weight"].shape))
        after = model(**inputs).logits
    assert (after - before).abs().max() > 1e-3 and torch.equal(model.bert.pooler.dense.weight, base_pooler)
    compacter.save(model, tmp_path / "task")
    with torch.no_grad():
        assert torch.equal(compacter.load(tiny_bert(), tmp_path / "task")(**inputs).logits, after)


@pytest.mark.parametrize("factory,method,reason", [(tiny_gpt2, "adapter", "this GPT2LMHeadModel has no pooler"),
                                                   (tiny_bert, "full", "the method 'full' trains the base in place")])
def test_train_pooler_without_a_pooler_of_its_own_is_refused(factory, method, reason):
    model = factory()
    with pytest.raises(ValueError, match=rf"train_pooler=True .* but {reason}\. Set train_pooler=False"):
        compacter.apply(model, method, train_pooler=True)
    assert not hasattr(model, "compacter") and not any(p.requires_grad is False for p in model.parameters())
