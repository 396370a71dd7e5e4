import os

import pytest
import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network


def tiny_t5(seed: int = 0, **overrides) -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(seed)
    settings = dict(vocab_size=128, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=0.0)
    config = transformers.T5Config(**{**settings, **overrides})
    return transformers.T5ForConditionalGeneration(config).eval()


def tiny_bert(seed: int = 0, num_labels: int = 3) -> transformers.BertForSequenceClassification:
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=128, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, num_labels=num_labels, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_gpt2(seed: int = 0) -> transformers.GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=128, n_embd=128, n_layer=2, n_head=4, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture
def seq2seq_batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(2, 128, (4, 10), generator=generator)
    labels = torch.randint(2, 128, (4, 5), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def write_tiny_pretrained(directory, kind: str, texts: list[str], seed: int = 0):
    """A random tiny model and a word-level tokenizer of ``texts``, saved as a local "pretrained" folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B:1 </s>:1",
                                                             special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(directory)
    vocab = max(32, fast.vocab_size)
    if kind == "t5":
        model = tiny_t5(seed, vocab_size=vocab)
    elif kind == "llama":
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0))
    else:
        torch.manual_seed(seed)
        model = transformers.BertModel(transformers.BertConfig(
            vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0))
    model.save_pretrained(directory)
    return directory
