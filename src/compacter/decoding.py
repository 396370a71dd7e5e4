"""What a model answers for one batch (``batch_answers``: the same in evaluation during training, `compacter evaluate`
and `compacter predict`), and compiled decoding: ``generate`` with a static KV cache and a ``torch.compile``'d step.

``batch_answers`` gives generated text (text-to-text), a class index or a score (a classification or regression
head); ``Task.decode`` turns an answer into the task's text.

Eager decoding of a small batch is bound by the host: every new token launches each layer's kernels
one by one (T5-base, batch 32: the GPU was busy ~61 ms of ~450). transformers can decode with a
cache of fixed size (``cache_implementation="static"``), which makes every step the same shapes, so
that one compiled graph (on CUDA, captured as a CUDA graph: ``mode="reduce-overhead"``) runs each
step. This module asks for that where transformers supports it for the model's family
(``_can_compile_fullgraph``: T5, BART, GPT-2, Llama-style decoders ...), adapters and routed batches
included (``compacter.route`` works the same; a new routing compiles once more), and decodes eagerly,
with one log line, where it does not.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .switching import row_label_counts

log = logging.getLogger("compacter")
_said: set[str] = set()


def uncompilable_reason(model: nn.Module) -> str | None:
    """Why ``model``'s decoding cannot be compiled with a static cache (None: it can)."""
    name = type(model).__name__
    if not callable(getattr(model, "generate", None)):
        return f"{name} does not generate (a classifier answers in one forward pass)"
    if not getattr(type(model), "_can_compile_fullgraph", False):
        return f"transformers does not compile {name}'s decoding with a static cache"
    devices = set(getattr(model, "hf_device_map", {}).values())
    if len(devices) > 1:
        return f"the model is spread over devices ({', '.join(map(str, sorted(devices, key=str)))})"
    return None


def compile_config(model: nn.Module, backend: str = "inductor"):
    """transformers' CompileConfig for ``model``: CUDA graphs on a GPU; on other devices a plain compiled step."""
    from transformers import CompileConfig

    device = next(model.parameters()).device
    config = CompileConfig(backend=backend, mode="reduce-overhead" if device.type == "cuda" else "default")
    config._compile_all_devices = True  # transformers compiles on GPUs alone unless asked (its own flag for tests)
    return config


def compiled_generate(model: nn.Module, *, backend: str = "inductor", **generate_kwargs) -> torch.Tensor:
    """``model.generate(**generate_kwargs)`` with a static KV cache and a compiled decoding step.

    Greedy outputs equal eager decoding's. Where the model cannot be compiled (``uncompilable_reason``) or
    compiling fails, it decodes eagerly and logs why, once per reason. ``backend``: torch.compile's
    (``aot_eager`` checks the graph without building kernels, as the CPU tests do).
    """
    reason = uncompilable_reason(model)
    if reason is None:
        try:
            return model.generate(**generate_kwargs, cache_implementation="static",
                                  compile_config=compile_config(model, backend))
        except Exception as error:  # noqa: BLE001 — a compiler failure; a genuine model error re-raises below
            cause = getattr(error, "inner_exception", None) or error  # dynamo wraps the backend's own error
            reason = f"compiling failed ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
    if reason not in _said:
        _said.add(reason)
        log.warning("--compile: decoding eagerly: %s.", reason)
    return model.generate(**generate_kwargs)


@torch.no_grad()
def batch_answers(model: nn.Module, tokenizer, batch: dict[str, torch.Tensor], *, text_to_text: bool, max_new_tokens: int,
                  synced_gpus: bool = False, compile_backend: str | None = None) -> list[str | int | float]:
    """Greedy decoding of ``max_new_tokens`` at most (text-to-text), else the head's argmax or its score.
    ``compile_backend``: decode with a static cache and a compiled step (``compiled_generate``); None: eagerly.
    Called inside a batch's routing, ``model.generate`` is the routed one."""
    if text_to_text:
        options = {"max_new_tokens": max_new_tokens, "num_beams": 1, "do_sample": False, "synced_gpus": synced_gpus}
        if compile_backend is None:
            generated = model.generate(**batch, **options)
        else:
            generated = compiled_generate(model, backend=compile_backend, **batch, **options)
        return tokenizer.batch_decode(generated, skip_special_tokens=True)
    logits = model(**batch).logits.float()
    # each row's task's label count: a routed batch may mix heads of other sizes (padded with -inf, heads.py)
    counts = row_label_counts(model, logits.shape[0]) or [logits.shape[-1]] * logits.shape[0]
    scores = logits[:, 0].tolist() if 1 in counts else None  # a regression head (STS-B)
    if all(count == 1 for count in counts):
        return scores
    picks = logits.argmax(-1).tolist()
    return [scores[i] if count == 1 else picks[i] for i, count in enumerate(counts)]
