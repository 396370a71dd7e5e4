"""Prompt tuning and Intrinsic-SAID: the Fastfood math, the prompt's plumbing, training, saving."""

import copy

import numpy as np
import pytest
import scipy.linalg
import torch
import transformers
from conftest import tiny_bert, tiny_gpt2, tiny_llama, tiny_t5
from test_methods import train_steps

import compacter
from compacter import fastfood
from compacter.fastfood import Fastfood, FastfoodFunction, draw_fastfood, fwht, hadamard_matrix


@pytest.mark.parametrize("length", [1, 2, 4, 32, 64, 2048])
@pytest.mark.parametrize("block_bits", [1, 3, 5])
def test_fast_walsh_hadamard_equals_scipy_hadamard_product(length, block_bits, monkeypatch):
    monkeypatch.setattr(fastfood, "HADAMARD_BLOCK_BITS", block_bits)
    x = torch.randn(3, length, dtype=torch.float64)
    expected = x.numpy() @ scipy.linalg.hadamard(length)
    np.testing.assert_allclose(fwht(x).numpy(), expected, rtol=1e-10, atol=1e-9)
    assert torch.equal(hadamard_matrix(length, torch.float64), torch.from_numpy(scipy.linalg.hadamard(length)).double())


def test_fwht_refuses_a_length_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power-of-two length, got 12; zero-pad"):
        fwht(torch.zeros(12))


def explicit_fastfood(count, in_size, out_size, seed) -> torch.Tensor:
    """S H G Π H B built entry by entry from the definition and the full random draws."""
    drawn = draw_fastfood(count, in_size, out_size, seed)
    length = drawn["gains"].shape[1]
    H = torch.from_numpy(scipy.linalg.hadamard(length)).double()
    matrices = []
    for c in range(count):
        B = torch.diag(drawn["signs"][c].double())
        Pi = torch.zeros(length, length, dtype=torch.float64)
        for row, column in enumerate(drawn["permutation"][c].tolist()):
            Pi[row, column] = 1.0  # (Π v)[row] = v[π(row)]
        G = torch.diag(drawn["gains"][c].double())  # G with the scalar S folded in
        matrices.append((H @ G @ Pi @ H @ B)[:out_size, :in_size])
    return torch.stack(matrices)


@pytest.mark.parametrize("in_size, out_size", [(5, 12), (3, 16), (7, 100), (16, 16), (1, 9), (33, 300)])
def test_fastfood_equals_its_explicit_dense_construction(in_size, out_size):
    projection = Fastfood(3, in_size, out_size, seed=4).double()
    x = torch.randn(in_size, dtype=torch.float64, requires_grad=True)
    dense = explicit_fastfood(3, in_size, out_size, seed=4)
    got = projection(x)
    torch.testing.assert_close(got, dense @ x.detach())
    weights = torch.randn_like(got)
    (got * weights).sum().backward()  # the transposed transform, against the dense transpose
    torch.testing.assert_close(x.grad, torch.einsum("cD,cDd->d", weights, dense))
    drawn = draw_fastfood(3, in_size, out_size, seed=4)
    # S is the reference code's: 1 / sqrt(L · ΣG² · D / L) with the raw Gaussian G
    length = drawn["gains"].shape[1]
    assert length == 1 << (max(in_size, out_size) - 1).bit_length()
    assert torch.all(drawn["signs"].abs() == 1) and sorted(drawn["permutation"][0].tolist()) == list(range(length))


def test_fastfood_backward_is_the_transposed_transform():
    projection = Fastfood(2, 6, 20, seed=0)
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: FastfoodFunction.apply(v, projection.signs, projection.block_index, projection.gains.double(), 20), (x,))


def test_fastfood_is_rebuilt_identically_from_its_seed():
    first, second, other = Fastfood(2, 4, 30, seed=7), Fastfood(2, 4, 30, seed=7), Fastfood(2, 4, 30, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first.buffers(), second.buffers()))
    assert not torch.equal(first.block_index, other.block_index)
    assert first.state_dict() == {}  # nothing random is saved: the seed is


def test_intrinsic_said_counts_d_prime_and_starts_at_the_pretrained_model(seq2seq_batch):
    base = tiny_t5()
    model = compacter.apply(copy.deepcopy(base), "intrinsic-said", dimension=2_000)
    tensors = len({id(p) for p in base.parameters()})
    trained = compacter.trainable_parameters(model)
    assert set(trained) == {"compacter.tasks.default.intrinsic.vector", "compacter.tasks.default.intrinsic.scales"}
    assert trained["compacter.tasks.default.intrinsic.scales"].numel() == tensors
    assert compacter.count_parameters(model).trainable == 2_000
    with torch.no_grad():
        torch.testing.assert_close(model(**seq2seq_batch).logits, base(**seq2seq_batch).logits)


def test_intrinsic_said_weights_are_base_plus_scaled_projection():
    model = compacter.apply(tiny_t5(), "intrinsic-said", dimension=500)
    projection = model.compacter.task().intrinsic
    with torch.no_grad():
        projection.vector.normal_()
        projection.scales.uniform_(0.5, 2.0)
    query = model.encoder.block[0].layer[0].SelfAttention.q
    with torch.no_grad():
        model(input_ids=torch.ones(1, 3, dtype=torch.long), decoder_input_ids=torch.zeros(1, 1, dtype=torch.long))
    index = next(i for i in range(len(projection.base)) if torch.equal(projection.weight(i), query.weight))
    group, row = projection.group_of[index]
    # the Fastfood of this tensor's group, run on its own (its math is checked against the dense matrix above)
    own = Fastfood(len(projection.groups[group]), 500 - len(projection.base), 128 * 128, seed=group)
    assert torch.equal(own.block_index, projection.projections[group].block_index)
    delta = own(projection.vector.detach())[row].view(128, 128)
    torch.testing.assert_close(query.weight, projection.base[index] + projection.scales[index] * delta)
    # tied tensors (T5's embedding and lm_head) are one projected tensor
    assert model.encoder.embed_tokens.weight is model.lm_head.weight


def test_intrinsic_said_refuses_a_dimension_below_the_number_of_tensors():
    with pytest.raises(ValueError, match=r"dimension=10 leaves nothing to project: this model has \d+ weight tensors"):
        compacter.apply(tiny_t5(), "intrinsic-said", dimension=10)


@pytest.mark.parametrize("method", ["prompt-r", "prompt-t", "intrinsic-said"])
def test_baselines_reduce_the_loss_and_freeze_everything_else(method, seq2seq_batch):
    model = compacter.apply(tiny_t5(), method, **({"num_tokens": 8} if method.startswith("prompt") else {"dimension": 2000}))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = train_steps(model, seq2seq_batch, steps=10, lr=3e-2 if method != "prompt-t" else 3e-1)
    assert losses[-1] < 0.9 * losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


def test_prompt_removed_leaves_the_model_unchanged_and_present_changes_it(seq2seq_batch):
    base = tiny_t5()
    model = compacter.apply(copy.deepcopy(base), "prompt-r", num_tokens=6)
    assert compacter.count_parameters(model).groups == {"prompt": 6 * 128}
    with torch.no_grad():
        prompted = model(**seq2seq_batch).logits
        with compacter.disabled(model):
            torch.testing.assert_close(model(**seq2seq_batch).logits, base(**seq2seq_batch).logits, rtol=0, atol=0)
        assert not torch.allclose(prompted, base(**seq2seq_batch).logits)
        # a prompt is the same as writing its vectors in front of the input embeddings
        prompt = model.compacter.task().prompt.embeddings.expand(4, -1, -1)
        embeds = torch.cat([prompt, base.shared(seq2seq_batch["input_ids"])], 1)
        mask = torch.cat([torch.ones(4, 6, dtype=torch.long), seq2seq_batch["attention_mask"]], 1)
        by_hand = base(inputs_embeds=embeds, attention_mask=mask, labels=seq2seq_batch["labels"]).logits
        torch.testing.assert_close(prompted, by_hand)


def test_prompt_masks_padding_and_reaches_the_decoders_cross_attention():
    base = tiny_t5()
    model = compacter.apply(copy.deepcopy(base), "prompt-r", num_tokens=4)
    ids = torch.tensor([[5, 6, 7, 1]])
    padded, mask = torch.tensor([[5, 6, 7, 1, 0, 0]]), torch.tensor([[1, 1, 1, 1, 0, 0]])
    decoder = torch.zeros(1, 2, dtype=torch.long)
    with torch.no_grad():
        plain = model(input_ids=ids, decoder_input_ids=decoder).logits
        masked = model(padded, mask, decoder_input_ids=decoder).logits  # positional arguments too
    torch.testing.assert_close(plain, masked)


def test_generate_uses_the_prompt():
    base = tiny_t5(seed=2)
    model = compacter.apply(copy.deepcopy(base), "prompt-r", num_tokens=5)
    ids = torch.tensor([[9, 10, 11, 12, 1], [13, 14, 1, 0, 0]])
    mask = (ids != 0).long()
    options = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        generated = model.generate(input_ids=ids, attention_mask=mask, **options)
        unprompted = base.generate(input_ids=ids, attention_mask=mask, **options)
        sequence = generated.sequences
        # every step's logits are those of the prompted forward on the tokens so far
        for step, logits in enumerate(generated.logits):
            expected = model(input_ids=ids, attention_mask=mask, decoder_input_ids=sequence[:, : step + 1]).logits[:, -1]
            torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(generated.logits[0], unprompted.logits[0], atol=1e-3)


def test_prompt_t_copies_frequent_token_embeddings_not_the_first_rows():
    model = tiny_t5(vocab_size=6000)
    embeddings = model.shared.weight.detach().clone()
    compacter.apply(model, "prompt-t", num_tokens=20)
    vectors = model.compacter.task().prompt.embeddings.detach()
    rows = [int(torch.where((embeddings == v).all(1))[0][0]) for v in vectors]
    assert all(3 <= r < 5003 for r in rows) and len(set(rows)) == 20 and rows != list(range(3, 23))


def test_bert_prompt_goes_after_cls_and_a_too_long_input_is_refused():
    base = tiny_bert()
    model = compacter.apply(copy.deepcopy(base), "prompt-r", num_tokens=4)
    groups = set(compacter.parameter_groups(model).values())
    assert groups == {"prompt", "head"}  # a new classifier has to train
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad():
        out = model(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))
        embeds = base.bert.embeddings.word_embeddings(ids)
        prompt = model.compacter.task().prompt.embeddings.expand(2, -1, -1)
        by_hand = base(inputs_embeds=torch.cat([embeds[:, :1], prompt, embeds[:, 1:]], 1)).logits
    torch.testing.assert_close(out.logits, by_hand)
    limit = base.config.max_position_embeddings
    message = rf"An input of {limit} tokens and a prompt of 4 tokens .* at most {limit - 4} tokens"
    with pytest.raises(ValueError, match=message):
        model(input_ids=torch.ones(1, limit, dtype=torch.long))


def test_prompt_refuses_decoder_only_language_models_with_an_alternative():
    for model in (tiny_gpt2(), tiny_llama()):
        with pytest.raises(ValueError, match="decoder-only language models .* Use an adapter method such as "
                                             "'compacter\\+\\+'"):
            compacter.apply(model, "prompt-t")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_classifier_prompt_goes_in_front_and_the_head_reads_the_last_real_token(family):
    """The head finds the last non-padding token from input_ids; the prompt must not shift what it reads."""
    language_model = tiny_gpt2() if family == "gpt2" else tiny_llama()
    config = language_model.config
    config.pad_token_id, config.num_labels = 0, 3
    torch.manual_seed(1)
    base = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    model = compacter.apply(copy.deepcopy(base), "prompt-r", num_tokens=4)
    assert set(compacter.parameter_groups(model).values()) == {"prompt", "head"}
    ids = torch.randint(5, 100, (2, 6))
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1)
    padded[1, 4:] = 0  # the second row is 4 tokens long
    mask = (padded != 0).long()
    with torch.no_grad():
        out = model(input_ids=padded, attention_mask=mask).logits
        prompt = model.compacter.task().prompt.embeddings.expand(2, -1, -1)
        embeds = torch.cat([prompt, base.get_input_embeddings()(padded)], 1)
        hidden = base.base_model(inputs_embeds=embeds, attention_mask=torch.cat([torch.ones(2, 4).long(), mask], 1))[0]
        last = mask.sum(1) - 1 + 4  # the last real token, behind the prompt
        by_hand = base.score(hidden[torch.arange(2), last])
        torch.testing.assert_close(out, by_hand)
        alone = model(input_ids=ids[1:, :4]).logits  # unpadded: the same as its padded row
        torch.testing.assert_close(alone, out[1:])
        with compacter.disabled(model):
            torch.testing.assert_close(model(input_ids=padded, attention_mask=mask).logits,
                                       base(input_ids=padded, attention_mask=mask).logits)
    if family == "gpt2":  # absolute positions: the prompt counts against them
        with pytest.raises(ValueError, match="An input of 64 tokens and a prompt of 4 tokens"):
            model(input_ids=torch.ones(1, 64, dtype=torch.long))


@pytest.mark.parametrize("method", ["prompt-t", "intrinsic-said"])
def test_baselines_save_and_load(method, seq2seq_batch, tmp_path):
    model = compacter.apply(tiny_t5(seed=3), method, **({"num_tokens": 8} if method == "prompt-t" else {"dimension": 1000}))
    train_steps(model, seq2seq_batch, steps=3)
    model.eval()
    compacter.save(model, tmp_path)
    loaded = compacter.load(tiny_t5(seed=3), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(model(**seq2seq_batch).logits, loaded(**seq2seq_batch).logits, rtol=0, atol=0)
    assert (tmp_path / "compacter_model.safetensors").stat().st_size < 10_000


def test_intrinsic_weights_are_reused_without_gradients_only_while_unchanged(seq2seq_batch, tmp_path):
    model = compacter.apply(tiny_t5(seed=5), "intrinsic-said", dimension=1000).eval()
    with torch.no_grad():
        first = model(**seq2seq_batch).logits
        assert torch.equal(model(**seq2seq_batch).logits, first)  # reused
        model.compacter.task().intrinsic.vector.normal_()  # changed in place: the cached weights are stale now
        second = model(**seq2seq_batch).logits
    assert not torch.allclose(first, second)
    compacter.save(model, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(compacter.load(tiny_t5(seed=5), tmp_path)(**seq2seq_batch).logits, second,
                                   rtol=0, atol=0)
