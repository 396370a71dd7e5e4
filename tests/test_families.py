"""Every supported model family, on a tiny random model: where the adapters go, a training step,
save/load, generation, and the inference of sites for a model that is not in the table."""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import transformers
from conftest import tiny_bert, tiny_gpt2, tiny_llama, tiny_t5

import compacter
from compacter import architectures, placement, site_inference
from compacter.layers import ProjectionBank, bottleneck
from compacter.methods.adapters import BOTTLENECK

VOCAB, HIDDEN, LAYERS = 128, 128, 2  # hidden 128: the paper's reduction factor 32 leaves k = 4, which n = 4 divides
SMALL = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4, intermediate_size=256)
TOKENS = dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)
DECODER = dict(SMALL, num_key_value_heads=2, head_dim=32, max_position_embeddings=64, **TOKENS)
SEQ2SEQ = dict(vocab_size=VOCAB, d_model=HIDDEN, encoder_layers=LAYERS, decoder_layers=LAYERS, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256, max_position_embeddings=64,
               decoder_start_token_id=2, **TOKENS)
MOE = dict(DECODER, num_experts_per_tok=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are too small to split an op across threads; on a busy machine the threads' waiting
    for each other made every op a hundred times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Family:
    model_type: str
    build: Callable[[], torch.nn.Module]
    task: str  # "seq2seq", "causal", "classify" or "masked": which batch and loss
    attention: tuple[str, ...]  # the expected attention sites, "{}" for the block index
    feed_forward: tuple[str, ...]
    layers: int = LAYERS

    def sites(self, sublayers=("attention", "feed_forward")) -> list[str]:
        templates = [t for sublayer in sublayers for t in getattr(self, sublayer)]
        return sorted({t.format(i) for t in templates for i in range(self.layers)})


def _seq2seq(cls, config_cls, **extra):
    return lambda: cls(config_cls(**SEQ2SEQ, **extra))


def _bart_like(model_type, cls, config_cls, **extra):
    stacks = ("model.encoder.layers.{}", "model.decoder.layers.{}")
    return Family(model_type, _seq2seq(cls, config_cls, **extra), "seq2seq",
                  tuple(f"{s}.self_attn.out_proj" for s in stacks), tuple(f"{s}.fc2" for s in stacks))


def _llama_like(model_type, cls, config_cls, **extra):
    return Family(model_type, lambda: cls(config_cls(**DECODER, **extra)), "causal",
                  ("model.layers.{}.self_attn.o_proj",), ("model.layers.{}.mlp.down_proj",))


def _moe(model_type, cls, config_cls, block="mlp", **extra):
    return Family(model_type, lambda: cls(config_cls(**MOE, **extra)), "causal",
                  ("model.layers.{}.self_attn.o_proj",), (f"model.layers.{{}}.{block}",))


TRANSFORMERS_4 = int(transformers.__version__.split(".")[0]) < 5


def _albert(layers=3, groups=1):
    config = dict(SMALL, num_hidden_layers=layers, num_hidden_groups=groups, embedding_size=32, num_labels=3)
    return lambda: transformers.AlbertForSequenceClassification(transformers.AlbertConfig(**config))


ALBERT_LAYER = "albert.encoder.albert_layer_groups.0.albert_layers.0"
FAMILIES = {family.model_type: family for family in [
    _bart_like("bart", transformers.BartForConditionalGeneration, transformers.BartConfig),
    _bart_like("mbart", transformers.MBartForConditionalGeneration, transformers.MBartConfig),
    _bart_like("marian", transformers.MarianMTModel, transformers.MarianConfig),
    _bart_like("pegasus", transformers.PegasusForConditionalGeneration, transformers.PegasusConfig),
    Family("deberta", lambda: transformers.DebertaForSequenceClassification(transformers.DebertaConfig(
        **SMALL, num_labels=3)), "classify",
        ("deberta.encoder.layer.{}.attention.output.dense",), ("deberta.encoder.layer.{}.output.dense",)),
    Family("deberta-v2", lambda: transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(
        **SMALL, num_labels=3)), "classify",
        ("deberta.encoder.layer.{}.attention.output.dense",), ("deberta.encoder.layer.{}.output.dense",)),
    # one block's modules run at all 3 layer positions: the names are those of the one block
    Family("albert", _albert(), "classify", (f"{ALBERT_LAYER}.attention.dense",), (f"{ALBERT_LAYER}.ffn_output",),
           layers=1),
    Family("modernbert", lambda: transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(
        **SMALL, pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2, sep_token_id=1)), "masked",
        ("model.layers.{}.attn.Wo",), ("model.layers.{}.mlp.Wo",)),
    Family("opt", lambda: transformers.OPTForCausalLM(transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4, ffn_dim=256,
        word_embed_proj_dim=HIDDEN, max_position_embeddings=64, **TOKENS)), "causal",
        ("model.decoder.layers.{}.self_attn.out_proj",), ("model.decoder.layers.{}.fc2",)),
    Family("gpt_neox", lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **SMALL, max_position_embeddings=64, **TOKENS)), "causal",
        ("gpt_neox.layers.{}.attention.dense",), ("gpt_neox.layers.{}.mlp.dense_4h_to_h",)),
    Family("falcon", lambda: transformers.FalconForCausalLM(transformers.FalconConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4, **TOKENS)), "causal",
        ("transformer.h.{}.self_attention.dense",), ("transformer.h.{}.mlp.dense_4h_to_h",)),
    _llama_like("phi3", transformers.Phi3ForCausalLM, transformers.Phi3Config),
    _llama_like("gemma", transformers.GemmaForCausalLM, transformers.GemmaConfig),
    _llama_like("gemma2", transformers.Gemma2ForCausalLM, transformers.Gemma2Config),
    _llama_like("gemma3_text", transformers.Gemma3ForCausalLM, transformers.Gemma3TextConfig),
    _llama_like("qwen3", transformers.Qwen3ForCausalLM, transformers.Qwen3Config),
    _moe("mixtral", transformers.MixtralForCausalLM, transformers.MixtralConfig, num_local_experts=4,
         block="block_sparse_moe" if TRANSFORMERS_4 else "mlp"),  # the name of Mixtral's MoE block in 4.57
    # layer 0 a dense MLP, layer 1 a mixture of experts with a shared expert
    _moe("qwen2_moe", transformers.Qwen2MoeForCausalLM, transformers.Qwen2MoeConfig, num_experts=4,
         moe_intermediate_size=64, shared_expert_intermediate_size=128, mlp_only_layers=[0]),
    _moe("qwen3_moe", transformers.Qwen3MoeForCausalLM, transformers.Qwen3MoeConfig, num_experts=4,
         moe_intermediate_size=64),
    # the families compacter knew before: their usual test models
    Family("t5", tiny_t5, "seq2seq",
           ("encoder.block.{}.layer.0.SelfAttention.o", "decoder.block.{}.layer.0.SelfAttention.o"),
           ("encoder.block.{}.layer.1.DenseReluDense.wo", "decoder.block.{}.layer.2.DenseReluDense.wo")),
    Family("bert", tiny_bert, "classify", ("bert.encoder.layer.{}.attention.output.dense",),
           ("bert.encoder.layer.{}.output.dense",)),
    Family("gpt2", tiny_gpt2, "causal", ("transformer.h.{}.attn.c_proj",), ("transformer.h.{}.mlp.c_proj",)),
    Family("llama", tiny_llama, "causal", ("model.layers.{}.self_attn.o_proj",), ("model.layers.{}.mlp.down_proj",)),
]}
GENERATES = [name for name, family in FAMILIES.items() if family.task in ("seq2seq", "causal")]


def build(family: Family, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # configs' notes on token ids and defaults
        model = family.build()
    return model.eval()


def batch(family: Family) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, 7), generator=generator)
    labels = {"seq2seq": torch.randint(3, VOCAB, (2, 4), generator=generator), "causal": ids,
              "classify": torch.tensor([0, 2]), "masked": ids}[family.task]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def adapter_sites(model) -> list[str]:
    return sorted({module for module, _ in model.compacter.task().site_modules.values()})


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def up_banks(model) -> list[ProjectionBank]:
    return [bank for name, bank in model.compacter.task().named_children() if name.startswith("up")]


@pytest.mark.parametrize("name", FAMILIES)
def test_adapters_sit_after_self_attention_and_feed_forward_of_every_block(name):
    family = FAMILIES[name]
    model = compacter.apply(build(family), "compacter")
    assert model.config.model_type == name
    assert adapter_sites(model) == family.sites()
    assert adapter_sites(compacter.apply(build(family), "compacter++")) == family.sites(["feed_forward"])
    # One adapter per layer position and sublayer, each two LPHM projections d→k→d (n=4, r=1): r·(k+d)
    # factor entries and a bias per projection (SPEC §1); the shared A is n³.
    positions = sum(site.calls for site in model.compacter.config.selected_sites(model))
    assert positions == 2 * model.config.get_text_config().num_hidden_layers * (1 + model.config.is_encoder_decoder)
    k, d = HIDDEN // 32, HIDDEN
    counts = compacter.count_parameters(model).groups
    assert counts["adapters"] == positions * (2 * (k + d) + k + d) and counts["shared"] == 4 ** 3
    assert {p.dtype for p in model.compacter.parameters()} == {torch.float32}  # trained parameters: fp32 masters


@pytest.mark.parametrize("name", FAMILIES)
def test_a_training_step_reaches_the_trained_parameters_and_only_them(name):
    family = FAMILIES[name]
    model = build(family)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = batch(family)
    before = logits(model, inputs)
    compacter.apply(model, "compacter")
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    # With the up projections zeroed every adapter is exactly the identity: the outputs are the base model's,
    # bit for bit (the hooks keep everything else a sublayer returns, e.g. an MoE block's router logits).
    saved = [{n: p.detach().clone() for n, p in bank.named_parameters()} for bank in up_banks(model)]
    with torch.no_grad():
        for bank in up_banks(model):
            for p in bank.parameters():
                p.zero_()
    assert torch.equal(logits(model, inputs), before)
    with torch.no_grad():
        for bank, values in zip(up_banks(model), saved):
            for n, p in bank.named_parameters():
                p.copy_(values[n])
    initial = logits(model, inputs)
    assert not torch.equal(initial, before)  # the adapters are in the path ...
    torch.testing.assert_close(initial, before, rtol=0, atol=1e-3)  # ... and start close to the identity

    model.train()
    model(**inputs).loss.backward()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached == trained
    assert trained == set(compacter.trainable_parameters(model))  # the task's own: the base model stays frozen
    assert all(n.startswith("compacter.tasks.default.") for n in trained)
    assert {n for n in trained if ".base." in n} == {
        n for n, g in compacter.parameter_groups(model).items() if g in ("layer_norms", "head")}
    assert all(torch.isfinite(model.get_parameter(n).grad).all() for n in trained)
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in trained if ".base." not in n)


@pytest.mark.parametrize("name", FAMILIES)
def test_save_and_load_give_the_same_outputs_and_generations(name, tmp_path):
    family = FAMILIES[name]
    model = compacter.apply(build(family), "compacter")
    inputs = batch(family)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(**inputs).loss.backward()
    optimizer.step()
    model.eval()
    compacter.save(model, tmp_path / "adapter")
    loaded = compacter.load(build(family), tmp_path / "adapter")
    assert torch.equal(logits(loaded, inputs), logits(model, inputs))
    if name in GENERATES:
        prompt = inputs["input_ids"][:, :4]
        options = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0)
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), **options)
        assert generated.shape[1] == (4 if family.task == "seq2seq" else 7)
        assert torch.equal(loaded.generate(prompt, attention_mask=torch.ones_like(prompt), **options), generated)


@pytest.mark.parametrize("name", ["mixtral", "albert"])
def test_a_bf16_model_computes_in_bf16_with_fp32_trained_parameters(name):
    family = FAMILIES[name]
    model = compacter.apply(build(family).to(torch.bfloat16), "compacter")
    assert {p.dtype for p in model.compacter.parameters()} == {torch.float32}
    model.train()
    out = model(**batch(family))
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()


def test_gemma3_with_vision_gets_adapters_in_its_language_model_only():
    config = transformers.Gemma3Config(
        text_config=dict(DECODER, vocab_size=300), mm_tokens_per_image=4, image_token_index=299, boi_token_index=297,
        eoi_token_index=298, vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=2, image_size=28, patch_size=14))
    model = compacter.apply(build(Family("gemma3", lambda: transformers.Gemma3ForConditionalGeneration(config), "causal",
                                         (), ())), "compacter")
    assert model.config.model_type == "gemma3"
    assert adapter_sites(model) == sorted(f"model.language_model.layers.{i}.{site}" for i in range(LAYERS)
                                          for site in ("self_attn.o_proj", "mlp.down_proj"))
    ids = torch.randint(3, 290, (2, 6), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.compacter.task().up.s.grad.abs().sum() > 0
    assert model.generate(ids[:, :3], max_new_tokens=2, min_new_tokens=2, do_sample=False).shape == (2, 5)


# --- ALBERT: one block's weights serve every layer position ----------------------------------------

def positions(model, module: str, calls: int = 3) -> list[int | None]:
    slots = model.compacter.task().sites[BOTTLENECK]
    return [slots[f"{module}@{p}"].index if f"{module}@{p}" in slots else None for p in range(calls)]


def test_albert_gets_an_adapter_per_layer_position():
    model = build(FAMILIES["albert"])
    layer = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    # Each position's adapter acts at its own call: record the sublayer's output before and after the adapter
    # at every call (hooks registered before apply see the raw output, after it the adapted one).
    records = []
    layer.ffn_output.register_forward_hook(lambda module, args, output: records.append(output))
    compacter.apply(model, "compacter")
    layer.ffn_output.register_forward_hook(lambda module, args, output: records.append(output))
    prefix = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    assert positions(model, prefix + "attention.dense") == [0, 1, 2]
    assert positions(model, prefix + "ffn_output") == [3, 4, 5]
    assert [site.layers for site in model.compacter.config.selected_sites(model)] == [range(3), range(3)]
    inputs = batch(FAMILIES["albert"])
    logits(model, inputs)
    logits(model, inputs)  # the count starts again at each forward pass
    assert len(records) == 12
    task = model.compacter.task()
    (down_weights, down_biases), (up_weights, up_biases) = task.down.build(), task.up.build()
    with torch.no_grad():
        for call in range(6):
            raw, adapted = records[2 * call], records[2 * call + 1]
            slot = 3 + call % 3
            expected = bottleneck(raw, down_weights[slot], down_biases[slot], up_weights[slot], up_biases[slot], "gelu")
            torch.testing.assert_close(adapted, expected)
        # the three positions' adapters differ, so using one slot for every call would not pass the check above
        assert not torch.equal(up_weights[3], up_weights[4])


def test_albert_layer_selection_and_groups():
    dropped = compacter.apply(build(FAMILIES["albert"]), "adapterdrop", skip_first_layers=1)
    attention = "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.dense"
    assert positions(dropped, attention) == [None, 0, 1] and dropped.compacter.task().down.count == 4
    inputs = batch(FAMILIES["albert"])
    dropped.train()
    dropped(**inputs).loss.backward()
    grouped = compacter.apply(build(Family("albert", _albert(layers=4, groups=2), "classify", (), ())), "compacter")
    sites = grouped.compacter.config.selected_sites(grouped)
    assert [(site.name.split(".")[3], site.sublayer, site.layers) for site in sites] == [
        ("0", "attention", range(0, 2)), ("0", "feed_forward", range(0, 2)),
        ("1", "attention", range(2, 4)), ("1", "feed_forward", range(2, 4))]
    assert compacter.count_parameters(grouped).groups["adapters"] == 8 * (2 * (4 + 128) + 4 + 128)


def test_calling_a_part_of_albert_past_its_layer_count_is_refused():
    model = compacter.apply(build(FAMILIES["albert"]), "compacter")
    layer = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    for _ in range(3):
        layer.ffn_output(torch.randn(1, 3, 256))
    with pytest.raises(RuntimeError, match="is shared by 3 layer positions but ran a 4th time in one forward pass.*"
                                           "call the model rather than a part of it"):
        layer.ffn_output(torch.randn(1, 3, 256))
    logits(model, batch(FAMILIES["albert"]))  # a forward of the model starts the count again
    logits(model, batch(FAMILIES["albert"]))


# --- Models that are not in the table ------------------------------------------------------------

# The sites inference finds, where they differ from the table's: in qwen2_moe's dense layer the MLP's own
# output projection (the same output as the MLP's).
INFERRED_DIFFERENTLY = {"qwen2_moe": {"model.layers.0.mlp": "model.layers.0.mlp.down_proj"}}


@pytest.mark.parametrize("name", [name for name in FAMILIES if name != "albert"])  # a shared block is one module to it
def test_inference_finds_the_tables_sites(name, monkeypatch):
    family = FAMILIES[name]
    monkeypatch.delitem(architectures.ARCHITECTURES, name)
    with pytest.warns(UserWarning, match=rf"compacter: inferred adapter sites for a '{name}' model.*"
                                         r"attention_output=r'.*', feed_forward_output=r'.*'\. Pass attention_output="):
        model = compacter.apply(build(family), "compacter")
    renamed = INFERRED_DIFFERENTLY.get(name, {})
    assert adapter_sites(model) == sorted(renamed.get(site, site) for site in family.sites())
    model.train()
    model(**batch(family)).loss.backward()


def test_the_inferred_patterns_can_be_passed_back_and_overridden(monkeypatch):
    family = FAMILIES["bart"]
    monkeypatch.delitem(architectures.ARCHITECTURES, "bart")
    with pytest.warns(UserWarning, match="inferred") as caught:
        spec = placement.resolve_spec(build(family), None, None)
    assert spec.attention_output == r"^(?:model\.encoder\.layers|model\.decoder\.layers)\.\d+\.self_attn\.out_proj$"
    assert spec.feed_forward_output == r"^(?:model\.encoder\.layers|model\.decoder\.layers)\.\d+\.fc2$"
    assert f"attention_output=r'{spec.attention_output}'" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both given: nothing inferred, nothing printed
        given = compacter.apply(build(family), "compacter", attention_output=spec.attention_output,
                                feed_forward_output=spec.feed_forward_output)
    assert adapter_sites(given) == family.sites()
    with pytest.warns(UserWarning, match="inferred"):
        encoder_only = compacter.apply(build(family), "compacter", feed_forward_output=r"encoder\.layers\.\d+\.fc2$")
    assert adapter_sites(encoder_only) == sorted(
        [f"model.{s}.layers.{i}.self_attn.out_proj" for s in ("encoder", "decoder") for i in range(2)]
        + [f"model.encoder.layers.{i}.fc2" for i in range(2)])


def test_an_inferred_model_saves_and_loads(monkeypatch, tmp_path):
    family = FAMILIES["mixtral"]
    monkeypatch.delitem(architectures.ARCHITECTURES, "mixtral")
    with pytest.warns(UserWarning, match="inferred"):
        model = compacter.apply(build(family), "compacter")
    with torch.no_grad():
        model.compacter.task().up.bias.add_(0.1)  # as if trained
    compacter.save(model, tmp_path)
    with pytest.warns(UserWarning, match="inferred"):
        loaded = compacter.load(build(family), tmp_path)
    assert adapter_sites(loaded) == family.sites()
    assert torch.equal(logits(loaded, batch(family)), logits(model, batch(family)))


def test_inference_enumerates_blocks_that_differ():
    found = {("model.layers", "mlp.down_proj"): [0], ("model.layers", "mlp"): [1, 2]}
    assert site_inference._names_pattern(found, {"model.layers": 3}) == (
        r"^(?:model\.layers\.(?:0)\.mlp\.down_proj|model\.layers\.(?:1|2)\.mlp)$")


def test_patterns_that_match_a_module_and_one_inside_it_are_refused():
    with pytest.raises(ValueError, match=r"match both 'model\.layers\.0\.mlp' and 'model\.layers\.0\.mlp\.down_proj', "
                                         r"which is inside it.*end it with '\$'"):
        compacter.apply(tiny_llama(), "compacter", feed_forward_output=r"layers\.\d+\.mlp(\.down_proj)?$")
    with pytest.raises(ValueError, match=r"match both 'model\.layers\.0\.mlp\.down_proj' and .* \(as attention and as "
                                         r"feed-forward output\)"):
        compacter.apply(tiny_llama(), "compacter", attention_output=r"mlp\.down_proj$")


def test_a_non_linear_site_needs_a_hidden_size():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mix, self.fc = torch.nn.Identity(), torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(self.mix(x))

    net = torch.nn.Sequential(torch.nn.ModuleList([Block()]))
    with pytest.raises(ValueError, match=r"'0\.0\.mix' \(Identity\) is not a linear layer.*hidden_size"):
        compacter.apply(net, "adapter", bottleneck_size=2, attention_output=r"mix$", feed_forward_output=r"fc$")


def test_a_site_that_returns_a_tuple_adapts_its_first_element_and_keeps_the_rest():
    """transformers 4.57's MoE blocks return (hidden_states, router_logits)."""
    class Mixture(torch.nn.Module):
        def forward(self, x):
            return 2 * x, x.sum(-1)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_out, self.moe = torch.nn.Linear(8, 8), Mixture()

        def forward(self, x):
            return self.moe(self.attn_out(x))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(hidden_size=8)
            self.blocks = torch.nn.ModuleList([Block()])

        def forward(self, x):
            return self.blocks[0](x)

    model = compacter.apply(Net(), "adapter", bottleneck_size=2, attention_output=r"attn_out$", feed_forward_output=r"moe$")
    assert adapter_sites(model) == ["blocks.0.attn_out", "blocks.0.moe"]
    x = torch.randn(3, 8)
    hidden, router = model(x)
    attended = model.blocks[0].attn_out(x)  # with its adapter
    weights = model.compacter.task().site_weights(BOTTLENECK, "blocks.0.moe", x)
    torch.testing.assert_close(hidden, bottleneck(2 * attended, weights.down_transposed.t(), weights.down_bias,
                                                  weights.up_transposed.t(), weights.up_bias, weights.activation))
    assert not torch.allclose(hidden, 2 * attended)
    torch.testing.assert_close(router, attended.sum(-1))
