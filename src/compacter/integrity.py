"""What ties a folder's files together: a seal over everything a JSON file says, and a sample of the base's weights.

* ``seal`` adds ``"sha256"``: the SHA-256 of the document's canonical JSON (everything but the seal). An
  adapter's ``adapter_config.json`` (method config, each tensor's shape, dtype and checksum, labels,
  the run it belongs to) and a run's ``results.json`` (identity, scores, the adapter's seal) are
  sealed, so that an edited setting or score is refused, not used. (A seal finds edits and damage;
  anyone can compute one, so it is not a signature.)
* ``base_sample``: eight values of each of up to eight of the base model's frozen weights, enough to
  tell another checkpoint of the same architecture from the one an adapter was trained on, and loose
  enough (1%) that the same base in bf16 or fp16 passes. Quantized and offloaded weights are skipped.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from .inventory import distinct_weights
from .model_anatomy import head_parameter_names
from .quantization import is_quantized

SEAL = "sha256"
SAMPLED_WEIGHTS = 8
VALUES_PER_WEIGHT = 8
RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE = 1e-2, 1e-3  # bf16 keeps 8 bits of mantissa: 0.4% at most


def digest(document: dict[str, Any]) -> str:
    content = {key: value for key, value in document.items() if key != SEAL}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def seal(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as it reads back from its JSON file, with its seal (the last key)."""
    document = json.loads(json.dumps(document))
    return {**{key: value for key, value in document.items() if key != SEAL}, SEAL: digest(document)}


def is_sealed(document: dict[str, Any], path, advice: str) -> bool:
    """True when ``document`` (read from ``path``) carries its seal and it matches; False when it has none (written
    by an earlier compacter); a ValueError naming the file and ``advice`` when it was changed after it was written."""
    if SEAL not in document:
        return False
    if document[SEAL] != digest(document):
        raise ValueError(f"{path} was changed after compacter wrote it (its content no longer matches the checksum "
                         f"recorded in its \"{SEAL}\"): an edited setting or score is not used. {advice}")
    return True


def _sampled(model: nn.Module, frozen_only: bool) -> list[tuple[str, torch.Tensor]]:
    heads = head_parameter_names(model)  # a task's own (new, and sized by its label count): not the base's weights
    return [(name, p) for name, p in distinct_weights(model)
            if not (frozen_only and p.requires_grad) and p.device.type != "meta" and not is_quantized(p)
            and p.is_floating_point() and p.numel() > 0 and name not in heads]


def _values(tensor: torch.Tensor) -> list[float]:
    flat = tensor.detach().reshape(-1)
    positions = torch.linspace(0, flat.numel() - 1, VALUES_PER_WEIGHT).round().long().unique()
    return flat[positions.to(flat.device)].float().cpu().tolist()


def base_sample(model: nn.Module) -> dict[str, list[float]]:
    """A few values of a few of the base model's frozen weights, by name (what ``base_differences`` compares); the
    weights a task trains in place (full, bitfit) are not the base's any more and are left out."""
    weights = _sampled(model, frozen_only=True)
    if not weights:
        return {}
    count = min(SAMPLED_WEIGHTS, len(weights))
    chosen = sorted({round(i * (len(weights) - 1) / max(count - 1, 1)) for i in range(count)})
    return {weights[i][0]: _values(weights[i][1]) for i in chosen}


def base_differences(model: nn.Module, sample: dict[str, list[float]]) -> list[str]:
    """The sampled weights whose values on ``model`` are not those recorded (weights that are now quantized,
    offloaded or gone are not compared)."""
    present = dict(_sampled(model, frozen_only=False))
    changed = []
    for name, recorded in sample.items():
        if name in present:
            values = torch.tensor(_values(present[name]))
            expected = torch.tensor(recorded, dtype=torch.float32)
            if values.shape != expected.shape or not torch.allclose(values, expected, rtol=RELATIVE_TOLERANCE,
                                                                     atol=ABSOLUTE_TOLERANCE):
                changed.append(name)
    return changed


__all__ = ["SEAL", "base_differences", "base_sample", "digest", "is_sealed", "seal"]
