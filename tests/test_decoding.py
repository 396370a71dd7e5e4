"""Compiled decoding (compacter.compiled_generate, `predict --compile`): a static KV cache and a compiled step give
the same greedy tokens as eager decoding, with adapters and with a routed batch; eager, with one log line, elsewhere.

aot_eager runs dynamo and AOT autograd, the stages that see our code, without inductor's minute-long C++ build."""

import logging

import pytest
import torch
from conftest import tiny_bert, tiny_llama, tiny_t5
from torch._dynamo.utils import counters

import compacter
from compacter import decoding


def two_tasks(make):
    """A model with two compacter++ tasks far enough apart that a row's task changes its tokens."""
    model = make()
    for seed, name in enumerate(["rte", "mrpc"]):
        compacter.apply(model, "compacter++", name=name)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in compacter.trainable_parameters(model, name).values():
                param.add_(torch.randn(param.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("make", [tiny_t5, tiny_llama], ids=["t5", "llama"])
def test_compiled_greedy_decoding_equals_eager_token_for_token(make):
    model = two_tasks(make)
    ids = torch.randint(2, 128, (3, 6), generator=torch.Generator().manual_seed(0))
    request = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                   num_beams=1, pad_token_id=0)
    rows = ["rte", "mrpc", "rte"]
    compacter.set_active(model, "mrpc")
    single = model.generate(**request)
    with compacter.route(model, rows):
        routed = model.generate(**request)
    assert not torch.equal(single, routed)  # the routing is seen in the tokens

    torch._dynamo.reset()
    counters.clear()
    assert torch.equal(compacter.compiled_generate(model, backend="aot_eager", **request), single)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]  # it compiled, in one piece
    with compacter.route(model, rows):
        assert torch.equal(compacter.compiled_generate(model, backend="aot_eager", **request), routed)


def test_decoding_that_cannot_compile_runs_eagerly_with_one_log_line(caplog, monkeypatch):
    model = compacter.apply(tiny_t5(), "compacter++").eval()
    ids = torch.randint(2, 128, (2, 5), generator=torch.Generator().manual_seed(1))
    monkeypatch.setattr(type(model), "_can_compile_fullgraph", False)
    monkeypatch.setattr(decoding, "_said", set())
    with caplog.at_level(logging.WARNING, logger="compacter"):
        for _ in range(2):
            out = compacter.compiled_generate(model, input_ids=ids, max_new_tokens=3, do_sample=False)
            assert torch.equal(out, model.generate(input_ids=ids, max_new_tokens=3, do_sample=False))
    assert [r.getMessage() for r in caplog.records if r.name == "compacter"] == [
        "--compile: decoding eagerly: transformers does not compile T5ForConditionalGeneration's decoding with a "
        "static cache."]
    assert decoding.uncompilable_reason(tiny_bert()) == ("BertForSequenceClassification does not generate (a "
                                                          "classifier answers in one forward pass)")


def test_a_failing_compiler_falls_back_to_eager_decoding(caplog, monkeypatch):
    model = compacter.apply(tiny_llama(), "compacter++").eval()
    ids = torch.randint(2, 128, (2, 5), generator=torch.Generator().manual_seed(2))

    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(decoding, "_said", set())
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="compacter"):
        out = compacter.compiled_generate(model, backend=broken, input_ids=ids, max_new_tokens=3, do_sample=False,
                                          pad_token_id=0)
    assert torch.equal(out, model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0))
    said = [r.getMessage() for r in caplog.records if r.name == "compacter"]
    assert said == ["--compile: decoding eagerly: compiling failed (RuntimeError: no C++ compiler found)."]


def test_routed_compiled_decoding_compiles_once():
    model = two_tasks(tiny_llama)
    ids = torch.randint(2, 128, (2, 5), generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    counters.clear()
    with compacter.route(model, ["rte", "mrpc"]):
        compacter.compiled_generate(model, backend="eager", input_ids=ids, max_new_tokens=4, do_sample=False,
                                    pad_token_id=0)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_compiled_decoding_of_a_bf16_base_compiles(caplog, monkeypatch):
    model = compacter.apply(tiny_t5().to(torch.bfloat16), "compacter++").eval()
    ids = torch.randint(2, 128, (2, 5), generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(decoding, "_said", set())
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="compacter"):
        out = compacter.compiled_generate(model, backend="eager", input_ids=ids, max_new_tokens=2, do_sample=False)
    assert torch.equal(out, model.generate(input_ids=ids, max_new_tokens=2, do_sample=False))
    assert not [r for r in caplog.records if r.name == "compacter"]  # no fallback to eager decoding
