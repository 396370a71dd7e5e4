"""What the PEFT fixtures hold: shared by tests/fixtures/peft/make_fixtures.py (run once, with peft) and the tests
(run everywhere, without peft).

Each folder ``fixtures/peft/<model>-<method>/`` is PEFT's own ``save_pretrained`` output (adapter_config.json and
adapter_model.safetensors) plus ``outputs.safetensors``: the inputs the fixture script fed and PEFT's outputs on them.
The base weights are not committed; they are rebuilt with conftest's tiny builders, and ``base_sha256`` in the outputs'
metadata proves the rebuilt base is the one PEFT wrapped.
"""

import hashlib
from pathlib import Path

import torch
from conftest import tiny_bert, tiny_llama, tiny_t5

FIXTURES = Path(__file__).parent / "fixtures" / "peft"
BUILDERS = {"t5": tiny_t5, "bert": tiny_bert, "llama": tiny_llama}
METHODS = ("lora", "ia3")
# Greedy decoding of exactly four tokens (min_new_tokens keeps an early end-of-sequence from shortening a row).
GENERATE = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}


def fixture_folder(model: str, method: str) -> Path:
    return FIXTURES / f"{model}-{method}"


def state_dict_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of every tensor in ``model.state_dict()`` (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
