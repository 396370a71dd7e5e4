"""Quantized frozen bases: what is quantized, outputs, training, adapters that move between a quantized base and the
unquantized one, transformers' Trainer, and `compacter train --quantize`."""

import json

import pytest
import torch
import transformers
from conftest import tiny_bert, tiny_t5, write_tiny_pretrained
from torch import nn
from training_fixtures import corpus, sentiment_rows, write_csv

import compacter
import compacter.integrations
from compacter.inventory import architecture_fingerprint
from compacter.quantization import (
    bitsandbytes_linear,
    dequantized,
    is_quantized,
    logical_shape,
    quantizable_linears,
    quantize_base,
    storage_bytes,
    weight_bytes,
)
from compacter.training import TrainConfig, train

torchao = pytest.importorskip("torchao", reason="torchao is not installed (pip install 'compacter-adapters[quant]')")

IDS = torch.randint(2, 128, (3, 9), generator=torch.Generator().manual_seed(0))


def perturb(model, seed=1):
    """Adapters that change the outputs (a fresh compacter++ adds ~0), the same on every model with the same seed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in compacter.trainable_parameters(model).values():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: module.weight for name, module in model.named_modules() if isinstance(module, nn.Linear)}


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_the_frozen_linears_are_quantized_and_nothing_a_task_trains(kind):
    model, reference = tiny_bert(), tiny_bert()
    quantize_base(model, kind)
    weights = linear_weights(model)
    assert not is_quantized(weights["classifier"])  # the new head trains
    quantized = {name for name, w in weights.items() if is_quantized(w)}
    assert quantized == set(weights) - {"classifier"}  # attention, feed-forward, pooler
    assert all(not is_quantized(p) for name, p in model.named_parameters() if "LayerNorm" in name or "embeddings" in name)

    # values: per-row int8 within half a step of max|row| / 127; int4 within half a step of each group of 32
    for name in quantized:
        original = reference.get_submodule(name).weight.detach()
        values = dequantized(weights[name])
        if kind == "int8":
            step = original.abs().amax(dim=1, keepdim=True) / 127
        else:  # asymmetric-free symmetric int4: [-8, 7] over max|group|
            step = original.view(original.shape[0], -1, 32).abs().amax(-1, keepdim=True).repeat_interleave(32, -1)
            step = step.view_as(original) / 7.5
        assert values.shape == original.shape and torch.all((values - original).abs() <= step / 2 + 1e-6)


def test_the_output_layer_and_tied_weights_stay_as_they_are():
    model = tiny_t5()
    assert model.lm_head.weight is model.shared.weight
    quantize_base(model, "int8")
    assert model.lm_head.weight is model.shared.weight and not is_quantized(model.lm_head.weight)
    assert is_quantized(model.encoder.block[0].layer[1].DenseReluDense.wo.weight)
    assert "lm_head" not in quantizable_linears(tiny_t5())


def test_base_memory_counts_the_stored_bytes():
    model = tiny_bert()
    full = weight_bytes(model)
    assert full == 4 * sum(p.numel() for p in model.parameters())
    linears = {name: module for name, module in model.named_modules() if name in quantizable_linears(model)}
    quantize_base(model, "int8")
    # int8 values, and per output row an fp32 scale and an int8 zero point, in place of 4 bytes per weight
    saved = sum(3 * m.weight.numel() - 5 * m.out_features for m in linears.values())
    assert weight_bytes(model) == full - saved


@pytest.mark.parametrize("kind,tolerance", [("int8", 0.05), ("int4", 0.3)])
def test_a_quantized_base_computes_close_to_the_fp32_one_and_trains_only_the_tasks_parameters(kind, tolerance):
    model, reference = tiny_bert(), tiny_bert()
    quantize_base(model, kind)
    for m in (model, reference):
        perturb(compacter.apply(m, "compacter++"))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=IDS).logits, reference(input_ids=IDS).logits, atol=tolerance)
    assert compacter.count_parameters(model) == compacter.count_parameters(reference)  # logical parameters

    stored = {name: dequantized(w).clone() for name, w in linear_weights(model).items()}
    model.train()
    loss = model(input_ids=IDS, labels=torch.tensor([0, 1, 2])).loss
    loss.backward()
    trained = compacter.trainable_parameters(model)
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(trained) and all(trained[n].grad.abs().sum() > 0 for n in with_grad)
    torch.optim.AdamW(trained.values(), lr=1e-2).step()
    assert all(torch.equal(dequantized(w), stored[name]) for name, w in linear_weights(model).items())


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_an_adapter_moves_between_a_quantized_base_and_the_fp32_one(kind, tmp_path):
    quantized = quantize_base(tiny_bert(), kind)
    assert architecture_fingerprint(quantized) == architecture_fingerprint(tiny_bert())
    perturb(compacter.apply(quantized, "compacter++"), seed=2)
    quantized.eval().save_pretrained(tmp_path / "from-quantized")

    fp32 = compacter.load(tiny_bert(), tmp_path / "from-quantized")
    for name, param in compacter.trainable_parameters(fp32).items():
        assert torch.equal(param, compacter.trainable_parameters(quantized)[name])
    with torch.no_grad():
        assert torch.allclose(fp32(input_ids=IDS).logits, quantized(input_ids=IDS).logits, atol=0.3)

    # and back: trained on the fp32 base, loaded onto a fresh quantized one
    perturb(fp32, seed=3)
    fp32.save_pretrained(tmp_path / "from-fp32")
    again = compacter.load(quantize_base(tiny_bert(), kind), tmp_path / "from-fp32").eval()
    with torch.no_grad():
        assert torch.allclose(again(input_ids=IDS).logits, fp32(input_ids=IDS).logits, atol=0.3)
    assert compacter.count_parameters(again) == compacter.count_parameters(fp32)


def test_packed_4bit_weights_describe_their_logical_shape():
    """bitsandbytes' NF4 weights are packed bytes: the fingerprint and the counts read their unpacked shape."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'compacter-adapters[quant]')")
    model, reference = tiny_bert(), tiny_bert()
    for name in quantizable_linears(model):
        parent, _, child = name.rpartition(".")
        # bitsandbytes quantizes on the CPU too; quantize_base itself runs it on CUDA GPUs only
        setattr(model.get_submodule(parent), child, bitsandbytes_linear(model.get_submodule(name), "nf4", "cpu"))
    weight = model.bert.encoder.layer[0].output.dense.weight
    assert tuple(weight.shape) != (128, 256) and logical_shape(weight) == (128, 256)
    assert storage_bytes(weight) < 128 * 256  # about half a byte per weight, with its block scales
    assert architecture_fingerprint(model) == architecture_fingerprint(reference)
    compacter.apply(model, "compacter++")
    compacter.apply(reference, "compacter++")
    assert compacter.count_parameters(model) == compacter.count_parameters(reference)


def test_quantization_errors_say_what_to_do():
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--quantize nf4 uses bitsandbytes' CUDA kernels and needs a CUDA GPU "
                                             r"\(no CUDA GPU is available here\). On a CPU, quantize with int8 or int4"):
            quantize_base(tiny_bert(), "nf4")
    with pytest.raises(ValueError, match=r"needs a CUDA GPU \(.*\)\. On a CPU, quantize with int8 or int4"):
        quantize_base(tiny_bert(), "bnb-int8", device="cpu")
    with pytest.raises(ValueError, match=r"Unknown quantization 'int2'; choose one of int8, int4, nf4, bnb-int8"):
        quantize_base(tiny_bert(), "int2")
    with pytest.raises(ValueError, match=r"Quantize the base model before compacter.apply\(\)"):
        quantize_base(compacter.apply(tiny_bert(), "compacter++"), "int8")
    quantized = quantize_base(tiny_bert(), "int8")
    for method in ("full", "bitfit"):
        with pytest.raises(ValueError, match=rf"The method '{method}' trains the base model's own parameters in place, "
                                             r"and this base is quantized \(bert\.encoder\.layer\.0\.attention\.self"
                                             r"\.query\.weight is stored in 8 or 4 bits\)"):
            compacter.apply(quantized, method)
    assert not hasattr(quantized, "compacter")
    with pytest.raises(ValueError, match=r"--quantize int8 freezes the base model in 8 or 4 bits, but the method 'full'"):
        TrainConfig(model="m", task="rte", method="full", quantize="int8")
    with pytest.raises(ValueError, match=r"quantize must be one of 'int8', 'int4', 'nf4', 'bnb-int8'"):
        TrainConfig(model="m", task="rte", quantize="fp8")


@pytest.fixture(scope="module")
def tiny_pretrained_bert(tmp_path_factory):
    return write_tiny_pretrained(tmp_path_factory.mktemp("bert"), "bert", corpus())


def test_transformers_trainer_trains_a_torchao_quantized_model_with_compacters_trainer(tmp_path):
    from torchao.quantization import Int8WeightOnlyConfig

    tiny_bert(num_labels=2).save_pretrained(tmp_path / "bert")  # a checkpoint with a classifier
    model = transformers.BertForSequenceClassification.from_pretrained(
        tmp_path / "bert", quantization_config=transformers.TorchAoConfig(Int8WeightOnlyConfig()))
    assert model.is_quantized and is_quantized(model.classifier.weight)  # transformers quantizes the head too
    compacter.apply(model, "compacter++")
    head = compacter.trainable_parameters(model)["compacter.tasks.default.base.classifier.weight"]
    assert not is_quantized(head) and torch.equal(head, dequantized(model.classifier.weight))  # an fp32 copy to train

    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(3, 30, (8,), generator=generator), "labels": i % 2} for i in range(8)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                                          learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True)
    with pytest.raises(ValueError, match="purely quantized"):
        transformers.Trainer(model=model, args=args, train_dataset=rows)
    before = {name: p.detach().clone() for name, p in compacter.trainable_parameters(model).items()}
    base = dequantized(model.bert.encoder.layer[0].output.dense.weight).clone()
    compacter.integrations.Trainer(model=model, args=args, train_dataset=rows).train()
    after = compacter.trainable_parameters(model)
    assert all(not torch.equal(before[name], after[name]) for name in before if name.endswith(".s"))
    assert torch.equal(dequantized(model.bert.encoder.layer[0].output.dense.weight), base)


def test_train_quantize_int8_runs_and_its_adapter_loads_onto_the_fp32_base(tiny_pretrained_bert, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", sentiment_rows(60))
    settings = dict(model=str(tiny_pretrained_bert), task=str(data), text_column="review", label_column="sentiment",
                    epochs=1, batch_size=16, warmup_steps=0)
    results = train(TrainConfig(**settings, quantize="int8", output_dir=str(tmp_path / "int8")))
    assert results["identity"]["hyper_parameters"]["quantize"] == "int8"
    plain = TrainConfig(**settings, output_dir=str(tmp_path / "fp32"))
    from compacter.training.identity import hyper_parameters
    assert "quantize" not in hyper_parameters(plain)  # runs recorded before --quantize keep their identity

    fp32 = compacter.load(transformers.BertForSequenceClassification.from_pretrained(tiny_pretrained_bert, num_labels=2),
                          tmp_path / "int8" / "adapter")
    assert compacter.count_parameters(fp32).to_dict() == results["parameters"]
    assert json.loads((tmp_path / "int8" / "adapter" / "compacter_config.json").read_text())["base_model"] == \
        architecture_fingerprint(transformers.BertForSequenceClassification.from_pretrained(tiny_pretrained_bert,
                                                                                            num_labels=2))


def _bitsandbytes_on_cpu_reason(kind: str) -> str | None:
    """Why ``kind`` cannot run here (None: it can): bitsandbytes' CPU path came with 0.49."""
    if kind not in ("nf4", "bnb-int8"):
        return None
    try:
        import bitsandbytes  # noqa: F401
        bitsandbytes_linear(nn.Linear(64, 64), kind, "cpu")(torch.randn(2, 64))
    except Exception as error:  # noqa: BLE001 — any failure of the CPU path is a reason to skip, named
        return f"bitsandbytes' CPU path cannot run {kind} here ({type(error).__name__}: {error})"
    return None


@pytest.mark.parametrize("kind", ["int8", "int4", "nf4", "bnb-int8"])
@pytest.mark.parametrize("family", ["t5", "llama"])
def test_every_quantized_kind_answers_in_the_activations_dtype_and_compacter_trains_on_it(kind, family):
    """nf4 on T5 used to cast wo's input to the packed weight's uint8 (issue 21); each kind, each dtype."""
    from conftest import tiny_llama

    from compacter.quantization import quantize_linears

    if reason := _bitsandbytes_on_cpu_reason(kind):
        pytest.skip(reason)
    def quantized(dtype):
        return quantize_linears((tiny_t5() if family == "t5" else tiny_llama()).to(dtype), kind, torch.device("cpu"))

    for dtype in (torch.float32, torch.bfloat16):  # a model in one dtype, called in that dtype, answers in it
        model = quantized(dtype)
        layers = [m for m in model.modules() if any(is_quantized(p) for p in m.parameters(recurse=False))]
        assert layers
        for layer in layers[:3]:
            assert layer(torch.randn(2, 5, logical_shape(layer.weight)[1], dtype=dtype)).dtype == dtype
        if kind == "nf4" and dtype == torch.float32:  # under autocast: the autocast dtype, as a plain Linear's
            assert layers[0].compute_dtype == torch.float32
            with torch.autocast("cpu", dtype=torch.bfloat16):
                layers[0](torch.randn(2, 5, logical_shape(layers[0].weight)[1]))
            assert layers[0].compute_dtype == torch.bfloat16

    compacter.apply(model, "compacter++")
    model.train()
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(2, 128, (4, 9), generator=generator)}
    inputs["labels"] = torch.randint(2, 128, (4, 5), generator=generator) if family == "t5" else inputs["input_ids"]
    trained = compacter.trainable_parameters(model)
    before = {name: p.detach().clone() for name, p in trained.items()}
    base = {name: dequantized(m.weight).clone() for name, m in model.named_modules() if m in layers}
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model(**inputs).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[n], p) for n, p in trained.items() if n.endswith((".s", ".A")))
    assert all(torch.equal(dequantized(model.get_submodule(n).weight), w) for n, w in base.items())


def test_nf4_leaves_t5s_wo_in_full_precision_as_transformers_does():
    names = quantizable_linears(tiny_t5(), "nf4")
    assert names and not any(name.endswith(".wo") for name in names)
    assert any(name.endswith(".wo") for name in quantizable_linears(tiny_t5(), "bnb-int8"))
    assert quantizable_linears(tiny_bert(), "nf4") == quantizable_linears(tiny_bert())  # BERT keeps nothing back
